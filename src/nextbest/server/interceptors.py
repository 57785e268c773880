"""The one place where errors become gRPC statuses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from nextbest.errors import DeadlineExceededError, NextbestError, OverloadedError
from nextbest.server.convert import error_status

__all__ = ["AdmissionInterceptor", "ErrorInterceptor", "ShedInterceptor", "UnaryInterceptor"]

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/nextbest."
_HEALTH_PREFIX = "/grpc.health."


class UnaryInterceptor(grpc.ServerInterceptor):
    """Wraps each of nextbest's unary methods once: gRPC asks the interceptors for a handler on every
    call, and a method's handler never changes. Subclasses say how to wrap one method's behaviour."""

    #: The methods this interceptor wraps, by path prefix.
    prefixes: tuple[str, ...] = (_SERVICE_PREFIX,)

    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = self._wrap(continuation(details), details.method)
            if handler is not None:  # only registered methods: unknown names must not grow the cache
                self._handlers[details.method] = handler
        return handler

    def _wrap(self, handler: Any, method: str) -> Any:
        if handler is None or handler.unary_unary is None or not method.startswith(self.prefixes):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self.wrap_unary(handler.unary_unary, method),
            request_deserializer=self.wrap_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def wrap_deserializer(self, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """The request deserializer for a wrapped method (by default, the method's own)."""
        return inner

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        """The method at ``path`` (``/nextbest.api.v1.DecisionService/NextAction``) with this
        interceptor around ``inner``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the request deserializer hands on instead of raising when the request bytes are not the
    method's message: gRPC would answer INTERNAL ("Exception deserializing request!") for caller input."""

    error: str


class ErrorInterceptor(UnaryInterceptor):
    """Maps :class:`NextbestError` to its declared status (with ``google.rpc.BadRequest`` field violations
    for invalid arguments) and anything unexpected to INTERNAL, logged; a caller never sees UNKNOWN.
    Request bytes that do not decode are INVALID_ARGUMENT, on nextbest's methods and on health's."""

    prefixes = (_SERVICE_PREFIX, _HEALTH_PREFIX)

    def wrap_deserializer(self, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        if inner is None:
            return None

        def tolerant(data: bytes) -> Any:
            try:
                return inner(data)
            except Exception as exc:  # any decode failure comes from the caller's bytes
                return Undecodable(type(exc).__name__)

        return tolerant

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        message = f"the request body is not a valid message for {path}"
        if not path.startswith(_SERVICE_PREFIX):  # health: its own statuses (NOT_FOUND) pass untouched

            def decoded(request: Any, context: grpc.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
                return inner(request, context)

            return decoded

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            try:
                return inner(request, context)
            except NextbestError as exc:
                context.abort_with_status(rpc_status.to_status(error_status(exc)))
            except Exception:
                logger.exception("unexpected error in %s", path)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
            return None  # unreachable: abort raises

        return guarded


class AdmissionInterceptor(UnaryInterceptor):
    """Bounds the nextbest calls running at once. A call beyond the bound is refused at once with
    RESOURCE_EXHAUSTED rather than queued, so the calls admitted keep their latency under overload; a call
    whose deadline has already passed is refused with DEADLINE_EXCEEDED. Nothing is done for either.
    Health is not counted: it must answer while decisions are at the bound. Sits inside the error
    interceptor, which turns its errors into statuses."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.message = (
            f"the server is at its limit of {limit} concurrent calls; nothing was done, retry after a backoff"
        )
        self._slots = threading.BoundedSemaphore(limit)
        self._count_lock = threading.Lock()
        self.running = 0  # calls holding a slot; read without the lock by ShedInterceptor, as a hint

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        slots = self._slots
        count_lock = self._count_lock
        message = self.message

        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            if context.time_remaining() <= 0:
                raise DeadlineExceededError("the deadline passed before the call started; nothing was done")
            if not slots.acquire(blocking=False):
                raise OverloadedError(message)
            with count_lock:
                self.running += 1
            try:
                return inner(request, context)
            finally:
                with count_lock:
                    self.running -= 1
                slots.release()

        return admitted


class ShedInterceptor(grpc.ServerInterceptor):
    """The cheap refusal, outermost: gRPC asks interceptors for a call's handler on its own polling
    thread, before the request is read. While every admission slot is taken, a nextbest call gets a
    handler that refuses it with RESOURCE_EXHAUSTED without decoding its request or passing through the
    other interceptors, so refusing costs as little as Python's gRPC allows and leaves the CPU to the
    calls admitted. It is a hint read without a lock: a call let through still meets the admission
    interceptor's exact bound. ``on_refuse`` counts a refusal (by method name) for the metrics."""

    def __init__(self, admission: AdmissionInterceptor, on_refuse: Callable[[str], None]) -> None:
        self._admission = admission
        self._on_refuse = on_refuse
        self._refusals: dict[str, Any] = {}

    def _refusal(self, path: str) -> Any:
        handler = self._refusals.get(path)
        if handler is None:
            method, message, on_refuse = path.rsplit("/", 1)[-1], self._admission.message, self._on_refuse

            def refuse(request: bytes, context: grpc.ServicerContext) -> Any:
                on_refuse(method)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

            handler = self._refusals[path] = grpc.unary_unary_rpc_method_handler(refuse)
        return handler

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        admission = self._admission
        if admission.running >= admission.limit and details.method.startswith(_SERVICE_PREFIX):
            handler = continuation(details)  # cached: only a method that exists is refused this way
            if handler is not None and handler.unary_unary is not None:
                return self._refusal(details.method)
            return handler
        return continuation(details)

"""The one place where errors become gRPC statuses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from nextbest.errors import DeadlineExceededError, NextbestError, OverloadedError
from nextbest.server.convert import error_status

__all__ = [
    "STREAM_LIMIT",
    "AdmissionInterceptor",
    "ErrorInterceptor",
    "ShedInterceptor",
    "UnaryInterceptor",
    "relay",
]

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/nextbest."
_HEALTH_PREFIX = "/grpc.health."

#: Server-streaming calls (campaign runs) running at once, by default; see :class:`AdmissionInterceptor`.
STREAM_LIMIT = 2


class UnaryInterceptor(grpc.ServerInterceptor):
    """Wraps each of nextbest's unary and server-streaming methods once: gRPC asks the interceptors for a
    handler on every call, and a method's handler never changes. Subclasses say how to wrap one method's
    behaviour: ``wrap_unary`` for a unary method, ``wrap_stream`` for a server-streaming one (whose
    behaviour returns an iterator of responses, which gRPC consumes in the call's thread and, when the
    call ends early, leaves unread). Client-streaming and bidirectional methods pass unwrapped (nextbest
    has none; the auth interceptor refuses them)."""

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
        if handler is None or not method.startswith(self.prefixes):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(handler.unary_unary, method),
                request_deserializer=self.wrap_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(handler.unary_stream, method),
                request_deserializer=self.wrap_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def wrap_deserializer(self, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """The request deserializer for a wrapped method (by default, the method's own)."""
        return inner

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        """The method at ``path`` (``/nextbest.api.v1.DecisionService/NextAction``) with this
        interceptor around ``inner``."""
        raise NotImplementedError

    def wrap_stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], path: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        """The server-streaming method at ``path`` with this interceptor around ``inner``, which returns
        the responses' iterator. What must happen before the first message happens when the wrapper is
        called or when its iterator is first advanced; what the wrapper's iterator holds (a slot, a
        context) is released in its ``finally``, which runs also when gRPC drops it unread (the caller
        cancelled): it is then closed, and so is ``inner``'s iterator."""
        raise NotImplementedError


def relay(responses: Iterator[Any], run: Callable[..., Any] | None = None) -> Iterator[Any]:
    """``responses``, each step (the next item, and the close when this iterator is closed or dropped
    unfinished) taken through ``run`` when given, e.g. a ``contextvars.Context.run``."""

    def direct(step: Callable[..., Any], *args: Any) -> Any:
        return step(*args)

    through = run or direct
    try:
        while True:
            try:
                item = through(next, responses)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            through(close)


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

    def wrap_stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], path: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        message = f"the request body is not a valid message for {path}"

        def fail(context: grpc.ServicerContext, exc: Exception) -> None:
            if isinstance(exc, NextbestError):
                context.abort_with_status(rpc_status.to_status(error_status(exc)))
            logger.error("unexpected error in %s", path, exc_info=exc)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")

        def streamed(responses: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from responses  # closing this closes ``responses`` too
            except Exception as exc:  # raised while streaming: the messages sent stay sent
                fail(context, exc)

        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            try:
                responses = inner(request, context)
            except Exception as exc:  # raised before the first message
                fail(context, exc)
            return streamed(responses, context)

        return guarded


class AdmissionInterceptor(UnaryInterceptor):
    """Bounds the nextbest calls running at once. A call beyond the bound is refused at once with
    RESOURCE_EXHAUSTED rather than queued, so the calls admitted keep their latency under overload; a call
    whose deadline has already passed is refused with DEADLINE_EXCEEDED. Nothing is done for either.
    Health is not counted: it must answer while decisions are at the bound. Sits inside the error
    interceptor, which turns its errors into statuses.

    Server-streaming calls (``RunCampaign``) take no slot of that bound: a campaign runs for minutes or
    hours, and would hold a slot meant for ``NextAction`` calls all along (two campaigns on a server of
    two workers would refuse every decision until they end). They have a bound of their own,
    ``stream_limit`` (a stream beyond it is refused RESOURCE_EXHAUSTED before its first message), and the
    server gives them threads of their own beyond the decision threads. A campaign's batches still share
    the CPU and the database with the decisions, one batch at a time, as ``NextActionBatch`` calls do."""

    def __init__(self, limit: int, stream_limit: int = STREAM_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.stream_limit = stream_limit
        self.message = (
            f"the server is at its limit of {limit} concurrent calls; nothing was done, retry after a backoff"
        )
        self.stream_message = (
            f"the server is running its limit of {stream_limit} streaming calls (campaign runs) at once; "
            "nothing was done, retry when one has ended"
        )
        self._stream_slots = threading.BoundedSemaphore(stream_limit)
        # The unary bound is the count itself, taken and given back under one plain lock (a semaphore
        # would be a second, costlier lock around the same number).
        self._count_lock = threading.Lock()
        self.running = 0  # calls holding a slot; read without the lock by ShedInterceptor, as a hint

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        count_lock = self._count_lock
        limit = self.limit
        message = self.message

        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            if context.time_remaining() <= 0:
                raise DeadlineExceededError("the deadline passed before the call started; nothing was done")
            with count_lock:
                if self.running >= limit:
                    raise OverloadedError(message)
                self.running += 1
            try:
                return inner(request, context)
            finally:
                with count_lock:
                    self.running -= 1

        return admitted

    def wrap_stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], path: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        slots = self._stream_slots
        message = self.stream_message

        def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: the slot is taken when gRPC asks for the first message, and given back in the
            # ``finally`` (the stream ended, failed, or was dropped after a cancellation). Taken on call,
            # it would leak if gRPC never started the iterator.
            if context.time_remaining() <= 0:
                raise DeadlineExceededError("the deadline passed before the call started; nothing was done")
            if not slots.acquire(blocking=False):
                raise OverloadedError(message)
            try:
                yield from inner(request, context)
            finally:
                slots.release()

        return streamed


class ShedInterceptor(grpc.ServerInterceptor):
    """The cheap refusal, outermost: gRPC asks interceptors for a call's handler on its own polling
    thread, before the request is read. While every admission slot is taken, a nextbest call gets a
    handler that refuses it with RESOURCE_EXHAUSTED without decoding its request or passing through the
    other interceptors, so refusing costs as little as Python's gRPC allows and leaves the CPU to the
    calls admitted. It is a hint read without a lock: a call let through still meets the admission
    interceptor's exact bound. Server-streaming calls are not shed: they are bounded on their own.
    ``on_refuse`` counts a refusal (by method name) for the metrics."""

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
            refusal = self._refusals.get(details.method)
            if refusal is not None:  # a unary method refused before: not through the other interceptors
                return refusal
            handler = continuation(details)  # cached: only a method that exists is refused this way
            if handler is not None and handler.unary_unary is not None:
                return self._refusal(details.method)
            return handler
        return continuation(details)

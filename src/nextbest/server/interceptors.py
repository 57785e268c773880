"""The one place where errors become gRPC statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from nextbest.errors import InvalidArgumentError, NextbestError

__all__ = ["ErrorInterceptor", "UnaryInterceptor"]

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/nextbest."


class UnaryInterceptor(grpc.ServerInterceptor):
    """Wraps each of nextbest's unary methods once: gRPC asks the interceptors for a handler on every
    call, and a method's handler never changes. Subclasses say how to wrap one method's behaviour."""

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
        if handler is None or handler.unary_unary is None or not method.startswith(_SERVICE_PREFIX):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self.wrap_unary(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        """The method at ``path`` (``/nextbest.api.v1.DecisionService/NextAction``) with this
        interceptor around ``inner``."""
        raise NotImplementedError


class ErrorInterceptor(UnaryInterceptor):
    """Maps :class:`NextbestError` to its declared status (with ``google.rpc.BadRequest`` field violations
    for invalid arguments) and anything unexpected to INTERNAL, logged; a caller never sees UNKNOWN."""

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except NextbestError as exc:
                context.abort_with_status(_status(exc))
            except Exception:
                logger.exception("unexpected error in %s", path)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
            return None  # unreachable: abort raises

        return guarded


def _status(exc: NextbestError) -> Any:
    code = getattr(code_pb2, exc.status, code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=str(exc))
    if isinstance(exc, InvalidArgumentError):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in exc.violations
                ]
            )
        )
        status.details.append(detail)
    return rpc_status.to_status(status)

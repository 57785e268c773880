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

__all__ = ["ErrorInterceptor"]

logger = logging.getLogger(__name__)

_SERVICE_PREFIX = "/nextbest."


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps :class:`NextbestError` to its declared status (with ``google.rpc.BadRequest`` field violations
    for invalid arguments) and anything unexpected to INTERNAL, logged; a caller never sees UNKNOWN."""

    def __init__(self) -> None:
        # gRPC asks the interceptors for a handler on every call; a method's handler never changes.
        self._handlers: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = self._wrap(continuation(details), details)
            if handler is not None:  # only registered methods: unknown names must not grow the cache
                self._handlers[details.method] = handler
        return handler

    def _wrap(self, handler: Any, details: Any) -> Any:
        if handler is None or handler.unary_unary is None or not details.method.startswith(_SERVICE_PREFIX):
            return handler
        inner = handler.unary_unary
        method = details.method

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except NextbestError as exc:
                context.abort_with_status(_status(exc))
            except Exception:
                logger.exception("unexpected error in %s", method)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
            return None  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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

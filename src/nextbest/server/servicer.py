"""DecisionService: converts and delegates to the engine; no business logic here."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.decision.engine import MAX_BATCH, DecisionEngine
from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.models.registry import ModelSet
from nextbest.server import convert
from nextbest.server.auth import current_principal
from nextbest.store import Database
from nextbest.store.audit import AuditEntry, AuditLog
from nextbest.store.erasure import Erasure

__all__ = ["AdminServicer", "DecisionServicer"]


class DecisionServicer(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """Decisions and events go to the engine; lift reports are read from ``database`` by ``reports``."""

    def __init__(self, engine: DecisionEngine, database: Database) -> None:
        self.engine = engine
        self.database = database

    def NextAction(self, request: pb.NextActionRequest, context: Any) -> pb.NextActionResponse:  # noqa: N802
        decision = self.engine.decide(convert.request_from_proto(request), deadline=_deadline(context))
        return convert.decision_to_proto(decision)

    def NextActionBatch(  # noqa: N802
        self, request: pb.NextActionBatchRequest, context: Any
    ) -> pb.NextActionBatchResponse:
        size = len(request.requests)
        if size > MAX_BATCH:  # before converting thousands of items for nothing
            raise InvalidArgumentError(
                [FieldViolation("requests", f"at most {MAX_BATCH} requests per call, got {size}")]
            )
        requests = convert.batch_from_proto(request)
        results = self.engine.decide_batch(requests, deadline=_deadline(context))
        return convert.batch_to_proto(requests, results)

    def GetLiftReport(self, request: pb.GetLiftReportRequest, context: Any) -> pb.GetLiftReportResponse:  # noqa: N802
        from nextbest.reports import build_report  # loaded on the first report, not at start

        asked = convert.report_request_from_proto(request)
        remaining = _deadline(context)
        # A report may outlast the decision path's statement timeout; the caller's deadline bounds it.
        timeout = None if remaining is None else max(remaining - time.monotonic(), 0.001)
        with self.database.analytical_reader(timeout) as conn:
            report = build_report(conn, self.engine.catalog, asked)
        return convert.report_to_proto(report)

    def RecordEvents(self, request: pb.RecordEventsRequest, context: Any) -> pb.RecordEventsResponse:  # noqa: N802
        return convert.results_to_proto(self.engine.record_events(convert.events_from_proto(request)))


_NO_DEADLINE = 365 * 86400.0


def _deadline(context: Any) -> float | None:
    """The caller's deadline as a ``time.monotonic()`` instant (None: the caller set none)."""
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE:  # grpc reports "none" as a far-off instant
        return None
    return time.monotonic() + remaining


class AdminServicer(admin_grpc.AdminServiceServicer):  # type: ignore[misc]
    """Models and erasure. Every call is appended to the audit log (who: the auth interceptor's
    principal) once it has done its work; a call whose audit entry cannot be written fails UNAVAILABLE."""

    def __init__(
        self,
        reload: Callable[[], ModelSet],
        current: Callable[[], ModelSet],
        where: str,
        erasure: Erasure,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reload = reload
        self._current = current
        self._where = where
        self._erasure = erasure
        self._audit = AuditLog(erasure.db)
        self._clock = clock

    def GetModels(self, request: admin_pb.GetModelsRequest, context: Any) -> admin_pb.GetModelsResponse:  # noqa: N802
        models = self._current()
        versions = convert.model_versions(models)
        self._audit.append(
            AuditEntry(self._clock(), current_principal(), "get_models", {}, versions, versions)
        )
        return convert.models_to_proto(models, self._where)

    def ReloadModels(  # noqa: N802
        self, request: admin_pb.ReloadModelsRequest, context: Any
    ) -> admin_pb.GetModelsResponse:
        before = convert.model_versions(self._current())
        models = self._reload()
        after = convert.model_versions(models)
        self._audit.append(AuditEntry(self._clock(), current_principal(), "reload_models", {}, before, after))
        return convert.models_to_proto(models, self._where)

    def EraseCustomer(  # noqa: N802
        self, request: admin_pb.EraseCustomerRequest, context: Any
    ) -> admin_pb.EraseCustomerResponse:
        erased = self._erasure.erase_customer(
            request.user_id, self._clock(), current_principal(), request.reason
        )
        return convert.erased_to_proto(erased)

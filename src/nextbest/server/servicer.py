"""DecisionService: converts and delegates to the engine; no business logic here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.campaigns import (
    RUN_ID,
    RUN_ID_RULE,
    CampaignPlan,
    CampaignRun,
    OutsideRunWindowError,
    TargetingError,
    iter_campaign,
    plan_campaign,
)
from nextbest.catalog import Campaign
from nextbest.decision.engine import MAX_BATCH, DecisionEngine
from nextbest.errors import (
    DeadlineExceededError,
    FieldViolation,
    InvalidArgumentError,
    NextbestError,
    NotFoundError,
)
from nextbest.models.registry import ModelSet
from nextbest.server import convert
from nextbest.server.auth import current_principal
from nextbest.server.edge import EDGE_RECEIVED_HEADER
from nextbest.state import CustomerState
from nextbest.store import Database
from nextbest.store.audit import AuditEntry, AuditLog
from nextbest.store.erasure import Erasure
from nextbest.store.scan import customer_states

__all__ = ["AdminServicer", "CampaignPreconditionError", "DecisionServicer"]

logger = logging.getLogger(__name__)


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
    """The caller's deadline as a ``time.monotonic()`` instant (None: the caller set none).

    Behind ``nextbest edge`` the deadline gRPC reports starts when the call reached this server, not the
    edge: nginx forwards the caller's ``grpc-timeout`` as it received it. The edge stamps the call with its
    clock (same host), and the time since is taken off twice: once for the way in, once for the answer's
    way back through the same hop. Without it, a call held up between the edge and the handler (a host
    under load) could be committed after its caller gave up: an exposure for an answer nobody received."""
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE:  # grpc reports "none" as a far-off instant
        return None
    return time.monotonic() + remaining - 2 * _edge_hop(context)


def _edge_hop(context: Any) -> float:
    """Seconds since the edge passed this call on (0 when it came straight from the caller). A caller that
    sends the header itself can only shorten its own deadline; the edge replaces any caller's value."""
    for key, value in context.invocation_metadata() or ():
        if key == EDGE_RECEIVED_HEADER:
            try:
                return min(max(time.time() - float(value), 0.0), 60.0)
            except ValueError:
                return 0.0
    return 0.0


class CampaignPreconditionError(NextbestError):
    """A campaign that cannot run on this server now: outside its run window, or a store that keeps
    customer ids as keyed digests. The message says which and why."""

    status = "FAILED_PRECONDITION"


class AdminServicer(admin_grpc.AdminServiceServicer):  # type: ignore[misc]
    """Models, erasure and campaign runs. Every call is appended to the audit log (who: the auth
    interceptor's principal) once it has done its work; a call whose audit entry cannot be written fails
    UNAVAILABLE. A campaign run is logged when it starts (nothing is decided if that entry cannot be
    written) and when it ends, however it ends."""

    def __init__(
        self,
        reload: Callable[[], ModelSet],
        current: Callable[[], ModelSet],
        where: str,
        erasure: Erasure,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        engine: DecisionEngine,
    ) -> None:
        self._reload = reload
        self._current = current
        self._where = where
        self._erasure = erasure
        self._audit = AuditLog(erasure.db)
        self._clock = clock
        self._engine = engine

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

    def RunCampaign(  # noqa: N802
        self, request: admin_pb.RunCampaignRequest, context: Any
    ) -> Iterator[admin_pb.CampaignProgress]:
        """Checks the request and the campaign's window, logs the run's start, then returns the progress
        stream: each batch is decided and committed when gRPC asks for the next message, so a stream
        that is cancelled stops after the batch being decided."""
        engine = self._engine
        violations = []
        if not request.campaign_id:
            violations.append(FieldViolation("campaign_id", "required: the id of a campaign of the catalog"))
        batch_size = request.batch_size or MAX_BATCH
        if not 1 <= batch_size <= MAX_BATCH:
            violations.append(
                FieldViolation("batch_size", f"must be 1 to {MAX_BATCH} (0: {MAX_BATCH}), got {batch_size}")
            )
        if request.run_id and not RUN_ID.fullmatch(request.run_id):
            violations.append(FieldViolation("run_id", f"must be {RUN_ID_RULE}"))
        if violations:
            raise InvalidArgumentError(violations)
        campaign = self._campaign(request.campaign_id)
        run_id = request.run_id or campaign.start.strftime("%Y%m%dT%H%M%SZ")
        try:
            batches = iter_campaign(
                engine,
                campaign,
                customer_states(self._erasure.db),
                run_id,
                engine.clock(),
                batch_size=batch_size,
            )
        except (OutsideRunWindowError, TargetingError) as exc:
            raise CampaignPreconditionError(str(exc)) from None
        asked = {"campaign_id": campaign.id, "run_id": run_id, "batch_size": batch_size}
        self._audit.append(AuditEntry(self._clock(), current_principal(), "run_campaign", asked))
        return self._progress(batches, asked)

    def _campaign(self, campaign_id: str) -> Campaign:
        """The catalog's campaign, when this server can run it."""
        campaigns = self._engine.catalog.campaigns
        campaign = campaigns.get(campaign_id)
        if campaign is None:
            known = ", ".join(sorted(campaigns)) or "none"
            raise NotFoundError(
                f"campaign_id: no campaign {campaign_id[:64]!r} in the catalog (campaigns: {known})"
            )
        if self._erasure.ids.hashing:
            raise CampaignPreconditionError(
                "the store keeps customer ids as keyed digests (a customer id key is configured), and a "
                "campaign needs the ids it decides for; run campaigns on a store without one"
            )
        return campaign

    def PlanCampaign(  # noqa: N802
        self, request: admin_pb.PlanCampaignRequest, context: Any
    ) -> admin_pb.CampaignPlan:
        if not request.campaign_id:
            raise InvalidArgumentError(
                [FieldViolation("campaign_id", "required: the id of a campaign of the catalog")]
            )
        campaign = self._campaign(request.campaign_id)
        states = _while_active(customer_states(self._erasure.db), context)
        try:
            plan = plan_campaign(self._engine, campaign, states, self._engine.clock())
        except TargetingError as exc:
            raise CampaignPreconditionError(str(exc)) from None
        self._audit.append(
            AuditEntry(self._clock(), current_principal(), "plan_campaign", {"campaign_id": campaign.id})
        )
        return _plan_to_proto(plan)

    def _progress(
        self, batches: Iterator[CampaignRun], asked: Mapping[str, Any]
    ) -> Iterator[admin_pb.CampaignProgress]:
        run: CampaignRun | None = None
        outcome = "stopped"  # the caller went away (or its deadline passed) after the last batch sent
        try:
            for run in batches:
                yield _progress_to_proto(run, done=False)
            outcome = "done"
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            if outcome != "done":  # a run that ended early: logged without failing anything further
                try:
                    self._audit_end(asked, run, outcome)
                except NextbestError:
                    logger.exception("campaign run %s not logged as ended (%s)", asked, outcome)
        assert run is not None  # iter_campaign yields at least once
        self._audit_end(asked, run, outcome)  # a run that is done says so only once this is written
        yield _progress_to_proto(run, done=True)

    def _audit_end(self, asked: Mapping[str, Any], run: CampaignRun | None, outcome: str) -> None:
        counts = {} if run is None else _run_counts(run)
        self._audit.append(
            AuditEntry(
                self._clock(),
                current_principal(),
                "run_campaign_end",
                {**asked, "outcome": outcome, **counts},
            )
        )


def _while_active(states: Iterator[CustomerState], context: Any, every: int = 256) -> Iterator[CustomerState]:
    """``states``, until the call is no longer active (cancelled, or its deadline passed): a dry run
    over a large store must not go on for a caller who left."""
    for i, state in enumerate(states):
        if i % every == 0 and not context.is_active():
            raise DeadlineExceededError("the call ended (deadline or cancellation) before the plan did")
        yield state


def _plan_to_proto(plan: CampaignPlan) -> admin_pb.CampaignPlan:
    """The plan, with the uplift model's incremental estimate and the holdout's MDE when there are any
    (the same figures as ``nextbest campaign plan --format json``)."""
    message = admin_pb.CampaignPlan(
        campaign_id=plan.campaign,
        scanned=plan.segment.scanned,
        audience=plan.segment.members,
        sends=plan.sends,
        over_budget=plan.over_budget,
        held_out=plan.held_out,
        nothing_sent=plan.nothing,
        refusals=dict(plan.refusals),
        by_channel=dict(plan.by_channel),
        by_hour=dict(plan.by_hour),
        expected_value=plan.expected_value,
        failed=dict(plan.failed),
        decided=plan.decided,
        not_targeted=plan.not_targeted,
        expected_discount_spend=plan.discount_spend,
        cost=plan.cost,
    )
    conversions, revenue = plan.conversions_interval(), plan.revenue_interval()
    if plan.estimated and conversions is not None and revenue is not None:
        message.incremental.CopyFrom(
            admin_pb.CampaignEstimate(
                sends_estimated=plan.estimated,
                conversions=plan.incremental_conversions,
                conversions_low=conversions[0],
                conversions_high=conversions[1],
                revenue=plan.incremental_revenue,
                revenue_low=revenue[0],
                revenue_high=revenue[1],
                net_revenue=plan.incremental_revenue - plan.cost,
            )
        )
    mde = plan.minimum_detectable_effect()
    if mde["conversion"].value is not None:
        message.mde_conversion = mde["conversion"].value
    if mde["revenue"].value is not None:
        message.mde_revenue_per_member = mde["revenue"].value
    return message


def _run_counts(run: CampaignRun) -> dict[str, Any]:
    return {
        "scanned": run.segment.scanned,
        "audience": run.segment.members,
        "decided": run.decided,
        "sent": run.sent,
        "replayed": run.replayed,
        "held_out": run.held_out,
        "failed": dict(run.failed),
        "budget_reached": run.budget_reached,
    }


def _progress_to_proto(run: CampaignRun, *, done: bool) -> admin_pb.CampaignProgress:
    return admin_pb.CampaignProgress(
        campaign_id=run.campaign,
        run_id=run.run_id,
        scanned=run.segment.scanned,
        audience=run.segment.members,
        decided=run.decided,
        sent=run.sent,
        replayed=run.replayed,
        held_out=run.held_out,
        failed=dict(run.failed),
        refusals=dict(run.refusals),
        budget_reached=run.budget_reached,
        done=done,
    )

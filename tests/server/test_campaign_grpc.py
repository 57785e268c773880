"""RunCampaign over real gRPC on loopback: the progress stream to its end, an idempotent re-run, who may
call it, every refusal of bad input, the streams' own admission bound, and a cancelled run that stops
after its batch and resumes with the same run id."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.client import NextbestClient, make_event
from nextbest.errors import StoreUnavailableError
from nextbest.server import NextbestServer
from nextbest.server.auth import AccessControl, AuthInterceptor, Role, current_principal
from nextbest.settings import Settings
from nextbest.store import Database, upgrade
from nextbest.store.audit import AuditLog
from nextbest.store.schema import decisions

# A server of its own (a catalog with campaigns around the real clock, and tokens) takes a second to start.
pytestmark = pytest.mark.slow

TOKENS = {role: f"{role.value}-token-{uuid.uuid4().hex}" for role in Role}
SMALL = 10  # members of `autumn`, the first 7 with email consent
BULK = 300  # members of `bulk`, all with email consent

CATALOG = """
version: 1
channels:
  email: {requires_consent: true}
flows:
  promo:
    priority: 20
policy:
  caps:
    - {id: weekly, classes: [promotional], limit: 1, window: 7d}
actions:
  - id: autumn_email
    flow: promo
    channel: email
    class: promotional
    triggers: [campaign_autumn]
    value: 40.0
    base_propensity: 0.05
  - id: bulk_email
    flow: promo
    channel: email
    class: promotional
    triggers: [campaign_bulk]
    value: 40.0
    base_propensity: 0.05
segments:
  small_buyers:
    condition: customer.orders_count > 0 && customer.total_revenue < 100.0
  big_buyers:
    condition: customer.total_revenue >= 100.0
campaigns:
  autumn:
    audience: small_buyers
    trigger: campaign_autumn
    start: START
    stop: STOP
  bulk:
    audience: big_buyers
    trigger: campaign_bulk
    start: START
    stop: STOP
  later:
    audience: small_buyers
    trigger: campaign_autumn
    start: LATER
    stop: LATEST
  picky:
    audience: small_buyers
    trigger: campaign_autumn
    start: START
    stop: STOP
    targeting: uplift
"""


def _write_catalog(path: Path) -> Path:
    now = datetime.now(UTC)

    def at(days: float) -> str:
        return (now + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

    text = CATALOG.replace("START", at(-1)).replace("STOP", at(1)).replace("LATER", at(10))
    path.write_text(text.replace("LATEST", at(20)))
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_catalog(tmp_path_factory.mktemp("campaigns") / "catalog.yaml")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, catalog: Path) -> Iterator[NextbestServer]:
    """A server with tokens, two decision workers and a database of its own (a campaign reads every
    stored customer), holding SMALL + BULK customers."""
    directory = tmp_path_factory.mktemp("campaign-server")
    tokens = directory / "tokens"
    tokens.write_text("".join(f"{r.value}-caller {r.value} token:{t}\n" for r, t in TOKENS.items()))
    url = f"sqlite:///{directory}/campaigns.db"
    settings = Settings(
        port=0,
        database_url=url,
        catalog=catalog,
        workers=2,
        health_interval=0.2,
        tokens_file=tokens,
        models_dir=None,
    )
    server = NextbestServer(settings)
    server.start()
    with NextbestClient(server.address, timeout=10.0, token=TOKENS[Role.EVENTS]) as client:
        client.wait_until_serving(timeout=10.0)
        at = datetime.now(UTC) - timedelta(days=20)
        events = []
        for i in range(SMALL):
            user = f"small-{i:03d}"
            events.append(make_event("order_placed", user, at, value=30.0))
            if i < 7:
                events.append(make_event("consent_changed", user, at, channel="email", consent_granted=True))
        for i in range(BULK):
            user = f"bulk-{i:03d}"
            events.append(make_event("order_placed", user, at, value=500.0))
            events.append(make_event("consent_changed", user, at, channel="email", consent_granted=True))
        for start in range(0, len(events), 1000):
            client.record_events(events[start : start + 1000])
    yield server
    server.stop(grace=1.0)


def _client(server: NextbestServer, role: Role | None = Role.ADMIN) -> NextbestClient:
    return NextbestClient(server.address, timeout=10.0, token=None if role is None else TOKENS[role])


def _decisions(server: NextbestServer, prefix: str) -> int:
    with server.store.db.reader.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(decisions).where(decisions.c.request_id.like(f"{prefix}%"))
            ).scalar_one()
        )


def _calls(server: NextbestServer, code: str) -> float:
    return float(server.metrics.calls.labels("RunCampaign", code)._value.get())


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    return caught.value


def _violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    out: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out |= {v.field: v.description for v in bad.field_violations}
    return out


def test_progress_streams_to_done_and_a_rerun_replays(served: NextbestServer) -> None:
    ok_before = _calls(served, "OK")
    with _client(served) as client:
        stream = list(client.run_campaign("autumn", run_id="w1", batch_size=4))
        # Three batches (4, 4, 2), each one message once committed, then the final one.
        assert [(p.decided, p.done) for p in stream] == [(4, False), (8, False), (10, False), (10, True)]
        last = stream[-1]
        assert (last.campaign_id, last.run_id, last.audience, last.sent, last.replayed) == (
            "autumn",
            "w1",
            10,
            7,
            0,
        )
        assert last.scanned == SMALL + BULK and last.refusals == {"NO_CONSENT": 3}
        assert not last.failed and not last.budget_reached
        assert _decisions(served, "campaign:autumn:w1:") == SMALL

        again = list(client.run_campaign("autumn", run_id="w1"))  # one batch of up to 500
        assert len(again) == 2 and again[-1].done
        assert (again[-1].decided, again[-1].sent, again[-1].replayed) == (10, 7, 10)
        assert _decisions(served, "campaign:autumn:w1:") == SMALL  # nobody decided twice

        default = list(client.run_campaign("autumn"))[-1]  # the run id defaults to the campaign's start
        assert default.run_id == served.engine.catalog.campaigns["autumn"].start.strftime("%Y%m%dT%H%M%SZ")
        assert default.sent == 0 and default.refusals["FREQUENCY_CAP"] == 7  # a new wave meets the cap
    assert _calls(served, "OK") == ok_before + 3
    assert served.metrics.stream_seconds.labels("RunCampaign")._sum.get() > 0
    ends = [e for e in AuditLog(served.store.db).read() if e.action == "run_campaign_end"]
    assert ends[-1].principal == "admin-caller" and ends[-1].detail["outcome"] == "done"
    assert ends[-1].detail["decided"] == SMALL


def test_only_an_admin_may_run_a_campaign(served: NextbestServer) -> None:
    before = _decisions(served, "campaign:autumn:nobody:")
    for role, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (Role.DECIDE, grpc.StatusCode.PERMISSION_DENIED),
    ):
        counted = _calls(served, code.name)
        with _client(served, role) as client:
            error = _error(client.run_campaign("autumn", run_id="nobody"))
        assert error.code() is code, error
        assert _calls(served, code.name) == counted + 1
    assert "lacks role 'admin'" in error.details()
    assert _decisions(served, "campaign:autumn:nobody:") == before == 0
    with grpc.insecure_channel(served.address) as channel:  # a wrong token, on the raw stub
        call = channel.unary_stream("/nextbest.api.v1.AdminService/RunCampaign")
        request = admin_pb.RunCampaignRequest(campaign_id="autumn").SerializeToString()
        error = _error(call(request, metadata=(("authorization", "Bearer not-a-known-token-at-all"),)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("asked", "code", "field", "says"),
    [
        ({"campaign_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "campaign_id", "required"),
        ({"batch_size": 501}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size", "must be 1 to 500"),
        ({"batch_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size", "got -1"),
        ({"run_id": "a:b"}, grpc.StatusCode.INVALID_ARGUMENT, "run_id", "A-Z a-z 0-9 _ . -"),
        ({"campaign_id": "nope"}, grpc.StatusCode.NOT_FOUND, "", "campaign_id: no campaign 'nope'"),
        ({"campaign_id": "later"}, grpc.StatusCode.FAILED_PRECONDITION, "", "campaign 'later' runs from"),
        (
            {"campaign_id": "picky"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "",
            "campaigns.picky.targeting: uplift targeting needs an uplift model covering flow promo",
        ),
    ],
)
def test_bad_requests_are_refused_before_anything_is_decided(
    served: NextbestServer, asked: dict[str, Any], code: grpc.StatusCode, field: str, says: str
) -> None:
    request = {"campaign_id": "autumn", "run_id": "bad"} | asked
    with _client(served) as client:
        error = _error(client.run_campaign(**request))
    assert error.code() is code, error
    if field:
        assert says in _violations(error)[field]
    else:
        assert says in error.details()
    assert _decisions(served, "campaign:autumn:bad:") == 0
    assert _decisions(served, "campaign:later:") == 0


def test_a_cancelled_run_stops_after_its_batch_and_the_same_run_id_resumes(served: NextbestServer) -> None:
    cancelled = _calls(served, "CANCELLED")
    with _client(served) as client:
        stream = client.run_campaign("bulk", run_id="c1", batch_size=1)
        first = next(stream)
        assert (first.decided, first.done) == (1, False)
        stream.close()  # cancels the call
        deadline = time.monotonic() + 10
        while _calls(served, "CANCELLED") == cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _calls(served, "CANCELLED") == cancelled + 1  # the server noticed and dropped the stream
        committed = _decisions(served, "campaign:bulk:c1:")
        time.sleep(0.2)
        assert _decisions(served, "campaign:bulk:c1:") == committed  # nothing decided after that
        assert 1 <= committed < BULK
        end = [e for e in AuditLog(served.store.db).read() if e.action == "run_campaign_end"][-1]
        assert end.detail["outcome"] == "stopped" and end.detail["run_id"] == "c1"

        done = list(client.run_campaign("bulk", run_id="c1"))[-1]
        assert done.done and (done.decided, done.replayed, done.sent) == (BULK, committed, BULK)
        assert _decisions(served, "campaign:bulk:c1:") == BULK


def test_campaign_runs_have_their_own_bound_and_leave_the_decisions_theirs(
    served: NextbestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs at once hold both stream slots (a third is refused) while the two decision slots stay
    free: NextAction calls are still answered."""
    engine = served.engine
    decide_batch = engine.decide_batch
    entered = threading.Semaphore(0)
    release = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.release()
        release.wait(10)
        return decide_batch(*args, **kwargs)

    monkeypatch.setattr(engine, "decide_batch", held)
    with _client(served) as admin, _client(served, Role.DECIDE) as decide, ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(lambda r=r: list(admin.run_campaign("autumn", run_id=r))) for r in ("h1", "h2")]
        try:
            assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
            error = _error(admin.run_campaign("autumn", run_id="h3"))
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 2 streaming calls" in error.details()
            for _ in range(3):  # both decision slots are free
                assert decide.next_action(f"bound-{uuid.uuid4().hex[:8]}", "campaign_autumn").decision_id
        finally:
            release.set()
        assert all(f.result(timeout=20)[-1].done for f in runs)
    assert _decisions(served, "campaign:autumn:h3:") == 0


def test_a_store_with_hashed_customer_ids_runs_no_campaign(tmp_path: Path, catalog: Path) -> None:
    url = f"sqlite:///{tmp_path}/hashed.db"
    db = Database(url)
    upgrade(db)
    db.dispose()
    server = NextbestServer(
        Settings(
            port=0,
            database_url=url,
            catalog=catalog,
            workers=2,
            health_interval=0.2,
            customer_id_key="a-customer-id-key-of-32-bytes-at-least",
            models_dir=None,
        )
    )
    server.start()
    try:
        with NextbestClient(server.address, timeout=10.0) as client:
            error = _error(client.run_campaign("autumn"))
    finally:
        server.stop(grace=1.0)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "keyed digests" in error.details()


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (StoreUnavailableError("the database is gone"), grpc.StatusCode.UNAVAILABLE, "the database is gone"),
        (RuntimeError("a bug"), grpc.StatusCode.INTERNAL, "internal error; the server log has the details"),
    ],
)
def test_an_error_during_the_stream_ends_it_with_its_status_after_the_batches_sent(
    served: NextbestServer,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    code: grpc.StatusCode,
    says: str,
) -> None:
    engine = served.engine
    decide_batch = engine.decide_batch
    batches = 0

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise error
        return decide_batch(*args, **kwargs)

    monkeypatch.setattr(engine, "decide_batch", second_fails)
    counted = _calls(served, code.name)
    run_id = f"e{uuid.uuid4().hex[:8]}"
    received = []
    with _client(served) as client, pytest.raises(grpc.RpcError) as caught:
        for progress in client.run_campaign("autumn", run_id=run_id, batch_size=3):
            received.append(progress.decided)
    assert received == [3]  # the first batch's message arrived, then the status
    assert caught.value.code() is code and says in caught.value.details()
    assert _calls(served, code.name) == counted + 1
    assert _decisions(served, f"campaign:autumn:{run_id}:") == 3
    end = [e for e in AuditLog(served.store.db).read() if e.action == "run_campaign_end"][-1]
    assert end.detail["outcome"] == f"failed: {type(error).__name__}" and end.detail["decided"] == 3


def test_a_deadline_that_passes_mid_run_stops_it(
    served: NextbestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = served.engine
    decide_batch = engine.decide_batch

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return decide_batch(*args, **kwargs)

    monkeypatch.setattr(engine, "decide_batch", slow)
    expired = _calls(served, "DEADLINE_EXCEEDED")
    with _client(served) as client:
        error = _error(client.run_campaign("bulk", run_id="d1", batch_size=1, timeout=0.3))
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while _calls(served, "DEADLINE_EXCEEDED") == expired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _calls(served, "DEADLINE_EXCEEDED") == expired + 1
    assert 1 <= _decisions(served, "campaign:bulk:d1:") < BULK


def test_the_plan_is_what_a_run_then_does(served: NextbestServer) -> None:
    run_id = f"p{uuid.uuid4().hex[:8]}"
    with _client(served) as client:
        plan = client.plan_campaign("autumn")
        assert _decisions(served, f"campaign:autumn:{run_id}:") == 0
        run = list(client.run_campaign("autumn", run_id=run_id))[-1]
        assert (plan.campaign_id, plan.scanned, plan.audience) == ("autumn", SMALL + BULK, SMALL)
        assert (plan.sends, dict(plan.refusals)) == (run.sent, dict(run.refusals))
        assert plan.held_out + plan.nothing_sent + plan.sends == SMALL
        assert sum(plan.by_channel.values()) == plan.sends
        assert (plan.decided, plan.not_targeted) == (run.decided, 0)
        # No uplift model covers the flow and no experiment holds anyone out: no estimate, no MDE.
        assert not plan.HasField("incremental")
        assert not plan.HasField("mde_conversion") and not plan.HasField("mde_revenue_per_member")
        with pytest.raises(grpc.RpcError) as caught:
            client.plan_campaign("nope")
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert "campaign_id: no campaign 'nope'" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            client.plan_campaign("picky")  # uplift targeting, and no uplift model covers its flow
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details().startswith("campaigns.picky.targeting: uplift targeting needs")
    with _client(served, Role.DECIDE) as client, pytest.raises(grpc.RpcError) as caught:
        client.plan_campaign("autumn")
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert [e for e in AuditLog(served.store.db).read() if e.action == "plan_campaign"]


def test_a_stream_sees_its_caller_in_every_step_and_client_streams_stay_refused() -> None:
    """The auth interceptor alone, on a bare server: a server-streaming method sees the caller's name in
    each step and when it is closed after a cancellation; a client-streaming one is never served."""
    access = AccessControl(f"ops admin token:{TOKENS[Role.ADMIN]}\n", None)
    seen_at_close: list[str] = []
    closed = threading.Event()

    def names(request: bytes, context: Any) -> Iterator[bytes]:
        try:
            for _ in range(1000):
                yield current_principal().encode()
                time.sleep(0.005)
        finally:
            seen_at_close.append(current_principal())
            closed.set()

    server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[AuthInterceptor(access)])
    handlers = {
        "Names": grpc.unary_stream_rpc_method_handler(names),
        "Upload": grpc.stream_unary_rpc_method_handler(lambda requests, context: b""),
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("nextbest.api.v1.AdminService", handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            token = (("authorization", f"Bearer {TOKENS[Role.ADMIN]}"),)
            call = channel.unary_stream("/nextbest.api.v1.AdminService/Names")(b"", metadata=token)
            assert [next(call) for _ in range(3)] == [b"ops"] * 3
            call.cancel()
            assert closed.wait(10) and seen_at_close == ["ops"]
            assert current_principal() == "anonymous"
            error = _error(channel.unary_stream("/nextbest.api.v1.AdminService/Names")(b""))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as caught:
                channel.stream_unary("/nextbest.api.v1.AdminService/Upload")(iter([b""]), metadata=token)
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None)

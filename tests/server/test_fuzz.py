"""Fuzzing the server's edge: random field values drawn from the message descriptors (NUL bytes, huge and
unicode strings, unknown enum numbers, out-of-range numbers and times) and undecodable bytes on every
method. Every answer is OK or a deliberate status: never INTERNAL or UNKNOWN; every INVALID_ARGUMENT and
every rejected event names a real field, and reaches the caller with its details (it fit in the headers);
and while poisoned requests run, valid decisions made concurrently by another caller all succeed.

``make test`` runs a short version; ``make fuzz`` runs NEXTBEST_FUZZ_REQUESTS (2,000) per database and
prints the tally recorded in benchmarks/RESULTS.md."""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.server import NextbestServer
from nextbest.settings import Settings

REQUESTS = int(os.environ.get("NEXTBEST_FUZZ_REQUESTS", "240"))
SEED = int(os.environ.get("NEXTBEST_FUZZ_SEED", "19"))
RAW_METHODS = [
    "/nextbest.api.v1.DecisionService/NextAction",
    "/nextbest.api.v1.DecisionService/NextActionBatch",
    "/nextbest.api.v1.DecisionService/RecordEvents",
    "/nextbest.api.v1.DecisionService/GetLiftReport",
    "/nextbest.api.v1.AdminService/GetModels",
    "/nextbest.api.v1.AdminService/ReloadModels",
    "/nextbest.api.v1.AdminService/EraseCustomer",
    "/nextbest.api.v1.AdminService/PlanCampaign",
    "/nextbest.api.v1.AdminService/RunCampaign",  # server-streaming
    "/grpc.health.v1.Health/Check",
]
STREAMING = {"/nextbest.api.v1.AdminService/RunCampaign"}
#: The fuzz server's campaign: its audience is every stored customer, fuzzed or good.
CAMPAIGN = "fuzz_promo"
STREAM_MESSAGES = 3  # a fuzzed campaign run is read this far, then cancelled
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "x" * 129,
    "y" * 300,
    "z" * 20_000,
    "ünïcødé-顧客-🛒",
    "\u202e\u0301\ufeff",
    "America",
    "Europe/Paris",
    "../../etc/passwd",
    "email",
    "cart_abandoned",
    "order_placed",
    "conversion",
    "sku-1",
]
_TIMESTAMPS = [0, -1, 1_793_000_000, 253_402_300_799, -62_135_596_800, 2**40, -(2**40)]


class Fuzzer:
    """Fills messages from their descriptors: half the time a field keeps a valid value from the base
    message, otherwise it gets a random, often hostile, one."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def string(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            return rng.choice(_STRINGS)
        return "".join(
            chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0, 0xD800)]))
            for _ in range(rng.randrange(0, 80))
        )

    def scalar(self, field: FieldDescriptor) -> Any:
        rng = self.rng
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string()
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randrange(0, 64))
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return rng.choice([*numbers, 999, -1])
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return rng.choice([0.0, -1.0, 84.5, 1e308, float("inf"), float("-inf"), float("nan"), 1e-300])
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
            return rng.choice([0, 1, -1, 3, 11, 2**31 - 1, -(2**31)])
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice([0, 1, 2**32 - 1])
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice([0, 1, 2**64 - 1])
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63)])

    def fill(self, msg: Message, depth: int = 0) -> None:
        rng = self.rng
        for field in msg.DESCRIPTOR.fields:
            if rng.random() < 0.5:
                continue  # keep the base message's value
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(msg, field.name)
                target.clear()
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(rng.choice([0, 1, 3, 60])):
                    if value_field.message_type is None:
                        target[self.string()] = self.scalar(value_field)
                continue
            if field.message_type is not None:
                if field.message_type.full_name == "google.protobuf.Timestamp":
                    self.timestamp(msg, field)
                elif field.is_repeated:
                    target = getattr(msg, field.name)
                    del target[:]
                    for _ in range(rng.choice([0, 1, 2, 30]) if depth < 2 else 1):
                        self.fill(target.add(), depth + 1)
                elif depth < 3:
                    self.fill(getattr(msg, field.name), depth + 1)
                continue
            if field.is_repeated:
                target = getattr(msg, field.name)
                del target[:]
                target.extend(self.scalar(field) for _ in range(rng.choice([0, 1, 2, 150])))
            else:
                setattr(msg, field.name, self.scalar(field))

    def timestamp(self, msg: Message, field: FieldDescriptor) -> None:
        stamp = getattr(msg, field.name)
        stamp.seconds = self.rng.choice(_TIMESTAMPS)
        stamp.nanos = self.rng.choice([0, 999_999_999, -1, 2**31 - 1])


def _base_request(rng: random.Random) -> pb.NextActionRequest:
    msg = pb.NextActionRequest(
        request_id=f"fuzz-{uuid.UUID(int=rng.getrandbits(128)).hex}",
        user_id=f"fuzz-user-{rng.randrange(50)}",
        trigger=rng.choice(["cart_abandoned", "order_placed", "product_viewed"]),
        channels=[pb.CHANNEL_EMAIL],
    )
    msg.context.time_zone = "Europe/Paris"
    msg.context.product_ids.append("sku-1")
    msg.occurred_at.FromSeconds(1_793_000_000)
    return msg


def _base_events(rng: random.Random) -> pb.RecordEventsRequest:
    msg = pb.RecordEventsRequest()
    for _ in range(rng.choice([1, 3])):
        event = msg.events.add(
            event_id=f"fuzz-ev-{uuid.UUID(int=rng.getrandbits(128)).hex}",
            user_id=f"fuzz-user-{rng.randrange(50)}",
            type=pb.EVENT_TYPE_ORDER_PLACED,
            value=20.0,
            order_id="o-1",
        )
        event.occurred_at.FromSeconds(1_793_000_000)
    return msg


_SUBSCRIPT = re.compile(r"""\[(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\]'"]*)\]""")


def field_exists(descriptor: Descriptor, path: str) -> bool:
    """Whether ``path`` (``context.product_ids[3]``, ``context.attributes['k']``, ``items[0].quantity``)
    names a field of the message ``descriptor`` describes."""
    for part in _SUBSCRIPT.sub("", path).split("."):
        if descriptor is None or part not in descriptor.fields_by_name:
            return False
        field = descriptor.fields_by_name[part]
        descriptor = field.message_type
    return True


def _violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"INVALID_ARGUMENT without its details: {error.details()[:200]}"
    bad = error_details_pb2.BadRequest()
    assert status.details and status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]


class Tally:
    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def add(self, code: str, problem: str | None = None) -> None:
        with self.lock:
            self.codes[code] += 1
            if problem is not None and len(self.problems) < 20:
                self.problems.append(problem)


def _call(stub: Any, method: str, request: Message, descriptor: Descriptor, tally: Tally) -> None:
    try:
        reply = getattr(stub, method)(request, timeout=30)
    except grpc.RpcError as error:
        code = error.code()
        problem = None
        if code in FORBIDDEN:
            problem = f"{method}: {code.name}: {error.details()[:200]}"
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            fields = _violations(error)
            unknown = [f for f in fields if not field_exists(descriptor, f)]
            if not fields or unknown:
                problem = (
                    f"{method}: INVALID_ARGUMENT names no real field: {unknown or error.details()[:200]}"
                )
        tally.add(code.name, problem)
        return
    problem = None
    if method == "NextActionBatch":
        problem = _batch_problem(request, reply)
    if method == "RecordEvents":
        for result in reply.results:
            if result.status == pb.EVENT_STATUS_REJECTED:
                unknown = [e.field for e in result.errors if not field_exists(pb.Event.DESCRIPTOR, e.field)]
                if not result.errors or unknown:
                    problem = f"RecordEvents: REJECTED names no real field: {unknown}"
    tally.add("OK", problem)


def _batch_problem(request: Any, reply: Any) -> str | None:
    """Each item's own status is deliberate and names real fields; the good last item is answered."""
    if [r.index for r in reply.results] != list(range(len(request.requests))):
        return "NextActionBatch: results out of order or missing"
    for result in reply.results:
        if result.HasField("response"):
            continue
        code = grpc.StatusCode[code_pb2.Code.Name(result.error.code)]
        if code in FORBIDDEN:
            return f"NextActionBatch item {result.index}: {code.name}: {result.error.message[:200]}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            fields = []
            for detail in result.error.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    fields += [v.field for v in bad.field_violations]
            prefix = f"requests[{result.index}]."
            wrong = [f for f in fields if not f.startswith(prefix)]
            unknown = [f for f in fields if not field_exists(pb.NextActionBatchRequest.DESCRIPTOR, f)]
            if not fields or wrong or unknown:
                return f"NextActionBatch item {result.index}: names no real field: {wrong or unknown}"
    if not reply.results[-1].HasField("response"):
        return f"NextActionBatch: a good item beside fuzzed ones failed: {reply.results[-1].error.message}"
    return None


def _admin_request(rng: random.Random, fuzzer: Fuzzer) -> tuple[str, Message]:
    """One of AdminService's methods with a base request that half the time reaches real work (a known
    campaign, a stored customer), fuzzed from its descriptor."""
    method = rng.choice(["GetModels", "ReloadModels", "EraseCustomer", "PlanCampaign", "RunCampaign"])
    request: Message = {
        "GetModels": admin_pb.GetModelsRequest,
        "ReloadModels": admin_pb.ReloadModelsRequest,
        "EraseCustomer": lambda: admin_pb.EraseCustomerRequest(
            user_id=f"fuzz-user-{rng.randrange(50)}", reason="fuzz"
        ),
        "PlanCampaign": lambda: admin_pb.PlanCampaignRequest(campaign_id=CAMPAIGN),
        "RunCampaign": lambda: admin_pb.RunCampaignRequest(
            campaign_id=CAMPAIGN, run_id=f"fuzz-{rng.randrange(5)}", batch_size=rng.choice([1, 50, 500])
        ),
    }[method]()
    fuzzer.fill(request)
    return method, request


def _call_admin(stub: Any, method: str, request: Message, tally: Tally) -> None:
    """Like :func:`_call` for AdminService; a campaign run is read for a few progress messages and then
    cancelled (a caller going away mid-run), which must end it cleanly."""
    if method != "RunCampaign":
        _call(stub, method, request, request.DESCRIPTOR, tally)
        return
    stream = stub.RunCampaign(request, timeout=60)
    try:
        for _ in itertools.islice(stream, STREAM_MESSAGES):
            pass
    except grpc.RpcError as error:
        code = error.code()
        problem = None
        if code in FORBIDDEN:
            problem = f"RunCampaign: {code.name}: {error.details()[:200]}"
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            fields = _violations(error)
            unknown = [f for f in fields if not field_exists(request.DESCRIPTOR, f)]
            if not fields or unknown:
                problem = (
                    f"RunCampaign: INVALID_ARGUMENT names no real field: {unknown or error.details()[:200]}"
                )
        tally.add(code.name, problem)
        return
    finally:
        stream.cancel()
    tally.add("OK")


def _raw(channel: grpc.Channel, method: str, body: bytes, tally: Tally) -> None:
    """Undecodable bytes as ``method``'s request."""
    try:
        if method in STREAMING:
            for _ in itertools.islice(channel.unary_stream(method)(body, timeout=30), STREAM_MESSAGES):
                pass
        else:
            channel.unary_unary(method)(body, timeout=30)
        tally.add("OK")
    except grpc.RpcError as error:
        code = error.code()
        tally.add(code.name, f"{method}: raw bytes: {code.name}" if code in FORBIDDEN else None)


def _good_caller(address: str, stop: threading.Event, failures: list[str], done: list[int]) -> None:
    """A well-behaved caller deciding beside the fuzzer: every one of its decisions must succeed."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        while not stop.is_set():
            msg = pb.NextActionRequest(
                request_id=f"good-{uuid.uuid4().hex}",
                user_id=f"good-{uuid.uuid4().hex[:8]}",
                trigger="cart_abandoned",
                channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_ONSITE],
            )
            try:
                stub.NextAction(msg, timeout=30)
                done.append(1)
            except grpc.RpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")


@pytest.fixture
def fuzz_catalog(plain_catalog: Path, tmp_path: Path) -> Path:
    """The plain catalog with a segment of every customer and a campaign running now, so that the
    campaign methods are fuzzed past their lookup."""
    data = yaml.safe_load(plain_catalog.read_text())
    now = datetime.now(UTC)
    promo = next(a for a in data["actions"] if a["id"] == "promo_black_friday_email")
    data["actions"].append({**promo, "id": "fuzz_promo_email", "triggers": ["fuzz_campaign"]})
    data.setdefault("segments", {})["fuzz_everyone"] = {"condition": "customer.orders_count >= 0"}
    data.setdefault("campaigns", {})[CAMPAIGN] = {
        "audience": "fuzz_everyone",
        "trigger": "fuzz_campaign",
        "start": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stop": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def fuzz_server(migrated: str, fuzz_catalog: Path) -> Iterator[NextbestServer]:
    srv = NextbestServer(Settings(port=0, database_url=migrated, catalog=fuzz_catalog, workers=8))
    srv.start()
    yield srv
    srv.stop(grace=1.0)


@pytest.mark.slow
def test_fuzzed_requests_get_deliberate_statuses_and_never_fail_good_callers(
    fuzz_server: NextbestServer,
) -> None:
    rng = random.Random(SEED)
    fuzzer = Fuzzer(rng)
    tally = Tally()
    stop = threading.Event()
    failures: list[str] = []
    done: list[int] = []
    good = [
        threading.Thread(target=_good_caller, args=(fuzz_server.address, stop, failures, done))
        for _ in range(2)
    ]
    for thread in good:
        thread.start()
    try:
        with grpc.insecure_channel(fuzz_server.address) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            admin = admin_grpc.AdminServiceStub(channel)
            for index in range(REQUESTS):
                roll = index % 10
                if index % 20 == 3:  # one call in 20 (instead of a NextAction): AdminService
                    _call_admin(admin, *_admin_request(rng, fuzzer), tally)
                elif roll < 4:
                    request: Message = _base_request(rng)
                    fuzzer.fill(request)
                    _call(stub, "NextAction", request, pb.NextActionRequest.DESCRIPTOR, tally)
                elif roll < 5:  # fuzzed items beside a good one, which must be answered
                    items = [_base_request(rng) for _ in range(rng.randrange(1, 5))]
                    for item in items:
                        fuzzer.fill(item)
                    items.append(
                        pb.NextActionRequest(
                            request_id=f"good-{uuid.uuid4().hex}",
                            user_id=f"good-{uuid.uuid4().hex[:8]}",
                            trigger="cart_abandoned",
                        )
                    )
                    request = pb.NextActionBatchRequest(requests=items)
                    _call(stub, "NextActionBatch", request, pb.NextActionBatchRequest.DESCRIPTOR, tally)
                elif roll < 8:
                    request = _base_events(rng)
                    for event in request.events:  # type: ignore[attr-defined]
                        fuzzer.fill(event, depth=1)
                    _call(stub, "RecordEvents", request, pb.RecordEventsRequest.DESCRIPTOR, tally)
                elif roll < 9:
                    request = pb.GetLiftReportRequest(experiment_id=rng.choice(["", "nope", "a\x00"]))
                    fuzzer.fill(request)
                    _call(stub, "GetLiftReport", request, pb.GetLiftReportRequest.DESCRIPTOR, tally)
                else:
                    _raw(channel, rng.choice(RAW_METHODS), rng.randbytes(rng.randrange(1, 200)), tally)
    finally:
        stop.set()
        for thread in good:
            thread.join()
    print(f"\nfuzz: {REQUESTS} requests, seed {SEED}: {dict(tally.codes)}")
    print(f"fuzz: good caller alongside: {len(done)} ok, {len(failures)} failed")
    assert tally.problems == []
    assert sum(tally.codes.values()) == REQUESTS
    assert failures == []
    assert done, "the good caller made no decision"

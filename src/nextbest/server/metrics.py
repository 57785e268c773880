"""Prometheus metrics: what was decided and sent, how fast, and whether each experiment's sample ratio holds.

Served over HTTP (``--metrics-port``) from a registry of the server's own, so several servers can live in
one process (tests) without clashing.

A successful unary call is not counted through prometheus_client's own ``inc`` and ``observe`` (a lock
taken and released per count, five or more per decision): each handler thread adds its counts to a
tally of its own, a plain dict no other thread writes, and the tallies are folded into the metrics
whenever they are collected (a scrape, or :meth:`Metrics.flush`). Failed calls, refusals, streams and
events are counted directly, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.rpc import code_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.catalog import Catalog
from nextbest.models.registry import ModelSet, ModelState
from nextbest.server.interceptors import UnaryInterceptor
from nextbest.store import Store

__all__ = ["Metrics", "MetricsInterceptor"]

logger = logging.getLogger(__name__)


#: A thread's counts not yet folded into the metrics: a metric's value holder -> its running total.
Tally = dict[Any, float]


class _FoldingRegistry(CollectorRegistry):
    """A registry that folds the handler threads' tallies into its metrics before each collection."""

    def __init__(self, fold: Callable[[], None]) -> None:
        super().__init__()
        self._fold = fold

    def collect(self) -> Iterable[Metric]:
        self._fold()
        yield from super().collect()

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        """A scrape that names the metrics it wants (``?name[]=...``) collects through this one."""
        self._fold()
        return super().restricted_registry(names)


class Metrics:
    def __init__(self) -> None:
        self._local = threading.local()
        self._fold_lock = threading.Lock()
        self._tallies: list[tuple[Tally, Tally]] = []  # (a thread's tally, what of it is folded in)
        self.registry = _FoldingRegistry(self.flush)
        r = self.registry
        self.calls = Counter(
            "nextbest_rpc_calls", "Calls by method and status code.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "nextbest_rpc_seconds",
            "Server time per call, by method.",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.stream_seconds = Histogram(
            "nextbest_rpc_stream_seconds",
            "Duration of server-streaming calls (campaign runs), by method, whatever their end.",
            ["method"],
            buckets=(0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0),
            registry=r,
        )
        self.stream_messages = Counter(
            "nextbest_rpc_stream_messages", "Messages sent by server-streaming calls.", ["method"], registry=r
        )
        self.decisions = Counter("nextbest_decisions", "Decisions by trigger.", ["trigger"], registry=r)
        self.actions = Counter(
            "nextbest_actions", "Actions chosen, by action and channel.", ["action", "channel"], registry=r
        )
        self.held_out = Counter(
            "nextbest_held_out",
            "Actions not sent because the unit is held out, by experiment.",
            ["experiment"],
            registry=r,
        )
        self.events = Counter(
            "nextbest_events", "Events by type and outcome.", ["type", "status"], registry=r
        )
        self.arm_units = Gauge(
            "nextbest_experiment_units", "Units per arm.", ["experiment", "arm"], registry=r
        )
        self.srm_p = Gauge(
            "nextbest_experiment_srm_p_value", "Sample-ratio chi-squared p-value.", ["experiment"], registry=r
        )
        self.srm_alarm = Gauge(
            "nextbest_experiment_srm_alarm",
            "1 when the sample ratio is off (p < 0.001).",
            ["experiment"],
            registry=r,
        )

        self.model_state = Gauge(
            "nextbest_model_state",
            "1 for each model kind's current state (loaded, missing, corrupt, incompatible).",
            ["kind", "state"],
            registry=r,
        )

        self.batch_items = Counter(
            "nextbest_batch_items",
            "Items of NextActionBatch calls by their own status code.",
            ["code"],
            registry=r,
        )
        self._batch_ok = self.batch_items.labels("OK")._value

        # Value holders by label values, looked up once: ``labels()`` takes a lock and rebuilds its key
        # on every call. A response names only catalog triggers, actions and experiments (bounded).
        self._decisions: dict[str, Any] = {}
        self._actions: dict[tuple[str, int], Any] = {}

    def tally(self) -> Tally:
        """The calling thread's tally (made on its first call)."""
        try:
            tally: Tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = {}
            with self._fold_lock:
                self._tallies.append((tally, {}))
        return tally

    def flush(self) -> None:
        """Folds every thread's counts since the last flush into the metrics (a scrape does this)."""
        with self._fold_lock:
            for tally, folded in self._tallies:
                # A copy made in one step (``dict.copy`` runs no Python code while it copies): the
                # thread may be adding to its tally meanwhile.
                for value, total in tally.copy().items():
                    done = folded.get(value, 0)
                    if total != done:
                        value.inc(total - done)
                        folded[value] = total

    def observe_models(self, models: ModelSet) -> None:
        for status in models.statuses:
            for state in ModelState:
                self.model_state.labels(status.kind.value, state.value).set(int(state is status.state))

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def observe(self, method: str, request: Any, response: Any, tally: Tally | None = None) -> None:
        """Counts what a successful call decided or recorded; decisions into ``tally`` (by default the
        calling thread's)."""
        if isinstance(response, pb.NextActionResponse):
            self._observe_decision(request.trigger, response, self.tally() if tally is None else tally)
        elif isinstance(response, pb.NextActionBatchResponse):
            tally = self.tally() if tally is None else tally
            requests = request.requests
            ok = self._batch_ok
            for item in response.results:
                if item.HasField("response"):
                    self._observe_decision(requests[item.index].trigger, item.response, tally)
                    tally[ok] = tally.get(ok, 0) + 1
                else:
                    self.batch_items.labels(_name(code_pb2.Code, item.error.code)).inc()
        elif isinstance(response, pb.RecordEventsResponse):
            for event, result in zip(request.events, response.results, strict=False):
                self.events.labels(
                    _name(pb.EventType, event.type), _name(pb.EventStatus, result.status)
                ).inc()

    def _observe_decision(self, trigger: str, response: pb.NextActionResponse, tally: Tally) -> None:
        decisions = self._decisions.get(trigger)
        if decisions is None:
            decisions = self._decisions.setdefault(trigger, self.decisions.labels(trigger)._value)
        tally[decisions] = tally.get(decisions, 0) + 1
        for action in response.actions:
            key = (action.action_id, action.channel)
            counter = self._actions.get(key)
            if counter is None:
                counter = self.actions.labels(action.action_id, _name(pb.Channel, action.channel))._value
                self._actions[key] = counter
            tally[counter] = tally.get(counter, 0) + 1
        for assignment in response.assignments:
            if assignment.held_out:
                self.held_out.labels(assignment.experiment_id).inc()

    def refresh_experiments(self, catalog: Catalog, store: Store) -> None:
        """Recounts units per arm and the sample-ratio check (a GROUP BY per experiment)."""
        from nextbest.stats.srm import srm_check  # with --metrics-port only: not at every start

        for exp in catalog.experiments:
            counts = store.arm_units(exp.id)
            counts.pop("__multiple__", None)
            for arm in exp.arms:
                self.arm_units.labels(exp.id, arm.id).set(counts.get(arm.id, 0))
            result = srm_check(counts, {a.id: a.weight for a in exp.arms})
            self.srm_p.labels(exp.id).set(result.p_value)
            self.srm_alarm.labels(exp.id).set(1 if result.alarm else 0)
            if result.alarm:
                logger.warning(
                    "sample-ratio mismatch in %s: p=%.3g over %d units", exp.id, result.p_value, result.total
                )


def _name(enum: Any, value: int) -> str:
    """The enum value's name; the number for values this build does not know (callers send those)."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


class MetricsInterceptor(UnaryInterceptor):
    """Times and counts every nextbest call, by final status, and counts what it decided."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        method = path.rsplit("/", 1)[-1]
        metrics = self.metrics
        latency = metrics.latency.labels(method)
        # The histogram's own parts, as its ``observe`` updates them: the first bucket whose upper bound
        # is at least the value, and the sum.
        bounds, buckets, seconds = latency._upper_bounds, latency._buckets, latency._sum
        ok = metrics.calls.labels(method, "OK")._value
        local = metrics._local
        timer = time.perf_counter

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            start = timer()
            try:
                response = inner(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]  # grpc has it; the stubs lack it
                metrics.calls.labels(method, code.name).inc()
                latency.observe(timer() - start)
                raise
            elapsed = timer() - start
            try:
                tally = local.tally
            except AttributeError:
                tally = metrics.tally()
            bucket = buckets[bisect_left(bounds, elapsed)]
            tally[bucket] = tally.get(bucket, 0) + 1
            tally[seconds] = tally.get(seconds, 0.0) + elapsed
            tally[ok] = tally.get(ok, 0) + 1
            try:
                metrics.observe(method, request, response, tally)
            except Exception:  # counting must never fail a call that succeeded
                logger.exception("metrics failed for %s", method)
            return response

        return measured

    def wrap_stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], path: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        """Counts the call once by its final code (OK at the end of its messages; CANCELLED, or
        DEADLINE_EXCEEDED, when gRPC stopped asking for them) and times it whole, first call to end."""
        method = path.rsplit("/", 1)[-1]
        metrics = self.metrics
        duration = metrics.stream_seconds.labels(method)
        sent = metrics.stream_messages.labels(method)

        def ended(code: str, start: float) -> None:
            metrics.calls.labels(method, code).inc()
            duration.observe(time.perf_counter() - start)

        def failed(context: grpc.ServicerContext) -> str:
            code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]  # grpc has it; the stubs lack it
            return str(code.name)

        def streamed(responses: Iterator[Any], context: grpc.ServicerContext, start: float) -> Iterator[Any]:
            code = "OK"
            try:
                for response in responses:
                    sent.inc()
                    yield response
            except GeneratorExit:  # dropped unfinished: the caller went away or its deadline passed
                code = "DEADLINE_EXCEEDED" if context.time_remaining() <= 0 else "CANCELLED"
                close = getattr(responses, "close", None)
                if close is not None:
                    close()
                raise
            except BaseException:
                code = failed(context)
                raise
            finally:
                ended(code, start)

        def measured(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                responses = inner(request, context)
            except BaseException:  # refused before the first message (authentication, admission)
                ended(failed(context), start)
                raise
            return streamed(responses, context, start)

        return measured

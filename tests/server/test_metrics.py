"""Prometheus metrics over HTTP: calls by status, decisions, held-out units, the sample-ratio gauges."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nextbest.client import NextbestClient, make_event
from nextbest.server import NextbestServer
from nextbest.server.process import free_port
from nextbest.settings import Settings
from tests.conftest import find_unit, uid

T0 = datetime(2026, 11, 10, 9, tzinfo=UTC)


@pytest.fixture
def metered(migrated: str) -> Iterator[NextbestServer]:
    srv = NextbestServer(
        Settings(port=0, database_url=migrated, metrics_port=free_port(), metrics_interval=0.1)
    )
    srv.start()
    yield srv
    srv.stop(grace=0.5)


def scrape(server: NextbestServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{server.settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_calls_decisions_and_held_out_units_are_counted(metered: NextbestServer) -> None:
    catalog = metered.engine.catalog
    held = find_unit(catalog, {"global_holdout": "holdout"})
    with NextbestClient(metered.address, max_attempts=1) as client:
        client.record_events([make_event("subscribed", held, T0, channel="email")])
        client.next_action(held, "cart_abandoned", occurred_at=T0, cart_value=50.0)
        client.next_action(uid(), "order_placed", occurred_at=T0, channels=["email"])
        with pytest.raises(grpc.RpcError):
            client.next_action("", "order_placed")
    metered.metrics.refresh_experiments(catalog, metered.store)
    got = scrape(metered)
    assert got[("nextbest_rpc_calls_total", (("code", "OK"), ("method", "NextAction")))] == 2
    assert got[("nextbest_rpc_calls_total", (("code", "INVALID_ARGUMENT"), ("method", "NextAction")))] == 1
    assert got[("nextbest_decisions_total", (("trigger", "cart_abandoned"),))] == 1
    assert (
        got[
            ("nextbest_actions_total", (("action", "order_confirmation_email"), ("channel", "CHANNEL_EMAIL")))
        ]
        == 1
    )
    assert got[("nextbest_held_out_total", (("experiment", "global_holdout"),))] == 1
    assert (
        got[
            (
                "nextbest_events_total",
                (("status", "EVENT_STATUS_ACCEPTED"), ("type", "EVENT_TYPE_SUBSCRIBED")),
            )
        ]
        == 1
    )
    assert got[("nextbest_experiment_units", (("arm", "holdout"), ("experiment", "global_holdout")))] >= 1
    assert ("nextbest_experiment_srm_p_value", (("experiment", "global_holdout"),)) in got
    assert got[("nextbest_rpc_seconds_count", (("method", "NextAction"),))] == 3

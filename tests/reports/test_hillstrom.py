"""A real randomized experiment replayed through the store: Hillstrom's e-mail test (64,000 customers).

Exposures (three arms of one experiment) and events (visits, orders with spend) go in through the store's
tables; the report comes out through the same SQL aggregation and stats engine as production, and must
reproduce the published arm table to the last digit shown.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog import Catalog, parse_catalog
from nextbest.reports import LiftReport, ReportRequest, build_report
from nextbest.store import Database, Store
from nextbest.store.schema import assignments, decisions, events
from nextbest.store.units import rebuild_units

# Loads the 64,000 Hillstrom customers (~45 s on a 2-core host), then reports.
pytestmark = pytest.mark.slow

DATA = Path(__file__).parent.parent / "data" / "hillstrom.csv"
T0 = datetime(2008, 3, 1, 9, tzinfo=UTC)
ARMS = {"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "no_email"}

CATALOG = """\
version: 1
channels: {email: {}}
flows: {promo: {}}
actions:
  - {id: spring_email, flow: promo, channel: email, class: promotional, triggers: [scheduled], cost: 0.05}
experiments:
  - id: EXPERIMENT
    scope: {flows: [promo]}
    arms:
      - {id: no_email, weight: 0.333333334, no_action: true}
      - {id: mens, weight: 0.333333333}
      - {id: womens, weight: 0.333333333}
"""


def replay(store: Store, experiment_id: str) -> None:
    """Writes the CSV as decisions, exposures and events."""
    prefix = uuid.uuid4().hex[:8]
    decision_rows: list[dict[str, Any]] = []
    assignment_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    with DATA.open() as f:
        for i, row in enumerate(csv.DictReader(f)):
            user, decision_id = f"hill-{prefix}-{i}", uuid.uuid4().hex
            arm = ARMS[row["segment"]]
            decision_rows.append(
                {
                    "decision_id": decision_id,
                    "request_id": f"{prefix}-{i}",
                    "user_id": user,
                    "trigger": "scheduled",
                    "occurred_at": T0,
                    "decided_at": T0,
                    "catalog_version": "hillstrom",
                    "fingerprint": "-",
                    "payload": {"actions": [], "rejected": [], "exposures": []},
                }
            )
            assignment_rows.append(
                {
                    "decision_id": decision_id,
                    "user_id": user,
                    "experiment_id": experiment_id,
                    "arm_id": arm,
                    "bucket": 0.0,
                    "hash_version": 2,
                    "seed": experiment_id,
                    "probability": 1 / 3,
                    "held_out": arm == "no_email",
                    "action_id": "spring_email",
                    "flow": "promo",
                    "channel": "email",
                    "send_at": T0,
                    "parameters": {},
                    "score": 0.0,
                    "occurred_at": T0,
                    "catalog_version": "hillstrom",
                }
            )
            base = {"user_id": user, "received_at": T0, "channel": None, "decision_id": None, "details": {}}
            if row["visit"] == "1":
                event_rows.append(
                    {
                        **base,
                        "event_id": f"{user}-v",
                        "type": "product_viewed",
                        "occurred_at": T0 + timedelta(days=1),
                        "value": 0.0,
                        "order_id": None,
                    }
                )
            if row["conversion"] == "1":
                event_rows.append(
                    {
                        **base,
                        "event_id": f"{user}-o",
                        "type": "order_placed",
                        "occurred_at": T0 + timedelta(days=2),
                        "value": float(row["spend"]),
                        "order_id": f"{user}-order",
                    }
                )
    with store.db.writer.begin() as conn:
        conn.execute(decisions.insert(), decision_rows)
        conn.execute(assignments.insert(), assignment_rows)
        conn.execute(events.insert(), event_rows)
        rebuild_units(conn)  # a bulk load past the group commit: the units' first exposures from it


def report(store: Store, catalog: Catalog, experiment_id: str, **fields: Any) -> LiftReport:
    """The report for ``ReportRequest.validated(experiment_id, **fields)``."""
    request = ReportRequest.validated(experiment_id, **fields)
    with store.db.reader.connect() as conn:
        return build_report(conn, catalog, request)


def catalog_file(directory: Path, experiment_id: str) -> Path:
    """The catalog as a file, for the CLI and the server."""
    path = directory / "hill.yaml"
    path.write_text(CATALOG.replace("EXPERIMENT", experiment_id))
    return path


@pytest.fixture(scope="module")
def hillstrom(migrated: str) -> tuple[Store, Catalog, str]:
    experiment_id = f"hillstrom_{uuid.uuid4().hex[:8]}"
    store = Store(Database(migrated))
    replay(store, experiment_id)
    catalog = parse_catalog(CATALOG.replace("EXPERIMENT", experiment_id))
    yield store, catalog, experiment_id  # type: ignore[misc]
    store.close()


PUBLISHED = {  # arm: customers, visit rate %, conversion rate %, spend per customer $
    "mens": (21_307, "18.28", "1.253", "1.4226"),
    "womens": (21_387, "15.14", "0.884", "1.0772"),
    "no_email": (21_306, "10.62", "0.573", "0.6528"),
}


def test_the_report_reproduces_the_published_arm_table(hillstrom: tuple[Store, Catalog, str]) -> None:
    store, catalog, experiment_id = hillstrom
    metrics = ["visit", "conversion", "revenue"]
    lift = report(store, catalog, experiment_id, metrics=metrics, as_of=T0 + timedelta(days=30))
    assert lift.control == "no_email" and lift.excluded_units == 0
    analysed = lift.analysis.metrics
    for arm, (customers, visit, conversion, spend) in PUBLISHED.items():
        assert lift.units[arm] == customers
        assert f"{analysed['visit'].arms[arm].mean * 100:.2f}" == visit
        assert f"{analysed['conversion'].arms[arm].mean * 100:.3f}" == conversion
        assert f"{analysed['revenue'].arms[arm].mean:.4f}" == spend
    for arm in ("mens", "womens"):
        for metric in metrics:
            absolute = analysed[metric].comparisons[arm].absolute
            assert absolute.p_value is not None and absolute.p_value < 0.05, (arm, metric, absolute)
            assert absolute.ci_low is not None and absolute.ci_low > 0
    assert not lift.srm.alarm
    mens = next(i for i in lift.incremental if i.arm == "mens")
    assert mens.extra_revenue == pytest.approx((1.4226 - 0.6528) * 21_307, rel=1e-3)
    assert mens.cost == pytest.approx(21_307 * 0.05)  # every e-mail sent, at 0.05 each
    assert mens.return_on_cost == pytest.approx(mens.extra_revenue / mens.cost)


def test_outcomes_outside_the_window_do_not_count(hillstrom: tuple[Store, Catalog, str]) -> None:
    store, catalog, experiment_id = hillstrom
    one_day = report(
        store, catalog, experiment_id, metrics=["conversion"], window_days=1, as_of=T0 + timedelta(days=30)
    )
    assert one_day.analysis.metrics["conversion"].arms["mens"].mean == 0.0  # orders came on day 2
    early = report(store, catalog, experiment_id, metrics=["visit"], as_of=T0 + timedelta(hours=12))
    assert early.analysis.metrics["visit"].arms["mens"].mean == 0.0  # visits came on day 1


def test_report_cli_table_and_json(
    hillstrom: tuple[Store, Catalog, str], migrated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from nextbest.cli import main

    _, _, experiment_id = hillstrom
    catalog = catalog_file(tmp_path, experiment_id)
    common = [
        "report",
        "--experiment",
        experiment_id,
        "--catalog",
        str(catalog),
        "--database-url",
        migrated,
        "--as-of",
        "2008-04-01T00:00:00Z",
        "--metric",
        "conversion",
        "--metric",
        "revenue",
    ]
    assert main(common) == 0
    table = capsys.readouterr().out
    assert (
        "control no_email" in table and "mens" in table and "0.0125" in table and "Sample ratio: ok" in table
    )
    assert main([*common, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["units"] == {"mens": 21_307, "womens": 21_387, "no_email": 21_306}
    mens = data["analysis"]["metrics"]["conversion"]["comparisons"]["mens"]
    assert mens["absolute"]["p_value"] < 0.05
    assert main([*common[:2], "nope", *common[3:]]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def hill_server(
    hillstrom: tuple[Store, Catalog, str], migrated: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server on the Hillstrom store and catalog; its address."""
    from nextbest.server import NextbestServer
    from nextbest.settings import Settings

    catalog = catalog_file(tmp_path_factory.mktemp("hill"), hillstrom[2])
    server = NextbestServer(Settings(port=0, database_url=migrated, catalog=catalog))
    server.start()
    yield server.address
    server.stop(grace=0.5)


def test_get_lift_report_over_grpc(hillstrom: tuple[Store, Catalog, str], hill_server: str) -> None:
    import grpc

    from nextbest.api.v1 import decision_service_pb2 as pb
    from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
    from nextbest.client import timestamp

    _, _, experiment_id = hillstrom
    with grpc.insecure_channel(hill_server) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        reply = stub.GetLiftReport(
            pb.GetLiftReportRequest(
                experiment_id=experiment_id,
                metrics=["visit", "revenue"],
                as_of=timestamp(T0 + timedelta(days=30)),
            ),
            timeout=30,
        )
        assert reply.control_arm == "no_email" and reply.window_days == 14
        assert not reply.sample_ratio.alarm and reply.excluded_units == 0
        visit = next(m for m in reply.metrics if m.metric == "visit")
        assert {a.arm_id: a.units for a in visit.arms} == {
            "mens": 21_307,
            "womens": 21_387,
            "no_email": 21_306,
        }
        mens = next(c for c in visit.comparisons if c.arm_id == "mens")
        assert mens.absolute.HasField("p_value") and mens.absolute.p_value < 0.05
        revenue = next(m for m in reply.metrics if m.metric == "revenue")
        # No purchases before exposure in this data: the covariate has no variance, so no θ is set.
        assert revenue.unadjusted and not any(c.HasField("cuped_theta") for c in revenue.comparisons)
        assert {i.arm_id for i in reply.incremental} == {"mens", "womens"}
        assert all(i.cost > 0 and i.HasField("return_on_cost") for i in reply.incremental)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetLiftReport(
                pb.GetLiftReportRequest(experiment_id=experiment_id, metrics=["nps"]), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "metrics[0]" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetLiftReport(pb.GetLiftReportRequest(experiment_id="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _estimate_from_proto(e: Any) -> dict[str, float | None]:
    names = ("value", "ci_low", "ci_high", "p_value", "standard_error")
    return {name: getattr(e, name) if e.HasField(name) else None for name in names}


def _from_proto(comparisons: Any) -> dict[str, Any]:
    return {
        c.arm_id: (_estimate_from_proto(c.absolute), _estimate_from_proto(c.relative)) for c in comparisons
    }


def _from_json(comparisons: dict[str, Any]) -> dict[str, Any]:
    names = ("value", "ci_low", "ci_high", "p_value", "standard_error")
    return {
        arm: tuple({name: c[part][name] for name in names} for part in ("absolute", "relative"))
        for arm, c in comparisons.items()
    }


def test_grpc_and_the_cli_give_the_same_report_for_the_same_request(
    hillstrom: tuple[Store, Catalog, str],
    hill_server: str,
    migrated: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both left to their defaults (metrics, window, alpha): the same numbers, CUPED's where present."""
    import json

    from nextbest.cli import main
    from nextbest.client import NextbestClient

    _, _, experiment_id = hillstrom
    as_of = T0 + timedelta(days=20)
    with NextbestClient(hill_server, timeout=30.0) as client:
        reply = client.lift_report(experiment_id, as_of=as_of)
    catalog = catalog_file(tmp_path, experiment_id)
    args = ["--catalog", str(catalog), "--database-url", migrated, "--as-of", as_of.isoformat()]
    assert main(["report", "--experiment", experiment_id, *args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)

    assert (reply.control_arm, reply.window_days, reply.as_of.ToDatetime(UTC).isoformat()) == (
        data["control"],
        data["window_days"],
        data["as_of"],
    )
    assert reply.window_days == 14
    assert (reply.excluded_units, list(reply.warnings)) == (data["excluded_units"], data["warnings"])
    srm = reply.sample_ratio
    assert (srm.chi2, srm.p_value) == (data["srm"]["chi2"], data["srm"]["p_value"])
    analysed = data["analysis"]["metrics"]
    assert [m.metric for m in reply.metrics] == list(analysed) == ["conversion", "revenue", "orders"]
    for metric in reply.metrics:
        expected = analysed[metric.metric]
        assert {a.arm_id: (a.units, a.mean, a.variance) for a in metric.arms} == {
            arm: (s["n"], s["mean"], s["variance"]) for arm, s in expected["arms"].items()
        }
        plain = _from_json(expected["comparisons"])
        adjusted = _from_json(expected["cuped"]) if expected["cuped"] else None
        assert _from_proto(metric.comparisons) == (adjusted or plain)
        assert _from_proto(metric.unadjusted) == (plain if adjusted else {})
    assert analysed["revenue"]["cuped"]  # the CUPED comparisons are among those compared
    names = ("extra_conversions", "extra_revenue", "extra_revenue_low", "extra_revenue_high", "cost")
    assert {i.arm_id: tuple(getattr(i, n) for n in names) for i in reply.incremental} == {
        i["arm"]: tuple(i[n] for n in names) for i in data["incremental"]
    }


def test_html_report_is_self_contained_with_charts(
    hillstrom: tuple[Store, Catalog, str], migrated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nextbest.cli import main

    _, _, experiment_id = hillstrom
    catalog = catalog_file(tmp_path, experiment_id)
    output = tmp_path / "report.html"
    assert (
        main(
            [
                "report",
                "--experiment",
                experiment_id,
                "--catalog",
                str(catalog),
                "--database-url",
                migrated,
                "--as-of",
                "2008-03-20T00:00:00Z",
                "--metric",
                "conversion",
                "--format",
                "html",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert str(output) in capsys.readouterr().out
    page = output.read_text()
    assert page.count("<svg") >= 2  # the per-arm lift chart and the cumulative lift over time
    assert "Sample ratio ok" in page and "class='banner'" not in page
    assert "Incremental totals" in page and "mens" in page
    # Nothing is fetched: no scripts, stylesheets, images or links to elsewhere (SVG namespaces are names).
    for external in ("<script", "<link", "<img", 'href="http', "src=", "url(http"):
        assert external not in page


def test_html_report_raises_the_srm_banner() -> None:
    from nextbest.reports.html import report_to_html
    from nextbest.stats import MeanStat
    from nextbest.stats.analysis import analyze

    analysis = analyze(
        {"revenue": {"a": MeanStat(5000, 50.0, 900.0), "b": MeanStat(4000, 60.0, 1000.0)}},
        "a",
        weights={"a": 0.5, "b": 0.5},
    )
    assert analysis.srm is not None
    lift = LiftReport("exp", "a", T0, timedelta(days=14), analysis, {"a": 5000, "b": 4000}, 0, analysis.srm)
    assert "class='banner'>Sample-ratio mismatch" in report_to_html(lift)

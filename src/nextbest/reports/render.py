"""Report rendering: JSON for machines, a terminal table for people."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from nextbest.reports.report import LiftReport
from nextbest.stats.frequentist import Estimate
from nextbest.stats.io import analysis_to_json, clean_json

__all__ = ["report_to_json", "report_to_table"]


def report_to_json(report: LiftReport) -> dict[str, Any]:
    """The report as JSON-ready data: numbers JSON cannot hold (NaN, infinity) become null."""
    return {
        "experiment_id": report.experiment_id,
        "control": report.control,
        "as_of": report.as_of.isoformat(),
        "window_days": report.window.total_seconds() / 86400,
        "units": report.units,
        "excluded_units": report.excluded_units,
        "srm": clean_json(asdict(report.srm)),
        "incremental": [
            clean_json({**asdict(i), "return_on_cost": i.return_on_cost}) for i in report.incremental
        ],
        "warnings": report.warnings,
        "analysis": analysis_to_json(report.analysis),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}%"


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(e: Estimate, percent: bool) -> str:
    fmt = _pct if percent else _num
    return f"[{fmt(e.ci_low)}, {fmt(e.ci_high)}]"


def report_to_table(report: LiftReport) -> str:
    """The report as text for a terminal: each metric's headline comparisons, then the incremental totals
    and the warnings."""
    lines = [
        f"Experiment {report.experiment_id} — control {report.control}, "
        f"as of {report.as_of:%Y-%m-%d %H:%M} UTC, {report.window.days}-day attribution window",
        "Units: " + ", ".join(f"{arm} {n:,}" for arm, n in sorted(report.units.items())),
    ]
    srm = report.srm
    lines.append(
        f"Sample ratio: {'MISMATCH — results not trustworthy' if srm.alarm else 'ok'} "
        f"(chi2 {srm.chi2:.2f}, p {srm.p_value:.3g})"
        if not srm.error
        else f"Sample ratio: {srm.error}"
    )
    for name, metric in report.analysis.metrics.items():
        lines.append("")
        lines.append(f"{name}")
        header = (
            f"  {'arm':<14}{'units':>9}{'mean':>12}{'abs. lift':>12}{'95% CI':>26}{'rel. lift':>11}{'p':>9}"
        )
        lines.append(header)
        for arm, summary in metric.arms.items():
            row = f"  {arm:<14}{summary.n:>9,}{summary.mean:>12.4f}"
            comparison = metric.headline.get(arm)
            if comparison is not None:
                a, r = comparison.absolute, comparison.relative
                p = "n/a" if r.p_value is None else f"{r.p_value:.3g}"
                row += f"{_num(a.value):>12}{_interval(a, False):>26}{_pct(r.value):>11}{p:>9}"
                if a.error:
                    row += f"  ({a.error})"
            else:
                row += f"{'(control)':>12}"
            lines.append(row)
        if metric.cuped_adjusted:
            lines.append("  (CUPED-adjusted with the same metric before exposure)")
    if report.incremental:
        lines.append("")
        lines.append("Incremental over control")
        for inc in report.incremental:
            revenue = "n/a"
            if inc.extra_revenue is not None:
                band = f"[{_num(inc.extra_revenue_low, 2)}, {_num(inc.extra_revenue_high, 2)}]"
                revenue = f"{inc.extra_revenue:,.2f} {band}"
            conversions = "n/a" if inc.extra_conversions is None else f"{inc.extra_conversions:,.1f}"
            roi = (
                ""
                if inc.return_on_cost is None
                else f", cost {inc.cost:,.2f}, return {inc.return_on_cost:,.1f}x"
            )
            lines.append(f"  {inc.arm}: {conversions} extra conversions, revenue {revenue}{roi}")
    for warning in report.warnings:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)

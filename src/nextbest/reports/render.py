"""Report rendering: JSON for machines, a terminal table for people."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from nextbest.reports.report import Incremental, LiftReport
from nextbest.stats.analysis import Verdict
from nextbest.stats.frequentist import Comparison, Estimate
from nextbest.stats.io import analysis_to_json, clean_json

__all__ = ["incremental_text", "report_to_json", "report_to_table", "verdict_text"]


def report_to_json(report: LiftReport) -> dict[str, Any]:
    """The report as JSON-ready data: numbers JSON cannot hold (NaN, infinity) become null."""
    return {
        "experiment_id": report.experiment_id,
        "control": report.control,
        "as_of": report.as_of.isoformat(),
        "window_days": report.window.total_seconds() / 86400,
        "units": report.units,
        "excluded_units": report.excluded_units,
        "erased_units": report.erased_units,
        "srm": clean_json(asdict(report.srm)),
        "incremental": [
            clean_json(
                {
                    **asdict(i),
                    "return_on_cost": i.return_on_cost,
                    "return_on_cost_low": i.return_on_cost_low,
                    "return_on_cost_high": i.return_on_cost_high,
                    "revenue_conclusive": i.revenue_conclusive,
                }
            )
            for i in report.incremental
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


def verdict_text(v: Verdict, comparison: Comparison) -> str:
    """The call in words, with the underpowered warning and the MDE when it applies."""
    text = {"gain": "gain", "loss": "loss", "inconclusive": "inconclusive", "unavailable": "n/a"}[v.call]
    if v.underpowered and comparison.mde_relative is not None:
        mde = f"MDE ±{comparison.mde_relative * 100:.0f}%"
        text = f"{text}? underpowered ({mde})" if v.call in ("gain", "loss") else f"underpowered ({mde})"
    return text


def report_to_table(report: LiftReport) -> str:
    """The report as text for a terminal: each metric's headline comparisons, then the incremental totals
    and the warnings. The p-value tests "no lift", which the absolute and the relative interval share
    (Fieller's interval excludes zero exactly when the absolute one does); the call is made on the
    quantity the verdict names."""
    level = f"{(1 - report.alpha) * 100:g}%"
    kind = "always-valid (sequential)" if report.sequential else "fixed-horizon"
    lines = [
        f"Experiment {report.experiment_id} — control {report.control}, "
        f"as of {report.as_of:%Y-%m-%d %H:%M} UTC, {report.window.days}-day attribution window",
        "Units: "
        + ", ".join(f"{arm} {n:,}" for arm, n in sorted(report.units.items()))
        + (f" ({report.erased_units:,} erased, not counted)" if report.erased_units else ""),
        f"{level} {kind} intervals; p tests no lift (the same test for absolute and relative); "
        "the call is on the relative lift where the control mean is positive",
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
            f"  {'arm':<14}{'units':>9}{'mean':>12}{'abs. lift':>12}{level + ' CI':>24}{'p':>9}"
            f"{'rel. lift':>11}{level + ' CI':>22}  call"
        )
        lines.append(header)
        for arm, summary in metric.arms.items():
            row = f"  {arm:<14}{summary.n:>9,}{summary.mean:>12.4f}"
            comparison = metric.headline.get(arm)
            if comparison is not None:
                a, r = comparison.absolute, comparison.relative
                p = "n/a" if a.p_value is None else f"{a.p_value:.3g}"
                row += f"{_num(a.value):>12}{_interval(a, False):>24}{' ' + p:>9}"  # p < 1e-99 is 9 wide
                row += f"{_pct(r.value):>11}{_interval(r, True):>22}"
                v = (metric.verdicts or {}).get(arm)
                if v is not None:
                    row += f"  {verdict_text(v, comparison)}"
                for error in dict.fromkeys(e for e in (a.error, r.error) if e):
                    row += f"  ({error})"
            else:
                row += f"{'(control)':>12}"
            lines.append(row)
        if metric.cuped_adjusted:
            lines.append("  (CUPED-adjusted with the same metric before exposure)")
    if report.incremental:
        lines.append("")
        lines.append(f"Incremental over control ({level} intervals)")
        for inc in report.incremental:
            lines.append(f"  {inc.arm}: " + incremental_text(inc))
    for warning in report.warnings:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def _band(low: float | None, high: float | None, suffix: str = "") -> str:
    return f"[{_num(low, 2)}{suffix}, {_num(high, 2)}{suffix}]"


def incremental_text(inc: Incremental) -> str:
    """Extra conversions and revenue with their intervals; the revenue and the return on cost are stated
    as results only when the revenue interval excludes zero, else as "inconclusive" with the interval."""
    conversions = "n/a"
    if inc.extra_conversions is not None:
        band = _band(inc.extra_conversions_low, inc.extra_conversions_high)
        conversions = f"{inc.extra_conversions:,.1f} {band}"
    revenue = "n/a"
    band = _band(inc.extra_revenue_low, inc.extra_revenue_high)
    if inc.extra_revenue is not None:
        revenue = f"{inc.extra_revenue:,.2f} {band}" if inc.revenue_conclusive else f"inconclusive {band}"
    text = f"extra conversions {conversions}, extra revenue {revenue}"
    if inc.return_on_cost is not None:
        roi_band = _band(inc.return_on_cost_low, inc.return_on_cost_high, "x")
        roi = (
            f"{inc.return_on_cost:,.1f}x {roi_band}" if inc.revenue_conclusive else f"inconclusive {roi_band}"
        )
        text += f", cost {inc.cost:,.2f}, return on cost {roi}"
    return text

"""The self-contained HTML lift report: charts embedded as inline SVG, no network, no scripts."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from nextbest.reports.render import report_to_table, verdict_text
from nextbest.reports.report import LiftReport

__all__ = ["report_to_html", "write_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
.banner{background:#b00020;color:#fff;padding:.8rem 1rem;border-radius:.3rem;font-weight:600}
.ok{color:#2e7d32} table{border-collapse:collapse} td,th{padding:.25rem .6rem;text-align:right}
th{border-bottom:1px solid #999} td:first-child,th:first-child{text-align:left}
pre{background:#f5f5f5;padding:1rem;overflow-x:auto;font-size:.8rem}
"""


def _band(low: float | None, high: float | None, suffix: str = "") -> str:
    if low is None or high is None:
        return ""
    return f"({low:,.2f}{suffix} … {high:,.2f}{suffix})"


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _lift_chart(report: LiftReport, metric: str) -> str | None:
    """Each arm's headline lift with its interval, coloured by the verdict on that same interval: green a
    gain, red a loss, amber when the sample is too small to detect a plausible effect, grey otherwise."""
    analysis = report.analysis.metrics[metric]
    verdicts = analysis.verdicts or {}
    rows = []
    for arm, comparison in analysis.headline.items():
        v = verdicts.get(arm)
        if v is None or v.estimate(comparison).value is None:
            continue
        rows.append((arm, v, v.estimate(comparison), comparison))
    if not rows:
        return None
    percent = all(v.quantity == "relative" for _, v, _, _ in rows)
    scale = 100.0 if percent else 1.0
    figure, axis = plt.subplots(figsize=(6, 0.6 + 0.5 * len(rows)))
    labels = []
    for index, (arm, v, estimate, comparison) in enumerate(rows):
        value = (estimate.value or 0.0) * scale
        low = (estimate.ci_low if estimate.ci_low is not None else estimate.value or 0.0) * scale
        high = (estimate.ci_high if estimate.ci_high is not None else estimate.value or 0.0) * scale
        color = (
            "#e69500"
            if v.underpowered
            else "#2e7d32"
            if v.call == "gain"
            else "#b00020"
            if v.call == "loss"
            else "#555"
        )
        axis.plot([low, high], [index, index], color=color, linewidth=3)
        axis.plot([value], [index], "o", color=color)
        labels.append(f"{arm}: {verdict_text(v, comparison)}")
    axis.axvline(0, color="#999", linewidth=1)
    axis.set_yticks(range(len(rows)), labels)
    quantity = "relative lift (%), Fieller" if percent else "absolute lift"
    axis.set_xlabel(
        f"{quantity} in {metric} vs {report.control}, {(1 - report.alpha) * 100:g}% interval; "
        "the call is on this interval"
    )
    return _svg(figure)


def _cumulative_chart(history: Sequence[tuple[datetime, LiftReport]], metric: str) -> str | None:
    series: dict[str, list[tuple[datetime, float, float, float]]] = {}
    for day, report in history:
        analysis = report.analysis.metrics.get(metric)
        if analysis is None:
            continue
        for arm, comparison in analysis.headline.items():
            e = comparison.absolute
            if e.value is not None and e.ci_low is not None and e.ci_high is not None:
                series.setdefault(arm, []).append((day, e.value, e.ci_low, e.ci_high))
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(7, 3))
    for arm, points in series.items():
        days = [float(date2num(p[0])) for p in points]
        axis.plot(days, [p[1] for p in points], label=arm)
        axis.fill_between(days, [p[2] for p in points], [p[3] for p in points], alpha=0.2)
    axis.axhline(0, color="#999", linewidth=1)
    axis.set_ylabel(f"absolute lift in {metric}")
    axis.legend()
    locator = AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return _svg(figure)


def report_to_html(report: LiftReport, history: Sequence[tuple[datetime, LiftReport]] = ()) -> str:
    """``history``: the same report as of earlier times, for the cumulative-lift charts."""
    title = f"Lift report — {report.experiment_id}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    srm = report.srm
    if srm.alarm:
        parts.append(
            f"<p class='banner'>Sample-ratio mismatch (χ² {srm.chi2:.1f}, p = {srm.p_value:.2g}): "
            "assignment or logging is broken; do not act on these results.</p>"
        )
    else:
        parts.append(
            f"<p class='ok'>Sample ratio ok ({html.escape(srm.error or f'p = {srm.p_value:.3g}')}).</p>"
        )
    parts.append(
        f"<p>Control <b>{html.escape(report.control)}</b>; as of {report.as_of:%Y-%m-%d %H:%M} UTC; "
        f"{report.window.days}-day attribution window; units: "
        + ", ".join(f"{html.escape(a)} {n:,}" for a, n in sorted(report.units.items()))
        + (f" ({report.erased_units:,} erased, not counted)" if report.erased_units else "")
        + ".</p>"
    )
    if report.incremental:
        parts.append(
            "<h2>Incremental totals</h2><table><tr><th>arm</th><th>units</th><th>extra conversions</th>"
            "<th>extra revenue</th><th>cost</th><th>return on cost</th></tr>"
        )
        for inc in report.incremental:
            conv = "n/a" if inc.extra_conversions is None else f"{inc.extra_conversions:,.1f}"
            conv_band = _band(inc.extra_conversions_low, inc.extra_conversions_high)
            rev_band = _band(inc.extra_revenue_low, inc.extra_revenue_high)
            roi_band = _band(inc.return_on_cost_low, inc.return_on_cost_high, "x")
            # A revenue interval that spans zero is no headline: the interval alone, marked inconclusive.
            if inc.extra_revenue is None:
                rev = roi = "n/a"
            elif inc.revenue_conclusive:
                rev = f"<b>{inc.extra_revenue:,.2f}</b> {rev_band}"
                roi = "n/a" if inc.return_on_cost is None else f"<b>{inc.return_on_cost:,.1f}x</b> {roi_band}"
            else:
                rev = f"inconclusive {rev_band}"
                roi = "n/a" if inc.return_on_cost is None else f"inconclusive {roi_band}"
            parts.append(
                f"<tr><td>{html.escape(inc.arm)}</td><td>{inc.units:,}</td><td>{conv} {conv_band}</td>"
                f"<td>{rev}</td><td>{inc.cost:,.2f}</td><td>{roi}</td></tr>"
            )
        parts.append(f"</table><p>Intervals at {(1 - report.alpha) * 100:g}%.</p>")
    for metric in report.analysis.metrics:
        parts.append(f"<h2>{html.escape(metric)}</h2>")
        for chart in (_lift_chart(report, metric), _cumulative_chart(history, metric)):
            if chart:
                parts.append(chart)
    parts.append(f"<h2>Details</h2><pre>{html.escape(report_to_table(report))}</pre></body></html>")
    return "".join(parts)


def write_html(
    report: LiftReport, history: Sequence[tuple[datetime, LiftReport]], output: str | None
) -> Path:
    """Writes the page to ``output`` (default ``reports/<experiment>.html``) and returns its absolute path."""
    path = Path(output) if output else Path("reports") / f"{report.experiment_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_to_html(report, history), encoding="utf-8")
    return path.resolve()

"""Gate reports: a JSON file for machines and a self-contained HTML page for people.

The HTML embeds its plots as base64 PNG, so the one file can be attached to a pull request, logged
to MLflow or mailed without its images going missing.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bidflow.modeling import explain_report
from bidflow.modeling.plots import png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.config import FilterObjective
    from bidflow.modeling.evaluate import EvaluationReport, ModelEvaluation
    from bidflow.modeling.explain_window import SliceExplanations
    from bidflow.modeling.fairness import FairnessReport

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#176b1b;font-weight:bold}
.fail{color:#b00020;font-weight:bold}tr.fail td{background:#fde7ea}img{margin:.5em 1em .5em 0}
"""


def write_json(payload: Mapping[str, Any], path: Path) -> Path:
    """``payload`` as indented JSON (NaN written as null, which strict JSON readers accept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def evaluation_html(report: EvaluationReport, figures: Mapping[str, Figure]) -> str:
    """The evaluation report as one HTML page."""
    verdict = _verdict(report.gate.passed)
    models = [report.candidate] + ([report.champion] if report.champion else [])
    metric_names = ["auc", "pr_auc", "logloss", "ece", "positive_rate", "mean_prediction"]
    if report.candidate.realized is not None:
        metric_names += ["calls_saved_share", "bid_recall", "value_kept_share", "calls_saved_share_at_target"]
    rows = [[name, *[_num(m.metrics.get(name)) for m in models]] for name in metric_names]
    parts = [
        f"<h1>Evaluation: {escape(report.candidate.ref)} {verdict}</h1>",
        f"<p>Held-out window {escape(report.window[0])} .. {escape(report.window[1])}, {report.rows:,} rows; "
        f"target bid recall {report.target_recall:.1%}, exploration share {report.exploration_share:.1%}.</p>",
        *[f"<p><em>{escape(note)}</em></p>" for note in report.gate.notes],
        "<h2>Gate</h2>",
        _table(
            ["check", "passed", "value", "limit", "rule"],
            [[c.name, _verdict(c.passed), _num(c.value), _num(c.limit), c.detail] for c in report.gate.checks],
            raw_columns={1},
            failing=[not c.passed for c in report.gate.checks],
        ),
        "<h2>Metrics</h2>",
        _table(["metric", *[f"{m.role}: {m.ref}" for m in models]], rows),
    ]
    if report.candidate.realized is not None:
        parts += ["<h2>Bid-filter economics</h2>", oracle_headline(report), _economics_table(models, report.oracle)]
    if report.oracle_gaps:
        parts += ["<h3>Where the candidate falls short of the oracle</h3>", oracle_gap_table(report)]
    explained = [m.explanation for m in models if m.explanation is not None]
    if explained:
        parts += [
            "<h2>Explanations</h2>",
            f"<p>{escape(explain_report.mean_abs_note(explained, report.rows))}</p>",
            _table(*explain_report.mean_abs_table(explained)),
        ]
    parts += ["<h2>Plots</h2>", _images(figures)]
    return _page(f"Evaluation {report.candidate.ref}", parts)


def fairness_html(
    report: FairnessReport,
    title: str,
    figures: Mapping[str, Figure] | None = None,
    explanations: SliceExplanations | None = None,
) -> str:
    """The bias-gate report as one HTML page, failing slices first, then what sets slices apart."""
    failing = report.failing
    parts = [
        f"<h1>Bias gate: {escape(title)} {_verdict(report.passed)}</h1>",
        "<p>Overall: " + ", ".join(f"{k} {_num(v)}" for k, v in report.overall.items()) + "</p>",
    ]
    if failing:
        parts += ["<h2>Failing slices</h2><ul>"]
        parts += [f"<li><b>{escape(s.name)}</b>: {escape('; '.join(s.failures))}</li>" for s in failing]
        parts += ["</ul>"]
    if report.skipped:
        parts.append(f"<p>Slice columns not in the data: {escape(', '.join(report.skipped))}</p>")
    ordered = sorted(report.slices, key=lambda s: (not s.failures, s.feature, -s.rows))
    rows = [
        [
            s.name,
            f"{s.rows:,}",
            f"{s.bids:,}",
            _num(s.bid_recall),
            _num(s.recall_gap),
            _num(s.calibration),
            _num(s.calibration_gap),
            _num(s.ece),
            _num(s.mean_prediction),
            _num(s.bid_rate),
            "yes" if s.gated else "no (small)",
        ]
        for s in ordered
    ]
    header = [
        "slice",
        "rows",
        "bids",
        "bid recall",
        "recall gap",
        "|score - rate|",
        "calibration gap",
        "ECE",
        "mean score",
        "bid rate",
        "gated",
    ]
    parts += ["<h2>Slices</h2>", _table(header, rows, failing=[bool(s.failures) for s in ordered])]
    if explanations is not None:
        parts.append(_slice_explanations(explanations))
    if figures:
        parts += ["<h2>Plots</h2>", _images(figures)]
    return _page(f"Bias gate {title}", parts)


def write_html(text: str, path: Path) -> Path:
    """Write an HTML page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _slice_explanations(explained: SliceExplanations) -> str:
    parts = ["<h2>What sets the slices apart</h2>", f"<p>{escape(explain_report.slice_note(explained))}</p>"]
    for attribution in explained.slices:
        parts += [
            f"<h3>{escape(explain_report.slice_caption(attribution))}</h3>",
            _table(*explain_report.slice_table(attribution)),
        ]
    if not explained.slices:
        parts.append("<p>No slice to explain.</p>")
    return "".join(parts)


def oracle_headline(report: EvaluationReport) -> str:
    """One paragraph: the candidate's calls saved at the target as a share of the oracle's (HTML)."""
    target = f"{report.target_recall:.0%}"
    if report.oracle is None:
        return (
            "<p>These rows carry no oracle (only generated logs do), so the calls saved cannot be compared "
            "with the best possible filter.</p>"
        )
    lines = []
    objectives: tuple[tuple[FilterObjective, str], ...] = (
        ("recall", f"{target} bid recall"),
        ("value", f"{target} of bid value kept"),
    )
    for objective, kept in objectives:
        mine, best = report.candidate.at(objective), report.oracle.at(objective)
        if mine is None or best is None:
            continue
        share = mine.calls_saved_share / best.calls_saved_share if best.calls_saved_share > 0 else float("nan")
        lines.append(
            f"at {kept}: <b>{mine.calls_saved_share:.1%}</b> of partner calls saved, "
            f"<b>{_pct(share)} of the oracle's</b> {best.calls_saved_share:.1%}"
        )
    return (
        f"<p>Candidate against the oracle (the generator's true P(bid) and expected bid value, ranked per partner "
        f"with thresholds chosen on this window): {'; '.join(lines)}. Thresholds follow the "
        f"<code>{escape(report.objective)}</code> objective in serving.</p>"
    )


def oracle_gap_table(report: EvaluationReport, rows: int = 10) -> str:
    """The partners where the candidate saves fewest calls against the oracle (HTML)."""
    target = f"{report.target_recall:.0%}"
    note = (
        f"<p>Calls saved per partner at {target} bid recall, thresholds chosen on this window, exploration "
        f"left out; the {rows} partners with the largest gap first.</p>"
    )
    body = [
        [g.partner, f"{g.calls:,}", f"{g.saved:,}", f"{g.oracle_saved:,}", f"{g.saved - g.oracle_saved:+,}"]
        for g in report.oracle_gaps[:rows]
    ]
    return note + _table(["partner", "calls", "candidate saves", "oracle saves", "difference"], body)


def economics_curves(report: EvaluationReport, candidate: str = "candidate") -> dict[str, list[tuple[float, Any]]]:
    """The bid-recall curves to plot: candidate, champion and oracle (when the rows carry it)."""
    curves = {candidate: report.candidate.curve}
    if report.champion is not None and report.champion.curve:
        curves["champion"] = report.champion.curve
    if report.oracle is not None:
        curves["oracle"] = report.oracle.curve
    return curves


def _economics_table(models: Sequence[ModelEvaluation], oracle: ModelEvaluation | None) -> str:
    rows = []
    for m in [*models, *([oracle] if oracle is not None else [])]:
        for label, e in (
            ("own thresholds", m.realized if m.role != "oracle" else None),
            ("thresholds at target bid recall on this window", m.at_target),
            ("thresholds at target bid value on this window", m.at_value_target),
        ):
            if e is None:
                continue
            rows.append(
                [
                    f"{m.role}: {label}",
                    f"{e.calls:,}",
                    _pct(e.calls_saved_share),
                    f"{e.exploration_calls:,}",
                    _pct(e.bid_recall),
                    _pct(e.value_kept_share),
                ]
            )
    return _table(["model", "calls", "calls saved", "exploration calls", "bids kept", "bid value kept"], rows)


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    raw_columns: set[int] | None = None,
    failing: Sequence[bool] | None = None,
) -> str:
    raw = raw_columns or set()
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="{"l" if i == 0 or i == len(row) - 1 else ""}">{cell if i in raw else escape(cell)}</td>'
            for i, cell in enumerate(row)
        )
        cls = ' class="fail"' if failing is not None and failing[r] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _images(figures: Mapping[str, Figure]) -> str:
    return "".join(
        f'<img alt="{escape(name)}" src="data:image/png;base64,{base64.b64encode(png(fig)).decode()}">'
        for name, fig in figures.items()
    )


def _page(title: str, parts: Sequence[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _verdict(passed: bool) -> str:
    return '<span class="pass">PASSED</span>' if passed else '<span class="fail">FAILED</span>'


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2%}"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

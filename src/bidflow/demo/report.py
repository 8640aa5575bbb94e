"""The demo's one-page report: self-contained HTML (plots embedded as PNG), readable offline.

Sections: data validation, feature importance, explanations (the canary's mean |SHAP| per feature
and summary plot), ROC and calibration, bid-filter economics with the per-partner thresholds,
bias-gate slices, the canary's traffic share over time, drift p-values per feature over time with
the rollback marked and the features whose contributions shifted most, serving latency.

The page carries one small script: it records script errors and, once loaded, how many plots
decoded (``data-plots``, ``data-plots-rendered``, ``data-errors`` on ``<body>``), so a headless
browser check can tell a broken page from a good one.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.kinds import registered_name
from bidflow.modeling import explain_report
from bidflow.modeling.plots import calibration_figure, economics_figure, png, roc_figure
from bidflow.modeling.report import economics_curves, oracle_gap_table, oracle_headline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.config import Config
    from bidflow.data.validate import ValidationReport
    from bidflow.demo.run import DemoOutcome
    from bidflow.modeling.evaluate import EvaluationReport

REPORT_NAME: Final = "report.html"
_TOP_FEATURES: Final = 15
_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#176b1b;font-weight:bold}
.fail{color:#b00020;font-weight:bold}tr.fail td{background:#fde7ea}figure{display:inline-block;margin:.5em 1em .5em 0}
figcaption{font-size:.85em;color:#555;max-width:34em}.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:11em}.card b{display:block;font-size:1.4em}
"""
_SCRIPT: Final = """
(function(){var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));
document.body.setAttribute('data-errors',errors.join(' | '));});
window.addEventListener('load',function(){var imgs=document.querySelectorAll('figure img');var ok=0;
imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++;}});
document.body.setAttribute('data-plots',String(imgs.length));
document.body.setAttribute('data-plots-rendered',String(ok));
document.body.setAttribute('data-errors',errors.join(' | '));});})();
"""
SECTIONS: Final = (
    "Data validation",
    "Feature importance",
    "Explanations",
    "ROC and calibration",
    "Bid-filter economics",
    "Bias gate",
    "Canary traffic",
    "Drift",
    "Serving latency",
)


def write_demo_report(outcome: DemoOutcome, config: Config) -> Path:
    """Build the report from what the demo produced (re-reading the models it registered; logs nothing)."""
    from bidflow.modeling import registry
    from bidflow.modeling.steps import bias_of, evaluation_of

    assert outcome.champion is not None and outcome.canary is not None
    batch = _ingested(outcome.root / "pipeline-2")
    name = registered_name(config, config.canary.kind)
    # The gates' verdicts are already logged by the pipeline; these recompute the scores for the plots only.
    _, _, evaluation = evaluation_of(
        config, config.canary.kind, source=batch, candidate=outcome.canary.version, champion=outcome.champion.version
    )
    _, bias = bias_of(config, config.canary.kind, source=batch, candidate=outcome.canary.version)
    fairness = bias.report
    _, champion_model = registry.load(config.registry, name, outcome.champion.version)
    _, canary_model = registry.load(config.registry, name, outcome.canary.version)

    parts = [_header(outcome)]
    parts.append(_section("Data validation", _validation(outcome.validation, outcome.flood)))
    parts.append(
        _section(
            "Feature importance",
            _figure(
                _importance_figure({outcome.champion.label: champion_model, outcome.canary.label: canary_model}),
                "Total gain per feature (top features of either model). Partner and Feast aggregates dominate.",
            ),
        )
    )
    parts.append(_section("Explanations", _explanations(evaluation, config.explain.plot_features)))
    curves = {f"canary {outcome.canary.label}": (evaluation.y, evaluation.candidate.scores)}
    if evaluation.champion is not None:
        curves[f"champion {outcome.champion.label}"] = (evaluation.y, evaluation.champion.scores)
    parts.append(
        _section(
            "ROC and calibration",
            f"<p>Held-out hour {escape(evaluation.window[0])} to {escape(evaluation.window[1])}, "
            f"{evaluation.rows:,} partner calls. Champion/challenger gate: {_verdict(evaluation.gate.passed)}.</p>"
            + _figure(roc_figure(curves), "ROC of both models on the same rows.")
            + _figure(calibration_figure(curves, config.evaluate.calibration_bins), "Observed bid rate per score bin."),
        )
    )
    econ = economics_curves(evaluation, candidate="canary")
    thresholds = canary_model.policy.thresholds if canary_model.policy is not None else {}
    realized = evaluation.candidate.realized
    summary = ""
    if realized is not None:
        summary = (
            f"<p>At the canary's own per-partner thresholds: <b>{realized.calls_saved_share:.1%}</b> of partner "
            f"calls saved, <b>{realized.bid_recall:.1%}</b> of bids and {realized.value_kept_share:.1%} of bid value "
            f"kept, with {evaluation.exploration_share:.0%} of auctions exploring (every partner called).</p>"
        ) + oracle_headline(evaluation)
        if evaluation.oracle_gaps:
            summary += oracle_gap_table(evaluation, rows=5)
    parts.append(
        _section(
            "Bid-filter economics",
            summary
            + _figure(economics_figure(econ, config.evaluate.target_bid_recall), "Calls saved against bids kept.")
            + _figure(_thresholds_figure(thresholds), "The threshold each partner is called at (score >= threshold)."),
        )
    )
    parts.append(_section("Bias gate", _fairness(fairness)))
    parts.append(_section("Canary traffic", _traffic(outcome)))
    parts.append(_section("Drift", _drift(outcome)))
    parts.append(_section("Serving latency", _latency(outcome)))
    path = config.paths.reports / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page("bidflow demo", parts), encoding="utf-8")
    return path


# -- sections --


def _header(outcome: DemoOutcome) -> str:
    replay = outcome.replay.summary() if outcome.replay else {}
    rollbacks = [t for t in outcome.transitions if t["action"] == "rollback"]
    cards = [
        ("champion", outcome.champion.label if outcome.champion else "-"),
        ("canary", f"{outcome.canary.label} (rolled back)" if outcome.canary and rollbacks else "-"),
        ("auctions replayed", f"{replay.get('sent', 0):,}"),
        ("failed requests", str(replay.get("failed", "-"))),
        ("drift windows", str(len(outcome.monitor.get("history", [])))),
        ("demo time", f"{outcome.seconds:.0f} s"),
    ]
    html = "".join(f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<h1>bidflow demo</h1><p>Written {when}.</p><div class='cards'>{html}</div>"


def _validation(reference: ValidationReport | None, flood: ValidationReport | None) -> str:
    parts = []
    for title, report in (("hours 5-6 against the reference (hours 1-4)", reference), ("the flooded hour", flood)):
        if report is None:
            continue
        rows = [
            [c.kind, c.name, c.column, "pass" if c.passed else "FAIL", c.observed, c.expected] for c in report.checks
        ]
        failing = [not c.passed for c in report.checks]
        table = _table(["kind", "check", "column", "verdict", "observed", "expected"], rows, failing=failing)
        failed = [f"{c.name}({c.column})" for c in report.failures]
        parts.append(
            f"<h3>{escape(title)}: {_verdict(report.passed)}</h3><p>{report.rows:,} rows, {len(report.checks)} checks, "
            f"{len(report.failures)} failed{': ' + escape(', '.join(failed)) if failed else ''}.</p>"
            f"<details{' open' if failed else ''}><summary>every check</summary>{table}</details>"
        )
    return "".join(parts)


def _explanations(evaluation: EvaluationReport, plot_features: int) -> str:
    explained = [m.explanation for m in (evaluation.candidate, evaluation.champion) if m and m.explanation]
    if not explained:
        return "<p>The evaluation explained no model.</p>"
    canary = explained[0]
    return (
        f"<p>{escape(explain_report.mean_abs_note(explained, evaluation.rows))} "
        f"The {plot_features} most important features are shown.</p>"
        + _figure(
            canary.figure(plot_features),
            "The canary's TreeSHAP contributions per row (log-odds), coloured by the feature's value "
            "(blue low, red high; categories by code): which way each feature pushes the score.",
        )
        + _table(*explain_report.mean_abs_table(explained, limit=plot_features))
    )


def _fairness(report: Any) -> str:
    gated = [s for s in report.slices if s.gated]
    ordered = sorted(gated, key=lambda s: -s.recall_gap)[:20]
    figure = _bar_figure(
        [s.name for s in ordered], [s.recall_gap for s in ordered], "bid recall gap to overall", "Largest recall gaps"
    )
    rows = [
        [
            s.name,
            f"{s.rows:,}",
            f"{s.bids:,}",
            f"{s.bid_recall:.3f}",
            f"{s.recall_gap:+.3f}",
            "; ".join(s.failures) or "-",
        ]
        for s in ordered
    ]
    return (
        f"<p>Gate: {_verdict(report.passed)}; {len(gated)} slices gated (enough rows and bids), "
        f"{len(report.failing)} failing.</p>"
        + _figure(figure, "Slices whose bid recall is furthest below the overall value.")
        + _table(
            ["slice", "rows", "bids", "recall", "gap", "failures"], rows, failing=[bool(s.failures) for s in ordered]
        )
    )


def _traffic(outcome: DemoOutcome) -> str:
    replay = outcome.replay
    if replay is None or not replay.timeline:
        return "<p>No traffic was replayed.</p>"
    from matplotlib.figure import Figure

    seconds = sorted(replay.timeline)
    champion = np.array([replay.timeline[s].get("champion", 0) for s in seconds], dtype=float)
    canary = np.array([replay.timeline[s].get("canary", 0) for s in seconds], dtype=float)
    failed = np.array([replay.timeline[s].get("failed", 0) for s in seconds], dtype=float)
    figure = Figure(figsize=(8.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.stackplot(seconds, champion, canary, failed, labels=["champion", "canary", "failed"],
                 colors=["#4c72b0", "#dd8452", "#c44e52"])  # fmt: skip
    for t in _events(outcome, replay.started_at):
        ax.axvline(t[0], color="black", linestyle="--")
        ax.annotate(t[1], (t[0], ax.get_ylim()[1] * 0.92), xytext=(4, 0), textcoords="offset points", fontsize="small")
    ax.set(xlabel="seconds since the replay started", ylabel="answers per second", title="Who answered")
    ax.legend(loc="upper right", fontsize="small")
    share = replay.roles.get("canary", 0) / max(1, replay.ok)
    rows = [[t["action"], f"v{t['model']['version']}", t["actor"], _when(t["at"]), "; ".join(t["reasons"]) or "-"]
            for t in outcome.transitions]  # fmt: skip
    return (
        f"<p>{replay.ok:,} answers, {replay.failed} failed; the canary answered {share:.1%} of them before and "
        "none after the rollback.</p>"
        + _figure(figure, "Answers per second by model; the dashed line is the automatic rollback.")
        + _table(["transition", "version", "by", "when", "why"], rows)
    )


def _drift(outcome: DemoOutcome) -> str:
    history = outcome.monitor.get("history", [])
    if not history:
        return "<p>No detection window closed.</p>"
    from matplotlib.figure import Figure

    start = outcome.replay.started_at if outcome.replay else min(h["at"] for h in history)
    figure = Figure(figsize=(8.0, 4.6), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True, sharex=True)
    threshold = None
    for ax, role in zip(axes, ("champion", "canary"), strict=True):
        windows = [h for h in history if h["role"] == role]
        if not windows:
            ax.set_title(f"{role}: no window")
            continue
        threshold = windows[0]["report"]["threshold"]
        names = [f["name"] for f in windows[0]["report"]["features"]]
        for name in names:
            xs, ys = [], []
            for h in windows:
                found = [f for f in h["report"]["features"] if f["name"] == name]
                if found and found[0]["p_value"] is not None:
                    xs.append(h["at"] - start)
                    ys.append(max(found[0]["p_value"], 1e-12))
            ax.plot(xs, ys, marker="o", label=name)
        ax.axhline(threshold, color="grey", linestyle=":", label="threshold")
        for t in _events(outcome, start):
            ax.axvline(t[0], color="black", linestyle="--")
        ax.set(yscale="log", xlabel="seconds since the replay started", title=f"{role} traffic")
    axes[0].set_ylabel("p-value (log)")
    axes[1].legend(loc="lower left", fontsize="x-small", ncol=2)
    rows = []
    for h in history:
        drifted = [f["name"] for f in h["report"]["features"] if f["drift"]]
        rows.append([h["role"], f"v{h['version']}", _when(h["at"]), str(h["report"]["n_current"]),
                     ", ".join(drifted) or "-", h["action"] or "-"])  # fmt: skip
    return (
        f"<p>alibi-detect TabularDrift (K-S for numbers, Chi-square for categories) and K-S on the mean score, "
        f"per window of {outcome.monitor.get('roles', {}).get('canary', {}).get('window_size', '?')} auctions, "
        f"Bonferroni-corrected threshold {f'{threshold:.2g}' if threshold is not None else '?'}.</p>"
        + _figure(figure, "p-value of each feature's test per window; below the dotted line is drift.")
        + _table(["traffic", "model", "window closed", "auctions", "drifted features", "action"], rows)
        + rollback_attribution(outcome.transitions)
    )


def rollback_attribution(transitions: Sequence[Mapping[str, Any]]) -> str:
    """Under each automatic rollback, the features whose contributions shifted most (the monitor records them)."""
    parts = []
    for t in transitions:
        if t.get("action") != "rollback":
            continue
        version = t.get("model", {}).get("version", "?")
        attribution = (t.get("metrics") or {}).get("attribution")
        title = f"Rollback of v{version}: features whose contributions shifted most"
        if not isinstance(attribution, Mapping):
            parts.append(f"<h3>{escape(title)}</h3><p>No attribution was recorded with this rollback.</p>")
            continue
        if not attribution.get("features"):  # the monitor could not explain the window, and says why
            why = str(attribution.get("error") or "no feature was compared")
            parts.append(f"<h3>{escape(title)}</h3><p>No attribution could be made: {escape(why)}</p>")
            continue
        parts.append(
            f'<h3 class="attribution">{escape(title)}</h3>'
            f"<p>{escape(explain_report.shift_caption(attribution))}. {escape(explain_report.SHIFT_NOTE)}</p>"
            + _table(*explain_report.shift_table(attribution))
        )
    return "".join(parts)


def _latency(outcome: DemoOutcome) -> str:
    replay = outcome.replay
    if replay is None or not replay.latencies_ms:
        return "<p>No traffic was replayed.</p>"
    from matplotlib.figure import Figure

    latencies = np.asarray(replay.latencies_ms)
    qs = (50, 90, 99, 99.9)
    values = np.percentile(latencies, qs)
    figure = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.hist(latencies, bins=60, color="#4c72b0")
    for q, v in zip(qs, values, strict=True):
        ax.axvline(v, linestyle="--", color="black")
        ax.annotate(f"p{q:g}", (v, ax.get_ylim()[1] * 0.9), xytext=(3, 0), textcoords="offset points", fontsize="small")
    ax.set(xlabel="ms per auction (client side, through the router)", ylabel="requests", title="Latency")
    rows = [[f"p{q:g}", f"{v:.2f} ms"] for q, v in zip(qs, values, strict=True)]
    router = [[role, str(f.get("requests", "-")), str(f.get("errors", "-")), str(f.get("p50_ms")), str(f.get("p99_ms"))]
              for role, f in outcome.router.items() if role in ("champion", "canary")]  # fmt: skip
    return (
        f"<p>{len(latencies):,} requests at {replay.summary()['auctions_per_s']}/s with 8 in flight, one auction "
        "each, every partner scored (Feast online lookup included), on the same 2 cores as the client, the "
        "router, both model servers and the monitor.</p>"
        + _figure(figure, "Client-side latency per auction.")
        + _table(["percentile", "latency"], rows)
        + "<p>The router's view since the last transition:</p>"
        + _table(["model", "requests", "errors", "p50 ms", "p99 ms"], router)
    )


# -- plots and HTML pieces --


def _importance_figure(models: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    gains = {label: model.booster.get_score(importance_type="total_gain") for label, model in models.items()}
    names = next(iter(models.values())).spec.names
    total: dict[str, float] = {}
    for scores in gains.values():
        for key, value in scores.items():
            name = names[int(key[1:])] if key.startswith("f") and key[1:].isdigit() else key
            total[name] = total.get(name, 0.0) + value
    top = sorted(total, key=lambda k: -total[k])[:_TOP_FEATURES][::-1]
    figure = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = figure.subplots()
    height = 0.8 / max(1, len(gains))
    for i, (label, scores) in enumerate(gains.items()):
        by_name = {names[int(k[1:])] if k.startswith("f") and k[1:].isdigit() else k: v for k, v in scores.items()}
        ax.barh(np.arange(len(top)) + i * height, [by_name.get(n, 0.0) for n in top], height=height, label=label)
    ax.set_yticks(np.arange(len(top)) + height / 2, top, fontsize="small")
    ax.set(xlabel="total gain", title="Feature importance")
    ax.legend(loc="lower right", fontsize="small")
    return figure


def _thresholds_figure(thresholds: Mapping[str, float]) -> Figure:
    ordered = sorted(thresholds, key=lambda p: thresholds[p])
    return _bar_figure(ordered, [thresholds[p] for p in ordered], "threshold (score)", "Per-partner thresholds")


def _bar_figure(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, max(2.5, 0.22 * len(labels) + 1.0)), layout="constrained")
    ax = figure.subplots()
    ax.barh(range(len(labels)), values, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.set(xlabel=xlabel, title=title)
    return figure


def _events(outcome: DemoOutcome, start: float) -> list[tuple[float, str]]:
    return [(t["at"] - start, f"{t['action']} v{t['model']['version']}") for t in outcome.transitions
            if t["action"] == "rollback" and t["at"] >= start]  # fmt: skip


def _ingested(workdir: Path) -> Path:
    (run,) = (workdir / "outputs").iterdir()
    return run / "ingest-logs" / "batch"


def _figure(figure: Figure, caption: str) -> str:
    data = base64.b64encode(png(figure)).decode()
    return (
        f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], failing: Sequence[bool] | None = None) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="{"l" if i in (0, len(row) - 1) else ""}">{escape(c)}</td>' for i, c in enumerate(row)
        )
        cls = ' class="fail"' if failing is not None and failing[r] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _page(title: str, parts: Sequence[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>{''.join(parts)}</body></html>\n"
    )


def _verdict(passed: bool) -> str:
    return '<span class="pass">PASSED</span>' if passed else '<span class="fail">FAILED</span>'


def _when(at: float) -> str:
    if not math.isfinite(at):
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")

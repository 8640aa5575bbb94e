"""``bidflow explain``'s outputs: a text table, one self-contained HTML page, or JSON.

All three carry the same things: per explained row its score (and decision, for kinds that decide
per partner), the base value and the top contributions; the mean |contribution| per feature over
the explained rows; and every refused line with its number, field and message. Contributions are
in log-odds (the model's margin), where they add up: base value + contributions = margin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from bidflow.serving.explain_file import ExplainedRow, FileExplanations, Refusal

Format = Literal["table", "html", "json"]
FORMATS: Final = ("table", "html", "json")

MEAN_ABS_NOTE: Final = (
    "Mean |contribution| per feature over the {rows:,} explained rows: how far a feature moves this model's "
    "scores on these requests on average, in log-odds (TreeSHAP, exact for trees), largest first."
)
_VALUE_WIDTH: Final = 40  # a feature value longer than this is cut in the text table


def render(result: FileExplanations, fmt: Format) -> str:
    """``result`` as text in ``fmt``."""
    if fmt == "html":
        return html_page(result)
    if fmt == "json":
        return json_text(result)
    return table_text(result)


def table_text(result: FileExplanations) -> str:
    """One block per row (its label and line, score, decision, base value, then its contributions), then refusals."""
    blocks = [_heading(result)]
    for row in result.rows:
        blocks.append(_row_block(row))
    means = result.mean_abs()
    if means:
        width = max(len(name) for name in means)
        lines = [MEAN_ABS_NOTE.format(rows=result.explained_rows)]
        lines += [f"  {name:<{width}}  {value:.4f}" for name, value in means.items()]
        blocks.append("\n".join(lines))
    if result.refused:
        lines = [f"Refused {len(result.refused):,} of {result.lines:,} lines (the :explain route answers them 400):"]
        lines += [f"  {refusal.describe()}" for refusal in result.refused]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def html_page(result: FileExplanations) -> str:
    """One self-contained page: the mean |contribution| table, the refused lines, then each row's contributions."""
    # The gate reports' page and style: every report of the project reads alike.
    from bidflow.modeling.report import _page

    parts = [f"<h1>Explanations: {escape(result.source)}</h1>", f"<p>{escape(_heading(result))}</p>"]
    means = result.mean_abs()
    parts.append("<h2>Mean |contribution| over the explained rows</h2>")
    if means:
        parts += [
            f"<p>{escape(MEAN_ABS_NOTE.format(rows=result.explained_rows))}</p>",
            _table(["feature", "mean |contribution|"], [[n, f"{v:.4f}"] for n, v in means.items()], numeric={1}),
        ]
    else:
        parts.append("<p>No row could be explained.</p>")
    if result.refused:
        parts += [
            f"<h2>Refused lines ({len(result.refused):,} of {result.lines:,})</h2>",
            "<p>Lines the model server's <code>:explain</code> route answers with a 400, or not JSON.</p>",
            _table(["line", "field", "error", "expected", "got"], [_refusal_cells(r) for r in result.refused], {0}),
        ]
    parts.append(f"<h2>Rows ({len(result.rows):,})</h2>")
    for row in result.rows:
        parts += [f"<h3>{escape(row.label)}</h3>", f"<p>{escape(_facts(row))}</p>"]
        if row.contributions:
            cells = [[str(c["feature"]), _value(c["value"]), f"{c['contribution']:+.4f}"] for c in row.contributions]
            parts.append(_table(["feature", "value", "contribution"], cells, numeric={2}))
    return _page(f"Explanations {result.source}", parts)


def json_text(result: FileExplanations) -> str:
    """The raw ``:explain`` answers per line (contributions cut to ``top``), the refused lines and the means."""
    payload = {
        "source": result.source,
        "model": {"name": result.model, "version": result.version},
        "top": result.top,
        "lines": result.lines,
        "explained_lines": result.explained_lines,
        "explained_rows": result.explained_rows,
        "mean_abs_contribution": result.mean_abs(),
        "explanations": result.answers,
        "refused": [refusal.to_json() for refusal in result.refused],
    }
    return json.dumps(_finite(payload), indent=2) + "\n"


def summary(result: FileExplanations, limit: int = 10) -> str:
    """The run in a few lines: what was explained, what failed open, and the first ``limit`` refused lines."""
    lines = [
        f"explained {result.explained_rows:,} rows of {result.explained_lines:,} of {result.lines:,} lines "
        f"({result.model} version {result.version})"
    ]
    failed = result.fail_open_rows
    if failed:
        reasons = sorted({row.fail_open_reason or "" for row in failed})
        lines.append(f"{len(failed):,} rows failed open (online features missing: {', '.join(reasons)})")
    if result.refused:
        lines.append(f"refused {len(result.refused):,} lines:")
        lines += [f"  {refusal.describe()}" for refusal in result.refused[:limit]]
        if len(result.refused) > limit:
            lines.append(f"  ... and {len(result.refused) - limit:,} more")
    return "\n".join(lines)


def _heading(result: FileExplanations) -> str:
    shown = "every contribution" if result.top == 0 else f"the top {result.top} contributions"
    return (
        f"{result.source}: {result.model} version {result.version}; {result.explained_rows:,} rows explained from "
        f"{result.explained_lines:,} of {result.lines:,} lines, {len(result.refused):,} refused; {shown} per row "
        "(log-odds: base value + contributions = margin)"
    )


def _row_block(row: ExplainedRow) -> str:
    title = row.label if row.label.startswith("line ") else f"{row.label} (line {row.line})"
    lines = [title, f"  {_facts(row)}"]
    if row.contributions:
        cells = [(str(c["feature"]), _value(c["value"])[:_VALUE_WIDTH], f"{c['contribution']:+.4f}")
                 for c in row.contributions]  # fmt: skip
        widths = [max(len(h), *(len(cell[i]) for cell in cells)) for i, h in enumerate(("feature", "value"))]
        lines.append(f"  {'feature':<{widths[0]}}  {'value':<{widths[1]}}  contribution")
        lines += [f"  {f:<{widths[0]}}  {v:<{widths[1]}}  {c:>12}" for f, v, c in cells]
    return "\n".join(lines)


def _facts(row: ExplainedRow) -> str:
    """Score, threshold and decision, base value and margin, and why features were missing."""
    facts = [f"score {_number(row.score)}"]
    if row.threshold is not None:
        facts.append(f"threshold {_number(row.threshold)}")
    if row.decision is not None:
        facts.append(f"decision {row.decision}")
    if row.score is not None:
        facts += [f"base value {_number(row.base_value, signed=True)}", f"margin {_number(row.margin, signed=True)}"]
    if row.fail_open_reason is not None:
        what = "served with the feature defaults" if row.score is not None else "every partner called, no score"
        facts.append(f"failed open ({row.fail_open_reason}: {what})")
    return ", ".join(facts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """An HTML table in the reports' style: text left, the ``numeric`` columns right (cells escaped here)."""

    def cell(tag: str, i: int, text: str) -> str:
        align = "" if i in numeric else ' class="l"'
        return f"<{tag}{align}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _refusal_cells(refusal: Refusal) -> list[str]:
    return [str(refusal.line), refusal.field, refusal.error, refusal.expected or "", refusal.got or ""]


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _value(value: Any) -> str:
    """A feature's value as the user wrote it: a category, a number, ``missing``."""
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _finite(value: Any) -> Any:
    """JSON-ready: a non-finite float as null (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_finite(v) for v in value]
    return value

"""Explanations as report tables: the rows the evaluation, bias and demo reports show.

Each report renders these with its own table markup; the wording and the numbers live here once, so
a mean |SHAP| table or a drift attribution reads the same wherever it appears. Numbers are log-odds
(signed where a direction means something) and cells are plain text for the caller to escape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from bidflow.modeling.explain_window import ModelExplanation, SliceAttribution, SliceExplanations

MEAN_ABS_NOTE: Final = (
    "Mean |SHAP| per feature: how far a feature moves a model's score on average, in log-odds "
    "(TreeSHAP, exact for trees), on {rows:,} held-out rows{sampled}. Ordered by the {first}."
)
SLICE_NOTE: Final = (
    "Per feature, its mean contribution (TreeSHAP, log-odds) in the slice minus its mean over all {rows:,} "
    "explained rows{sampled}. TreeSHAP is additive, so the differences of all features add up exactly to the "
    "slice's mean margin minus the overall mean margin: the table, with its 'other features' row, accounts for "
    "the whole gap. Slices shown: {selection}."
)
SHIFT_NOTE: Final = (
    "Per feature, the mean contribution (TreeSHAP, log-odds) over the drifted traffic minus that over the "
    "reference rows. Over every feature the shifts add up to the move of the mean margin; these moved most."
)


class Table(NamedTuple):
    """A table's header and rows, every cell plain text."""

    header: list[str]
    rows: list[list[str]]


def mean_abs_note(explanations: Sequence[ModelExplanation], window: int) -> str:
    """The sentence above a mean |SHAP| table; ``window`` is the rows the explained ones were drawn from."""
    rows = explanations[0].rows if explanations else 0
    first = explanations[0].role if explanations else "candidate"
    return MEAN_ABS_NOTE.format(rows=rows, sampled=_sampled(rows, window), first=first)


def mean_abs_table(explanations: Sequence[ModelExplanation], limit: int = 0) -> Table:
    """Feature, then each model's mean |SHAP|, ordered by the first model's (the candidate's).

    A feature only another model reads follows, by that model's value; ``-`` where a model lacks
    the feature. ``limit`` keeps the first rows (0: all).
    """
    order: list[str] = []
    for explanation in explanations:
        order += [name for name in explanation.mean_abs if name not in order]
    if limit > 0:
        order = order[:limit]
    rows = [[name, *[_value(e.mean_abs.get(name)) for e in explanations]] for name in order]
    return Table(["feature", *[f"{e.role}: {e.ref}" for e in explanations]], rows)


def slice_note(explained: SliceExplanations) -> str:
    """The sentence above the slices' tables."""
    sampled = _sampled(explained.rows, explained.window)
    return SLICE_NOTE.format(rows=explained.rows, sampled=sampled, selection=explained.selection)


def slice_caption(attribution: SliceAttribution) -> str:
    """One slice's heading: its name, verdict, rows and mean margin gap."""
    verdict = "failing" if attribution.failing else "passing"
    return (
        f"{attribution.slice} ({verdict}): {attribution.rows:,} explained rows; mean margin "
        f"{attribution.margin_difference:+.4f} log-odds from the overall mean"
    )


def slice_table(attribution: SliceAttribution) -> Table:
    """The features pushing a slice away from the population, the rest, and their total."""
    rows = [
        [f.feature, f"{f.slice_mean:+.4f}", f"{f.overall_mean:+.4f}", f"{f.difference:+.4f}"]
        for f in attribution.features
    ]
    if attribution.others:
        rows.append([f"other features ({attribution.others})", "", "", f"{attribution.rest:+.4f}"])
    rows.append(["total = slice mean margin - overall mean margin", "", "", f"{attribution.total:+.4f}"])
    return Table(["feature", "mean in slice", "mean overall", "difference"], rows)


def shift_caption(attribution: Mapping[str, Any]) -> str:
    """Which model and how many rows a drift attribution compared."""
    role, version = attribution.get("role", "?"), attribution.get("version", "?")
    caption = (
        f"{role} v{version}: mean contributions of {_count(attribution.get('rows'))} rows of the drifted "
        f"traffic against {_count(attribution.get('reference_rows'))} reference rows"
    )
    moved = attribution.get("mean_margin_shift")
    if isinstance(moved, (int, float)) and math.isfinite(moved):
        caption += f"; the mean margin moved {moved:+.4f} log-odds"
    return caption


def shift_table(attribution: Mapping[str, Any]) -> Table:
    """A drift attribution (``explain.shift``'s entries) as feature, reference, current, shift."""
    rows = []
    for moved in attribution.get("features") or []:
        if not isinstance(moved, Mapping) or "feature" not in moved:
            continue  # written by another service: show what is readable
        rows.append(
            [
                str(moved["feature"]),
                _signed(moved.get("reference")),
                _signed(moved.get("current")),
                _signed(moved.get("shift")),
            ]
        )
    return Table(["feature", "mean contribution, reference", "mean contribution, drifted", "shift"], rows)


def _sampled(rows: int, window: int) -> str:
    return f" (a seeded sample of the {window:,} rows in the window)" if rows < window else ""


def _value(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _signed(value: object) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:+.4f}"
    return "-"


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"

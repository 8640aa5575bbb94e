"""The metric names a PromQL expression reads: what rules and panels promise the servers export.

Not a PromQL parser (Prometheus checks the syntax: ``promtool check rules`` and the tests' real
Prometheus): it drops what cannot be a metric name (string literals, label matchers, ranges,
grouping label lists, Grafana variables, numbers and durations) and keeps the identifiers that are
neither keywords nor function or aggregation names (those are followed by an opening parenthesis).
That is enough for the expressions this package writes, and it errs on the side of reporting a
name: a word it cannot place is reported, so a check over it fails loudly rather than passing.
"""

from __future__ import annotations

import re
from typing import Final

_STRINGS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES: Final = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS: Final = re.compile(r"\{[^}]*\}")
_RANGES: Final = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER: Final = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
     "inf", "nan", "Inf", "NaN", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names (series names, with their ``_total``/``_bucket``/... suffix) ``expr`` selects.

    Recorded series (``bidflow:...``, names with a colon) are returned too: a caller tells them apart.
    """
    text = _STRINGS.sub(" ", expr)
    text = _GRAFANA_VARIABLES.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}

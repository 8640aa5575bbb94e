"""Helpers for the OpenRTB tests: JSON paths as the decoder reports them."""

from __future__ import annotations

import re
from typing import Any

_SEGMENT = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]|\['(?P<quoted>(?:[^'\\]|\\.)*)'\]")


def parse_path(path: str) -> list[str | int]:
    """``$.imp[0].ext['a-b']`` -> ``['imp', 0, 'ext', 'a-b']``; raises ValueError if not a JSON path."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSON path: {path!r}")
    out: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"bad JSON path {path!r} at {pos}")
        if m.group("name") is not None:
            out.append(m.group("name"))
        elif m.group("index") is not None:
            out.append(int(m.group("index")))
        else:
            out.append(re.sub(r"\\(.)", r"\1", m.group("quoted")))
        pos = m.end()
    return out


def path_points_into(doc: Any, path: str) -> bool:
    """True when ``path`` names a value of ``doc``, or a missing key of an object in ``doc``.

    The second case is a missing required field (``$.imp[0].id`` of an impression without id).
    """
    node = doc
    segments = parse_path(path)
    for k, seg in enumerate(segments):
        last = k == len(segments) - 1
        if isinstance(seg, int):
            if not isinstance(node, list) or seg >= len(node):
                return False
            node = node[seg]
        else:
            if not isinstance(node, dict):
                return False
            if seg not in node:
                return last
            node = node[seg]
    return True

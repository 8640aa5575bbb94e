"""Helpers for the serving tests: generated auctions with their logged rows, fixture contexts, JSON paths."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.unit.openrtb.openrtb_testutil import endpoint_context, known_bidders
from tests.unit.openrtb.openrtb_testutil import path_points_into as points_into

FIXTURES = "openrtb_prebid_fixtures"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def logged_auctions(raw: Path) -> Iterator[dict[str, Any]]:
    """Every auction record (request, ts_ms, outcomes) of a generated log folder, in file order."""
    for path in sorted(raw.rglob("*.jsonl.gz")):
        yield from read_jsonl(path)


__all__ = ["FIXTURES", "endpoint_context", "known_bidders", "logged_auctions", "points_into", "read_jsonl"]

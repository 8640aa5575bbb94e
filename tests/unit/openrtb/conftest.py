"""Fixtures for the OpenRTB tests: the shared real-world data, loaded once per session."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

# <repo>/../shared/data: the data lives beside the repository and is never copied into it.
SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory. A missing directory fails the test: skipping would hide it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data directory not found at {SHARED_DATA.resolve()}; these tests read the real fixtures there"
        )
    return SHARED_DATA.resolve()


def _read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        pytest.fail(f"fixture file not found: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def bidder_exchanges(shared_data: Path) -> list[dict[str, Any]]:
    """Records of ``openrtb_prebid_fixtures/bidder_exchanges.jsonl.gz`` (see its PROVENANCE.md)."""
    return _read_jsonl_gz(shared_data / "openrtb_prebid_fixtures" / "bidder_exchanges.jsonl.gz")


@pytest.fixture(scope="session")
def auction_endpoint(shared_data: Path) -> list[dict[str, Any]]:
    """Records of ``openrtb_prebid_fixtures/auction_endpoint_requests.jsonl.gz``."""
    return _read_jsonl_gz(shared_data / "openrtb_prebid_fixtures" / "auction_endpoint_requests.jsonl.gz")


@pytest.fixture(scope="session")
def spec_examples(shared_data: Path) -> Path:
    return shared_data / "openrtb_spec_examples"

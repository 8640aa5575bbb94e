"""Shared test fixtures: where the real data lives, and small generated auction logs."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bidflow.config import SimulateConfig
from bidflow.data.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
START = datetime(2026, 11, 2, 8, tzinfo=UTC)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public ad data beside the repository (read-only, never copied into it)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}: clone the project with ../shared beside it")
    return SHARED_DATA


def read_log(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def small_config(**overrides: Any) -> SimulateConfig:
    settings: dict[str, Any] = {"start": START, "hours": 2, "auctions_per_hour": 3_000, "publishers": 120}
    return SimulateConfig.model_validate(settings | overrides)


@pytest.fixture(scope="session")
def generated_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hours of baseline traffic, generated once per test session."""
    out = tmp_path_factory.mktemp("raw")
    simulate(small_config(), out)
    return out


@pytest.fixture
def make_logs(tmp_path: Path) -> Callable[..., Path]:
    """Generate logs with config overrides into a fresh folder."""

    def make(**overrides: Any) -> Path:
        out = tmp_path / f"raw-{len(list(tmp_path.iterdir()))}"
        simulate(small_config(**overrides), out)
        return out

    return make

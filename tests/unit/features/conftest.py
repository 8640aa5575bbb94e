"""Fixtures for the feature-store tests: a private store in a temp folder, crafted offline rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bidflow.config import FeaturesConfig
from bidflow.features import store as feature_store
from tests.unit.features.support import FEATURE_REPO, WriteViews, features_config, view_frame


@pytest.fixture
def cfg(tmp_path: Path) -> FeaturesConfig:
    return features_config(tmp_path)


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repo's Feast objects by name (for schemas in crafted rows)."""
    objects = feature_store.load_definitions(FEATURE_REPO, str(tmp_path_factory.mktemp("defs")))
    return {o.name: o for o in objects}


@pytest.fixture
def write_views(cfg: FeaturesConfig, definitions: dict[str, Any]) -> WriteViews:
    """Write crafted rows for the given views; every other view of the repo gets one far-away row."""

    def write(rows_by_view: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        cfg.offline.mkdir(parents=True, exist_ok=True)
        for name, view in definitions.items():
            if type(view).__name__ != "FeatureView":
                continue
            rows = rows_by_view.get(name)
            if rows is None:  # a placeholder so the source exists; no test entity matches it
                placeholder = {e.name: (-1 if str(e.dtype) == "Int64" else "~") for e in view.entity_columns}
                rows = [placeholder | {"event_timestamp": datetime(2020, 1, 1, tzinfo=UTC)}]
            view_frame(view, rows).to_parquet(cfg.offline / f"{name}.parquet", index=False)

    return write


@pytest.fixture
def applied(cfg: FeaturesConfig) -> Iterator[Any]:
    """A store with the repo's definitions applied (sources under ``cfg.offline``)."""
    store = feature_store.open_store(cfg)
    feature_store.apply(store, cfg)
    yield store

"""A filter ranked by expected bid value serves the decisions its policy makes offline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config, EvaluateConfig
from bidflow.data.partners import PARTNER_IDS
from bidflow.modeling import train
from bidflow.modeling.economics import PRICE_COLUMNS, price_estimate
from bidflow.modeling.train import TrainedModel
from tests.unit.modeling.conftest import QUICK

# Each partner's mean CPM, and each slice's price relative to it (a fixed market for the test).
BASE = {p: 0.4 + 0.25 * i for i, p in enumerate(PARTNER_IDS)}
SLICE_RATIOS = (1.3, 0.8, 1.1)


def price_block(partners: Sequence[str]) -> np.ndarray:
    base = np.array([BASE[p] for p in partners])
    return np.column_stack([base, *[base * r for r in SLICE_RATIOS]])


class _PriceReader:
    """An online reader serving only the four price columns, as ``price_block`` gives them."""

    feature_names = PRICE_COLUMNS
    backend = "sqlite"

    def __init__(self) -> None:
        self._shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None = None

    def features(self, partners: Sequence[str], *context: Any, at: float | None = None) -> np.ndarray:
        rows = price_block(partners)
        return self._shape(rows, partners) if self._shape is not None else rows

    def set_shape(self, shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None) -> None:
        self._shape = shape

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def value_model(split_rows: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    from bidflow.kinds.bid_filter import spec

    rows = split_rows[0]
    prices = price_block(rows["partner"].astype(str).tolist())
    frame = rows.assign(**{name: prices[:, i] for i, name in enumerate(PRICE_COLUMNS)})
    return train.fit(frame, spec(PRICE_COLUMNS, "bid_filter"), QUICK, policy=EvaluateConfig(objective="value"))


def test_the_value_objective_ranks_by_expected_bid_value(value_model: TrainedModel) -> None:
    policy = value_model.policy
    assert policy is not None and policy.objective == "value" and policy.ranking == "expected_value"
    assert type(policy).from_json(policy.to_json()) == policy


def test_served_decisions_are_the_offline_policys(
    value_model: TrainedModel, bid_logs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    from bidflow.serving import base as served
    from bidflow.serving.bid_filter import BidFilterModel
    from bidflow.serving.online import GuardedReader
    from bidflow.serving.server import build_app

    monkeypatch.setattr(served, "open_reader", lambda *a, **k: GuardedReader(_PriceReader(), cooldown_s=60))  # type: ignore[arg-type]
    monkeypatch.setattr(served, "load_trained", lambda config, source: (value_model, "value-test"))
    model = BidFilterModel("bid_filter_value", Config(), served.ModelSource("bid_filter_value", uri=str(tmp_path)))
    assert model.load(), model.not_ready_reason
    policy = value_model.policy
    assert policy is not None
    checked = skipped = 0
    with TestClient(build_app([model])) as client:
        for record in bid_logs[:200]:
            partners = [o["partner"] for o in record["outcomes"]]
            body = {"instances": [{"request": record["request"], "ts_ms": record["ts_ms"], "partners": partners}]}
            response = client.post("/v1/models/bid_filter_value:predict", json=body)
            assert response.status_code == 200, response.text
            prediction = response.json()["predictions"][0]
            estimate = price_estimate(price_block(partners)[:, 0], [price_block(partners)[:, j] for j in (1, 2, 3)])
            for decision, cpm in zip(prediction["decisions"], estimate, strict=True):
                # The answered threshold is the CPM threshold over the call's estimate: what the score must reach.
                assert decision["threshold"] * cpm == pytest.approx(policy.threshold(decision["partner"]))
                offline = policy.should_call(record["request"]["id"], decision["partner"], decision["score"], cpm)
                assert (decision["decision"] == "call") is offline
                checked += 1
                skipped += decision["decision"] == "skip"
    assert checked > 1000 and skipped > 0


def test_a_value_policy_needs_a_model_that_reads_prices(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bidflow.serving import base as served
    from bidflow.serving.bid_filter import BidFilterModel

    assert trained.policy is not None
    wrong = replace(trained, policy=replace(trained.policy, objective="value", ranking="expected_value"))
    monkeypatch.setattr(served, "load_trained", lambda config, source: (wrong, "wrong"))
    model = BidFilterModel("bid_filter_wrong", Config(), served.ModelSource("bid_filter_wrong", uri=str(tmp_path)))
    assert not model.load()
    assert "reads no partner prices" in (model.not_ready_reason or "")


def test_the_served_scaling_is_the_offline_estimate() -> None:
    from bidflow.serving.value_scale import scale_thresholds

    rng = np.random.default_rng(11)
    x = rng.lognormal(0.0, 1.0, size=(400, 9)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan  # unknown prices
    x[rng.random(x.shape) < 0.05] = 0.0  # a slice that never bid
    x[:5, 2] = -1.0
    columns = (2, 7, 0, 5)
    thresholds = rng.random(400)
    estimate = price_estimate(x[:, 2].astype(np.float64), [x[:, j].astype(np.float64) for j in (7, 0, 5)])
    np.testing.assert_allclose(scale_thresholds(thresholds, x, columns), thresholds / estimate, rtol=1e-12)

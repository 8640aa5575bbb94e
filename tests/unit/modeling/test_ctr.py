"""The second model through the same path: CTR on the real iPinYou campaign-2997 sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from bidflow.config import Config, RegistryConfig
from bidflow.modeling import ctr, inputs, registry, steps
from bidflow.modeling.evaluate import evaluate
from tests.unit.modeling.conftest import QUICK


@pytest.fixture(scope="module")
def ipinyou(shared_data: Path) -> Path:
    return shared_data / "ipinyou_2997_sample" / "train.csv.gz"


def test_reader_stamps_rows_by_hour_and_keeps_values_as_written(ipinyou: Path) -> None:
    frame = ctr.read_ipinyou_impressions(ipinyou, Config().features.ctr_day)
    assert len(frame) == 26_773 and frame["click"].sum() == 255
    assert sorted(frame[ctr.TIME].dt.hour.unique()) == [16, 17, 18, 19]
    assert (frame["adexchange"] == "null").all()  # 'null' is a value here, not a missing one


def test_ctr_model_trains_registers_and_beats_chance_on_the_latest_hour(
    ipinyou: Path, registry_cfg: RegistryConfig
) -> None:
    config = Config.model_validate(
        {
            "train": QUICK.model_dump() | {"feature_source": "request", "min_category_count": 10},
            "registry": registry_cfg.model_dump() | {"models": {"ctr": "ctr_test"}},
        }
    )
    outcome = steps.train_step(config, "ctr", source=ipinyou)
    assert outcome.version is not None and outcome.version.name == "ctr_test"
    assert outcome.model.policy is None  # no bid-filter thresholds for a CTR model
    assert outcome.rows == 26_773 - 6_678  # hour 19 held out for evaluation
    _, loaded = registry.load(registry_cfg, "ctr_test", registry.CANDIDATE)

    rows = inputs.load_rows(config, "ctr", source=ipinyou)
    _, holdout = inputs.split_holdout(rows, config.evaluate.holdout_hours)
    report = evaluate(holdout, loaded, None, config.evaluate)
    assert report.candidate.realized is None
    assert report.candidate.metrics["auc"] > 0.55
    assert report.gate.passed and report.gate.checks == ()

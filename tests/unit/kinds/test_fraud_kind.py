"""The fraud kind: registered, listed, trained by the tabular loop; its model beats raw ids when velocity matters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.config import Config, FraudConfig
from bidflow.errors import ModelError
from bidflow.kinds import kind
from bidflow.kinds.fraud import NAME
from bidflow.modeling.fraud import RAW, VELOCITY, compare, economics, scores, split
from tests.conftest import SHARED_DATA

DAY0 = 1_509_926_400  # 2017-11-06 00:00 UTC


def test_listed_and_trained_through_the_tabular_loop() -> None:
    result = CliRunner().invoke(cli, ["kinds"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and NAME in result.output
    found = kind(Config(), NAME)
    assert found.feature_service == NAME and found.tabular and found.pipeline is not None
    found.require_tabular("train")  # accepted
    spec = found.spec(VELOCITY, NAME)
    assert spec.names == (*RAW, *VELOCITY) and spec.categorical == () and spec.label == "is_attributed"
    rows = found.load_rows(Config(), SHARED_DATA / "talkingdata_adtracking_sample" /
                           "train_sample_2017-11-06_to_08.csv.gz", None, None)  # fmt: skip
    assert len(rows) == 71_439 and rows["ts"].is_monotonic_increasing and rows["is_attributed"].sum() == 168
    assert str(rows["ts"].dt.tz) == "UTC" and (rows["ts"].astype("int64") // 10**9 == rows["click_time"]).all()
    assert (rows["hour"] == rows["ts"].dt.hour).all()
    assert set(found.fields) == {"ip", "app", "device", "os", "channel", "click_time"} <= set(rows.columns)


def test_the_window_and_the_entity_rows(tmp_path: Path) -> None:
    source = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
    found = kind(Config(), NAME)
    since = datetime(2017, 11, 8, tzinfo=UTC)
    rows = found.load_rows(Config(), source, since, None)
    assert len(rows) == 34_035 and rows["ts"].min() >= pd.Timestamp(since)
    entities = found.entities(Config(), source, since, datetime(2017, 11, 8, 1, tzinfo=UTC))
    assert set(entities.columns) == {"is_attributed", "ip", "app", "device", "os", "event_timestamp"}
    assert len(entities) == 1_950
    with pytest.raises(ModelError, match="no TalkingData clicks"):
        found.load_rows(Config(), source, datetime(2020, 1, 1, tzinfo=UTC), None)


def synthetic_clicks(n: int = 6_000, seed: int = 0) -> pd.DataFrame:
    """Three days of clicks where converting clicks come from quiet IPs and bots click in bursts."""
    rng = np.random.default_rng(seed)
    ts = np.sort(DAY0 + rng.integers(0, 3 * 86_400, n))
    ip = rng.integers(0, 800, n)
    bots = rng.random(n) < 0.5
    ip[bots] = rng.integers(800, 820, bots.sum())  # 20 busy IPs
    converting = ~bots & (rng.random(n) < 0.08)
    frame = pd.DataFrame({"event_id": [f"s{i}" for i in range(n)], "ip": ip, "app": rng.integers(0, 5, n),
                          "device": rng.integers(0, 2, n), "os": rng.integers(0, 3, n),
                          "channel": rng.integers(0, 6, n), "ts": ts,
                          "is_attributed": converting.astype(np.int64)})  # fmt: skip
    frame["day"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    return frame


def test_velocity_features_beat_raw_ids_when_velocity_gives_fraud_away() -> None:
    report, model = compare(synthetic_clicks(), FraudConfig(holdout_day="2017-11-08", bootstrap=100))
    velocity, raw, logistic = (report.models[m] for m in ("velocity_xgboost", "raw_ids_xgboost", "raw_ids_logistic"))
    assert velocity.auc > max(raw.auc, logistic.auc) and velocity.pr_auc > max(raw.pr_auc, logistic.pr_auc)
    assert velocity.auc_low <= velocity.auc <= velocity.auc_high
    assert set(model.booster.feature_names or ()) == {*RAW, *VELOCITY} and model.spec.names == (*RAW, *VELOCITY)
    assert report.rows["holdout"] == sum(synthetic_clicks()["day"] == "2017-11-08")
    assert 0 <= report.economics.conversions_lost <= 1


def test_a_split_without_positives_is_a_model_error() -> None:
    clicks = synthetic_clicks(600).assign(is_attributed=0)
    with pytest.raises(ModelError, match="no positive"):
        split(clicks, "2017-11-08", 0.25)


def test_scores_and_economics() -> None:
    y = np.array([0, 0, 1, 1, 0, 1] * 50)
    p = np.where(y == 1, 0.8, 0.2)
    found = scores(y, p, resamples=100, seed=1)
    assert found.auc == found.auc_low == found.auc_high == found.pr_auc == 1.0
    money = economics(y, p, y, p, keep=0.95)
    assert money.conversions_lost == 0 and money.flagged_share == pytest.approx(0.5)


def test_train_command_writes_model_and_report(tmp_path: Path) -> None:
    source = tmp_path / "clicks.csv"
    frame = synthetic_clicks(3_000, seed=2)
    stamps = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.assign(click_time=stamps, attributed_time="").drop(columns=["event_id", "ts", "day"]).to_csv(
        source, index=False
    )
    env = {"BIDFLOW__FRAUD__BOOTSTRAP": "100"}
    result = CliRunner().invoke(cli, ["fraud", "train", str(source), "--out", str(tmp_path / "out")], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model").is_dir() and "velocity_xgboost" in result.output

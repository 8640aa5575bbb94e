"""``python -m bidflow.engines.spark_jobs``: the command a Spark cluster runs, one step per call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bidflow.config import Config
from bidflow.data.batch import read_frame
from bidflow.engines.spark_jobs import main
from bidflow.features.build import BID_TABLES

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture
def config_file(spark_built: Config, tmp_path: Path) -> Path:
    path = tmp_path / "bidflow.yaml"
    path.write_text(yaml.safe_dump(spark_built.model_dump(mode="json", by_alias=True)), "utf-8")
    return path


def test_features_and_training_set_steps_write_what_they_say(
    config_file: Path, bid_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "views"
    assert main(["features", "--config", str(config_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.parquet" for name in BID_TABLES)
    assert f"6 views under {out}" in capsys.readouterr().out

    rows = tmp_path / "training-set"
    assert main(["training-set", "--config", str(config_file), "--out", str(rows)]) == 0
    written = pd.read_parquet(rows)
    assert len(written) == len(read_frame(bid_parquet))  # every call once, none dropped
    assert f"wrote {len(written)} training rows" in capsys.readouterr().out
    # The first hour's calls have no earlier view row: their rates are the views' defaults (NaN here).
    assert written["partner_stats__bid_rate_24h"].notna().mean() > 0.5


def test_train_reads_the_written_training_set_and_leaves_out_the_hold_out(
    config_file: Path, spark_built: Config, bid_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bidflow.modeling import inputs, train

    rows = tmp_path / "training-set"
    assert main(["training-set", "--config", str(config_file), "--out", str(rows)]) == 0
    capsys.readouterr()
    model_dir = tmp_path / "model"
    args = ["train", "--config", str(config_file), "--training-set", str(rows), "--out", str(model_dir)]
    assert main([*args, "--no-register"]) == 0
    calls = read_frame(bid_parquet)
    trained_on, held_out = inputs.split_holdout(calls, spark_built.evaluate.holdout_hours)
    assert f"trained bid_filter on {len(trained_on)} rows with xgboost.spark" in capsys.readouterr().out
    model = train.load_model(model_dir)
    assert model.info["engine"] == "spark" and model.policy is not None
    # The hold-out hour was not trained on: the validation window is the hour before it.
    last_trained = trained_on["ts"].max().floor("h")
    assert model.info["validation_from"] == last_trained.isoformat()
    assert held_out["ts"].min().floor("h") > last_trained

    missing = ["train", "--config", str(config_file), "--training-set", str(tmp_path / "absent")]
    assert main(missing) == 2
    assert "training set not found" in capsys.readouterr().err


def test_a_user_mistake_is_a_message_and_an_exit_status(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "bidflow.engines.spark_jobs", "features", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "configuration file not found" in done.stderr and "Traceback" not in done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "bidflow.engines.spark_jobs", "ingest-everything", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert usage.returncode == 2 and "invalid choice" in usage.stderr

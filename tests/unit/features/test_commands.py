"""``bidflow features ...`` end to end on generated traffic, as a user runs it (SQLite, temp folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.errors import FeatureStoreError
from tests.conftest import REPO, SHARED_DATA


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "BIDFLOW__FEATURES__OFFLINE": str(tmp_path / "offline"),
        "BIDFLOW__FEATURES__STATE": str(tmp_path / "state"),
        "BIDFLOW__FEATURES__PROJECT": "bidflow_cli",
        "BIDFLOW__FEATURES__CTR_SOURCE": str(SHARED_DATA / "ipinyou_2997_sample" / "train.csv.gz"),
    }


def invoke(*args: str, env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"{args}: {result.output}"


def test_build_apply_materialize_training_set(ingested: Path, tmp_path: Path, env: dict[str, str]) -> None:
    window = ["--since", "2026-11-02T09:00:00", "--until", "2026-11-02T09:15:00"]
    invoke("features", "build", str(ingested), env=env)
    invoke("features", "build-ctr", env=env)
    invoke("features", "apply", env=env)
    invoke("features", "materialize", "--start", "2026-11-01T00:00:00", "--end", "2026-11-02T10:00:00", env=env)
    invoke("features", "training-set", str(ingested), "--out", str(tmp_path / "train.parquet"), *window, env=env)
    invoke("features", "training-set", "--service", "ctr", "--out", str(tmp_path / "ctr.parquet"), env=env)
    assert (tmp_path / "state" / "online_store.db").is_file()
    train = pd.read_parquet(tmp_path / "train.parquet")
    logged = pd.read_parquet(ingested)
    in_window = logged[(logged.ts >= "2026-11-02T09:00:00Z") & (logged.ts < "2026-11-02T09:15:00Z")]
    assert len(train) == len(in_window) > 0  # no row lost, whatever Feast dropped
    assert "partner_stats__bid_rate_24h" in train.columns and "bid" in train.columns
    assert train["partner_stats__calls_24h"].gt(0).all()  # hour 09 sees the rows built from hour 08
    ctr = pd.read_parquet(tmp_path / "ctr.parquet")
    assert len(ctr) == 26_773 and "ctr_domain_stats__ctr_24h" in ctr.columns


def test_missing_offline_data_is_a_feature_store_error(env: dict[str, str]) -> None:
    invoke("features", "apply", env=env)
    result = CliRunner().invoke(cli, ["features", "materialize", "--start", "2026-11-01T00:00:00"], env=env)
    assert isinstance(result.exception, FeatureStoreError)
    assert "offline feature source(s) do not exist" in str(result.exception)
    assert "bidflow features build" in str(result.exception)


def test_missing_repo_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bidflow.cli", "features", "apply"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"COLUMNS": "200", "BIDFLOW__FEATURES__REPO": str(tmp_path / "nope")},
        timeout=120,
    )
    assert result.returncode == 1
    assert "feature repository not found" in result.stderr and "Traceback" not in result.stderr

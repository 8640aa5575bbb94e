"""``engine: spark`` end to end: the bid-filter pipeline under kfp.local, its steps on local Spark.

ingest_logs ingests each hourly file as a Spark task, build_features writes the views on Spark,
train_model trains with xgboost.spark on a training set joined on Spark, evaluate_model joins the
held-out hour on Spark; the rest of the pipeline (validate, Feast apply and materialize, the gates,
register, deploy) reads their outputs unchanged.
Each task is its own process and starts its own local Spark session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.pipelines.test_local_pipeline import pip_shim, raw_logs, run_pipeline, task_dirs, versions
from tests.integration.spark.conftest import SPARK

__all__ = ["pip_shim", "raw_logs"]

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


@pytest.mark.timeout(1_500)
def test_the_bid_filter_pipeline_runs_on_spark(tmp_path: Path, raw_logs: Path, pip_shim: Path) -> None:
    settings = {
        "ingest": {"engine": "spark"},
        "features": {"engine": "spark"},
        "train": {"engine": "spark"},
        "spark": SPARK.model_dump(),
    }
    # Each Spark task starts its own JVM: on a loaded 2-core machine the run took 566 s.
    result = run_pipeline(tmp_path, raw_logs, pip_shim, settings, router=True, timeout_s=1_200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "evaluation gate passed" in result.stdout and "bias gate passed" in result.stdout
    assert "registered bid_filter v1 as 'candidate'" in result.stdout
    assert {"build-features", "train-model", "evaluate-model", "register-model"} <= task_dirs(tmp_path)
    # The views are Spark's parquet folders, and the registered model was trained by xgboost.spark.
    assert (tmp_path / "features" / "partner_stats.parquet").is_dir()
    (version,) = versions(tmp_path)
    from bidflow.config import RegistryConfig
    from bidflow.modeling import registry

    cfg = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=tmp_path / "art")
    _, model = registry.load(cfg, "bid_filter", version.version)
    assert model.info["engine"] == "spark"

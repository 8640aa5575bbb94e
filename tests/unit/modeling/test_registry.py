"""The MLflow adapter on an embedded SQLite store: aliases move as promised, models load back identically."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import RegistryConfig
from bidflow.errors import RegistryError
from bidflow.modeling import registry
from bidflow.modeling.lineage import DataVersion, content_hash, data_version
from bidflow.modeling.train import TrainedModel

Rows = tuple[pd.DataFrame, pd.DataFrame]
DATA = DataVersion("test-data", "0" * 64, "sha256")


def _log(cfg: RegistryConfig, model: TrainedModel, rows: pd.DataFrame, name: str) -> registry.ModelRef:
    _, ref = registry.log_training(cfg, model, model_name=name, data=DATA, example=rows)
    assert ref is not None
    return ref


def test_aliases_move_as_expected(registry_cfg: RegistryConfig, trained: TrainedModel, split_rows: Rows) -> None:
    name = f"bid_filter_{uuid.uuid4().hex[:8]}"
    first = _log(registry_cfg, trained, split_rows[1], name)
    assert first.version == "1" and first.aliases == (registry.CANDIDATE,)
    assert registry.champion(registry_cfg, name) is None

    promoted = registry.promote(registry_cfg, name)
    assert promoted.previous is None
    assert promoted.champion.version == "1"
    assert set(promoted.champion.aliases) == {registry.CANDIDATE, registry.CHAMPION}

    second = _log(registry_cfg, trained, split_rows[1], name)
    assert second.version == "2" and second.aliases == (registry.CANDIDATE,)
    assert registry.resolve(registry_cfg, name, registry.CANDIDATE).version == "2"
    champion = registry.champion(registry_cfg, name)
    assert champion is not None and champion.version == "1" and champion.aliases == (registry.CHAMPION,)

    promoted = registry.promote(registry_cfg, name)
    assert promoted.champion.version == "2"
    assert promoted.previous is not None and promoted.previous.version == "1"
    # The old champion keeps its version (only the alias moved) and still loads.
    old = registry.resolve(registry_cfg, name, "1")
    assert old.aliases == () and old.run_id == first.run_id
    assert [v.version for v in registry.versions(registry_cfg, name)] == ["2", "1"]
    _, reloaded = registry.load(registry_cfg, name, "1")
    assert reloaded.best_iteration == trained.best_iteration


def test_logged_model_loads_back_and_predicts_identically(
    registry_cfg: RegistryConfig, trained: TrainedModel, split_rows: Rows
) -> None:
    import mlflow.pyfunc

    name = f"bid_filter_{uuid.uuid4().hex[:8]}"
    ref = _log(registry_cfg, trained, split_rows[1], name)
    holdout = split_rows[1]
    _, loaded = registry.load(registry_cfg, name, registry.CANDIDATE)
    assert np.array_equal(loaded.predict(holdout), trained.predict(holdout))
    assert loaded.spec == trained.spec and loaded.encoder == trained.encoder and loaded.policy == trained.policy

    # MLflow's own pyfunc flavor scores the encoded columns (its signature) identically too.
    with registry.tracking(registry_cfg):
        pyfunc = mlflow.pyfunc.load_model(ref.uri)
    encoded = pd.DataFrame(trained.matrix(holdout.head(500)), columns=list(trained.spec.names))
    assert np.array_equal(np.asarray(pyfunc.predict(encoded), dtype=np.float64), trained.predict(holdout.head(500)))
    schema = pyfunc.metadata.get_input_schema()
    assert schema is not None and schema.input_names() == list(trained.spec.names)


def test_run_carries_data_version_and_feature_service(
    registry_cfg: RegistryConfig, trained: TrainedModel, split_rows: Rows
) -> None:
    from mlflow import MlflowClient

    name = f"bid_filter_{uuid.uuid4().hex[:8]}"
    run_id, _ = registry.log_training(
        registry_cfg, trained, model_name=name, data=DATA, example=split_rows[1], register=False
    )
    run = MlflowClient(registry_cfg.tracking_uri).get_run(run_id)
    assert run.data.tags["data.version"] == DATA.value and run.data.tags["data.version_source"] == "sha256"
    assert run.data.tags["feature_service"].startswith("none")
    assert run.data.params["xgb.tree_method"] == "hist"
    assert run.data.metrics["valid_auc"] == pytest.approx(trained.metrics["valid_auc"])


def test_unknown_alias_or_version_is_a_registry_error(registry_cfg: RegistryConfig) -> None:
    with pytest.raises(RegistryError, match="has no alias 'champion'"):
        registry.resolve(registry_cfg, "no_such_model", registry.CHAMPION)
    with pytest.raises(RegistryError, match="has no version '7'"):
        registry.resolve(registry_cfg, "no_such_model", "7")
    assert registry.champion(registry_cfg, "no_such_model") is None


def test_unreachable_backends_fail_fast_with_a_registry_error(tmp_path: Path) -> None:
    started = time.monotonic()
    closed_port = RegistryConfig(tracking_uri="postgresql+psycopg://postgres@127.0.0.1:1/mlflow")
    with pytest.raises(RegistryError, match="tracking database is unreachable"):
        registry.champion(closed_port, "bid_filter")
    with pytest.raises(RegistryError, match="tracking server is unreachable"):
        registry.champion(RegistryConfig(tracking_uri="http://127.0.0.1:1"), "bid_filter")
    with pytest.raises(RegistryError, match="folder of the SQLite"):
        registry.champion(RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/missing/mlflow.db"), "bid_filter")
    assert time.monotonic() - started < 20


def test_tracking_uri_is_restored_after_a_call(registry_cfg: RegistryConfig) -> None:
    import mlflow

    mlflow.set_tracking_uri("file:///tmp/somewhere-else")
    try:
        registry.champion(registry_cfg, "no_such_model")
        assert mlflow.get_tracking_uri() == "file:///tmp/somewhere-else"
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_data_version_prefers_dvc_lock(tmp_path: Path) -> None:
    data = tmp_path / "data" / "parquet"
    (data / "hour=1").mkdir(parents=True)
    (data / "hour=1" / "part.parquet").write_bytes(b"rows")
    (data / "_quarantine").mkdir()
    (data / "_quarantine" / "bad.jsonl").write_bytes(b"ignored")
    hashed = data_version(data, tmp_path / "dvc.lock")
    assert hashed.source == "sha256" and hashed.value == content_hash(data)
    (data / "_quarantine" / "bad.jsonl").write_bytes(b"changed")  # not data: same version
    assert content_hash(data) == hashed.value
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/parquet\n      md5: abc123.dir\n"
    )
    locked = data_version(data, tmp_path / "dvc.lock")
    assert (locked.source, locked.value) == ("dvc.lock", "abc123.dir")
    clicks = tmp_path.parent / f"{tmp_path.name}-shared" / "clicks.csv.gz"  # an input beside the repository
    clicks.parent.mkdir()
    clicks.write_bytes(b"ip,app")
    assert data_version(clicks, tmp_path / "dvc.lock").source == "sha256"
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  fraud:\n    deps:\n"
        f"    - path: ../{clicks.parent.name}/clicks.csv.gz\n      md5: def456\n"
    )
    tracked = data_version(clicks, tmp_path / "dvc.lock")
    assert (tracked.source, tracked.value) == ("dvc.lock", "def456")

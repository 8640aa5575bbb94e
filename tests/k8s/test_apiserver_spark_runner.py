"""``spark.runner: operator``: the pipeline's Spark steps go to the Spark Operator, and their results come back.

The ``build_features`` and ``train_model`` components run as a pipeline task runs them (their bodies, with the
pipeline runner's token), configured with ``features.engine``/``train.engine: spark`` and ``spark.runner:
operator``. No Spark Operator or Spark cluster runs here, so a stand-in does the operator's part for real: for
each SparkApplication a task creates, it waits for its ConfigMap, runs the application's job (``python -m
bidflow.engines.spark_jobs`` with the application's own arguments and the ConfigMap's bidflow.yaml, on local
Spark where spark-submit would have set the cluster's master), and writes SUBMITTED, RUNNING, then COMPLETED or
FAILED with the job's last lines, as the operator does. The tasks' output artifacts live in S3 (``moto_server``
speaking the S3 protocol on loopback): the job writes its report and the model bundle there, the task reads
them back. What this cannot show: Spark's own S3A reads (the batch is a local folder), IRSA, and the driver pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bidflow.deploy import spark_application as sa
from bidflow.errors import EngineError
from tests.integration.spark.conftest import SPARK, feature_config
from tests.k8s.cluster import ApiServer
from tests.k8s.test_apiserver import crd_installed
from tests.k8s.test_apiserver_spark import Operator, account_kubeconfig, release, spark_crd_installed
from tests.moto_server import moto_endpoint, s3_bucket
from tests.unit.modeling.conftest import bid_parquet

__all__ = ["bid_parquet", "crd_installed", "moto_endpoint", "release", "spark_crd_installed"]

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(1800)]

BUCKET = "bidflow-pipeline-root"
JOB_TIMEOUT_S = 900
CONFIG_PATH = f"{sa.CONFIG_DIR}/{sa.CONFIG_FILE}"


@dataclass
class Artifact:
    """What the KFP launcher hands a task for one artifact: its remote URI and the local path it uploads from."""

    uri: str
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value


@dataclass
class Ran:
    """One application the stand-in ran."""

    name: str
    arguments: list[str]
    returncode: int
    log: str


class StandInOperator:
    """Runs each SparkApplication created in ``namespace`` here, and writes its states as the operator would."""

    def __init__(self, apiserver: ApiServer, namespace: str, workdir: Path) -> None:
        self.custom = client.CustomObjectsApi(apiserver.client)
        self.core = client.CoreV1Api(apiserver.client)
        self.status = Operator(apiserver, namespace)  # writes status as the operator does
        self.namespace = namespace
        self.workdir = workdir
        self.ran: list[Ran] = []
        self.errors: list[BaseException] = []  # the stand-in's own failures, which fail the application too
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StandInOperator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=JOB_TIMEOUT_S)

    def _serve(self) -> None:
        seen: set[str] = set()
        while not self._stop.is_set():
            listed = self.custom.list_namespaced_custom_object(sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL)
            for app in listed["items"]:
                name = app["metadata"]["name"]
                if name in seen:
                    continue
                seen.add(name)
                try:
                    self._run(app)
                except Exception as exc:  # the task must not wait out its timeout for the stand-in's mistake
                    self.errors.append(exc)
                    self._set_state(name, "FAILED", error=f"stand-in operator: {exc!r}")
            time.sleep(0.1)

    def _run(self, app: dict[str, Any]) -> None:
        name, spec = app["metadata"]["name"], app["spec"]
        self._set_state(name, "SUBMITTED")
        config_path = self.workdir / name / sa.CONFIG_FILE
        config_path.parent.mkdir(parents=True)
        (volume,) = spec["volumes"]
        config = yaml.safe_load(self._config_map(volume["configMap"]["name"])[sa.CONFIG_FILE])
        assert config["spark"]["master"] == sa.IN_CLUSTER_MASTER
        config["spark"]["master"] = SPARK.master  # what spark-submit in the driver pod points the session at
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        arguments = list(spec["arguments"])
        assert spec["mainApplicationFile"] == sa.LAUNCHER and arguments[1:3] == ["--config", CONFIG_PATH]
        arguments[2] = str(config_path)
        self._set_state(name, "RUNNING")
        done = subprocess.run(
            [sys.executable, "-m", "bidflow.engines.spark_jobs", *arguments],
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            env=os.environ | {"SPARK_LOCAL_IP": "127.0.0.1"},
            check=False,
        )
        log = done.stdout[-3000:] + done.stderr[-3000:]
        self.ran.append(Ran(name, list(spec["arguments"]), done.returncode, log))
        if done.returncode == 0:
            self._set_state(name, "COMPLETED")
        else:
            self._set_state(name, "FAILED", error=done.stderr.strip()[-1500:])

    def _config_map(self, name: str) -> dict[str, str]:
        """The application's ConfigMap, once the submitter has created it (the driver pod waits for it too)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return dict(self.core.read_namespaced_config_map(name, self.namespace).data)
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _set_state(self, name: str, state: str, error: str = "") -> None:
        self.status.set_state(name, state, error)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The pipeline root bucket in moto's S3 (the task and the job reach it through pyarrow)."""
    with s3_bucket(moto_endpoint, BUCKET, monkeypatch) as root:
        yield root


def pipeline_config(root: Path, namespace: str, parquet: Path, **train: Any) -> tuple[Any, str]:
    """A configuration with Spark features and training on the operator, as the pipeline's ``config`` text."""
    settings = feature_config(root, "bidflow_operator_test", paths={"parquet": str(parquet)}, train=train)
    data = settings.model_dump(mode="json", by_alias=True)
    data["features"]["engine"] = "spark"
    data["train"]["engine"] = "spark"
    data["spark"] |= {"runner": "operator", "kubernetes": {"namespace": namespace, "timeout_s": JOB_TIMEOUT_S}}
    return settings, yaml.safe_dump(data)


def test_features_and_training_run_as_spark_applications_and_their_results_come_back(
    release: str, apiserver: ApiServer, s3: str, bid_parquet: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bidflow.components.apply_features import apply_features
    from bidflow.components.build_features import build_features
    from bidflow.components.train_model import train_model
    from bidflow.modeling import train

    monkeypatch.setenv("KUBECONFIG", str(account_kubeconfig(apiserver, release, "pipeline-runner", tmp_path)))
    settings, text = pipeline_config(tmp_path / "store", release, bid_parquet)
    batch = Artifact(uri=str(bid_parquet), path=str(bid_parquet))
    features = Artifact(uri=f"{s3}/run-1/build-features/features", path=str(tmp_path / "task" / "features"))
    model = Artifact(uri=f"{s3}/run-1/train-model/model", path=str(tmp_path / "task" / "model"))
    metrics = Artifact(uri=f"{s3}/run-1/train-model/metrics", path=str(tmp_path / "task" / "metrics"))

    with StandInOperator(apiserver, release, tmp_path / "operator") as operator:
        build_features.python_func(batch=batch, config=text, features=features)
        apply_features.python_func(config=text)
        train_model.python_func(
            batch=batch, config=text, kind="bid_filter", feature_source="", model=model, metrics=metrics
        )

    assert not operator.errors
    assert [r.returncode for r in operator.ran] == [0, 0], [r.log for r in operator.ran]
    built, trained = operator.ran
    assert built.arguments[0] == "features" and trained.arguments[0] == "train"
    # The jobs read the batch at its artifact URI and wrote their results beside the tasks' artifacts.
    assert built.arguments[built.arguments.index("--batch") + 1] == str(bid_parquet)
    assert trained.arguments[trained.arguments.index("--report") + 1] == f"{model.uri}.spark/report.json"
    assert "--no-register" in trained.arguments

    # The build's manifest (what materialize_features reads) holds what the job wrote to the offline store.
    offline = Path(settings.features.offline)
    assert sorted(features.metadata["views"]) == sorted(p.name.removesuffix(".parquet") for p in offline.iterdir())
    assert all(rows > 0 for rows in features.metadata["rows"].values())

    # The model artifact is the bundle the job trained, and its metadata names the job's MLflow run.
    bundle = train.load_model(Path(model.path))
    assert bundle.info["engine"] == "spark" and bundle.policy is not None
    import mlflow

    run = mlflow.MlflowClient(settings.registry.tracking_uri).get_run(model.metadata["run_id"])
    assert run.info.status == "FINISHED"
    assert model.metadata["model_uri"] == f"runs:/{run.info.run_id}/model"
    assert metrics.metrics["valid_auc"] == pytest.approx(bundle.metrics["valid_auc"])
    assert metrics.metrics["valid_auc"] > 0.7


def test_a_failed_job_fails_the_task_with_the_drivers_message(
    release: str, apiserver: ApiServer, s3: str, bid_parquet: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bidflow.components.train_model import train_model

    monkeypatch.setenv("KUBECONFIG", str(account_kubeconfig(apiserver, release, "pipeline-runner", tmp_path)))
    _, text = pipeline_config(tmp_path / "store", release, bid_parquet, refit=True)  # refit: not on Spark
    batch = Artifact(uri=str(bid_parquet), path=str(bid_parquet))
    model = Artifact(uri=f"{s3}/run-2/train-model/model", path=str(tmp_path / "model"))
    with StandInOperator(apiserver, release, tmp_path / "operator") as operator, pytest.raises(EngineError) as failed:
        train_model.python_func(
            batch=batch, config=text, kind="bid_filter", feature_source="", model=model, metrics=Artifact("", "")
        )
    assert not operator.errors
    (ran,) = operator.ran
    assert ran.returncode == 1
    message = str(failed.value)
    assert "ended FAILED" in message and "without refit" in message and "kubectl logs" in message
    assert not Path(model.path).exists()

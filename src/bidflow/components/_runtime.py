"""What component bodies share at run time: reading the config, and handing results to KFP's artifacts.

These adapt core results to KFP's output types (as ``bidflow.modeling.registry`` adapts them to
MLflow); they decide nothing. Imported inside component bodies, so they run in the task's process.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bidflow.config import Config, load_config
from bidflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy.typing as npt

    from bidflow.features.build import BuildSummary
    from bidflow.modeling.inputs import FeatureSource

CONFIG_PARAMETER = "pipeline parameter 'config'"


def config(text: str) -> Config:
    """The ``Config`` from the text of a ``bidflow.yaml`` (empty: the defaults), plus env overrides.

    The same loader as the CLI's ``--config``: strict validation, and ``BIDFLOW__SECTION__KEY``
    environment variables (secrets the pipeline attaches to the task) applied on top.

    Every component body calls this first, so it also marks where the task's start-up ends
    (``bidflow.components._timing``, for the pipeline benchmark).

    Raises:
        ConfigError: the text is not valid YAML or not a valid configuration.
    """
    from bidflow.components._timing import mark_body_start

    mark_body_start()
    with tempfile.TemporaryDirectory(prefix="bidflow-config-") as tmp:
        path = Path(tmp) / "bidflow.yaml"
        path.write_text(text or "{}", encoding="utf-8")
        try:
            return load_config(path)
        except ConfigError as exc:
            raise ConfigError(
                exc.what, where=CONFIG_PARAMETER, expected=exc.expected, got=exc.got, hint=exc.hint
            ) from exc


def model_kind(kind: str, settings: Config) -> str:
    """``kind`` checked against the registered model kinds (built-in and the configuration's ``kinds:``).

    Raises:
        ConfigError: no kind of that name.
    """
    from bidflow.kinds import kind as kind_of

    try:
        return kind_of(settings, kind).name
    except ConfigError as exc:
        raise ConfigError(
            exc.what, where="component parameter 'kind'", expected=exc.expected, got=exc.got, hint=exc.hint
        ) from exc


def feature_source(source: str) -> FeatureSource | None:
    """``feast`` or ``request``; empty for the configuration's ``train.feature_source``.

    Raises:
        ConfigError: any other value.
    """
    if source == "":
        return None
    if source == "feast":
        return "feast"
    if source == "request":
        return "request"
    raise ConfigError(
        "unknown feature source", where="parameter 'feature_source'", expected="feast, request or empty", got=source
    )


def verdict(gate: str, passed: bool, failures: list[str]) -> str:
    """The line a gate task prints last, so its log says why the pipeline did or did not register."""
    if passed:
        return f"{gate} gate PASSED"
    return f"{gate} gate FAILED ({len(failures)}): " + "; ".join(failures[:10])


def publish(source: Path, artifact: Any) -> None:
    """Copy a report file to an output artifact's path (an ``Output[HTML]`` shows it in the KFP UI)."""
    target = Path(artifact.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def log_metrics(artifact: Any, values: Mapping[str, Any], prefix: str = "") -> None:
    """Log the finite numbers of ``values`` to an ``Output[Metrics]`` (NaN and inf are not JSON)."""
    for key, value in values.items():
        if isinstance(value, int | float) and math.isfinite(value):  # bools are ints: 1.0 / 0.0
            artifact.log_metric(prefix + key, float(value))


def write_manifest(summary: BuildSummary, artifact: Any) -> None:
    """Describe a feature build in its output artifact: a JSON file, and the same facts as metadata.

    Raises:
        FeatureStoreError: the build wrote no rows (nothing to materialize or train on).
    """
    from bidflow.errors import FeatureStoreError

    if summary.first is None or summary.last is None:
        raise FeatureStoreError("the feature build wrote no rows", where=summary.out)
    facts = {
        "location": summary.out,
        "views": sorted(summary.rows),
        "rows": dict(summary.rows),
        "first": summary.first.isoformat(),
        "last": summary.last.isoformat(),
    }
    target = Path(artifact.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    artifact.metadata.update(facts)


def log_roc(artifact: Any, y: npt.ArrayLike, scores: npt.ArrayLike) -> None:
    """Log the ROC curve of ``scores`` to a ``ClassificationMetrics`` (thinned by ``metrics.roc_points``)."""
    from bidflow.modeling.metrics import roc_points

    fpr, tpr, threshold = roc_points(y, scores)
    if len(fpr):
        artifact.log_roc_curve(fpr.tolist(), tpr.tolist(), threshold.tolist())


def on_operator(settings: Config, engine: str) -> bool:
    """Whether a step whose engine is ``engine`` goes to the Spark Operator (``spark.runner: operator``)."""
    return engine == "spark" and settings.spark.runner == "operator"


def run_on_operator(settings: Config, config_text: str, step: str, arguments: list[str], image: str = "") -> str:
    """Run one ``bidflow.engines.spark_jobs`` step as a SparkApplication and wait for it; its name.

    The task's service account needs the chart's SparkApplication Role (``sparkOperator.pipelineRunner``).

    Raises:
        EngineError: the API refused the application, the run failed, or it did not end in time.
    """
    import importlib.metadata
    import uuid

    from bidflow.components._base import COMPONENT_IMAGE
    from bidflow.deploy.kserve_api import api_client_from_environment
    from bidflow.deploy.spark_submit import submit_and_wait

    kubernetes = settings.spark.kubernetes
    run = submit_and_wait(
        api_client_from_environment(),
        step,
        config_text,
        kubernetes,
        image=image or kubernetes.image or COMPONENT_IMAGE,
        spark_version=importlib.metadata.version("pyspark"),
        run_id=uuid.uuid4().hex,
        arguments=arguments,
    )
    print(f"SparkApplication {run.namespace}/{run.name} {run.state} after {run.seconds:.0f}s")
    return run.name


def train_on_operator(
    settings: Config,
    config_text: str,
    kind: str,
    batch_uri: str,
    feature_source: FeatureSource | None,
    model_uri: str,
    model_path: Path,
) -> dict[str, Any]:
    """Train ``kind`` as a SparkApplication (``spark_jobs train``); its bundle lands in ``model_path``.

    The job reads the batch at ``batch_uri``, logs its MLflow run without registering it, and writes
    the bundle and its report (``spark_jobs.train_report``) under ``<model_uri>.spark/``, where this
    task reads them back.

    Returns:
        The job's report: ``run_id``, ``rows``, ``data_version``, ``metrics``.
    """
    from bidflow.deploy.spark_application import job_arguments
    from bidflow.engines import job_files

    staged = f"{model_uri}.spark"
    options: dict[str, str | bool] = {
        "source": batch_uri,
        "features": feature_source or "",
        "no-register": True,
        "report": f"{staged}/report.json",
    }
    run_on_operator(
        settings, config_text, "train", job_arguments("train", kind=kind, out=f"{staged}/model", options=options)
    )
    report = job_files.read_json(f"{staged}/report.json")
    job_files.download(f"{staged}/model", model_path)
    return report

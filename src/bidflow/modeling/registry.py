"""The MLflow adapter: runs, the model registry and its ``candidate`` / ``champion`` aliases.

Everything MLflow-specific lives here; the rest of ``bidflow.modeling`` never imports mlflow.
Every call takes the ``registry`` configuration and talks to *that* tracking store: the global
tracking URI is set only for the duration of a call and restored after it, so two stores (tests,
a migration) never see each other's runs.

Tracking backends: SQLite (``sqlite:///mlflow.db``, the embedded default) and PostgreSQL
(``postgresql+psycopg://user@host/db``; the psycopg driver must be installed), or an MLflow server
(``http(s)://``). An unreachable backend is checked for up front, with a short timeout, and reported
as a ``RegistryError`` instead of MLflow's retry loop and traceback.

Model layout: the booster is logged with the ``mlflow.xgboost`` flavor (signature over the
*encoded* float columns, an input example, ``pip_requirements`` pinning xgboost) and the bidflow
bundle (feature spec, category vocabularies, filter policy) rides along as an extra file, so
``load_model`` returns the same ``TrainedModel`` that was logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from bidflow.errors import BidflowError, RegistryError
from bidflow.modeling.train import BUNDLE_FILE, TrainedModel, load_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.config import RegistryConfig
    from bidflow.modeling.lineage import DataVersion

CANDIDATE: Final = "candidate"
CHAMPION: Final = "champion"
MODEL_ARTIFACT: Final = "model"
RUN_SCHEME: Final = "runs:/"
_CONNECT_TIMEOUT_S: Final = 3
_PROGRESS_BAR_ENV: Final = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        """False for a logged model that has no registered version yet (``runs:/`` reference)."""
        return bool(self.version)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.registered else self.source

    @property
    def label(self) -> str:
        """How reports name it: ``bid_filter v3``, or ``bid_filter run 1a2b3c4d (not registered)``."""
        if self.registered:
            return f"{self.name} v{self.version}"
        return f"{self.name} run {(self.run_id or '?')[:8]} (not registered)"


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did: the new champion and the version that held the alias before (if any)."""

    champion: ModelRef
    previous: ModelRef | None


@contextmanager
def tracking(cfg: RegistryConfig) -> Iterator[Any]:
    """An ``MlflowClient`` on ``cfg.tracking_uri``, with the fluent API pointed there too.

    Raises:
        RegistryError: the backend is unreachable, or an MLflow call fails.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    _preflight(cfg.tracking_uri)
    previous_tracking = mlflow.get_tracking_uri() if _tracking_uri_set() else None
    previous_registry = mlflow.get_registry_uri() if _tracking_uri_set() else None
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    # Artifact downloads draw progress bars on stderr; a CLI printing its own summary does not want them.
    quiet = _PROGRESS_BAR_ENV not in os.environ
    if quiet:
        os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    except BidflowError:
        raise
    except MlflowException as exc:
        raise RegistryError(
            "MLflow call failed", where=_redact(cfg.tracking_uri), got=f"{exc.error_code}: {exc.message}"[:500]
        ) from exc
    finally:
        if quiet:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        # None puts the default back (mlflow accepts it, its annotations are narrower).
        mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]
        mlflow.set_registry_uri(previous_registry)  # type: ignore[arg-type]


def log_training(
    cfg: RegistryConfig,
    model: TrainedModel,
    *,
    model_name: str,
    data: DataVersion,
    example: pd.DataFrame,
    figures: Mapping[str, Figure] | None = None,
    run_name: str | None = None,
    register: bool = True,
) -> tuple[str, ModelRef | None]:
    """Log a training run (params, metrics, data version, feature service, model, plots); register it.

    Args:
        cfg: the ``registry`` configuration section.
        model: the trained model.
        model_name: registered model name (``bidflow.kinds.registered_name`` of a kind).
        data: the training data's version.
        example: a few raw rows (the model's feature columns) for the input example.
        figures: plots to store as PNG artifacts under ``plots/``.
        run_name: MLflow run name.
        register: also create a registered model version and point ``candidate`` at it.

    Returns:
        The run id, and the registered version (None when ``register`` is False).
    """
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    x_example = pd.DataFrame(model.matrix(example.head(5)), columns=list(model.spec.names))
    signature = infer_signature(x_example, model.predict_matrix(x_example.to_numpy(np.float32)))
    with tracking(cfg) as client, tempfile.TemporaryDirectory() as tmp:
        experiment_id = _experiment(client, cfg)
        bundle = Path(tmp) / BUNDLE_FILE
        bundle.write_text(json.dumps(model.to_json(), indent=1, default=_json_default), encoding="utf-8")
        tags = data.tags() | {
            "model.kind": model_name,
            "feature_service": model.spec.feature_service or "none (request features only)",
            "xgboost_version": model.xgboost_version,
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params(_flat_params(model))
            mlflow.log_metrics({k: v for k, v in model.metrics.items() if np.isfinite(v)})
            info = mlflow.xgboost.log_model(
                model.booster,
                name=MODEL_ARTIFACT,
                signature=signature,
                input_example=x_example,
                extra_files=[str(bundle)],
                pip_requirements=[f"xgboost=={model.xgboost_version}"],
                metadata={
                    "bidflow_bundle": f"extra_files/{BUNDLE_FILE}",
                    "feature_service": model.spec.feature_service,
                },
            )
            mlflow.log_dict(model.to_json(), f"{MODEL_ARTIFACT}_bundle.json")
            for name, figure in (figures or {}).items():
                mlflow.log_figure(figure, f"plots/{name}.png")
            run_id = str(run.info.run_id)
        if not register:
            return run_id, None
        version = mlflow.register_model(info.model_uri, model_name, tags={"run_id": run_id} | data.tags())
        client.set_registered_model_alias(model_name, CANDIDATE, str(version.version))
        return run_id, _ref(client.get_model_version(model_name, str(version.version)))


def log_run_results(
    cfg: RegistryConfig,
    run_id: str,
    *,
    metrics: Mapping[str, float],
    files: Mapping[str, Path] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Add evaluation metrics, report files (under ``reports/``) and tags to an existing run."""
    with tracking(cfg) as client:
        for key, value in metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, key, float(value))
        for tag, text in (tags or {}).items():
            client.set_tag(run_id, tag, text)
        for path in (files or {}).values():
            client.log_artifact(run_id, str(path), artifact_path="reports")


def set_version_tags(cfg: RegistryConfig, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Tag a registered version (gate verdicts: ``gate.evaluation``, ``gate.fairness``)."""
    with tracking(cfg) as client:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)


def run_uri(run_id: str) -> str:
    """The ``runs:/`` URI of the model a training run logged (``log_training(register=False)``)."""
    return f"{RUN_SCHEME}{run_id}/{MODEL_ARTIFACT}"


def resolve(cfg: RegistryConfig, name: str, ref: str) -> ModelRef:
    """The version ``ref`` names: an alias (``candidate``, ``champion``) or a version number.

    ``ref`` may also be a ``runs:/<run_id>/model`` URI (``run_uri``): a logged model that is not
    registered yet (a pipeline gates it before registering it). Its ``ModelRef`` has no version and
    carries the run's tags.

    Raises:
        RegistryError: no such registered model, version, alias or run.
    """
    from mlflow.exceptions import MlflowException

    if ref.startswith(RUN_SCHEME):
        return _run_ref(cfg, name, ref)
    with tracking(cfg) as client:
        try:
            version = (
                client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
            )
        except MlflowException as exc:
            raise RegistryError(
                f"model '{name}' has no {'version' if ref.isdigit() else 'alias'} '{ref}'",
                where=_redact(cfg.tracking_uri),
                got=exc.message[:300],
                hint="train and register a model first (`bidflow train`), or name an existing version",
            ) from exc
        return _ref(version)


def register_run(cfg: RegistryConfig, name: str, run_id: str, *, alias: str = CANDIDATE) -> ModelRef:
    """Register the model logged by ``run_id`` as a version of ``name`` and point ``alias`` at it.

    The run's data-version and gate tags (``data.*``, ``gate.*``) are copied onto the version, so
    ``promote`` sees the verdicts. Idempotent: a run that already has a version of ``name`` (a
    retried pipeline task) gets that version back instead of a second one.

    Raises:
        RegistryError: no such run, or the registry refuses.
    """
    import mlflow

    with tracking(cfg) as client:
        run = client.get_run(run_id)
        found = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'")
        if found:
            version = str(found[0].version)
        else:
            tags = {"run_id": run_id} | {k: v for k, v in run.data.tags.items() if k.startswith(("data.", "gate."))}
            version = str(mlflow.register_model(_logged_model_uri(run), name, tags=tags).version)
        client.set_registered_model_alias(name, alias, version)
        return _ref(client.get_model_version(name, version))


def champion(cfg: RegistryConfig, name: str) -> ModelRef | None:
    """The version holding the ``champion`` alias, or None (no model, or no champion yet)."""
    aliases = _aliases(cfg, name)
    if CHAMPION not in aliases:
        return None
    return resolve(cfg, name, aliases[CHAMPION])


def promote(cfg: RegistryConfig, name: str, version: str | None = None) -> Promotion:
    """Point ``champion`` at ``version`` (default: the current ``candidate``).

    The previous champion keeps its version (and any other alias); only the alias moves.

    Raises:
        RegistryError: no such version, or no candidate to promote.
    """
    target = resolve(cfg, name, version or CANDIDATE)
    previous = champion(cfg, name)
    with tracking(cfg) as client:
        client.set_registered_model_alias(name, CHAMPION, target.version)
        return Promotion(champion=_ref(client.get_model_version(name, target.version)), previous=previous)


CANARY: Final = "canary"
LAST_ROLLED_BACK: Final = "last_rolled_back"


def mirror_deployment(
    cfg: RegistryConfig,
    name: str,
    *,
    champion_version: str | None,
    canary_version: str | None,
    rolled_back: Mapping[str, str] | None = None,
) -> None:
    """Make the registry say what is deployed: aliases ``champion`` and ``canary``, rolled-back tags.

    Idempotent (it sets the state, it does not replay events), so it can run after every
    transition and again later to catch up with one made where the registry was out of reach.

    Args:
        cfg: the registry.
        name: the registered model.
        champion_version: the serving version (``champion`` alias), None to leave the alias alone.
        canary_version: the version under test (``canary`` alias); None removes the alias.
        rolled_back: version -> reason for versions rolled back; each gets ``deploy.rolled_back``
            tags, ``last_rolled_back`` points at the newest, and a ``candidate`` alias on one is
            removed (so nobody deploys it again by alias).
    """
    aliases = _aliases(cfg, name)
    with tracking(cfg) as client:
        if champion_version is not None and aliases.get(CHAMPION) != champion_version:
            client.set_registered_model_alias(name, CHAMPION, champion_version)
        if canary_version is not None and aliases.get(CANARY) != canary_version:
            client.set_registered_model_alias(name, CANARY, canary_version)
        elif canary_version is None and CANARY in aliases:
            client.delete_registered_model_alias(name, CANARY)
        for version, reason in (rolled_back or {}).items():
            client.set_model_version_tag(name, version, "deploy.rolled_back", "true")
            client.set_model_version_tag(name, version, "deploy.rollback_reason", reason[:4_000])
            if aliases.get(CANDIDATE) == version:
                client.delete_registered_model_alias(name, CANDIDATE)
        if rolled_back:
            newest = list(rolled_back)[-1]  # in the order they were rolled back
            client.set_registered_model_alias(name, LAST_ROLLED_BACK, newest)


def versions(cfg: RegistryConfig, name: str) -> list[ModelRef]:
    """All versions of a registered model, newest first (empty when it does not exist)."""
    with tracking(cfg) as client:
        found = client.search_model_versions(f"name = '{_quote(name)}'")
        refs = [_ref(client.get_model_version(name, str(v.version))) for v in found]
    return sorted(refs, key=lambda r: int(r.version), reverse=True)


def load(cfg: RegistryConfig, name: str, ref: str) -> tuple[ModelRef, TrainedModel]:
    """Download a registered version (alias or number) or a ``runs:/`` model; rebuild its ``TrainedModel``."""
    target = resolve(cfg, name, ref)
    return target, load_uri(cfg, target.uri)


def load_uri(cfg: RegistryConfig, uri: str) -> TrainedModel:
    """A ``TrainedModel`` from any MLflow model URI (``models:/...``, ``runs:/...``)."""
    import mlflow.artifacts

    with tracking(cfg), tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        return load_model(local)


def _aliases(cfg: RegistryConfig, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    with tracking(cfg) as client:
        try:
            registered = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {str(k): str(v) for k, v in (registered.aliases or {}).items()}


def _run_ref(cfg: RegistryConfig, name: str, uri: str) -> ModelRef:
    from mlflow.exceptions import MlflowException

    run_id = uri.removeprefix(RUN_SCHEME).split("/", 1)[0]
    with tracking(cfg) as client:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise RegistryError(
                f"no MLflow run '{run_id}'",
                where=_redact(cfg.tracking_uri),
                got=exc.message[:300],
                hint="pass the run id a training step logged (its model artifact's metadata)",
            ) from exc
        tags = {str(k): str(v) for k, v in run.data.tags.items()}
        return ModelRef(name=name, version="", run_id=run_id, source=uri, aliases=(), tags=tags)


def _logged_model_uri(run: Any) -> str:
    """``models:/<model_id>`` of the run's logged model (MLflow 3), else its ``runs:/`` URI."""
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    if len(outputs) == 1:
        return f"models:/{outputs[0].model_id}"
    return run_uri(str(run.info.run_id))


def _experiment(client: Any, cfg: RegistryConfig) -> str:
    existing = client.get_experiment_by_name(cfg.experiment)
    if existing is not None:
        return str(existing.experiment_id)
    location = cfg.artifact_location
    uri = str(location) if "://" in str(location) else location.resolve().as_uri()
    return str(client.create_experiment(cfg.experiment, artifact_location=uri))


def _ref(version: Any) -> ModelRef:
    return ModelRef(
        name=str(version.name),
        version=str(version.version),
        run_id=str(version.run_id) if version.run_id else None,
        source=str(version.source),
        aliases=tuple(sorted(str(a) for a in (version.aliases or []))),
        tags={str(k): str(v) for k, v in (version.tags or {}).items()},
    )


def _flat_params(model: TrainedModel) -> dict[str, str]:
    params = {f"xgb.{k}": str(v) for k, v in model.params.items()}
    params |= {
        "best_iteration": str(model.best_iteration),
        "features": str(len(model.spec.names)),
        "categorical_features": ",".join(model.spec.categorical)[:500],
        "label": model.spec.label,
        "feature_service": str(model.spec.feature_service),
        "encoding_version": str(model.encoder.version),
    }
    if model.policy is not None:
        params |= {
            "target_bid_recall": str(model.policy.target_recall),
            "exploration_share": str(model.policy.exploration_share),
        }
    return params


def _tracking_uri_set() -> bool:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    return bool(is_tracking_uri_set())  # type: ignore[no-untyped-call]


def _preflight(uri: str) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when the tracking backend is unreachable."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if scheme.startswith("postgresql") or scheme.startswith("mysql"):
        _check_database(uri)
    elif scheme in {"http", "https"}:
        _check_server(uri)
    elif scheme == "sqlite":
        path = uri.split(":///", 1)[-1]
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise RegistryError(
                "folder of the SQLite tracking database does not exist",
                where=path,
                hint="create the folder or fix registry.tracking_uri",
            )


def _check_database(uri: str) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S})
    except ModuleNotFoundError as exc:
        raise RegistryError(
            "no database driver for the tracking URI",
            where=_redact(uri),
            got=str(exc),
            hint="use postgresql+psycopg://... (psycopg 3) and install psycopg[binary]",
        ) from exc
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise RegistryError(
            "tracking database is unreachable",
            where=_redact(uri),
            got=str(getattr(exc, "orig", None) or exc).strip()[:300],
            hint="start the database, create it, or fix registry.tracking_uri (BIDFLOW__REGISTRY__TRACKING_URI)",
        ) from exc
    finally:
        engine.dispose()


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_CONNECT_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(
            "MLflow tracking server is unreachable",
            where=_redact(uri),
            got=str(exc)[:300],
            hint="start the server or fix registry.tracking_uri (BIDFLOW__REGISTRY__TRACKING_URI)",
        ) from exc


def _redact(uri: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

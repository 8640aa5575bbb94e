"""The bidder in MLflow: a fit as a run with a logged model, its registered versions, and every replay as a run.

The tracking and registry plumbing (URI scoping, the fast reachability check, aliases, registering a
run's model) is ``bidflow.modeling.registry``'s; this module adds what is particular to a bidder.

Why a logged model and not a plain artifact folder: MLflow 3 registers a ``runs:/`` URI only when
the folder holds an ``MLmodel`` file, else it looks for a *logged model* of the run. So the fitted
folder (``bidder.json``) is logged as an MLflow 3 ``LoggedModel`` of the fit's run, with an
``MLmodel`` file naming a ``bidflow_bidder`` flavor (no pyfunc: a bidder is served by
``bidflow.serving.bidder``, never by ``mlflow models serve``), and the version is created from its
``models:/<model_id>`` URI, exactly as the XGBoost kinds' versions are. The same folder is also
logged under the run's ``model/`` artifacts, beside its tuning curves, for people browsing the run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.bidding.artifact import FILE, FORMAT
from bidflow.errors import BiddingError
from bidflow.modeling.registry import CANDIDATE, ModelRef, register_run, resolve, tracking

if TYPE_CHECKING:
    from bidflow.config import Config, RegistryConfig
    from bidflow.serving.base import ModelSource

ARTIFACT: Final = "model"  # the run's artifact folder of the bidder and the logged model's name
FLAVOR: Final = "bidflow_bidder"
MODEL_TYPE: Final = "bidflow-bidder"
_PARAM_CHARS: Final = 6000  # MLflow's longest parameter value


def log_fit(
    cfg: RegistryConfig,
    folder: Path,
    *,
    model_name: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Sequence[Path] = (),
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    register: bool = True,
) -> tuple[str, ModelRef | None]:
    """Log a fitted bidder as a run (params, metrics, the bidder folder as a logged model, report files).

    Args:
        cfg: the ``registry`` configuration section.
        folder: the fitted bidder (``bidflow.bidding.artifact.save_bidder``'s folder).
        model_name: the registered model name (``bidflow.kinds.registered_name``).
        params: settings and every policy's fitted parameters (values longer than MLflow allows are cut).
        metrics: tuning clicks, the landscape's held-out log loss.
        files: report files and plots, logged under the run's ``reports/``.
        tags: run tags (campaign, data files).
        run_name: MLflow run name.
        register: also create a registered version and point ``candidate`` at it.

    Returns:
        The run id, and the registered version (None when ``register`` is False).
    """
    import math

    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from bidflow import __version__
    from bidflow.modeling.registry import _experiment

    with tracking(cfg) as client:
        experiment_id = _experiment(client, cfg)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
            run_id = str(run.info.run_id)
            mlflow.log_params({k: v[:_PARAM_CHARS] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(v)})
            logged = client.create_logged_model(
                experiment_id, name=ARTIFACT, source_run_id=run_id, model_type=MODEL_TYPE,
                tags={"model.kind": model_name},
            )  # fmt: skip
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            with tempfile.TemporaryDirectory() as tmp:
                staged = Path(tmp) / ARTIFACT
                shutil.copytree(folder, staged)
                mlmodel = Model(artifact_path=ARTIFACT, run_id=run_id, model_id=logged.model_id,
                                metadata={"bidflow_bidder": FILE})  # fmt: skip
                mlmodel.add_flavor(FLAVOR, data=FILE, format=FORMAT, bidflow_version=__version__)
                mlmodel.save(str(staged / "MLmodel"))
                client.log_model_artifacts(logged.model_id, str(staged))
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            mlflow.log_artifacts(str(folder), ARTIFACT)
            for path in files:
                mlflow.log_artifact(str(path), "reports")
    if not register:
        return run_id, None
    return run_id, register_run(cfg, model_name, run_id, alias=CANDIDATE)


def log_replays(
    cfg: RegistryConfig,
    *,
    run_name: str,
    replays: Mapping[str, Mapping[str, float]],
    tags: Mapping[str, str] | None = None,
    replay_tags: Mapping[str, Mapping[str, str]] | None = None,
    metrics: Mapping[str, float] | None = None,
    files: Sequence[Path] = (),
) -> str:
    """Log a set of replays: one parent run (its own metrics and the report files), one nested run per replay.

    Args:
        cfg: the ``registry`` configuration section.
        run_name: the parent run's name (``replay`` or ``gate`` and what was replayed).
        replays: nested run name (``candidate v4 planned``) -> its metrics (``c0_1_32.clicks``, ...).
        tags: tags of the parent run and of every nested run.
        replay_tags: per nested run, its own tags (model version, policy).
        metrics: the parent run's metrics (the gate's verdict).
        files: the report files, logged under the parent run's ``reports/``.

    Returns:
        The parent run's id.
    """
    import math

    import mlflow

    from bidflow.modeling.registry import _experiment

    common = dict(tags or {})
    with tracking(cfg) as client:
        experiment_id = _experiment(client, cfg)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=common) as parent:
            mlflow.log_metrics({k: float(v) for k, v in (metrics or {}).items() if math.isfinite(v)})
            for name, values in replays.items():
                own = common | dict((replay_tags or {}).get(name, {}))
                with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True, tags=own):
                    mlflow.log_metrics({k: float(v) for k, v in values.items() if math.isfinite(v)})
            for path in files:
                mlflow.log_artifact(str(path), "reports")
            return str(parent.info.run_id)


def run_uri(run_id: str) -> str:
    """The ``runs:/`` URI of the bidder folder a fit's run logged (a fit the pipeline has not registered yet)."""
    return f"runs:/{run_id}/{ARTIFACT}"


def tag_version(cfg: RegistryConfig, ref: ModelRef, tags: Mapping[str, str]) -> None:
    """Tag a registered version, and the run that logged it (the pipeline registers from the run's tags)."""
    with tracking(cfg) as client:
        for key, value in tags.items():
            if ref.registered:
                client.set_model_version_tag(ref.name, ref.version, key, value)
            if ref.run_id:
                client.set_tag(ref.run_id, key, value)


def fetch_bidder(config: Config, source: ModelSource) -> tuple[Path, str]:
    """A local folder holding the bidder ``source`` names, and its version label.

    Args:
        config: the configuration (its ``registry`` section is the store asked).
        source: a registry alias or version of ``source.name`` (``ref``), a ``models:/`` or ``runs:/``
            URI, or a local folder (or ``bidder.json`` file) written by ``save_bidder``.

    Returns:
        The folder with ``bidder.json`` (a fresh temporary folder for a registry download: the
        caller owns it), and the label a server reports: ``source.version`` when given, else the
        registered version number, else the URI or folder.

    Raises:
        RegistryError: the registry is unreachable or lacks the model, version or alias.
        BiddingError: the folder or the downloaded model holds no ``bidder.json``.
    """
    return fetch(config, source.name, ref=source.ref, uri=source.uri, version=source.version)


def fetch_named(config: Config, name: str, value: str) -> tuple[Path, str]:
    """``fetch`` of a value as a command line gives it: ``champion`` / ``7`` (registry), else a URI or a folder.

    The same reading as ``bidflow.serving.base.ModelSource.parse``, without importing the serving
    stack (KServe reads the process's command line when it is imported).
    """
    if "/" in value or ":" in value or value.startswith(".") or Path(value).exists():
        return fetch(config, name, uri=value)
    return fetch(config, name, ref=value)


def fetch(
    config: Config, name: str, *, ref: str = "champion", uri: str | None = None, version: str | None = None
) -> tuple[Path, str]:
    """The folder and version label of registered model ``name`` at ``ref``, or of ``uri`` (see ``fetch_bidder``)."""
    import mlflow.artifacts

    local = _local(uri)
    if local is not None:
        folder = local.parent if local.is_file() else local
        return _checked(folder, str(local)), version or str(local)
    if uri is None:
        found = resolve(config.registry, name, ref)
        uri, label = found.uri, version or found.version
    else:
        label = version or uri
    target = Path(tempfile.mkdtemp(prefix="bidflow-bidder-"))
    with tracking(config.registry):
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    if not (downloaded / FILE).is_file() and (downloaded / ARTIFACT / FILE).is_file():
        downloaded = downloaded / ARTIFACT  # a whole run's artifacts (``runs:/<run_id>``)
    return _checked(downloaded, uri), label


def _local(uri: str | None) -> Path | None:
    """The path when ``uri`` is a local path or ``file://`` URI (as ``ModelSource.local``)."""
    if uri is None:
        return None
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if ":/" in uri else Path(uri)


def _checked(folder: Path, described: str) -> Path:
    if not (folder / FILE).is_file():
        raise BiddingError("no fitted bidder there", where=described, expected=f"a folder with {FILE}",
                           hint="fit one with `bidflow bidder fit`, or name a registered version or alias")  # fmt: skip
    return folder

"""Deployment as the CLI and the pipeline components run it: resolve, write the drift reference, deploy."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.errors import MonitorError

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.deploy.backend import ModelVersion
    from bidflow.deploy.journal import Transition

log = logging.getLogger(__name__)

MONITOR_PYTHON_ENV: Final = "BIDFLOW_MONITOR_PYTHON"
_MONITOR_VENV: Final = Path(".venv-monitor/bin/python")


@dataclass(frozen=True)
class DeployOutcome:
    """What ``deploy_step`` did."""

    transition: Transition
    reference: Path | None  # None: the kind has no drift shape (the monitor does not watch it)
    reference_rows: int

    @property
    def role(self) -> str:
        """``champion`` (first deploy) or ``canary``."""
        state = self.transition.state
        model = self.transition.model
        if state is not None and state.canary is not None and model is not None and state.canary == model:
            return "canary"
        return "champion"


def model_version(config: Config, version: str) -> ModelVersion:
    """The registered ``version`` (number or alias) of ``canary.kind`` as the active backend loads it.

    Locally the model server resolves ``models:/name/N`` through the registry; KServe's storage
    initializer needs the artifact location itself.
    """
    from bidflow.deploy.backend import ModelVersion
    from bidflow.kinds import registered_name
    from bidflow.modeling import registry

    name = registered_name(config, config.canary.kind)
    ref = registry.resolve(config.registry, name, version)
    uri = ref.uri if config.canary.backend == "local" else ref.source
    return ModelVersion(name=name, version=ref.version, uri=uri)


def deploy_step(
    config: Config,
    version: str,
    *,
    source: Path | None = None,
    percent: int | None = None,
    actor: str = "pipeline",
    image: str | None = None,
    kind: str | None = None,
) -> DeployOutcome:
    """Deploy registered ``version`` of ``canary.kind``: champion when none serves, else a canary at ``percent``.

    The drift reference for the version (``drift_reference_step`` on ``source``, default the kind's
    source) is written first, so the monitor can be given a detector for the model before its
    traffic arrives; a kind without a drift shape has none, and the outcome says so with
    ``reference=None``.

    Raises:
        ConfigError: ``kind`` is given and is not the kind the deployment serves (``canary.kind``), or
            the served kind has its own commands (``Kind.require_tabular``).
    """
    from bidflow.deploy.canary import controller_for
    from bidflow.errors import ConfigError
    from bidflow.kinds import kind as kind_of
    from bidflow.modeling.steps import drift_reference_step

    if kind is not None and kind != config.canary.kind:
        raise ConfigError(
            f"the deployment serves '{config.canary.kind}' models; a '{kind}' model cannot be deployed into it",
            where="canary.kind",
            expected=kind,
            got=config.canary.kind,
            hint=f"set canary.kind: {kind} for a deployment of that kind",
        )
    served = kind_of(config, config.canary.kind)
    served.require_tabular("canary deploy")  # its drift reference is scored by the tabular model
    model = model_version(config, version)
    reference, rows = None, 0
    if served.drift is not None:
        _, reference, rows = drift_reference_step(config, model=model.version, source=source)
    controller = controller_for(config, image=image)
    share = config.canary.traffic_percent if percent is None else percent
    transition = controller.deploy(model, share, actor=actor, reasons=[f"registered version {model.version}"])
    return DeployOutcome(transition, reference, rows)


def monitor_python() -> Path:
    """The monitor environment's interpreter: ``$BIDFLOW_MONITOR_PYTHON``, else ``.venv-monitor`` beside
    the running environment (the Makefile builds both in the repository root), else in the working folder.
    """
    given = os.environ.get(MONITOR_PYTHON_ENV)
    if given:
        return Path(given)
    beside = Path(sys.prefix).parent / _MONITOR_VENV
    return beside if beside.exists() else _MONITOR_VENV


def fit_detector(reference: Path, out: Path, p_value: float) -> str:
    """Fit and save the drift detector for ``reference`` with alibi-detect, in whichever environment has it.

    In the monitor image (and ``.venv-monitor``) alibi-detect is importable and the fit runs here.
    In the main environment (a local pipeline run, the demo) it runs in the monitor environment's
    interpreter (``$BIDFLOW_MONITOR_PYTHON``, else ``.venv-monitor/bin/python``).

    Returns:
        the backend that fitted it.

    Raises:
        MonitorError: neither environment is available, or the fit failed.
    """
    if importlib.util.find_spec("alibi_detect") is not None:
        from bidflow.monitoring.fit import fit_from_reference

        return str(fit_from_reference(reference, out, p_value).backend)
    python = monitor_python()
    if not python.exists() or shutil.which(str(python)) is None:
        raise MonitorError(
            "alibi-detect is not installed here and no monitor environment was found",
            where=str(python),
            hint="run `make monitor-setup` (builds .venv-monitor), or set BIDFLOW_MONITOR_PYTHON",
        )
    command = [str(python), "-m", "bidflow.monitoring", "fit", "--reference", str(reference), "--out", str(out)]
    command += ["--p-value", str(p_value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-800:]
        raise MonitorError("fitting the drift detector failed", where=str(python), got=tail)
    log.info(done.stdout.strip())
    return "alibi"

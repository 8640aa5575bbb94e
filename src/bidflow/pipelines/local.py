"""Run a pipeline on this machine with ``kfp.local`` (SubprocessRunner, no Docker, no cluster).

Every task runs as a subprocess of the current interpreter, in the current virtual environment
(``use_venv=False``): the environment already holds bidflow and its locked dependencies, exactly
what the component image holds. Two kfp.local behaviours are handled here:

* it pip-installs ``kfp`` into the running environment before each task when a component asks for
  it (the default of ``@dsl.component``). bidflow's components are built with
  ``install_kfp_package=False``; ``check_no_installs`` refuses to start a run whose compiled tasks
  contain any ``pip install`` anyway, so a future component cannot bring it back unnoticed;
* conditions are evaluated by kfp.local itself (by rewriting the CEL expression): the gates'
  outputs are plain booleans compared with ``== True``, the form its evaluator handles; the e2e
  tests run both branches.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bidflow.errors import BidflowError
from bidflow.pipelines.catalog import compile_pipeline, pipeline

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.modeling.registry import ModelRef


class LocalRunError(BidflowError):
    """A local pipeline run could not start or a task failed."""


@dataclass(frozen=True)
class LocalRun:
    """What a local run produced: every gate's verdict and report, and the registered version.

    A pipeline hands back its candidate as ``model`` (with the MLflow ``run_id`` in its metadata)
    and each gate as a ``<gate>_passed`` boolean with a ``<gate>_report`` HTML: the tabular kinds'
    ``evaluation`` and ``bias``, a kind with its own gates its own (``replay``).
    """

    pipeline: str
    outputs: Path  # kfp.local's pipeline root: every task's artifacts, by task
    spec: Path  # the compiled YAML that ran
    candidate_run: str  # MLflow run of the trained model
    gates: dict[str, bool]
    reports: dict[str, Path]
    registered: ModelRef | None
    seconds: float

    @property
    def gates_passed(self) -> bool:
        return all(self.gates.values())


def check_no_installs(spec: Path) -> None:
    """Refuse a compiled pipeline whose tasks would pip-install anything at run time.

    Raises:
        LocalRunError: a task's command contains ``pip install`` (under SubprocessRunner with
            ``use_venv=False`` it would install into this virtual environment).
    """
    document = next(iter(yaml.safe_load_all(spec.read_text(encoding="utf-8"))))
    offenders = []
    for name, executor in document["deploymentSpec"]["executors"].items():
        container = executor.get("container", {})
        if "pip install" in " ".join([*container.get("command", []), *container.get("args", [])]):
            offenders.append(name)
    if offenders:
        raise LocalRunError(
            "pipeline tasks would pip-install packages into the running environment",
            where=spec,
            got=", ".join(offenders),
            hint="decorate components with bidflow.components.component (no KFP install, no packages_to_install)",
        )


def run_local(name: str, arguments: dict[str, Any], config: Config, workdir: Path) -> LocalRun:
    """Run pipeline ``name`` with kfp.local and report its gates and registration.

    Args:
        name: a registered kind with a pipeline (``catalog.pipeline_names``).
        arguments: the pipeline's arguments (its ``config`` argument is the YAML the tasks read).
        config: the same configuration, parsed (to look the registration up afterwards).
        workdir: where kfp.local keeps task outputs (``outputs/``), its workspace and the compiled spec.

    Raises:
        LocalRunError: a task failed (kfp.local names it and its log is above).
    """
    from kfp import local

    from bidflow.kinds import registered_name
    from bidflow.modeling import registry

    workdir.mkdir(parents=True, exist_ok=True)
    spec = compile_pipeline(name, workdir / f"{name}.yaml", config=config)
    check_no_installs(spec)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(workdir / "outputs"),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # SubprocessRunner warns for any image without "python" in its name; ours is the bidflow image,
        # whose environment is the one running here.
        warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
        # Resource requests are for the cluster; locally they are ignored, as the warning says per task.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner", category=UserWarning)
        try:
            task = pipeline(name, config)(**arguments)
        except RuntimeError as exc:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # kfp.local colours its messages
            raise LocalRunError(f"pipeline '{name}' failed", got=plain[:500], hint="read the task's log above") from exc
    out = task.outputs
    run_id = str(out["model"].metadata["run_id"])
    found = [v for v in registry.versions(config.registry, registered_name(config, name)) if v.run_id == run_id]
    gates = {key.removesuffix(_PASSED): bool(value) for key, value in out.items() if key.endswith(_PASSED)}
    return LocalRun(
        pipeline=name,
        outputs=workdir / "outputs",
        spec=spec,
        candidate_run=run_id,
        gates=gates,
        reports={gate: Path(out[gate + _REPORT].path) for gate in gates if gate + _REPORT in out},
        registered=found[0] if found else None,
        seconds=time.perf_counter() - started,
    )


_PASSED = "_passed"  # a pipeline output holding a gate's verdict
_REPORT = "_report"  # ... and its HTML report

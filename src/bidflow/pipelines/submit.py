"""Submit a pipeline to a Kubeflow Pipelines endpoint with ``kfp.Client``.

A new pipeline is created with the compiled YAML as its first version (KFP names that version after
the pipeline). Later submissions look for a version named ``<pipeline>-<first 12 hex of the YAML's
SHA-256>`` and upload one only if there is none: unchanged wiring reuses its version, changed wiring
adds one (the first wiring is uploaded once more, under its hash name, the first time it is
resubmitted). Then the experiment is found or created, and a run (or a recurring run on a cron
schedule) is created from that version.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bidflow.errors import ConfigError
from bidflow.pipelines.catalog import compile_pipeline

if TYPE_CHECKING:
    from bidflow.config import Config


@dataclass(frozen=True)
class Submission:
    """What the endpoint created or reused."""

    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str | None = None
    recurring_run_id: str | None = None


def cron_schedule(expression: str) -> str:
    """A cron expression in the six fields KFP's scheduler reads (seconds first).

    A standard five-field expression (``0 3 * * *``) gets ``0`` seconds prepended.

    Raises:
        ConfigError: neither five nor six fields.
    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        "a cron schedule has five fields (minute hour day month weekday) or six (seconds first)",
        got=expression,
    )


def submit(
    host: str,
    name: str,
    *,
    arguments: dict[str, Any],
    experiment: str,
    run_name: str,
    cron: str | None = None,
    image: str | None = None,
    namespace: str | None = None,
    config: Config | None = None,
) -> Submission:
    """Compile pipeline ``name``, upload it (once per content) and start a run or a recurring run.

    Args:
        host: the KFP API endpoint (``https://kubeflow.example.com/pipeline`` or a port-forward).
        name: a registered kind with a pipeline (``catalog.pipeline_names``).
        arguments: pipeline arguments (typed, see ``catalog.parse_arguments``).
        experiment: the experiment to file the run under (created if missing).
        run_name: the run's (or recurring run's) display name.
        cron: a cron schedule for a recurring run instead of a single run.
        image: the component image instead of the default (see ``catalog.compile_pipeline``).
        namespace: the Kubeflow profile namespace of a multi-user deployment.
        config: where kinds beyond the built-in ones are registered (``kinds:``).
    """
    import kfp

    schedule = cron_schedule(cron) if cron else None
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        spec = compile_pipeline(name, Path(tmp) / f"{name}.yaml", image, config)
        text = spec.read_text(encoding="utf-8")
        display = next(iter(yaml.safe_load_all(text)))["pipelineInfo"]["name"]
        version_name = f"{display}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        client = kfp.Client(host=host, namespace=namespace or "kubeflow")
        pipeline_id, version_id, version_name = _upload(client, spec, display, version_name, namespace)
        experiment_id = str(client.create_experiment(name=experiment, namespace=namespace).experiment_id)
        if schedule is not None:
            recurring = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=run_name,
                cron_expression=schedule,
                pipeline_id=pipeline_id,
                version_id=version_id,
                params=arguments,
                max_concurrency=1,
                no_catchup=True,
            )
            return Submission(pipeline_id, version_id, version_name, experiment_id, None, recurring.recurring_run_id)
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=arguments,
        )
        return Submission(pipeline_id, version_id, version_name, experiment_id, run.run_id, None)


def _upload(client: Any, spec: Path, display: str, version_name: str, namespace: str | None) -> tuple[str, str, str]:
    """(pipeline id, version id, version name) to run ``spec`` from, uploading it only if it is new.

    A new pipeline is created with ``spec`` as its first version (KFP names that version after the
    pipeline); an existing one gets ``version_name`` unless a version of that name exists already.
    """
    pipeline_id = client.get_pipeline_id(display)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(spec), pipeline_name=display, namespace=namespace).pipeline_id
        first = client.list_pipeline_versions(pipeline_id=pipeline_id).pipeline_versions[0]
        return str(pipeline_id), str(first.pipeline_version_id), str(first.display_name)
    same = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    found = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=same).pipeline_versions or []
    if found:
        return str(pipeline_id), str(found[0].pipeline_version_id), version_name
    version = client.upload_pipeline_version(str(spec), version_name, pipeline_id=pipeline_id)
    return str(pipeline_id), str(version.pipeline_version_id), version_name

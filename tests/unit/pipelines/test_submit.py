"""``bidflow pipeline submit`` against a stand-in KFP API on 127.0.0.1 (see ``kfp_standin``: not Kubeflow).

The stand-in records every request ``kfp.Client`` makes; these tests check the sequence (upload
pipeline or version, find or create the experiment, create the run or recurring run) and what each
request carries (the compiled YAML, typed parameters, the cron schedule).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.errors import ConfigError
from bidflow.pipelines.commands import register_pipeline_commands
from bidflow.pipelines.submit import cron_schedule
from tests.unit.pipelines.kfp_standin import API, KfpStandIn, serve

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def kfp_api() -> Iterator[KfpStandIn]:
    with serve() as state:
        yield state


def submit(state: KfpStandIn, *args: str) -> str:
    register_pipeline_commands(cli)
    result = CliRunner().invoke(cli, ["pipeline", "submit", "--host", state.url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not state.unknown, f"requests the stand-in does not implement: {state.unknown}"
    return result.output


def test_submit_uploads_the_pipeline_and_starts_a_run(kfp_api: KfpStandIn, tmp_path: Path) -> None:
    settings = tmp_path / "cluster.yaml"
    settings.write_text("features:\n  environment: production\n  offline_uri: s3://bucket/features\n")
    out = submit(kfp_api, "--experiment", "nightly", "--run-name", "bf-1", "--param", "champion=none",
                 "--config-file", str(settings))  # fmt: skip
    assert kfp_api.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),  # is it there already? no:
        ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/pipeline-1/versions"),
        ("GET", f"{API}/experiments"),  # is the experiment there? no:
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    upload = kfp_api.requests[2]
    assert upload.query["name"] == "bidflow-bid-filter-training"
    assert upload.upload == (REPO / "pipelines/bid_filter.yaml").read_text()  # exactly the golden IR
    assert kfp_api.requests[5].body["display_name"] == "nightly"
    (run,) = kfp_api.runs
    assert run["display_name"] == "bf-1"
    assert run["experiment_id"] == "experiment-3"
    assert run["pipeline_version_reference"] == {"pipeline_id": "pipeline-1", "pipeline_version_id": "version-2"}
    assert "pipeline_spec" not in run  # the run refers to the uploaded version, it does not inline it
    assert run["runtime_config"]["parameters"] == {"champion": "none", "config": settings.read_text()}
    assert "run run-4 'bf-1' in experiment nightly" in out


def test_resubmitting_reuses_the_pipeline_and_uploads_only_changed_wiring(kfp_api: KfpStandIn) -> None:
    for run_name in ("a", "b", "c"):  # the same YAML three times
        submit(kfp_api, "--pipeline", "ctr", "--run-name", run_name)
    for run_name in ("d", "e"):  # changed (another image), twice
        submit(kfp_api, "--pipeline", "ctr", "--run-name", run_name, "--image", "registry.example/bidflow:1")
    uploads = [r.path.rsplit("/", 1)[1] for r in kfp_api.requests if r.path.startswith(f"{API}/pipelines/upload")]
    # The first upload creates the pipeline (KFP names its first version after it); from then on versions
    # are named by content hash, so the unchanged YAML is uploaded once more under its hash name, then reused.
    assert uploads == ["upload", "upload_version", "upload_version"]
    (versions,) = kfp_api.versions.values()
    names = [v["display_name"] for v in versions]
    assert names[0] == "bidflow-ctr-training" and all(n.startswith("bidflow-ctr-training-") for n in names[1:])
    assert versions[0]["pipeline_spec_text"] == versions[1]["pipeline_spec_text"]
    assert "image: registry.example/bidflow:1" in versions[2]["pipeline_spec_text"]
    ids = [v["pipeline_version_id"] for v in versions]
    used = [r["pipeline_version_reference"]["pipeline_version_id"] for r in kfp_api.runs]
    assert used == [ids[0], ids[1], ids[1], ids[2], ids[2]]
    assert len(kfp_api.experiments) == 1  # found by name after the first run


def test_recurring_submission_creates_a_cron_schedule(kfp_api: KfpStandIn) -> None:
    out = submit(kfp_api, "--run-name", "nightly-bid-filter", "--recurring", "0 3 * * *")
    assert not kfp_api.runs
    (job,) = kfp_api.recurring_runs
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # KFP's six fields, seconds first
    assert job["mode"] == "ENABLE"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert job["display_name"] == "nightly-bid-filter"
    assert set(job["pipeline_version_reference"]) == {"pipeline_id", "pipeline_version_id"}
    assert "recurring run recurring-" in out


def test_parameters_are_checked_before_anything_is_sent(kfp_api: KfpStandIn) -> None:
    register_pipeline_commands(cli)
    result = CliRunner().invoke(cli, ["pipeline", "submit", "--host", kfp_api.url, "--param", "hours=3"])
    assert isinstance(result.exception, ConfigError) and "unknown pipeline parameter" in str(result.exception)
    assert kfp_api.requests == []


def test_cron_schedules() -> None:
    assert cron_schedule("*/15 * * * *") == "0 */15 * * * *"
    assert cron_schedule("30 0 3 * * *") == "30 0 3 * * *"
    with pytest.raises(ConfigError, match="five fields"):
        cron_schedule("daily")


def test_golden_yaml_is_a_two_document_kfp_package() -> None:
    spec, platform = yaml.safe_load_all((REPO / "pipelines/bid_filter.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "bidflow-bid-filter-training" and "kubernetes" in platform["platforms"]

"""The bidder's own loop on a real MLflow store (SQLite) and the real campaign-2997 files, on small settings.

fit -> log + register ``candidate`` -> ``fetch_bidder`` by alias, version, URI and folder -> promote
refused before the replay gate -> gate (no champion: against the candidate's linear policy) ->
promote -> gate against that champion (itself: no more clicks, so it fails) -> the replay command's
report. The logs are cut to their head (``bidder.max_auctions``) and two budget levels, so a fit
takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bidflow.config import Config
from bidflow.errors import BiddingError, GateFailed, RegistryError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SMALL: dict[str, Any] = {"levels": [1 / 32, 1 / 8], "max_auctions": 20_000, "value_bins": 8}


def small_settings(tmp: Path, shared_data: Path, **bidder: Any) -> dict[str, Any]:
    """A configuration with its own MLflow store and reports under ``tmp`` and the small bidder settings."""
    return {
        "registry": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_location": str(tmp / "art")},
        "paths": {"reports": str(tmp / "reports")},
        "bidder": {"data": str(shared_data / "ipinyou_auction_outcomes"), **SMALL, **bidder},
    }


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Path, Any]]:
    """One fit, registered as version 1 ('candidate'); the config, its file and the fit's outcome."""
    from bidflow.bidding.steps import fit_step

    tmp = tmp_path_factory.mktemp("bidder-loop")
    settings = small_settings(tmp, shared_data)
    (tmp / "bidflow.yaml").write_text(yaml.safe_dump(settings))
    config = Config.model_validate(settings)
    yield config, tmp / "bidflow.yaml", fit_step(config, out_dir=tmp / "fitted")


def bidflow(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")} | {"COLUMNS": "200"}
    command = [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=config_file.parent, env=env, timeout=300)


def test_a_fit_is_logged_registered_and_fetched_back_every_way(store: tuple[Config, Path, Any]) -> None:
    import mlflow

    from bidflow.bidding.artifact import load_bidder
    from bidflow.bidding.registry import fetch_bidder
    from bidflow.modeling.registry import tracking
    from bidflow.serving.base import ModelSource

    config, _, fit = store
    assert fit.version is not None and fit.version.version == "1" and fit.version.aliases == ("candidate",)
    expected = {(level, name): p.params() for level, ps in fit.bidder.policies.items() for name, p in ps.items()}
    sources = [
        ModelSource("bidder", ref="candidate"),
        ModelSource("bidder", ref="1"),
        ModelSource("bidder", uri="models:/bidder/1"),
        ModelSource("bidder", uri=str(fit.folder), version="7"),
    ]
    labels = []
    for source in sources:
        folder, label = fetch_bidder(config, source)
        loaded = load_bidder(folder)
        assert {(lv, n): p.params() for lv, ps in loaded.policies.items() for n, p in ps.items()} == expected
        labels.append(label)
    assert labels == ["1", "1", "models:/bidder/1", "7"]
    with tracking(config.registry) as client:
        run = client.get_run(fit.run_id)
        assert float(run.data.params["c0_1_32.linear.base_bid"]) > 0 and run.data.params["policy"] == "planned"
        assert run.data.metrics["tuning_clicks.c0_1_32.planned"] > 0
        assert 0 < run.data.metrics["landscape_win_logloss"] < 1
        assert run.data.tags["bidder.campaign"] == "2997"
        artifacts = {a.path for a in client.list_artifacts(fit.run_id)}
        assert {"model", "reports"} <= artifacts
        assert [a.path for a in client.list_artifacts(fit.run_id, "reports")] == ["reports/tuning_curves.png"]
        model_file = mlflow.artifacts.load_text("models:/bidder/1/MLmodel")
    assert "bidflow_bidder" in model_file
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        fetch_bidder(config, ModelSource("bidder", ref="champion"))
    with pytest.raises(BiddingError, match="no fitted bidder"):
        fetch_bidder(config, ModelSource("bidder", uri=str(fit.folder.parent / "reports-none")))


def test_the_replay_gate_decides_promotion(store: tuple[Config, Path, Any]) -> None:
    from bidflow.bidding.steps import gate_step
    from bidflow.modeling import registry

    config, config_file, _ = store
    refused = bidflow(config_file, "promote", "--kind", "bidder")
    assert refused.returncode == 1 and "gate.replay=not run" in " ".join(refused.stderr.split()), refused.stderr

    first = gate_step(config)  # no champion yet: against the linear policy of the candidate's own fit
    assert first.passed, first.gate.failures
    assert first.champion is None and "linear" in first.gate.baseline and len(first.gate.levels) == 2
    assert registry.resolve(config.registry, "bidder", "1").tags["gate.replay"] == "passed"
    promoted = bidflow(config_file, "promote", "--kind", "bidder")
    assert promoted.returncode == 0 and "promoted bidder v1 to 'champion'" in promoted.stdout, promoted.stderr

    with pytest.raises(GateFailed, match="failed the replay gate") as failed:
        gate_step(config)  # the candidate is the champion: equal clicks are not more clicks
    assert failed.value.report_path is not None and failed.value.report_path.is_file()
    assert registry.resolve(config.registry, "bidder", "1").tags["gate.replay"] == "failed"
    verdict = json.loads((failed.value.report_path.parent / "gate.json").read_text())
    assert not verdict["passed"] and all("not more than" in lv["failures"][0] for lv in verdict["levels"])
    with registry.tracking(config.registry) as client:
        gate_runs = client.search_runs([client.get_experiment_by_name("bidflow").experiment_id],
                                       "tags.`bidder.candidate` = 'bidder v1'")  # fmt: skip
    nested = [r for r in gate_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(nested) == 4 and all("c0_1_8.clicks" in r.data.metrics for r in nested)  # 2 gates x 2 replays


def test_the_replay_command_writes_its_report_and_logs_each_replay(store: tuple[Config, Path, Any]) -> None:
    _, config_file, _ = store
    report = config_file.parent / "replay-report"
    result = bidflow(config_file, "bidder", "replay", "1", "--level", "1/32", "--policy", "linear",
                     "--policy", "planned", "--report", str(report))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "planned c0= 1/32" in result.stdout and "Traceback" not in result.stderr
    html = (report / "replay.html").read_text()
    assert html.count("<img") == 4  # clicks/spend vs budget, bid vs pCTR, win rate over the log, landscape
    assert "Reference: published results" in html and "RLB" in html
    for column in ("spend share", "win rate", "CPM", "eCPC"):
        assert column in html
    payload = json.loads((report / "replay.json").read_text())
    assert [r["policy"] for r in payload["replays"]] == ["linear", "planned"] and payload["campaign"] == "2997"
    assert payload["replays"][0]["clicks"] > 0 and payload["replays"][0]["cost"] <= payload["replays"][0]["budget"]

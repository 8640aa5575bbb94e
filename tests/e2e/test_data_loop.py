"""The data loop as a user runs it: `bidflow demo`, and `dvc repro` from a clean clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    small = {
        "BIDFLOW__SIMULATE__AUCTIONS_PER_HOUR": "4000",
        "BIDFLOW__SIMULATE__PUBLISHERS": "150",
        "BIDFLOW__FEATURES__REPO": str(REPO / "feature_repo"),
    }
    return os.environ | small | {"PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}


def test_demo_runs_twice_and_says_where_its_outputs_are(tmp_path: Path) -> None:
    shutil.copy(REPO / "bidflow.yaml", tmp_path / "bidflow.yaml")
    for _ in range(2):
        result = subprocess.run([str(BIN / "bidflow"), "demo"], cwd=tmp_path, env=_env(), capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "gate passed" in out and "gate stopped the batch as expected" in out
    assert "unseen_categories(publisher_id)" in out
    assert "registered version 1 as candidate" in out and "promoted version 1 to champion" in out
    assert "of partner calls saved" in out
    reports = tmp_path / "runs/demo/reports"
    for report in ("validation", "validation-flood", "evaluation-bid_filter", "fairness-bid_filter"):
        assert any((reports / report).glob("*.html")), report
    assert (tmp_path / "runs/demo/mlflow.db").stat().st_size > 0


def _outs(lock: Path) -> dict[str, str]:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def test_dvc_repro_from_a_clean_clone_reproduces_the_committed_data_version(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    changed = subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    for path in changed:  # while developing, the working tree may be ahead of the last commit
        target = clone / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, target)
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("BIDFLOW__")}  # DVC tracks bidflow.yaml only
    subprocess.run(["dvc", "repro", "--quiet"], cwd=clone, env=env, check=True, timeout=900)
    assert _outs(clone / "dvc.lock") == _outs(REPO / "dvc.lock"), (
        "a clean clone produced other data than dvc.lock records: run `make dvc-repro` and commit dvc.lock"
    )
    status = subprocess.run(["dvc", "status"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert "up to date" in status.stdout.lower(), status.stdout
    assert '"passed": true' in (clone / "reports/validation/validation.json").read_text()
    subprocess.run(["dvc", "push", "--quiet"], cwd=clone, env=env, check=True, timeout=300)
    assert any(p.is_file() for p in (clone / ".dvcstore").rglob("*")), "the local remote received the data"

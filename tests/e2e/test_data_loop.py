"""The data loop as a user runs it: `dvc repro` from a clean clone (the demo: tests/e2e/test_demo.py)."""

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

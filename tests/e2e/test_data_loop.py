"""The data loop as a user runs it: `dvc repro` from a clean clone (the demo: tests/e2e/test_demo.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # the research data beside the clone, as beside REPO
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


def _wider_simd_features() -> list[str]:
    """The SIMD targets numpy found on this CPU beyond its compiled baseline (numpy's public report)."""
    simd = np.show_config(mode="dicts")["SIMD Extensions"]
    return list(simd.get("found", []))


def _run_data_stages(workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The commands of dvc.yaml's stages, in order, with the same relative paths."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    script = " && ".join(stage["cmd"] for stage in stages.values())
    workdir.mkdir()
    shutil.copy(REPO / "bidflow.yaml", workdir / "bidflow.yaml")
    return subprocess.Popen(["bash", "-c", script], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_data_output_has_the_same_bytes_with_and_without_the_cpus_wider_simd(tmp_path: Path) -> None:
    wider = _wider_simd_features()
    if not wider:
        pytest.skip("this CPU has no SIMD features beyond numpy's baseline: there is nothing to switch off")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # the fraud stages read ../shared, as from REPO
    runs = {
        "full": _run_data_stages(tmp_path / "full", env),
        # numpy then takes its baseline (SSE4.2-level) kernels for sorting, log, exp and the rest
        "baseline": _run_data_stages(tmp_path / "baseline", env | {"NPY_DISABLE_CPU_FEATURES": " ".join(wider)}),
    }
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, f"the {name} run failed: {stderr.decode()[-2000:]}"
    outputs = {name: {**_tree_bytes(tmp_path / name / "data"), **_tree_bytes(tmp_path / name / "reports")}
               for name in runs}  # fmt: skip
    assert "reference/profile.json" in outputs["full"]
    assert outputs["full"].keys() == outputs["baseline"].keys()
    differing = [path for path in outputs["full"] if outputs["full"][path] != outputs["baseline"][path]]
    assert not differing, f"these outputs depend on the CPU's SIMD features: {differing}"

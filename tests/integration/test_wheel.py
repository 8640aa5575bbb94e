"""A wheel built from the repository works on its own, outside the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _uv() -> str:
    local = REPO / ".uv" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: run `make setup` first")
    return found


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("bidflow-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert not any(name.startswith(("tests/", "bench/")) for name in names), "tests and benchmarks are not shipped"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bidflow = bidflow.cli:app" in (site / entry_points).read_text()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bidflow, bidflow.cli;"
        "assert bidflow.__file__.startswith(sys.argv[1]), bidflow.__file__;"
        "sys.argv = ['bidflow', '--help']; bidflow.cli.app()"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(site)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "simulate" in result.stdout and "ingest" in result.stdout

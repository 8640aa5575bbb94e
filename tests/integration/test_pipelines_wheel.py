"""The pipelines compile from an installed wheel exactly as from the source tree.

Lightweight KFP components embed their function's source (read with ``inspect``), so the wheel must
ship the component modules as source; the compiled YAML must not depend on where bidflow is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_pipelines_compile_from_the_wheel_to_the_golden_yaml(tmp_path: Path) -> None:
    uv = REPO / ".uv" / "bin" / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: run `make setup` first")
    subprocess.run([found, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("bidflow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import bidflow.pipelines.catalog as c;"
        "assert c.__file__.startswith(sys.argv[1]), c.__file__; c.compile_all(Path(sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", probe, str(tmp_path / "site"), str(tmp_path / "ir")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("bid_filter", "ctr"):
        assert (tmp_path / "ir" / f"{name}.yaml").read_text() == (REPO / "pipelines" / f"{name}.yaml").read_text()

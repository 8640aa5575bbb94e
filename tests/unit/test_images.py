"""The other two images (not buildable here): monitor/Dockerfile and components/Dockerfile.

What each copies exists in the repository; the monitor's entry point runs, with its default command, in the
environment the image is built from (``.venv-monitor``, the same lock); both pin the Makefile's uv.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bidflow.deploy.steps import monitor_python
from tests.conftest import REPO


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("dockerfile", ["monitor/Dockerfile", "components/Dockerfile"])
def test_every_copied_path_exists(dockerfile: str) -> None:
    copies = [args.split() for op, args in instructions(REPO / dockerfile) if op == "COPY" and "--from" not in args]
    assert copies
    for *sources, _target in copies:
        for source in sources:
            found = list(REPO.glob(source))
            assert found, f"{dockerfile}: {source}"
            for path in found:  # and the build context has it: BuildKit reads <Dockerfile>.dockerignore
                assert in_context(REPO / dockerfile, path.relative_to(REPO).as_posix()), f"{dockerfile}: {path}"


def in_context(dockerfile: Path, path: str) -> bool:
    """Whether ``path`` (relative to the repository) survives the Dockerfile's .dockerignore (last match wins)."""
    from fnmatch import fnmatch

    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.is_file():
        return True
    kept = True
    prefixes = [path, *("/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1))]
    for line in ignore.read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            kept = keep
    return kept


def test_the_context_check_sees_an_ignored_file() -> None:
    dockerfile = REPO / "components/Dockerfile"
    assert in_context(dockerfile, "src/bidflow/cli.py") and not in_context(dockerfile, "tests/conftest.py")
    assert not in_context(dockerfile, "src/bidflow/__pycache__/cli.cpython-311.pyc")


@pytest.mark.parametrize("dockerfile", ["monitor/Dockerfile", "components/Dockerfile"])
def test_uv_version_is_the_makefiles(dockerfile: str) -> None:
    (wanted,) = re.findall(r"^UV_VERSION := (\S+)", (REPO / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    assert f"UV_VERSION={wanted}" in (REPO / dockerfile).read_text(encoding="utf-8")


def test_the_monitor_entry_point_runs_in_its_environment() -> None:
    found = dict(instructions(REPO / "monitor" / "Dockerfile"))
    entry, cmd = json.loads(found["ENTRYPOINT"]), json.loads(found["CMD"])
    assert entry == ["python", "-m", "bidflow.monitoring"] and cmd[0] == "serve"
    python = monitor_python()
    assert python.exists(), "make monitor-setup builds .venv-monitor (make test does)"
    done = subprocess.run([str(python), *entry[1:], *cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--watch-only" in done.stdout

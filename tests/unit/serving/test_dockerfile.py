"""serving/Dockerfile (not buildable here): what it copies exists, its entry point runs, its uv is the Makefile's."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from bidflow.serving.__main__ import parser
from tests.conftest import REPO

DOCKERFILE = REPO / "serving" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_every_copied_path_exists_in_the_repository() -> None:
    copies = [args.split() for op, args in _instructions() if op == "COPY" and not args.startswith("--from")]
    assert copies
    for *sources, _target in copies:
        for source in sources:
            assert (REPO / source).exists(), source


def test_the_entry_point_is_importable_and_accepts_its_arguments() -> None:
    instructions = dict(_instructions())
    entry, cmd = json.loads(instructions["ENTRYPOINT"]), json.loads(instructions["CMD"])
    assert entry[:3] == ["python", "-m", "bidflow.serving"]
    # What the InferenceService manifests add (k8s/base/inferenceservice-bid-filter.yaml).
    args = parser().parse_args([*entry[3:], *cmd, "--model_name=bid-filter"])
    assert (args.host, args.model, args.name) == ("0.0.0.0", "/mnt/models", "bid-filter")
    done = subprocess.run(
        [sys.executable, "-m", "bidflow.serving", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--auction-entry" in done.stdout


def test_uv_version_is_the_makefiles() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    (wanted,) = re.findall(r"^UV_VERSION := (\S+)", makefile, flags=re.M)
    assert f"UV_VERSION={wanted}" in DOCKERFILE.read_text(encoding="utf-8")


def test_bidflow_serve_command_registers_with_the_same_options() -> None:
    import typer
    from typer.testing import CliRunner

    from bidflow.serving.commands import register_serving_commands

    app = typer.Typer()
    app.callback()(lambda: None)
    register_serving_commands(app)
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--auction-entry" in result.output and "--http-port" in result.output

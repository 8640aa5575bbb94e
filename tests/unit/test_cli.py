"""The command line as a user meets it: help everywhere, errors without tracebacks."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from bidflow.cli import cli

REPO = Path(__file__).resolve().parents[2]


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if hasattr(command, "commands"):  # a group
            found.extend(_commands(command, path))
    return found


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "bidflow.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_every_command_has_help() -> None:
    commands = _commands(typer.main.get_command(cli))
    assert {("simulate",), ("ingest",), ("validate",), ("profile",), ("openrtb", "check"), ("demo",)} <= set(commands)
    for path in commands:
        result = run(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "usage:" in result.stdout.lower() and len(result.stdout) > 100


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("ingest", "does/not/exist"), "auction-log input does not exist", 2),
        (("validate", "does/not/exist"), "parquet batch not found", 2),
        (("simulate", "--hours", "0"), "simulate.hours", 2),
        (("--config", "missing.yaml", "simulate"), "configuration file not found", 2),
    ],
)
def test_user_mistakes_give_a_message_not_a_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_openrtb_check_reports_lines_and_paths_and_exits_1(tmp_path: Path) -> None:
    good = '{"id": "a", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], "site": {"id": "s"}}'
    bad = '{"id": "b", "imp": [{"id": "1", "banner": {"w": "wide", "h": 250}}], "site": {"id": "s"}}'
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(gzip.compress(f"{good}\n{bad}\n{good}\n".encode()))
    result = run("openrtb", "check", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "line 2" in result.stdout and "$.imp[0].banner.w" in result.stdout
    assert "2 of 3 requests parse" in result.stdout
    clean = tmp_path / "clean.jsonl"
    clean.write_text(good + "\n")
    assert run("openrtb", "check", str(clean), cwd=tmp_path).returncode == 0


def test_simulate_ingest_validate_from_the_command_line(tmp_path: Path) -> None:
    # A reference needs enough traffic to have seen the publishers' long tail: 2 hours x 4k auctions.
    common = ("--start", "2026-11-02T10:00:00", "--auctions-per-hour", "4000")
    assert run("simulate", "--out", "raw", "--hours", "3", *common, cwd=tmp_path).returncode == 0
    ingested = run("ingest", "raw", "--out", "parquet", cwd=tmp_path)
    assert ingested.returncode == 0 and "ingested" in ingested.stdout
    profiled = run("profile", "parquet", "--until", "2026-11-02T12:00:00", "--out", "ref.json", cwd=tmp_path)
    assert profiled.returncode == 0, profiled.stderr
    args = ("validate", "parquet", "--since", "2026-11-02T12:00:00", "--reference", "ref.json", "--report", "rep")
    passed = run(*args, cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert (tmp_path / "rep" / "validation.html").exists()

    flood = ("--start", "2026-11-02T13:00:00", "--auctions-per-hour", "1500", "--scenario", "publisher_flood")
    assert run("simulate", "--out", "raw2", "--hours", "1", *flood, cwd=tmp_path).returncode == 0
    assert run("ingest", "raw2", "--out", "parquet2", cwd=tmp_path).returncode == 0
    failed = run("validate", "parquet2", "--reference", "ref.json", "--report", "rep2", cwd=tmp_path)
    assert failed.returncode == 1
    assert "data validation failed" in failed.stderr and "rep2/validation.html" in failed.stderr.replace("\n", "")
    assert "Traceback" not in failed.stderr

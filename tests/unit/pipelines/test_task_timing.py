"""The per-task start-up record the pipeline benchmark reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bidflow.components._timing import TIMINGS_ENV, process_age_s, task_name


def test_a_task_records_its_start_up_body_and_heavy_imports_only_when_asked(tmp_path: Path) -> None:
    script = "import time; from bidflow.components._runtime import config; config(''); import xgboost; time.sleep(0.2)"
    argv = [sys.executable, "-c", script, "--function_to_execute", "train_model"]
    subprocess.run(argv, check=True, env={"PATH": "/usr/bin", TIMINGS_ENV: str(tmp_path)})
    subprocess.run(argv, check=True, env={"PATH": "/usr/bin"})  # not asked: nothing more written
    lines = (tmp_path / "timings.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["task"] == "train_model"
    assert 0 < record["startup_s"] < 60
    assert record["body_s"] >= 0.2
    assert "xgboost" in record["imported"] and "feast" not in record["imported"]


def test_process_age_and_task_name() -> None:
    assert 0 < process_age_s() < 24 * 3600
    assert task_name(["python", "-m", "kfp.dsl.executor_main", "--function_to_execute", "ingest_logs"]) == "ingest_logs"
    assert task_name(["/usr/bin/tool"]) == "tool"

"""How long a pipeline task spends before its work starts, for the pipeline benchmark.

Every kfp.local task (and every pod on a cluster) is a fresh Python process: the interpreter, KFP's
executor and the component's imports run before the body does, and the core's heavy libraries are
imported inside the body on first use. With ``BIDFLOW_TASK_TIMINGS`` naming a folder, a task appends
one JSON line to ``timings.jsonl`` there when it exits: its start-up (process start to the body's
first call into ``bidflow.components._runtime``), its body's time, and which heavy libraries it ended
up importing. Unset (the default, and on a cluster), nothing is recorded.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Final

TIMINGS_ENV: Final = "BIDFLOW_TASK_TIMINGS"
HEAVY: Final = ("feast", "mlflow", "xgboost", "sklearn", "matplotlib", "pandas", "kserve")
_marked: list[bool] = []


def mark_body_start() -> None:
    """Record this task's start-up now and its body's time at exit (once per process; only when asked)."""
    folder = os.environ.get(TIMINGS_ENV)
    if not folder or _marked:
        return
    _marked.append(True)
    startup = process_age_s()
    started = time.perf_counter()

    def write() -> None:
        record = {
            "task": task_name(sys.argv),
            "pid": os.getpid(),
            "startup_s": round(startup, 3),
            "body_s": round(time.perf_counter() - started, 3),
            "imported": sorted(name for name in HEAVY if name in sys.modules),
        }
        with (Path(folder) / "timings.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    atexit.register(write)


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5): start time after boot, in clock ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


def task_name(argv: list[str]) -> str:
    """The component function a KFP executor runs (``--function_to_execute NAME``), else the program."""
    if "--function_to_execute" in argv:
        position = argv.index("--function_to_execute") + 1
        if position < len(argv):
            return argv[position]
    return Path(argv[0]).name if argv else "unknown"

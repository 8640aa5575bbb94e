"""Wall time of the bid-filter training pipeline under ``kfp.local`` on the default demo data.

The data is the default ``simulate`` configuration (the demo's: 6 hours from 2026-11-02 00:00 UTC,
20,000 auctions an hour on average, 400 publishers, seed 7); generating it is not timed. Everything
else is the default configuration too (Feast features, default training parameters and gates),
with a private Feast store, MLflow registry and local deployment (router + model server, started
before and not timed) in a temporary folder. Timed: ``run_local`` from start to finish -- compiling,
then the eleven tasks (ingest, validate, build / apply / materialize features, train, evaluate,
bias, register, deploy, fit the drift detector) each as a subprocess of this interpreter
(SubprocessRunner, ``use_venv=False``; the fit hands over to ``.venv-monitor``), sequentially, as
kfp.local runs them.

Per task, the same run also records (``bidflow.components._timing``) its start-up -- process start
to the body's first line: the interpreter, KFP's executor and the component module's imports -- the
body's own time, which includes the core's imports on first use, and which heavy libraries the task
ended up importing (a task that does not use Feast must not import it).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Result
from bidflow.components._timing import TIMINGS_ENV
from bidflow.config import Config
from bidflow.data.simulate import simulate
from bidflow.demo.services import free_port, running_services
from bidflow.pipelines.local import run_local

REPO = Path(__file__).resolve().parents[1]


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        monitor = free_port()
        settings = {
            "features": {
                "repo": str(REPO / "feature_repo"),
                "offline": str(root / "features"),
                "state": str(root / "feast"),
            },
            "registry": {
                "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                "artifact_location": str(root / "mlartifacts"),
            },
            "paths": {"reports": str(root / "reports"), "reference": str(root / "reference")},
            "canary": {
                "state": str(root / "deploy"),
                "router_port": free_port(),
                "champion_port": free_port(),
                "canary_port": free_port(),
                "monitor_url": f"http://127.0.0.1:{monitor}",
            },
            "monitor": {"port": monitor, "detector": str(root / "detectors")},
        }
        config = Config.model_validate(settings)
        generated = simulate(config.simulate, root / "raw")
        arguments = {"raw_logs": str(root / "raw"), "config": yaml.safe_dump(settings)}
        config_file = root / "bidflow.yaml"
        config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
        timings = root / "timings"
        timings.mkdir()
        with running_services(config_file, config.canary.router_port, monitor, root / "logs"):
            os.environ[TIMINGS_ENV] = str(timings)
            try:
                started = time.perf_counter()
                result = run_local("bid_filter", arguments, config, root / "kfp")
                seconds = time.perf_counter() - started
            finally:
                del os.environ[TIMINGS_ENV]
        tasks = [json.loads(line) for line in (timings / "timings.jsonl").read_text().splitlines()]
    verdicts = ", ".join(f"{gate} {'passed' if passed else 'failed'}" for gate, passed in result.gates.items())
    registered = f"registered v{result.registered.version}" if result.registered else "not registered"
    detail = (
        f"{generated.auctions:,} auctions ({generated.calls:,} partner calls) over {config.simulate.hours} h, "
        f"11 tasks as subprocesses; gates: {verdicts}; {registered}, deployed as champion"
    )
    return [Result("pipeline: bid-filter training under kfp.local (wall)", seconds, "s", detail), _startup(tasks)]


def _startup(tasks: list[dict[str, Any]]) -> Result:
    """The median task start-up, with every task's start-up, body and heavy imports."""
    cells = "; ".join(
        f"{t['task']} {t['startup_s']:.1f} + {t['body_s']:.1f} s ({', '.join(t['imported']) or 'none'})" for t in tasks
    )
    feast = [t["task"] for t in tasks if "feast" in t["imported"]]
    return Result(
        "pipeline: start-up per kfp.local task (median)",
        statistics.median(t["startup_s"] for t in tasks),
        "s",
        f"{len(tasks)} tasks, start-up + body (heavy libraries imported): {cells}. Feast imported by "
        f"{', '.join(feast) or 'no task'}",
    )

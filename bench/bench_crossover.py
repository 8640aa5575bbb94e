"""Benchmark: the offline steps through pandas and through Spark (local mode) at 1x, 4x and 16x the default data.

The default data is the demo's (``simulate``: 6 hours, 20,000 auctions an hour on average); 4x and 16x
raise the auctions per hour. Each scale is generated once (not timed). Then, per engine, the steps a
user runs, each as its own process so its memory is its own:

* pandas: ``bidflow ingest`` (one process per hourly file) -> ``bidflow features build`` -> ``bidflow
  features apply`` -> ``bidflow features training-set`` (Feast's file offline store) -> ``bidflow train``
  (xgboost; it joins its own training set again, as a user's run does);
* spark: ``bidflow ingest`` with ``ingest.engine: spark`` (a Spark task per file) -> ``python -m
  bidflow.engines.spark_jobs features`` -> ``bidflow features apply`` -> ``training-set`` -> ``train``
  (``xgboost.spark``; it joins its own training set again in Spark, as the pandas run does, and no
  training row passes through pandas), on ``local[*]``.

Per step: wall time, peak memory (the resident memory of the step's whole process tree, sampled every
0.2 s: Spark's JVM included), and partner-call rows per second per core. A pandas run holds its data
in memory, so a scale whose projected peak (the previous scale's, times the ratio of rows) would pass
``MEMORY_BUDGET`` of this machine's memory is not run, and the row says so: that is where pandas stops
fitting here. Spark's memory is what ``spark.driver_memory`` allows (it spills to disk beyond), so
Spark is not projected. ``BENCH_CROSSOVER_SCALES`` (e.g. ``1,4``) runs fewer scales.

Run alone: ``.venv/bin/python -m bench.bench_crossover [scale ...]``; ``python -m bench crossover``
(or ``make bench-crossover``) adds the rows to bench/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Result, machine

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 4, 16)
BASE_AUCTIONS_PER_HOUR = 20_000
MEMORY_BUDGET = 0.8  # of the machine's memory: above it, a step would push the machine into swapless OOM
STEP_TIMEOUT_S = 3_600
CLI = [sys.executable, "-m", "bidflow.cli"]
SPARK = [sys.executable, "-m", "bidflow.engines.spark_jobs"]


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    peak_bytes: int
    ok: bool
    log: str


def machine_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def run_step(name: str, command: list[str], cwd: Path) -> Step:
    """Run ``command``, sampling its process tree's resident memory; its wall time and peak."""
    import psutil

    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   env=os.environ | {"COLUMNS": "200"})  # fmt: skip
        root = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            if time.perf_counter() - started > STEP_TIMEOUT_S:
                process.kill()
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    return Step(name, seconds, peak, process.returncode == 0, text[-1500:])


def write_config(folder: Path, scale: int, engine: str) -> Path:
    settings: dict[str, Any] = {
        "simulate": {"hours": 6, "auctions_per_hour": BASE_AUCTIONS_PER_HOUR * scale},
        "ingest": {"workers": 0, "engine": engine},
        "paths": {
            "raw": str(folder / "raw"),
            "parquet": str(folder / engine / "parquet"),
            "reports": str(folder / "reports"),
        },
        "features": {
            "repo": str(ROOT / "feature_repo"),
            "offline": str(folder / engine / "features"),
            "state": str(folder / engine / "feast"),
            "engine": engine,
        },
        "train": {"engine": engine},
        "registry": {
            "tracking_uri": f"sqlite:///{folder / engine / 'mlflow.db'}",
            "artifact_location": str(folder / engine / "art"),
        },
        "spark": {"master": "local[*]", "driver_memory": "8g"},
    }
    path = folder / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def steps_of(engine: str, config: Path, folder: Path) -> list[tuple[str, list[str]]]:
    parquet, out = str(folder / engine / "parquet"), str(folder / engine / "training-set")
    base = [*CLI, "--config", str(config)]
    ingest = ("ingest", [*base, "ingest", str(folder / "raw"), "--out", parquet])
    if engine == "pandas":
        return [
            ingest,
            ("features", [*base, "features", "build", parquet]),
            ("apply", [*base, "features", "apply"]),
            ("training set", [*base, "features", "training-set", parquet, "--out", f"{out}.parquet"]),
            ("train", [*base, "train", "--kind", "bid_filter"]),
        ]
    jobs = [*SPARK]
    return [
        ingest,
        ("features", [*jobs, "features", "--config", str(config)]),
        ("apply", [*base, "features", "apply"]),
        ("training set", [*jobs, "training-set", "--config", str(config), "--out", out]),
        ("train", [*jobs, "train", "--config", str(config), "--kind", "bid_filter"]),
    ]


def calls_in(parquet: Path) -> int:
    import pyarrow.dataset as ds

    return int(ds.dataset(parquet, format="parquet", partitioning="hive").count_rows())


def run(scales: tuple[int, ...] | None = None) -> list[Result]:
    from bidflow.config import SimulateConfig
    from bidflow.data.simulate import simulate

    if scales is None:
        chosen = os.environ.get("BENCH_CROSSOVER_SCALES")
        scales = tuple(int(v) for v in chosen.split(",")) if chosen else SCALES
    cores = os.cpu_count() or 1
    budget = MEMORY_BUDGET * machine_bytes()
    results: list[Result] = []
    last_peak: dict[str, tuple[int, int, int]] = {}  # engine -> (scale, rows, peak bytes) of its largest run
    with tempfile.TemporaryDirectory(prefix="crossover-") as tmp:
        for scale in scales:
            folder = Path(tmp) / f"x{scale}"
            folder.mkdir()
            simulate(SimulateConfig(hours=6, auctions_per_hour=BASE_AUCTIONS_PER_HOUR * scale), folder / "raw")
            rows = 0
            for engine in ("pandas", "spark"):
                if engine == "pandas" and engine in last_peak:
                    before_scale, before_rows, before_peak = last_peak[engine]
                    projected = before_peak * scale / before_scale
                    if projected > budget:
                        results.append(Result(
                            f"crossover {scale}x: {engine} not run", projected / 2**30, "GiB projected",
                            f"about {before_rows * scale // before_scale:,} partner calls; the {before_rows:,}-row "
                            f"run peaked at {before_peak / 2**30:.1f} GiB, so this one would need about "
                            f"{projected / 2**30:.0f} GiB, over {MEMORY_BUDGET:.0%} of this machine's "
                            f"{machine_bytes() / 2**30:.0f} GiB",
                        ))  # fmt: skip
                        continue
                config = write_config(folder, scale, engine)
                total, peak = 0.0, 0
                for name, command in steps_of(engine, config, folder):
                    step = run_step(name, command, ROOT)
                    if name == "ingest" and step.ok:
                        rows = calls_in(folder / engine / "parquet")
                    if not step.ok:
                        results.append(Result(f"crossover {scale}x: {engine} {name} FAILED", step.seconds, "s",
                                              step.log.replace("|", "/").replace("\n", " ")[-600:]))  # fmt: skip
                        break
                    total += step.seconds
                    peak = max(peak, step.peak_bytes)
                    results.append(_row(f"crossover {scale}x: {engine} {name}", step, rows, cores))
                else:
                    last_peak[engine] = (scale, rows, peak)
                    results.append(Result(
                        f"crossover {scale}x: {engine} ingest -> features -> training set -> train", total, "s",
                        f"{rows:,} partner calls; {rows / total / cores:,.0f} rows/s per core; peak "
                        f"{peak / 2**30:.2f} GiB",
                    ))  # fmt: skip
    return results


def _row(name: str, step: Step, rows: int, cores: int) -> Result:
    return Result(name, step.seconds, "s", f"{rows:,} partner calls; {rows / step.seconds / cores:,.0f} rows/s per "
                  f"core; peak {step.peak_bytes / 2**30:.2f} GiB (process tree)")  # fmt: skip


if __name__ == "__main__":
    print(f"machine: {machine()}")
    chosen = tuple(int(a) for a in sys.argv[1:]) or SCALES
    for result in run(chosen):
        print("| " + " | ".join(result.cells()) + " |", flush=True)

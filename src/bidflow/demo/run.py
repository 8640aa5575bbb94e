"""``bidflow demo``: the whole loop on generated data, locally, step by step.

1. generate six hours of auction logs (the default market), track them with DVC (the run folder's own
   DVC repository) and profile the first four hours as the data gate's reference;
2. run the bid-filter training pipeline with kfp.local: ingest, validate, features (Feast apply +
   materialize), train, evaluate, bias gate, register, deploy as **champion** on the local backend,
   fit the drift detector (alibi-detect, in the monitor's environment);
3. generate the next two hours, retrain on all eight with the same pipeline (its gates compare the
   new version with the champion), and deploy it as a **20 % canary**;
4. replay the next hour, in which the device mix swings to connected TV (``device_shift``), through
   the router, showing decisions/s and latency live;
5. the drift monitor finds the drift in the canary's traffic and **rolls the canary back** by itself;
   the champion keeps serving (no failed request), and its own drifted traffic raises an alert and a
   retraining request instead;
6. an hour flooded by an unknown publisher is stopped by the data gate;
7. one self-contained HTML report of all of it.

Each run starts from a fresh ``runs/demo`` with its own feature store, registry, ports and state.
The demo keeps the generated market small (at most ``DEMO_AUCTIONS_PER_HOUR`` auctions an hour),
so the whole loop takes a few minutes on two cores, and starts at 14:00 UTC: three partners bid
only part of the day (``bidflow.data.partners``), and a training window from 14:00 to 22:00 has none
of them switching on or off in its held-out hour, which the bias gate would rightly flag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from rich.console import Console

from bidflow.errors import BidflowError
from bidflow.kinds import registered_name

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.data.validate import ValidationReport
    from bidflow.deploy.replay import ReplayReport
    from bidflow.modeling.registry import ModelRef

DEMO_DIR: Final = Path("runs/demo")
REFERENCE_HOURS: Final = 4
BASE_HOURS: Final = 6
RETRAIN_HOURS: Final = 2
DEMO_AUCTIONS_PER_HOUR: Final = 5_000
REPLAY_AUCTIONS: Final = 3_000
CANARY_PERCENT: Final = 20
WINDOW: Final = 400
DEMO_START_HOUR: Final = 14
# Rows the gate reports and the demo report explain (``explain.max_rows``): TreeSHAP walks every tree
# for every row, and the default sample, explained per model in both pipelines' gates and again for
# the report, would stretch a demo on two cores; the mean |SHAP| of a 5,000-row sample ranks the
# features almost exactly as the default's does.
DEMO_EXPLAIN_ROWS: Final = 5_000


class DemoError(BidflowError):
    """A demo step failed."""


@dataclass
class DemoOutcome:
    """What the demo produced (the report is drawn from it; tests assert on it)."""

    root: Path
    validation: ValidationReport | None = None
    flood: ValidationReport | None = None
    champion: ModelRef | None = None
    canary: ModelRef | None = None
    pipeline_seconds: list[float] = field(default_factory=list)
    replay: ReplayReport | None = None
    monitor: dict[str, Any] = field(default_factory=dict)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    router: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    seconds: float = 0.0


def run_demo(
    config: Config, console: Console, root: Path = DEMO_DIR, replay_auctions: int = REPLAY_AUCTIONS
) -> DemoOutcome:
    """Run the loop; a failing step says which one and where its log is."""
    from bidflow.data.batch import read_frame
    from bidflow.data.ingest import ingest
    from bidflow.data.profile import build_profile, save_profile
    from bidflow.data.simulate import simulate
    from bidflow.data.validate import validate_batch, write_report
    from bidflow.demo.report import write_demo_report
    from bidflow.demo.services import free_port, running_services
    from bidflow.deploy.replay import read_auctions

    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root = root.resolve()
    ports = {"router": free_port(), "champion": free_port(), "canary": free_port(), "monitor": free_port()}
    config = demo_config(config, root, ports)
    config_file = root / "bidflow.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
    sim = config.simulate
    outcome = DemoOutcome(root)
    step = _Step(console)

    with step("1/7 generate six hours of auction logs and profile the first four as the data gate's reference"):
        summary = simulate(sim.model_copy(update={"hours": BASE_HOURS, "scenario": "none"}), root / "raw-1")
        data_version = _dvc_track(root, root / "raw-1")
        ingest(root / "raw-1", root / "parquet-reference", config.ingest)
        split = sim.start + timedelta(hours=REFERENCE_HOURS)
        reference = build_profile(read_frame(root / "parquet-reference", until=split))
        save_profile(reference, config.paths.reference / "profile.json")
        outcome.validation = validate_batch(
            read_frame(root / "parquet-reference", since=split), reference, config.validate_, batch_name="hours 5-6"
        )
        write_report(outcome.validation, config.paths.reports / "validation")
        step.done(
            f"{summary.auctions:,} auctions, {summary.calls:,} partner calls, bid rate {summary.bid_rate:.1%}; "
            f"DVC-tracked as {data_version}; reference: {reference.rows:,} rows",
            root / "raw-1",
        )

    with running_services(config_file, ports["router"], ports["monitor"], root / "logs") as services:
        step.done(f"router {services.router}, drift monitor {services.monitor}", root / "logs")
        with step(
            "2/7 training pipeline (kfp.local): ingest -> validate -> features -> train -> gates -> register -> deploy"
        ):
            seconds = _pipeline(config_file, root / "raw-1", root / "pipeline-1", root / "logs" / "pipeline-1.log")
            outcome.pipeline_seconds.append(seconds)
            outcome.champion = _latest(config)
            step.done(
                f"{seconds:.0f} s; {outcome.champion.label} registered, deployed as champion, drift detector fitted",
                root / "pipeline-1",
            )

        with step("3/7 two more hours of traffic: retrain, gate against the champion, deploy a 20 % canary"):
            simulate(sim.model_copy(update={"hours": BASE_HOURS + RETRAIN_HOURS, "scenario": "none"}), root / "raw-2")
            seconds = _pipeline(config_file, root / "raw-2", root / "pipeline-2", root / "logs" / "pipeline-2.log")
            outcome.pipeline_seconds.append(seconds)
            outcome.canary = _latest(config)
            state = _get(f"{services.router}/admin/state")
            if not state.get("canary"):
                raise DemoError("the retrained model was not deployed as a canary", got=json.dumps(state)[:300])
            step.done(
                f"{seconds:.0f} s; {outcome.canary.label} is the canary at {state['canary_percent']} %",
                root / "pipeline-2",
            )

        with step("4/7 the market shifts to connected TV: replay the next hour through the router"):
            shifted = sim.model_copy(
                update={
                    "hours": 1,
                    "start": sim.start + timedelta(hours=BASE_HOURS + RETRAIN_HOURS),
                    "scenario": "device_shift",
                    "scenario_start_hour": 0,
                }
            )
            simulate(shifted, root / "raw-replay")
            auctions = list(read_auctions(sorted((root / "raw-replay").rglob("*.jsonl.gz")), replay_auctions))
            outcome.replay = _replay(console, auctions, services.router, services.monitor, config)
            summary_line = outcome.replay.summary()
            step.done(
                f"{summary_line['sent']:,} auctions at {summary_line['auctions_per_s']}/s, "
                f"p50 {summary_line['p50_ms']:.1f} ms, p99 {summary_line['p99_ms']:.1f} ms, "
                f"failed {summary_line['failed']}, answered by {summary_line['roles']}",
                root / "logs" / "router.log",
            )

        with step("5/7 the drift monitor rolls the canary back"):
            rollback = _wait_for_rollback(services.router)
            outcome.monitor = _get(f"{services.monitor}/status")
            outcome.transitions = _get(f"{services.router}/admin/transitions")
            outcome.router = _get(f"{services.router}/admin/metrics")
            if outcome.replay.failed:
                raise DemoError(
                    f"{outcome.replay.failed} client requests failed", got="; ".join(outcome.replay.failures[:3])
                )
            step.done(
                f"rolled back v{rollback['model']['version']} by {rollback['actor']}: "
                f"{'; '.join(rollback['reasons'])}; "
                f"champion alerts: {outcome.monitor['counts']['alerts']} (retraining requested); failed requests: 0",
                config.canary.state / "transitions.jsonl",
            )

    with step("6/7 a publisher floods the exchange: the data gate must stop it"):
        flood = sim.model_copy(
            update={"hours": 1, "start": sim.start + timedelta(hours=BASE_HOURS), "scenario": "publisher_flood"}
        )
        simulate(flood, root / "raw-flood")
        ingest(root / "raw-flood", root / "parquet-flood", config.ingest)
        outcome.flood = validate_batch(
            read_frame(root / "parquet-flood"), reference, config.validate_, batch_name="flood hour"
        )
        html = write_report(outcome.flood, config.paths.reports / "validation-flood")
        failed = sorted({f"{c.name}({c.column})" for c in outcome.flood.failures})
        step.done(f"gate stopped the batch as expected: {', '.join(failed)}", html)

    with step("7/7 write the report"):
        outcome.seconds = time.perf_counter() - started  # the report states the time of the loop it shows
        outcome.report = write_demo_report(outcome, config)
        step.done("data, model, gates, canary, drift and serving in one page", outcome.report)
    outcome.seconds = time.perf_counter() - started

    console.print(f"\n[bold green]demo finished[/] in {outcome.seconds:.0f} s. Open the report:")
    console.print(f"  {outcome.report}", highlight=False)
    return outcome


def demo_config(config: Config, root: Path, ports: dict[str, int]) -> Config:
    """``config`` with every path, store and port under ``root`` (a run never touches another's state)."""
    sim = config.simulate
    data = config.model_dump(mode="python", by_alias=True)
    data["simulate"] = data["simulate"] | {
        "auctions_per_hour": min(sim.auctions_per_hour, DEMO_AUCTIONS_PER_HOUR),
        "start": sim.start.replace(hour=DEMO_START_HOUR),
    }
    data["paths"] = {
        "raw": root / "raw",
        "parquet": root / "parquet",
        "reference": root / "reference",
        "reports": root / "reports",
    }
    data["features"] = data["features"] | {
        "environment": "local",
        "repo": config.features.repo.resolve(),
        "offline": root / "features",
        "state": root / "feast",
    }
    data["registry"] = data["registry"] | {
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "artifact_location": root / "mlartifacts",
    }
    data["canary"] = data["canary"] | {
        "backend": "local",
        "state": root / "deploy",
        "router_port": ports["router"],
        "champion_port": ports["champion"],
        "canary_port": ports["canary"],
        "monitor_url": f"http://127.0.0.1:{ports['monitor']}",
        "traffic_percent": CANARY_PERCENT,
    }
    data["explain"] = data["explain"] | {"max_rows": min(config.explain.max_rows, DEMO_EXPLAIN_ROWS)}
    data["monitor"] = data["monitor"] | {
        "port": ports["monitor"],
        "window_size": WINDOW,
        "detector": root / "detectors",
    }
    from bidflow.config import Config

    return Config.model_validate(data)


def _pipeline(config_file: Path, raw: Path, workdir: Path, log: Path) -> float:
    """``bidflow pipeline run --local`` (its task logs go to ``log``); the detector lands in the monitor's folder."""
    command = [
        sys.executable, "-m", "bidflow.cli", "--config", str(config_file),
        "pipeline", "run", "--local", "--raw", str(raw), "--out", str(workdir),
        "--param", f"canary_percent={CANARY_PERCENT}",
    ]  # fmt: skip
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1200:]
        raise DemoError("the training pipeline failed", where=log, got=tail)
    _publish_detector(workdir, config_file)
    return time.perf_counter() - started


def _publish_detector(workdir: Path, config_file: Path) -> None:
    """Copy the pipeline's fitted detector to where the monitor loads it: ``<monitor.detector>/<version>``."""
    from bidflow.config import load_config

    config = load_config(config_file, environ={})
    (run,) = (workdir / "outputs").iterdir()
    detector = run / "fit-drift-detector" / "detector"
    reference = run / "deploy-canary" / "reference"
    version = _latest(config).version
    if not detector.is_dir():
        raise DemoError("the pipeline produced no drift detector", where=detector, hint=f"see {reference}")
    shutil.copytree(detector, config.monitor.detector / version, dirs_exist_ok=True)


def _dvc_track(root: Path, data: Path) -> str:
    """Track ``data`` with DVC in the demo's own DVC repository (no git: the run folder is not one); its hash."""
    from dvc.repo import Repo  # type: ignore[import-untyped]

    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)  # not its "Initialized DVC repository." banner in the middle of the steps
    try:
        repo = Repo.init(str(root), no_scm=True)
    finally:
        dvc_log.setLevel(level)
    try:
        repo.add(str(data))
    finally:
        repo.close()
    pointer = yaml.safe_load((data.parent / f"{data.name}.dvc").read_text(encoding="utf-8"))
    return f"{data.name}.dvc (md5 {pointer['outs'][0]['md5'][:12]})"


def _latest(config: Config) -> ModelRef:
    from bidflow.modeling import registry

    found = registry.versions(config.registry, registered_name(config, config.canary.kind))
    if not found:
        raise DemoError("no model version was registered (a gate stopped the pipeline: see its log)")
    return found[0]


def _replay(console: Console, auctions: list[Any], router: str, monitor: str, config: Config) -> ReplayReport:
    from bidflow.deploy.replay import replay_with_progress
    from bidflow.monitoring.auth import monitor_token

    target = f"{router}/v1/models/{registered_name(config, config.canary.kind)}:predict"
    token = monitor_token(config)
    return asyncio.run(
        replay_with_progress(auctions, target, console, concurrency=8, monitor_url=monitor, monitor_token=token)
    )


def _wait_for_rollback(router: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        transitions = _get(f"{router}/admin/transitions")
        if transitions and transitions[-1]["action"] == "rollback":
            last: dict[str, Any] = transitions[-1]
            return last
        time.sleep(0.5)
    raise DemoError(
        "the canary was not rolled back within a minute of the replay",
        hint="look at runs/demo/logs/monitor.log (window size, detector loading)",
    )


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class _Step:
    """Prints a step's name, its result and output path, or which step failed and why."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.name = ""

    def __call__(self, name: str) -> _Step:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.console.print(f"[bold]{self.name}[/]")

    def done(self, what: str, where: Path) -> None:
        self.console.print(f"    {what}\n    -> {where}", highlight=False)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, BidflowError):
            exc.what = f"demo step '{self.name}' failed: {exc.what}"

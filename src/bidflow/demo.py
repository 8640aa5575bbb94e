"""``bidflow demo``: the loop on generated data, step by step, saying where each output went.

Today the loop is the data layer: generate auction logs, ingest them, profile the first
hours as the reference, validate the later hours against it (the gate passes), then
generate an hour in which an unknown publisher floods the exchange and show the gate
stopping it with a report. Every run starts from a fresh ``runs/demo`` folder.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from bidflow.config import Config
from bidflow.data.batch import read_frame
from bidflow.data.ingest import ingest
from bidflow.data.profile import build_profile, save_profile
from bidflow.data.simulate import simulate
from bidflow.data.validate import validate_batch, write_report
from bidflow.errors import BidflowError

DEMO_DIR = Path("runs/demo")
REFERENCE_HOURS = 4


def run_demo(config: Config, console: Console, root: Path = DEMO_DIR) -> None:
    """Run every step that exists; a failing step says which one and how to look."""
    shutil.rmtree(root, ignore_errors=True)
    paths = config.paths.model_copy(
        update={
            "raw": root / "raw",
            "parquet": root / "parquet",
            "reference": root / "reference",
            "reports": root / "reports",
        }
    )
    sim = config.simulate
    hours = max(sim.hours, REFERENCE_HOURS + 1)
    started = time.perf_counter()

    step = _Step(console)
    with step("1/5 generate auction logs"):
        summary = simulate(sim.model_copy(update={"hours": hours, "scenario": "none"}), paths.raw)
        step.done(
            f"{summary.auctions:,} auctions, {summary.calls:,} partner calls, bid rate {summary.bid_rate:.1%}",
            paths.raw,
        )
    with step("2/5 ingest to parquet"):
        ingested = ingest(paths.raw, paths.parquet, config.ingest)
        step.done(f"{ingested.rows:,} rows in {len(ingested.partitions)} hourly partitions", paths.parquet)
    split = sim.start + timedelta(hours=REFERENCE_HOURS)
    with step(f"3/5 profile the first {REFERENCE_HOURS} hours as the reference"):
        reference = build_profile(read_frame(paths.parquet, until=split))
        save_profile(reference, paths.reference / "profile.json")
        step.done(f"{reference.rows:,} rows, bid rate {reference.bid_rate:.2%}", paths.reference / "profile.json")
    with step("4/5 validate the later hours against it"):
        report = validate_batch(
            read_frame(paths.parquet, since=split),
            reference,
            config.validate_,
            batch_name="later hours",
            reference_name=str(paths.reference / "profile.json"),
        )
        html = write_report(report, paths.reports / "validation")
        verdict = "passed" if report.passed else f"FAILED: {[c.name for c in report.failures]}"
        step.done(f"gate {verdict} ({len(report.checks)} checks)", html)
    with step("5/5 a publisher floods the exchange: the gate must stop it"):
        flood_start = sim.start + timedelta(hours=hours)
        drifted = sim.model_copy(update={"hours": 1, "start": flood_start, "scenario": "publisher_flood"})
        simulate(drifted, root / "raw-flood")
        ingest(root / "raw-flood", root / "parquet-flood", config.ingest)
        flood = validate_batch(
            read_frame(root / "parquet-flood"),
            reference,
            config.validate_,
            batch_name="flood hour",
            reference_name=str(paths.reference / "profile.json"),
        )
        html_flood = write_report(flood, paths.reports / "validation-flood")
        failed = sorted({f"{c.name}({c.column})" for c in flood.failures})
        step.done(f"gate stopped the batch as expected: {', '.join(failed)}", html_flood)

    console.print(f"\n[bold green]demo finished[/] in {time.perf_counter() - started:.1f} s. Open the reports:")
    console.print(f"  {html.resolve()}\n  {html_flood.resolve()}")


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

"""``bidflow demo``: the loop on generated data, step by step, saying where each output went.

What exists of the loop today: generate auction logs, ingest them, validate the later hours
against a reference profile of the first ones, build the Feast features and materialize them,
train the bid filter on the point-in-time training set, pass it through the champion/challenger
and bias gates, and promote it to champion in the MLflow registry. Last, an hour in which an
unknown publisher floods the exchange shows the data gate stopping a bad batch. Every run
starts from a fresh ``runs/demo`` folder with its own feature store and registry.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from bidflow.config import Config
from bidflow.data.batch import read_batch, read_frame
from bidflow.data.ingest import ingest
from bidflow.data.profile import build_profile, save_profile
from bidflow.data.simulate import simulate
from bidflow.data.validate import validate_batch, write_report
from bidflow.errors import BidflowError
from bidflow.features import store as feature_store
from bidflow.features.build import build_bid_features, write_tables
from bidflow.features.spec import service_spec
from bidflow.modeling.evaluate import EvaluationReport
from bidflow.modeling.inputs import model_name
from bidflow.modeling.registry import promote
from bidflow.modeling.steps import evaluate_step, fairness_step, train_step

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
    config = config.model_copy(
        update={
            "paths": paths,
            "features": config.features.model_copy(
                update={"environment": "local", "offline": root / "features", "state": root / "feast"}
            ),
            "registry": config.registry.model_copy(
                update={
                    "tracking_uri": f"sqlite:///{(root / 'mlflow.db').resolve()}",
                    "artifact_location": root / "mlartifacts",
                }
            ),
        }
    )
    sim = config.simulate
    hours = max(sim.hours, REFERENCE_HOURS + 1)
    started = time.perf_counter()

    step = _Step(console)
    with step("1/9 generate auction logs"):
        summary = simulate(sim.model_copy(update={"hours": hours, "scenario": "none"}), paths.raw)
        step.done(
            f"{summary.auctions:,} auctions, {summary.calls:,} partner calls, bid rate {summary.bid_rate:.1%}",
            paths.raw,
        )
    with step("2/9 ingest to parquet"):
        ingested = ingest(paths.raw, paths.parquet, config.ingest)
        step.done(f"{ingested.rows:,} rows in {len(ingested.partitions)} hourly partitions", paths.parquet)
    split = sim.start + timedelta(hours=REFERENCE_HOURS)
    with step(f"3/9 profile the first {REFERENCE_HOURS} hours as the reference"):
        reference = build_profile(read_frame(paths.parquet, until=split))
        save_profile(reference, paths.reference / "profile.json")
        step.done(f"{reference.rows:,} rows, bid rate {reference.bid_rate:.2%}", paths.reference / "profile.json")
    with step("4/9 validate the later hours against it"):
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
    end = sim.start + timedelta(hours=hours)
    with step("5/9 build features, register them in Feast, materialize to the online store"):
        built = write_tables(build_bid_features(read_batch(paths.parquet)), config.features.offline)
        store = feature_store.open_store(config.features)
        feature_store.apply(store, config.features)
        bid_filter_views = [view.name for view in service_spec(store, "bid_filter").views]
        feature_store.materialize(store, sim.start, end, bid_filter_views)
        step.done(
            f"{sum(built.rows.values()):,} feature rows in {len(built.rows)} tables, SQLite online store",
            config.features.offline,
        )
    with step("6/9 train the bid filter on the point-in-time training set"):
        trained = train_step(config, "bid_filter")
        auc = trained.model.metrics.get("valid_auc", float("nan"))
        version = trained.version.version if trained.version else "?"
        step.done(
            f"{trained.rows:,} rows, validation AUC {auc:.3f}; registered version {version} as candidate",
            Path(config.registry.tracking_uri.removeprefix("sqlite:///")),
        )
    with step("7/9 champion/challenger gate on the held-out hour"):
        evaluation, result = evaluate_step(config, "bid_filter")
        step.done(f"gate passed: {_economics(result)}", evaluation.html_path)
    with step("8/9 bias gate per slice (channel, country, device, format, partner)"):
        fairness, _ = fairness_step(config, "bid_filter")
        step.done("gate passed: no slice beyond the allowed gap", fairness.html_path)
        promoted = promote(config.registry, model_name(config, "bid_filter"))
        step.done(
            f"promoted version {promoted.champion.version} to champion",
            Path(config.registry.tracking_uri.removeprefix("sqlite:///")),
        )
    with step("9/9 a publisher floods the exchange: the data gate must stop it"):
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
    for report_path in (html, evaluation.html_path, fairness.html_path, html_flood):
        console.print(f"  {report_path.resolve()}")


def _economics(result: EvaluationReport) -> str:
    """AUC and what the filter does on the held-out hour, at the thresholds it will serve with."""
    candidate = result.candidate
    line = f"AUC {candidate.metrics.get('auc', float('nan')):.3f}"
    if candidate.realized is not None:
        e = candidate.realized
        line += f", {e.calls_saved_share:.1%} of partner calls saved, {e.bid_recall:.1%} of bids kept"
        line += f" ({result.exploration_share:.0%} exploration)"
    return line


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

"""One offline step on Spark, from a bidflow.yaml: the command a Spark cluster runs.

    python -m bidflow.engines.spark_jobs ingest       --config bidflow.yaml [--raw DIR] [--out DIR]
    python -m bidflow.engines.spark_jobs features     --config bidflow.yaml [--batch DIR] [--out DIR]
                                                      [--since T] [--until T] [--report URI]
    python -m bidflow.engines.spark_jobs training-set --config bidflow.yaml --out DIR [--kind K]
                                                      [--source DIR] [--since T] [--until T]
    python -m bidflow.engines.spark_jobs train        --config bidflow.yaml [--kind K] [--source DIR]
                                                      [--training-set DIR] [--features F]
                                                      [--since T] [--until T] [--out DIR]
                                                      [--no-register] [--report URI]

The contract a launcher (a Kubernetes SparkApplication, ``spark-submit``, a pipeline task) keeps:

* the first argument names the step, ``--config`` the bidflow.yaml (``BIDFLOW__*`` environment
  overrides apply as for the CLI); the ``spark:`` section configures the session (master, driver
  memory, shuffle partitions, ``conf``), and a session the launcher already started is reused;
* ``ingest`` turns the auction logs (``paths.raw`` or ``--raw``) into hourly parquet (``paths.parquet``
  or ``--out``), a Spark task per log file (``bidflow.engines.spark_ingest``): the step ``bidflow
  ingest`` runs in worker processes; both folders must be visible to every executor;
* ``features`` reads the ingested parquet (``paths.parquet`` or ``--batch``) and writes the
  bid-filter views as Feast's offline sources (``features.offline_uri`` or ``features.offline``, or
  ``--out``), one parquet folder per view: the step ``bidflow features build`` runs in pandas;
* ``training-set`` joins the kind's FeatureService point in time onto its rows (the ingested parquet
  for kinds trained on auction logs, read by Spark; other kinds' rows come from their loader) and
  writes a parquet folder to ``--out``: ``bidflow features training-set``;
* ``train`` trains the kind with ``xgboost.spark`` (``bidflow.engines.spark_train_step``) on its
  Feast training set, joined in Spark or read from ``--training-set`` (what ``training-set``
  wrote), leaving out the latest ``evaluate.holdout_hours`` unless ``--until`` is given; it logs the
  run to MLflow and registers it as ``candidate`` like ``bidflow train``, and with ``--out`` saves
  the model bundle the servers load;
* ``--report`` (features, train) also writes what the step did as a JSON document there (the rows
  per view and their time span; the MLflow run, version, rows and metrics): a pipeline task that
  submitted the step to a cluster reads it back (``bidflow.engines.job_files``). ``--out`` of
  ``train`` may be a URI too;
* exit status 0 on success; on a ``BidflowError`` its message (no traceback) and its exit code (1, 2
  for a configuration or input mistake); 2 on a usage error. Each step prints one line saying what
  it wrote.

The step runs on Spark whatever the step's own ``engine`` setting says: choosing this command is
choosing the engine.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.errors import BidflowError, EngineError

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.features.build import BuildSummary
    from bidflow.modeling.steps import TrainOutcome

STEPS: Final = ("ingest", "features", "training-set", "train")


def build_features(
    config: Config,
    batch: str | Path | None = None,
    out: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> BuildSummary:
    """The bid-filter views on Spark, written where Feast reads them (or to ``out``)."""
    from bidflow.engines import spark_features
    from bidflow.engines.spark import spark_session
    from bidflow.features.store import offline_base

    spark = spark_session(config.spark)
    calls = spark_features.read_calls(spark, batch or config.paths.parquet, since, until)
    tables = spark_features.build_bid_features(calls, until)
    summary = spark_features.write_tables(tables, out or offline_base(config.features))
    spark.catalog.clearCache()  # the builder caches the calls it aggregates; a reused session should not keep them
    return summary


def write_training_set(
    config: Config,
    kind_name: str,
    out: str | Path,
    source: str | Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """The kind's point-in-time training set on Spark, written as a parquet folder; returns its rows."""
    from bidflow.engines import spark_features, spark_training_set
    from bidflow.engines.spark import spark_session
    from bidflow.engines.spark_pandas import to_spark
    from bidflow.features.spec import service_spec
    from bidflow.features.store import open_store
    from bidflow.kinds import kind

    chosen = kind(config, kind_name)
    chosen.require_tabular("training-set")
    if chosen.feature_service is None:
        raise EngineError(f"model kind '{kind_name}' has no Feast FeatureService", where="--kind")
    store = open_store(config.features)
    spec = service_spec(store, chosen.feature_service)
    spark = spark_session(config.spark)
    path = source or chosen.default_source(config)
    if chosen.pipeline_source == "raw_logs":  # trained on ingested auction logs: Spark reads them
        rows = spark_training_set.entity_rows(spark_features.read_calls(spark, path, since, until), spec)
    else:
        rows = spark_training_set.entity_rows(
            to_spark(spark, chosen.entities(config, Path(path), since, until)), spec, time_column="event_timestamp"
        )
    frame = spark_training_set.training_set(rows, spec, spark_training_set.view_sources(store, spec))
    frame.write.mode("overwrite").parquet(str(out))
    return spark.read.parquet(str(out)).count()


def train_report(outcome: TrainOutcome) -> dict[str, object]:
    """What the ``train`` step's ``--report`` holds."""
    return {
        "run_id": outcome.run_id,
        "version": outcome.version.version if outcome.version is not None else None,
        "data_version": outcome.data_version,
        "rows": outcome.rows,
        "metrics": dict(outcome.model.metrics),
    }


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parser() -> argparse.ArgumentParser:
    """The command line of ``main`` (see the module docstring)."""
    from bidflow.kinds import DEFAULT_KIND

    root = argparse.ArgumentParser(prog="python -m bidflow.engines.spark_jobs", description=__doc__.splitlines()[0])
    steps = root.add_subparsers(dest="step", required=True, metavar="{" + ",".join(STEPS) + "}")
    for name in STEPS:
        step = steps.add_parser(name)
        step.add_argument("--config", type=Path, required=True, help="the bidflow.yaml")
        if name == "ingest":
            step.add_argument("--raw", type=Path, help="log file or folder (default: paths.raw)")
            step.add_argument("--out", type=Path, help="parquet output (default: paths.parquet)")
            continue
        step.add_argument("--since", type=_time, help="only rows at or after this UTC time")
        step.add_argument("--until", type=_time, help="only rows before this UTC time")
        if name == "features":
            # Folders or URIs (s3a://...): kept as text, a Path would fold the scheme's '//'.
            step.add_argument("--batch", help="ingested parquet folder or URI (default: paths.parquet)")
            step.add_argument("--out", help="offline folder or URI (default: the feature store's)")
            step.add_argument("--report", help="also write what was built as JSON here (file or URI)")
        else:
            step.add_argument("--kind", default=DEFAULT_KIND, help="the model kind (`bidflow kinds`)")
            step.add_argument("--source", help="the kind's data, a folder or URI (default: configured)")
        if name == "training-set":
            step.add_argument("--out", required=True, help="parquet folder or URI to write")
        if name == "train":
            step.add_argument("--training-set", help="train on this written training set (folder or URI)")
            step.add_argument("--features", choices=("feast", "request"), help="default: train.feature_source")
            step.add_argument("--out", help="also save the model bundle here (folder or URI)")
            step.add_argument("--no-register", action="store_true", help="log the run without registering it")
            step.add_argument("--report", help="also write the run, version and metrics as JSON here")
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one step on Spark; the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except BidflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from bidflow.config import load_config

    config = load_config(args.config)
    if args.step == "ingest":
        from bidflow.data.ingest import ingest

        settings = config.ingest.model_copy(update={"engine": "spark"})
        done = ingest(args.raw or config.paths.raw, args.out or config.paths.parquet, settings, spark=config.spark)
        print(f"ingested {done.auctions} auctions -> {done.rows} rows in {len(done.partitions)} partitions")
    elif args.step == "features":
        summary = build_features(config, args.batch, args.out, args.since, args.until)
        if args.report:
            from bidflow.engines import job_files

            job_files.write_json(args.report, job_files.summary_facts(summary))
        print(f"built {sum(summary.rows.values())} feature rows in {len(summary.rows)} views under {summary.out}")
    elif args.step == "training-set":
        rows = write_training_set(config, args.kind, args.out, args.source, args.since, args.until)
        print(f"wrote {rows} training rows to {args.out}")
    else:
        from bidflow.engines import job_files
        from bidflow.engines.spark_train_step import train_step

        local_out = Path(args.out) if args.out and "://" not in args.out else None
        outcome = train_step(
            config,
            args.kind,
            source=args.source,  # text: a URI's '//' would fold in a Path
            training_set=args.training_set,
            since=args.since,
            until=args.until,
            feature_source=args.features,
            register=not args.no_register,
            out_dir=local_out,
        )
        if args.out and local_out is None:
            job_files.save_bundle(outcome.model, args.out)
        if args.report:
            job_files.write_json(args.report, train_report(outcome))
        version = f"version {outcome.version.version}" if outcome.version is not None else "not registered"
        print(f"trained {args.kind} on {outcome.rows} rows with xgboost.spark: run {outcome.run_id}, {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bid-filter economics on the generator's default scenario: calls saved at 95 % bid recall.

Eight hours of baseline traffic (``SimulateConfig`` defaults, 10,000 auctions an hour: ~1M partner
calls) are ingested; the filter trains on hours 0-6 (hour 6 validates and sets the per-partner
thresholds) and is scored on hour 7, with 5 % exploration. Twice: on the request features alone,
and on the Feast ``bid_filter`` training set (request + aggregated partner features).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Result
from bidflow.config import Config, IngestConfig, SimulateConfig
from bidflow.data.batch import read_batch, read_frame
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate
from bidflow.modeling import inputs, train
from bidflow.modeling.evaluate import evaluate

HOURS = 8
AUCTIONS_PER_HOUR = 10_000
REPO = Path(__file__).resolve().parents[1]


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = SimulateConfig(
            start=datetime(2026, 11, 2, 0, tzinfo=UTC), hours=HOURS, auctions_per_hour=AUCTIONS_PER_HOUR
        )
        simulate(sim, root / "raw")
        ingest(root / "raw", root / "parquet", IngestConfig())
        config = Config.model_validate(
            {
                "features": {
                    "repo": str(REPO / "feature_repo"),
                    "offline": str(root / "features"),
                    "state": str(root / "feast"),
                    "project": "bidflow_bench",
                },
            }
        )
        rows = read_frame(root / "parquet")
        history, holdout = inputs.split_holdout(rows, config.evaluate.holdout_hours)
        for source in ("request", "feast"):
            if source == "feast":
                _build_feature_store(config, root)
            frame, spec = inputs.with_features(history, config, "bid_filter", source)
            model = train.fit(frame, spec, config.train, policy=config.evaluate)
            scored = inputs.with_service(holdout, config, [spec.feature_service])
            report = evaluate(scored, model, None, config.evaluate)
            m, own = report.candidate.metrics, report.candidate.realized
            assert own is not None
            detail = (
                f"{len(frame):,} training calls, {len(spec.names)} features; hold-out hour: {len(holdout):,} calls, "
                f"AUC {m['auc']:.3f}; at its own thresholds: bid recall {own.bid_recall:.1%}, "
                f"bid value kept {own.value_kept_share:.1%}, exploration {own.exploration_calls:,} calls"
            )
            results.append(
                Result(
                    f"economics: calls saved at 95% bid recall ({source} features, 5% exploration)",
                    100 * own.calls_saved_share,
                    "% of calls",
                    detail,
                )
            )
    return results


def _build_feature_store(config: Config, root: Path) -> None:
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables

    (root / "feast").mkdir()
    write_tables(build_bid_features(read_batch(root / "parquet")), config.features.offline)
    feature_store.apply(feature_store.open_store(config.features), config.features)

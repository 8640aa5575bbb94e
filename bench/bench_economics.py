"""Bid-filter economics on the generator's market, against the oracle (the best any filter can do).

Eight hours of baseline traffic (``SimulateConfig`` defaults, 10,000 auctions an hour: ~1M partner
calls) are ingested; the filter trains on hours 0-6 (hour 6 validates and sets the per-partner
thresholds) and is scored on hour 7, with 5 % exploration. Twice: on the request features alone,
and on the Feast ``bid_filter`` training set (request + aggregated partner features).

On the hold-out hour the generator's oracle (each call's true P(bid) and expected bid value) is
scored like a model: the headline is the filter's calls saved at 95 % bid recall as a share of the
oracle's, both with per-partner thresholds chosen on that hour (a ranking measure), and the same at
95 % of bid value kept (the oracle then ranks by expected value).

Then each drift scenario: 16 hours, the first 8 the same baseline hours (the generator draws an hour
the same whatever range it is generated in), the market shifting at hour 8. The baseline model is
the champion in the first hour after the shift; a model retrained on post-shift hours 8-14 is
scored on hour 15, beside the champion on the same hour.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness import Result
from bidflow.config import Config, IngestConfig, ScenarioName, SimulateConfig
from bidflow.data.batch import read_batch, read_frame
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate
from bidflow.modeling import inputs, train
from bidflow.modeling.dataset import FeatureSpec
from bidflow.modeling.economics import estimate_from
from bidflow.modeling.evaluate import EvaluationReport, evaluate
from bidflow.modeling.train import TrainedModel

HOURS = 8
SCENARIO_HOURS = 16
AUCTIONS_PER_HOUR = 10_000
SCENARIOS: tuple[ScenarioName, ...] = ("partner_retarget", "device_shift", "floor_hike")
START = datetime(2026, 11, 2, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "default"
        config = _market(root, "none", HOURS)
        rows = read_frame(root / "parquet")
        history, holdout = inputs.split_holdout(rows, config.evaluate.holdout_hours)
        champion = None
        for source in ("request", "feast"):
            if source == "feast":
                _build_feature_store(config, root)
            frame, spec = inputs.with_features(history, config, "bid_filter", source)
            model = train.fit(frame, spec, config.train, policy=config.evaluate)
            scored = inputs.with_service(holdout, config, [spec.feature_service])
            report = evaluate(scored, model, None, config.evaluate)
            results += _default_rows(report, source, len(frame), len(spec.names), scored)
            champion = model
        assert champion is not None
        results += _objectives(config, frame, spec, scored, champion)
        results.append(_value_ranking_cost(len(spec.names)))
        for scenario in SCENARIOS:
            results += _scenario_rows(Path(tmp) / scenario, scenario, champion)
    return results


def _market(root: Path, scenario: ScenarioName, hours: int) -> Config:
    sim = SimulateConfig(
        start=START, hours=hours, auctions_per_hour=AUCTIONS_PER_HOUR, scenario=scenario, scenario_start_hour=HOURS
    )
    simulate(sim, root / "raw")
    ingest(root / "raw", root / "parquet", IngestConfig())
    return Config.model_validate(
        {
            "features": {
                "repo": str(REPO / "feature_repo"),
                "offline": str(root / "features"),
                "state": str(root / "feast"),
                "project": "bidflow_bench",
            },
        }
    )


def _default_rows(
    report: EvaluationReport, source: str, train_rows: int, features: int, scored: pd.DataFrame
) -> list[Result]:
    m, own = report.candidate.metrics, report.candidate.realized
    oracle = report.oracle
    assert own is not None and oracle is not None
    detail = (
        f"{train_rows:,} training calls, {features} features; hold-out hour: {report.rows:,} calls, "
        f"AUC {m['auc']:.3f}; at its own thresholds: bid recall {own.bid_recall:.1%}, "
        f"bid value kept {own.value_kept_share:.1%}, exploration {own.exploration_calls:,} calls"
    )
    rows = [
        Result(
            f"economics: calls saved at 95% bid recall ({source} features, 5% exploration)",
            100 * own.calls_saved_share,
            "% of calls",
            detail,
        ),
        _oracle_row(report, f"{source} features", "recall", "≥ 90% of the oracle's" if source == "feast" else ""),
        _oracle_row(report, f"{source} features", "value", ""),
    ]
    if source == "feast":
        rows.append(
            Result(
                "economics: expected calibration error of the scores on the hold-out hour (feast features)",
                m["ece"],
                "ECE",
                f"10 equal-width bins, {report.rows:,} calls; the oracle's own ECE {oracle.metrics['ece']:.4f}, "
                f"log loss {m['logloss']:.4f} against the oracle's {oracle.metrics['logloss']:.4f}",
                "≤ 0.01",
            )
        )
        rows.append(_partner_gap(report, scored))
    return rows


def _oracle_row(report: EvaluationReport, label: str, objective: str, target: str) -> Result:
    oracle = report.oracle
    assert oracle is not None
    if objective == "value":
        mine, best = report.candidate.at_value_target, oracle.at_value_target
        name = f"economics: share of the oracle's calls saved at 95% of bid value kept ({label})"
        how = "thresholds keep 95% of each partner's bid value; the model ranks by P(bid), the oracle by expected value"
    else:
        mine, best = report.candidate.at_target, oracle.at_target
        name = f"economics: share of the oracle's calls saved at 95% bid recall ({label})"
        how = "thresholds keep 95% of each partner's bids; both rank by P(bid)"
    assert mine is not None and best is not None
    detail = (
        f"model {mine.calls_saved_share:.1%} of calls saved (bid recall {mine.bid_recall:.1%}, value kept "
        f"{mine.value_kept_share:.1%}) against the oracle's {best.calls_saved_share:.1%} (bid recall "
        f"{best.bid_recall:.1%}, value kept {best.value_kept_share:.1%}); {how}, chosen on the hold-out hour "
        f"({report.rows:,} calls); AUC {report.candidate.metrics['auc']:.3f} against the oracle's "
        f"{oracle.metrics['auc']:.3f}"
    )
    return Result(name, 100 * mine.calls_saved_share / best.calls_saved_share, "%", detail, target)


def _objectives(
    config: Config, frame: pd.DataFrame, spec: FeatureSpec, scored: pd.DataFrame, recall_model: TrainedModel
) -> list[Result]:
    """The two objectives served: each model at its own thresholds on the hold-out hour, with auction revenue kept."""
    value_cfg = config.evaluate.model_copy(update={"objective": "value"})
    value_model = train.fit(frame, spec, config.train, policy=value_cfg)
    out = []
    for objective, model, cfg in (
        ("recall", recall_model, config.evaluate),
        ("value", value_model, value_cfg),
    ):
        report = evaluate(scored, model, None, cfg)
        own = report.candidate.realized
        assert own is not None and model.policy is not None
        estimate = estimate_from(scored) if model.policy.ranking == "expected_value" else None
        called = model.policy.call_mask(
            scored["auction_id"].astype(str).to_numpy(), scored["partner"].astype(str).to_numpy(),
            report.candidate.scores, estimate,
        )  # fmt: skip
        revenue = _revenue_kept(scored, called)
        out.append(
            Result(
                f"economics: objective {objective} at its own thresholds (feast features, 5% exploration)",
                100 * own.calls_saved_share,
                "% of calls",
                f"target 95% of {'bid value' if objective == 'value' else 'bids'} per partner, thresholds chosen "
                f"on the validation hour, ranking by {model.policy.ranking}; on the hold-out hour: bid recall "
                f"{own.bid_recall:.1%}, bid value kept {own.value_kept_share:.1%}, auction revenue kept "
                f"{revenue:.1%} (the highest bid of each auction among the partners called, against among all)",
            )
        )
    return out


def _value_ranking_cost(width: int, partners: int = 30, rounds: int = 20_000) -> Result:
    """What value ranking adds to serving an auction: its thresholds over each call's CPM estimate."""
    import time

    from bidflow.serving.value_scale import scale_thresholds

    rng = np.random.default_rng(3)
    x = (rng.random((partners, width)) + 0.5).astype(np.float32)
    thresholds, columns = rng.random(partners), tuple(range(width - 4, width))
    scale_thresholds(thresholds, x, columns)  # compiled before it is timed, as the server does at load
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(rounds):
            scale_thresholds(thresholds, x, columns)
        best = min(best, (time.process_time() - started) / rounds)
    return Result(
        "economics: value ranking's added serving CPU per auction (in-process, 30 partners)",
        best * 1e6,
        "µs/auction",
        f"thresholds divided by each call's CPM estimate (numba loop), best of 5 x {rounds:,}; only a policy with "
        "objective value ranks by expected bid value, the default recall policy adds no work; compare the "
        "in-process CPU per auction of the serving rows",
        "≤ 10% of the in-process CPU per auction",
    )


def _revenue_kept(scored: pd.DataFrame, called: np.ndarray) -> float:
    """First-price revenue kept: per auction the highest bid among the calls made, summed, over the same among all."""
    price = scored["price"].fillna(0.0).to_numpy(np.float64)
    ids = scored["auction_id"].to_numpy()
    best_all = pd.Series(price).groupby(ids).max()
    best_called = pd.Series(np.where(called, price, 0.0)).groupby(ids).max()
    return float(best_called.sum() / best_all.sum())


def _partner_gap(report: EvaluationReport, scored: pd.DataFrame) -> Result:
    """Where the model loses against the oracle: calls saved per partner at 95 % bid recall."""
    from bidflow.modeling.economics import choose_policy

    assert report.oracle is not None
    partners = scored["partner"].astype(str).to_numpy()
    y = report.y
    lost = {}
    for name, scores in (("model", report.candidate.scores), ("oracle", report.oracle.scores)):
        policy = choose_policy(partners, y, scores, target_recall=0.95, exploration_share=0.0)
        saved = ~policy.model_mask(partners, scores)
        lost[name] = pd.Series(saved).groupby(partners).sum()
    gap = (lost["oracle"] - lost["model"]).sort_values(ascending=False)
    total = float(gap.clip(lower=0).sum())
    worst = ", ".join(f"{p} {int(g):,}" for p, g in gap.head(5).items())
    return Result(
        "economics: calls the oracle saves and the model does not, at 95% bid recall (feast features)",
        float(gap.sum()),
        "calls",
        f"of {len(scored):,} calls in the hold-out hour, thresholds per partner chosen on it, no exploration; "
        f"the five partners with the largest gap: {worst}; summed over the partners where the oracle saves "
        f"more: {total:,.0f}",
    )


def _scenario_rows(root: Path, scenario: ScenarioName, champion: TrainedModel) -> list[Result]:
    config = _market(root, scenario, SCENARIO_HOURS)
    _build_feature_store(config, root)
    rows = read_frame(root / "parquet")
    hour = rows["ts"].dt.floor("h")
    first = pd.Timestamp(START) + pd.Timedelta(hours=HOURS)
    last = pd.Timestamp(START) + pd.Timedelta(hours=SCENARIO_HOURS - 1)
    spec = champion.spec
    after_shift = inputs.with_service(rows[hour == first].reset_index(drop=True), config, [spec.feature_service])
    before = evaluate(after_shift, champion, None, config.evaluate)
    post = rows[(hour >= first) & (hour < last)].reset_index(drop=True)
    frame, spec = inputs.with_features(post, config, "bid_filter", "feast")
    retrained = train.fit(frame, spec, config.train, policy=config.evaluate)
    final = inputs.with_service(rows[hour == last].reset_index(drop=True), config, [spec.feature_service])
    after = evaluate(final, retrained, champion, config.evaluate)
    out = []
    for label, report, model in (
        ("first hour after the shift, champion before retraining", before, before.candidate),
        ("after retraining on 7 post-shift hours", after, after.candidate),
    ):
        share = model.metrics["oracle_share_at_target"]
        assert report.oracle is not None and report.oracle.at_target is not None and model.at_target is not None
        detail = (
            f"model {model.at_target.calls_saved_share:.1%} of calls saved against the oracle's "
            f"{report.oracle.at_target.calls_saved_share:.1%} at 95% bid recall (thresholds chosen on the hour); "
            f"AUC {model.metrics['auc']:.3f} (oracle {report.oracle.metrics['auc']:.3f}), "
            f"ECE {model.metrics['ece']:.4f}; "
            f"{report.rows:,} calls"
        )
        if report is after and after.champion is not None:
            detail += (
                f"; the baseline champion on the same hour: "
                f"{100 * after.champion.metrics['oracle_share_at_target']:.1f}% of the oracle's, "
                f"AUC {after.champion.metrics['auc']:.3f}, ECE {after.champion.metrics['ece']:.4f}"
            )
        target = "≥ 80% of the oracle's" if report is after else ""
        out.append(
            Result(
                f"economics: {scenario}: share of the oracle's calls saved, {label}", 100 * share, "%", detail, target
            )
        )
    return out


def _build_feature_store(config: Config, root: Path) -> None:
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables

    (root / "feast").mkdir()
    write_tables(build_bid_features(read_batch(root / "parquet")), config.features.offline)
    feature_store.apply(feature_store.open_store(config.features), config.features)

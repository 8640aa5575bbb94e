"""Benchmark: the fraud model on real TalkingData clicks against a logistic regression and a plain XGBoost.

The three days of the TalkingData sample (read in place from ../shared/data): the last day
(2017-11-08) is the hold-out; the clicks before it are split in time, the last quarter choosing each
model's parameters (XGBoost depth, leaf weight and trees by early stopping; the logistic regression's
C), and each model is refitted on everything before the hold-out. All three see the same rows:

* the fraud model: XGBoost on the raw ids, the hour and the streaming velocity features computed
  offline, point in time, by the stream processor's own state machine;
* a plain XGBoost on the raw ids and the hour;
* a logistic regression on the one-hot raw ids and the hour.

AUC with a percentile bootstrap 95 % interval (1,000 resamples of the hold-out), PR-AUC (average
precision) and log loss; and the fraud model's threshold keeping 95 % of validation's converting clicks,
applied to the hold-out.

One more row scores the model the platform ships: the fraud kind trained through the tabular loop as
``bidflow train --kind fraud`` trains it (its Feast point-in-time training set over the velocity views,
``train.fraud`` from bidflow.yaml, early stopping on the last 10 hours before the hold-out), on the
same hold-out rows.

Run alone: ``.venv/bin/python -m bench.bench_fraud``; ``python -m bench fraud`` adds the rows to
bench/README.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.harness import Result, machine
from bidflow.config import FraudConfig
from bidflow.features.talkingdata import LABEL, read_clicks
from bidflow.modeling.fraud import Scores, compare, scores

ROOT = Path(__file__).resolve().parents[1]
CLICKS = ROOT.parent / "shared" / "data" / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
LABELS = {
    "velocity_xgboost": "fraud: XGBoost, raw ids + streaming velocity features",
    "raw_ids_xgboost": "fraud baseline: plain XGBoost on the raw ids",
    "raw_ids_logistic": "fraud baseline: logistic regression on the one-hot raw ids",
}


def loop_model(settings: FraudConfig) -> tuple[Scores, int]:
    """The fraud kind as the tabular loop trains it, scored on the hold-out day: its scores and hold-out rows."""
    from bidflow.config import load_config
    from bidflow.features import store as feature_store
    from bidflow.features.build import write_tables
    from bidflow.features.velocity import offline_tables
    from bidflow.modeling import inputs, train

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(ROOT / "bidflow.yaml", environ={})
        features = config.features.model_copy(
            update={"repo": ROOT / "feature_repo", "offline": Path(tmp) / "features", "state": Path(tmp) / "state"}
        )
        config = config.model_copy(
            update={"features": features, "fraud": settings.model_copy(update={"source": CLICKS})}
        )
        write_tables(offline_tables(read_clicks(CLICKS)), features.offline)
        feature_store.apply(feature_store.open_store(features), features)
        rows = inputs.load_rows(config, "fraud")
        before, holdout = inputs.split_holdout(rows, config.evaluate.for_kind("fraud").holdout_hours)
        frame, spec = inputs.with_features(before, config, "fraud", "feast")
        chosen = config.train.for_kind("fraud")
        model = train.fit(frame, spec, chosen, time_column=inputs.TIME, refit=chosen.refit)
        scored = inputs.with_service(holdout, config, [spec.feature_service])
        found = scores(scored[LABEL].to_numpy(), model.predict(scored), settings.bootstrap, settings.seed)
        return found, len(scored)


def run() -> list[Result]:
    settings = FraudConfig()
    started = time.perf_counter()
    report, _ = compare(read_clicks(CLICKS), settings)
    seconds = time.perf_counter() - started
    ours = report.models["velocity_xgboost"]
    beats = all(ours.auc > other.auc and ours.pr_auc > other.pr_auc
                for name, other in report.models.items() if name != "velocity_xgboost")  # fmt: skip
    rows = []
    split = (f"train {report.rows['train']:,} ({report.positives['train']} positive), validation "
             f"{report.rows['validation']:,} ({report.positives['validation']}), hold-out 2017-11-08 "
             f"{report.rows['holdout']:,} ({report.positives['holdout']})")  # fmt: skip
    for name, found in report.models.items():
        chosen = ", ".join(f"{k} {v}" for k, v in found.chosen.items())
        target = "beats both baselines on AUC and PR-AUC" if name == "velocity_xgboost" else ""
        detail = (f"AUC 95% interval [{found.auc_low:.3f}, {found.auc_high:.3f}], PR-AUC {found.pr_auc:.3f}, log loss "
                  f"{found.log_loss:.5f}; chosen on validation: {chosen}; {split}")  # fmt: skip
        if name == "velocity_xgboost":
            detail += f"; beats both: {'yes' if beats else 'no'}; whole comparison {seconds:.0f} s"
        rows.append(Result(f"{LABELS[name]}: hold-out AUC", found.auc, "AUC", detail, target))
    loop, loop_rows = loop_model(settings)
    loop_beats = all(loop.auc > other.auc and loop.pr_auc > other.pr_auc
                     for name, other in report.models.items() if name != "velocity_xgboost")  # fmt: skip
    rows.append(Result(
        "fraud: the model the loop trains (`bidflow train --kind fraud`, Feast training set): hold-out AUC", loop.auc,
        "AUC", f"AUC 95% interval [{loop.auc_low:.3f}, {loop.auc_high:.3f}], PR-AUC {loop.pr_auc:.3f}, log loss "
        f"{loop.log_loss:.5f}; train.fraud of bidflow.yaml; hold-out 2017-11-08 {loop_rows:,} rows; beats both "
        f"baselines: {'yes' if loop_beats else 'no'}", "beats both baselines on AUC and PR-AUC",
    ))  # fmt: skip
    money = report.economics
    rows.append(Result(
        "fraud: hold-out clicks scored invalid at the threshold keeping 95% of validation's conversions",
        100 * money.flagged_share, "% of clicks",
        f"threshold {money.threshold:.4f}; {100 * money.conversions_lost:.1f}% of the hold-out's converting clicks "
        f"fall below it; a click that converts is 0.24% of the traffic, so most clicks never do",
    ))  # fmt: skip
    return rows


if __name__ == "__main__":
    print(f"machine: {machine()}")
    for result in run():
        print("| " + " | ".join(result.cells()) + " |")

"""Training throughput: XGBoost (hist) on 1M rows x 40 features, vocabulary encoding included.

The rows are synthetic (10 categorical columns of 5-2,000 values, 30 numeric, a logistic label of a
few of them) so the benchmark measures training, not the generator. A fixed 100 rounds (early
stopping set out of reach) keep runs comparable; rows/s is training rows over wall-clock seconds
of ``train_model`` (encoding, DMatrix, boosting, metrics).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pandas as pd

from bench.harness import Result, one_core
from bidflow.config import TrainConfig
from bidflow.modeling.dataset import FeatureSpec
from bidflow.modeling.train import train_model

ROWS = 1_000_000
VALID_ROWS = 100_000
CATEGORICAL = 10
NUMERIC = 30
ROUNDS = 100


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, FeatureSpec]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    logit = np.full(n, -2.3)
    for i in range(CATEGORICAL):
        cardinality = [5, 20, 100, 400, 2_000][i % 5]
        codes = rng.zipf(1.3, size=n) % cardinality
        columns[f"cat{i}"] = np.char.add(f"c{i}-", codes.astype(str))
        if i < 4:
            logit += np.where(codes % 7 == 0, 0.8, -0.1)
    for j in range(NUMERIC):
        values = rng.normal(size=n)
        columns[f"num{j}"] = values
        if j < 6:
            logit += 0.4 * values * (1 if j % 2 else -1)
    columns["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    spec = FeatureSpec(
        names=(*[f"cat{i}" for i in range(CATEGORICAL)], *[f"num{j}" for j in range(NUMERIC)]),
        categorical=tuple(f"cat{i}" for i in range(CATEGORICAL)),
        label="y",
    )
    return pd.DataFrame(columns), spec


def run() -> list[Result]:
    train_rows, spec = synthetic(ROWS, 1)
    valid_rows, _ = synthetic(VALID_ROWS, 2)
    results = []
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores = len(affinity) if affinity is not None else os.cpu_count() or 1
    for label, threads in ((f"{cores} cores", 0), ("1 core", 1)):
        cfg = TrainConfig(n_estimators=ROUNDS, early_stopping_rounds=ROUNDS, max_depth=6, nthread=threads)
        with one_core() if threads == 1 else contextlib.nullcontext():
            model = train_model(train_rows, valid_rows, spec, cfg)
        seconds = model.metrics["train_seconds"]
        detail = (
            f"{ROWS:,} rows x {len(spec.names)} features ({CATEGORICAL} categorical), {model.best_iteration} trees "
            f"depth 6, {seconds:.1f} s, validation AUC {model.metrics['valid_auc']:.3f}"
        )
        results.append(Result(f"train: rows/s (xgboost hist, {label})", ROWS / seconds, "rows/s", detail))
    return results

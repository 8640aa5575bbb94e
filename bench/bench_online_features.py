"""Benchmark: online features for one auction with 30 candidate partners, SQLite and Redis.

A synthetic day of traffic (30 partners, 400 publishers, 20 countries) goes through
``bidflow features build``, is applied and materialized into a private store (SQLite in a temp
folder; Redis in database 11 under a one-off project name, deleted afterwards). Each lookup is one
``bid_filter`` read for all 30 partners of a request drawn from that traffic -- 6 feature views,
42 features, 151 entity keys. Timed: Feast's ``get_online_features``, bidflow's direct path, and the
direct path behind the model server's cache and context memo, through ``features`` as the model
server calls it (the same random requests, cold at the start).

Run alone: ``.venv/bin/python -m bench.bench_online_features`` (prints a markdown table);
``python -m bench online_features`` adds the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.harness import Result, machine
from bidflow.config import FeaturesConfig
from bidflow.data.ingest import parquet_schema
from bidflow.errors import FeatureStoreError
from bidflow.features import store as feature_store
from bidflow.features.build import build_bid_features, write_tables
from bidflow.features.online import OnlineFeatureReader
from bidflow.serving.bid_filter_features import LAYOUT

REPO = Path(__file__).resolve().parents[1] / "feature_repo"
START = datetime(2026, 11, 2, tzinfo=UTC)
HOURS = 24
PARTNERS = [f"partner{i:02d}" for i in range(30)]
FORMATS = ["banner", "video", "native", "audio"]
COUNTRIES = [f"C{i:02d}" for i in range(20)]
REDIS = "127.0.0.1:6379,db=11"
TARGET_P99_MS = 2.0
CACHE_S = 60.0  # bidflow.serving.online.DEFAULT_CACHE_S


@dataclass(frozen=True)
class Timing:
    store: str
    path: str
    lookups: int
    p50: float
    p99: float
    mean: float


def synthetic_calls(auctions: int = 40_000, seed: int = 11) -> pa.Table:
    """Ingested rows (``parquet_schema``): every auction calls 8-30 partners."""
    rng = np.random.default_rng(seed)
    ts = int(START.timestamp() * 1000) + np.sort(rng.integers(0, HOURS * 3_600_000, auctions))
    fanout = rng.integers(8, len(PARTNERS) + 1, auctions)
    auction = np.repeat(np.arange(auctions), fanout)
    partner = np.concatenate([rng.permutation(len(PARTNERS))[:k] for k in fanout])
    n = len(auction)
    publisher = rng.zipf(1.3, auctions) % 400
    status = rng.choice(["bid", "nobid", "timeout", "error"], n, p=[0.12, 0.83, 0.04, 0.01])
    schema = parquet_schema()
    columns: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in schema}
    columns |= {
        "ts": pa.array(ts[auction]).cast(pa.timestamp("ms", tz="UTC")),
        "auction_id": pa.array(auction.astype(str)),
        "partner": pa.array(np.array(PARTNERS)[partner]),
        "status": pa.array(status),
        "bid": pa.array((status == "bid").astype(np.int8)),
        "price": pa.array(np.where(status == "bid", rng.lognormal(0.2, 0.5, n), np.nan), from_pandas=True),
        "latency_ms": pa.array(rng.integers(20, 400, n).astype(np.int32)),
        "publisher_id": pa.array(np.char.add("pub", publisher.astype(str))[auction]),
        "country": pa.array(np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), auctions)][auction]),
        "format": pa.array(np.array(FORMATS)[rng.integers(0, len(FORMATS), auctions)][auction]),
        "device_type": pa.array(rng.integers(1, 8, auctions).astype(np.int32)[auction]),
        "bidfloor": pa.array(np.round(rng.random(auctions) * 2, 2)[auction]),
    }
    return pa.table({f.name: columns[f.name].cast(f.type) for f in schema}, schema=schema)


def requests(calls: pa.Table, count: int, seed: int = 5) -> list[tuple[str, str, str, int]]:
    """(publisher, country, format, device type) of logged auctions, drawn with replacement."""
    first = calls.to_pandas().drop_duplicates("auction_id")
    rows = first.sample(count, replace=True, random_state=seed)
    return list(
        zip(rows.publisher_id, rows.country, rows["format"], rows.device_type.astype(int).tolist(), strict=True)
    )


def timed(fn: Callable[[], Any], n: int, warmup: int = 200) -> np.ndarray:
    for _ in range(min(warmup, n)):
        fn()
    out = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - started
    return out * 1000.0


def bench_store(
    name: str, cfg: FeaturesConfig, overrides: dict[str, Any] | None, lookups: int, feast_lookups: int
) -> list[Timing]:
    calls = synthetic_calls()
    write_tables(build_bid_features(calls), cfg.offline)
    store = feature_store.open_store(cfg, overrides)
    feature_store.apply(store, cfg)
    end = START + timedelta(hours=HOURS)
    reader = OnlineFeatureReader(store, "bid_filter")
    # as the model server
    cached = OnlineFeatureReader(store, "bid_filter", layout=LAYOUT, cache_s=CACHE_S, refresh=True)
    views = [view.view for view in reader.spec.views]
    feature_store.materialize(store, START, end, views)
    at = end + timedelta(minutes=20)
    draws = requests(calls, max(lookups, feast_lookups))
    timings = []
    for path, n, read in [
        ("get_online_features", feast_lookups, reader.read_via_feast),
        ("direct", lookups, reader.read),
        (f"direct, {CACHE_S:g} s cache (model server default)", lookups, _as_features(cached)),
    ]:
        it = iter(draws)

        def one(read: Callable[..., np.ndarray] = read, it: Any = it) -> np.ndarray:
            publisher, country, fmt, device = next(it)
            keys = {
                "partner": PARTNERS,
                "publisher_id": publisher,
                "country": country,
                "format": fmt,
                "device_type": device,
            }
            return read(keys, at=at)

        ms = timed(one, n, warmup=0)
        timings.append(Timing(name, path, n, *np.percentile(ms, [50, 99]).tolist(), float(ms.mean())))
    sample = draws[0]
    keys = dict(zip(["publisher_id", "country", "format", "device_type"], sample, strict=True))
    np.testing.assert_array_equal(
        reader.read({"partner": PARTNERS, **keys}, at=at), reader.read_via_feast({"partner": PARTNERS, **keys}, at=at)
    )
    np.testing.assert_array_equal(
        cached.features(PARTNERS, *sample, at=at), reader.read({"partner": PARTNERS, **keys}, at=at)
    )
    stats = cached.cache_stats
    rows = stats.rows_hit + stats.rows_missed
    print(f"  {name} cache: {stats.rows_hit / max(1, rows):.1%} of rows whole from the row cache, "
          f"{stats.keys_missed} keys read from the store", flush=True)  # fmt: skip
    reader.close()
    cached.close()
    return timings


def _as_features(reader: OnlineFeatureReader) -> Callable[..., np.ndarray]:
    """``reader.read`` for one auction's keys, made through ``features`` (the model server's call)."""

    def read(keys: dict[str, Any], at: Any) -> np.ndarray:
        return reader.features(
            keys["partner"], keys["publisher_id"], keys["country"], keys["format"], keys["device_type"], at=at
        )

    return read


def _drop_redis_project(connection: str, project: str) -> None:
    import redis

    host_port, *params = connection.split(",")
    host, port = host_port.split(":")
    db = int(dict(p.split("=", 1) for p in params).get("db", 0))
    client = redis.Redis(host=host, port=int(port), db=db)
    stale = [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())]
    if stale:
        client.delete(*stale)
    client.close()


def measure(lookups: int = 5000, feast_lookups: int = 1000, redis: str | None = REDIS) -> list[Timing]:
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        root = Path(tmp)
        sqlite = FeaturesConfig(repo=REPO, offline=root / "offline", state=root / "sqlite", project="bench_online")
        timings += bench_store("SQLite", sqlite, None, lookups, feast_lookups)
        if redis:
            project = f"bench_online_{uuid.uuid4().hex[:8]}"
            cfg = FeaturesConfig(repo=REPO, offline=root / "offline", state=root / "redis", project=project)
            try:
                overrides = {"online_store": {"type": "redis", "connection_string": redis}}
                timings += bench_store("Redis", cfg, overrides, lookups, feast_lookups)
            except FeatureStoreError as exc:
                print(f"Redis skipped: {exc}")
            finally:
                _drop_redis_project(redis, project)
    return timings


def table(timings: list[Timing]) -> str:
    lines = [
        "| online store | path | lookups | p50 ms | p99 ms | mean ms |",
        "|---|---|---:|---:|---:|---:|",
        *(f"| {t.store} | {t.path} | {t.lookups:,} | {t.p50:.3f} | {t.p99:.3f} | {t.mean:.3f} |" for t in timings),
    ]
    return "\n".join(lines)


def run() -> list[Result]:
    """Rows for ``python -m bench``."""
    results = []
    for t in measure():
        target = f"p99 <= {TARGET_P99_MS:g} ms" if t.store == "Redis" and t.path == "direct" else ""
        results.append(
            Result(
                f"online_features {t.store} {t.path}",
                t.p99,
                "ms p99",
                f"p50 {t.p50:.3f} ms over {t.lookups:,} lookups of 30 partners x 42 features",
                target,
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=5000, help="timed lookups on the direct path")
    parser.add_argument("--feast-lookups", type=int, default=1000, help="timed get_online_features lookups")
    parser.add_argument("--redis", default=REDIS, help="Feast Redis connection string; '' to skip Redis")
    args = parser.parse_args()
    timings = measure(args.lookups, args.feast_lookups, args.redis or None)
    print(f"\nOne auction, {len(PARTNERS)} partners, bid_filter service; {machine()}\n")
    print(table(timings))


if __name__ == "__main__":
    main()

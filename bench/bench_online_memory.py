"""Benchmark: what the Redis online store holds per entity key, for the capacity plan (docs/CAPACITY.md).

Two stores are filled in a real Redis (127.0.0.1:6379, database 15, a project of its own, deleted
afterwards) the way production fills them:

* the bid filter's views, built from the default day (``simulate`` defaults: 6 h x 20,000 auctions an
  hour) and materialized by Feast (``bidflow features materialize``);
* the fraud kind's velocity views, written by the stream processor's sink from the TalkingData
  sample's three days (read in place), the rows as of each key's last click.

Per store: the keys, Redis's own ``MEMORY USAGE`` of every key summed (the key, its hash and the
allocator's overhead), and so the bytes per key; the server's ``used_memory`` before and after is
shown beside it as a check. Run alone: ``.venv/bin/python -m bench.bench_online_memory``.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.harness import Result, machine

ROOT = Path(__file__).resolve().parents[1]
CLICKS = ROOT.parent / "shared" / "data" / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
REDIS_DB = 15


def usage(client: Any, project: str) -> tuple[int, int]:
    """Keys of ``project`` and the sum of their ``MEMORY USAGE`` (bytes)."""
    keys = list(client.scan_iter(match=f"*{project}*", count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return len(keys), int(sum(size or 0 for size in pipe.execute()))


def run() -> list[Result]:
    import redis

    from bidflow.config import FeaturesConfig, IngestConfig, SimulateConfig
    from bidflow.data.batch import read_batch
    from bidflow.data.ingest import ingest
    from bidflow.data.simulate import simulate
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.features.online_writer import RedisSink
    from bidflow.features.talkingdata import read_clicks
    from bidflow.features.velocity import VIEWS, VelocityState, clicks_from_frame

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for store_name in ("bid_filter", "fraud"):
            project = f"bidflow_memory_{uuid.uuid4().hex[:8]}"
            cfg = FeaturesConfig(repo=ROOT / "feature_repo", offline=root / store_name / "features",
                                 state=root / store_name / "state", project=project)  # fmt: skip
            cfg.state.mkdir(parents=True)  # type: ignore[union-attr]
            online = {"online_store": {"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}}
            store = feature_store.open_store(cfg, online)
            feature_store.apply(store, cfg)
            before = int(client.info("memory")["used_memory"])
            try:
                if store_name == "bid_filter":
                    simulate(SimulateConfig(), root / "raw")
                    ingest(root / "raw", root / "parquet", IngestConfig())
                    calls = read_batch(root / "parquet", None, None)
                    tables = build_bid_features(calls)
                    summary = write_tables(tables, cfg.offline)
                    assert summary.first is not None and summary.last is not None
                    views = sorted(tables)
                    feature_store.materialize(store, summary.first - timedelta(days=2), summary.last, views)
                    what = f"{calls.num_rows:,} partner calls of the default day, views {', '.join(views)}"
                else:
                    state = VelocityState(allowed_lateness_s=60)
                    clicks = read_clicks(CLICKS)
                    state.add_all(clicks_from_frame(clicks))
                    RedisSink(store, key_ttl_s=None).write(state.rows())
                    what = f"{len(clicks):,} TalkingData clicks (3 days), views {', '.join(VIEWS)}"
                keys, total = usage(client, project)
                after = int(client.info("memory")["used_memory"])
                results.append(Result(
                    f"online memory: {store_name} bytes per entity key (Redis)", total / max(keys, 1), "B/key",
                    f"{keys:,} keys, {total / 2**20:.1f} MiB by MEMORY USAGE (used_memory grew "
                    f"{(after - before) / 2**20:.1f} MiB); {what}",
                ))  # fmt: skip
            finally:
                stale = list(client.scan_iter(match=f"*{project}*", count=10_000))
                for start in range(0, len(stale), 10_000):
                    client.delete(*stale[start : start + 10_000])
    return results


if __name__ == "__main__":
    print(f"machine: {machine()}")
    for result in run():
        print("| " + " | ".join(result.cells()) + " |")

"""Benchmark: the streaming velocity processor on real TalkingData clicks (Redis Streams -> Redis online store).

The three days of the TalkingData sample (71,439 real clicks, read in place from ../shared/data) go
onto a private stream in Redis database 13 under a one-off Feast project; everything is deleted
afterwards. Rows:

* producer: clicks appended per second of the publishing process's CPU (pipelined XADDs).
* processor, one core: clicks per second of the processor's CPU (pinned to one core) from the
  stream to the online store: XREADGROUP, decode, windows, rows of the changed keys, write, XACK;
  wall rate and Redis' own CPU beside it (Redis runs on the other core). As ``bidflow stream
  process`` runs it (``gc.freeze`` after each batch), and once more without that. The sample is a thinned
  random 0.04 % of the real traffic, so nearly every click touches three keys no other click of its
  batch touches: the worst case for coalescing writes.
* the same through Feast's push API (``FeatureStore.push``; a 10,000-click slice: it is slow).
* latency: a second process appends clicks at 5,000/s (the sample looped with fresh event ids and
  shifted times) while the processor runs; per click, the time from Redis stamping its stream entry
  to the write of its rows returning (the entry id's milliseconds and the processor's clock are the
  same machine's). p50 / p99 / max.

Run alone: ``.venv/bin/python -m bench.bench_stream``; ``python -m bench stream`` adds the rows to
bench/README.md.
"""

from __future__ import annotations

import gc
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Result, machine, one_core
from bidflow.config import FeaturesConfig, StreamConfig
from bidflow.features import store as feature_store
from bidflow.features.online_writer import FeastPushSink, RedisSink, Sink
from bidflow.features.streaming import ClickStream, StreamProcessor, connect
from bidflow.features.talkingdata import read_clicks
from bidflow.features.velocity import Click, clicks_from_frame

ROOT = Path(__file__).resolve().parents[1]
CLICKS = ROOT.parent / "shared" / "data" / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
DB = 13
REDIS_URL = f"redis://127.0.0.1:6379/{DB}"
CONNECTION = f"127.0.0.1:6379,db={DB}"
TARGET_RATE = 50_000
LATENCY_RATE = 5_000
LATENCY_SECONDS = 20
TARGET_P99_MS = 1_000


@contextmanager
def private_store(skip_dedup: bool = False) -> Iterator[tuple[Any, StreamConfig, str]]:
    """A Feast project with the repo's definitions on Redis db 13, a stream for it; all deleted afterwards."""
    project = f"bench_stream_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FeaturesConfig(repo=ROOT / "feature_repo", offline=Path(tmp) / "offline", state=Path(tmp) / "state",
                             project=project)  # fmt: skip
        online = {"type": "redis", "connection_string": CONNECTION} | ({"skip_dedup": True} if skip_dedup else {})
        store = feature_store.open_store(cfg, {"online_store": online})
        feature_store.apply(store, cfg)
        settings = StreamConfig(redis_url=REDIS_URL, stream=f"{project}:clicks", batch=5_000, block_ms=20)
        try:
            yield store, settings, project
        finally:
            client = connect(REDIS_URL)
            stale = list(client.scan_iter(match=f"*{project}*", count=10_000))
            for start in range(0, len(stale), 10_000):
                client.delete(*stale[start : start + 10_000])
            client.close()


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def throughput(clicks: list[Click], sink_name: str, *, freeze_gc: bool = True) -> list[Result]:
    with private_store(skip_dedup=sink_name == "feast") as (store, settings, _):
        client = connect(settings.redis_url)
        started = time.process_time()
        ClickStream(client, settings.stream).publish(clicks)
        publish_cpu = time.process_time() - started
        sink: Sink = FeastPushSink(store) if sink_name == "feast" else RedisSink(store, key_ttl_s=settings.key_ttl_s)
        processor = StreamProcessor(client, sink, settings.model_copy(update={"checkpoint_every_s": 3_600.0}),
                                    freeze_gc=freeze_gc)  # fmt: skip
        processor.start()
        with one_core():
            server_before, cpu_before, wall_before = redis_cpu(client), time.process_time(), time.perf_counter()
            rows = 0
            while True:
                batch = processor.step()
                rows += batch.rows
                if batch.entries == 0:
                    break
            cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
            server = redis_cpu(client) - server_before
            paused = time.perf_counter()
            processor.checkpoint()
            paused = time.perf_counter() - paused
        saved = client.strlen(f"{settings.stream}:{settings.group}:checkpoint")
        kept = len(processor.state.snapshot()["expiry"])
        processor.close()
        client.close()
    n = len(clicks)
    detail = (f"{n:,} real clicks (TalkingData, 3 days), batches of {settings.batch:,}; {rows / n:.2f} rows written "
              f"per click; wall {n / wall:,.0f} clicks/s on this shared 2-core machine; Redis CPU "
              f"{server / n * 1e6:.1f} µs/click on the other core")  # fmt: skip
    if sink_name == "feast":
        return [Result("stream: processor through Feast push (FeatureStore.push), one core", n / cpu, "clicks/s CPU",
                       detail + "; online store skip_dedup: true")]  # fmt: skip
    return [
        Result("stream: producer (pipelined XADD)", n / publish_cpu, "clicks/s CPU",
               f"{n:,} clicks, 2,000 per round trip"),
        Result(f"stream: processor, one core (direct Redis sink{'' if freeze_gc else ', gc not frozen'})", n / cpu,
               "clicks/s CPU", detail, f"≥ {TARGET_RATE:,} clicks/s per core"),
        Result("stream: checkpoint pause (state saved to Redis)", paused * 1000, "ms",
               f"{kept:,} clicks in the state (the last 24 h of the sample), {saved / 1e6:.1f} MB of msgpack; the "
               f"processor stops reading meanwhile, every checkpoint_every_s (default 10 s)"),
    ]  # fmt: skip


def _produce(url: str, stream: str, clicks: list[Click], rate: int, seconds: float) -> None:
    """Append ``rate`` clicks a second for ``seconds`` (10 ms ticks), looping ``clicks`` with new ids and times."""
    client = connect(url)
    producer = ClickStream(client, stream)
    span = clicks[-1].ts - clicks[0].ts + 1
    per_tick, sent, loop = rate // 100, 0, 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        chunk = []
        for _ in range(per_tick):
            i = sent % len(clicks)
            loop = sent // len(clicks)
            chunk.append(clicks[i]._replace(event_id=f"{clicks[i].event_id}-{loop}", ts=clicks[i].ts + loop * span))
            sent += 1
        producer.publish(chunk)
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    client.close()


def latency(clicks: list[Click]) -> list[Result]:
    with private_store() as (store, settings, _):
        client = connect(settings.redis_url)
        processor = StreamProcessor(client, RedisSink(store, key_ttl_s=settings.key_ttl_s), settings, freeze_gc=True)
        processor.start()
        producer = multiprocessing.get_context("fork").Process(
            target=_produce, args=(settings.redis_url, settings.stream, clicks, LATENCY_RATE, LATENCY_SECONDS)
        )
        latencies: list[int] = []
        producer.start()
        with one_core():
            while True:
                batch = processor.step(measure=True)
                latencies += batch.latencies_ms
                if batch.entries == 0 and not producer.is_alive():
                    break
        producer.join()
        processor.close()
        client.close()
    values = np.array(latencies, dtype=np.float64)
    p50, p99, worst = np.percentile(values, 50), np.percentile(values, 99), values.max()
    return [
        Result(
            f"stream: click -> online feature latency p99 at {LATENCY_RATE:,} clicks/s",
            p99,
            "ms",
            f"p50 {p50:.0f} ms, max {worst:.0f} ms over {len(values):,} clicks ({LATENCY_SECONDS} s); from Redis "
            f"stamping the stream entry to the write of its rows returning; reads block up to "
            f"{settings.block_ms} ms, batches up to {settings.batch:,}",
            f"≤ {TARGET_P99_MS:,} ms",
        )
    ]


def run() -> list[Result]:
    clicks = list(clicks_from_frame(read_clicks(CLICKS)))
    unfrozen = [r for r in throughput(clicks, "redis", freeze_gc=False) if "gc not frozen" in r.benchmark]
    try:
        return [*throughput(clicks, "redis"), *unfrozen, *throughput(clicks[:10_000], "feast"), *latency(clicks)]
    finally:
        gc.unfreeze()  # the benchmarks share one process: the next one starts with a normal collector


if __name__ == "__main__":
    print(f"machine: {machine()}")
    for result in run():
        print("| " + " | ".join(result.cells()) + " |")

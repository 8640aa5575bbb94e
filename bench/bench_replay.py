"""Benchmark: the replay client (``bidflow canary replay``) against wrk, on the same model server in one run.

The replay client sends logged auctions to a served endpoint and times each answer; if it costs more per
request than the server, it measures itself (issue #27, item 9: 376 auctions/s through the old client
against about 4,000/s through wrk). This benchmark serves a bid filter (request features, 60 trees of
depth 5, no online store: the server is as cheap as a bid-filter server gets, so the client's own cost
shows) and, at the same concurrency and on the same bodies (generated auctions, as ``bidflow canary
replay`` reads them from the logs), drives it in alternating rounds with:

* ``wrk`` (one thread, closed loop; Debian's package), the reference;
* the replay client (``bidflow.deploy.replay.replay``), in this process;
* the client the replay used before (httpx, one queue of auctions), kept here as the "before" row.

Then the same against the KServe no-op model (``bench_serving --serve-noop``: bidflow's server answering a
fixed JSON), where the client's own cost is the larger share. Reported per client: auctions/s, p50/p99,
CPU per request of the server and of the client (the client's CPU over its round; wrk's through its
rusage), the client's rate over wrk's (target: at least half).

Run alone: ``.venv/bin/python -m bench.bench_replay [--seconds 5]`` (prints a table);
``python -m bench replay`` writes the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bench.bench_serving import WRK_LUA, cpu_seconds, free_port, process
from bench.harness import Result, machine
from bidflow.deploy.replay import Auction, read_auctions, replay

START = datetime(2026, 11, 2, tzinfo=UTC)
CONCURRENCY = 8
ROUNDS = 3
V1 = "/v1/models/bid_filter:predict"
TARGET = "≥ 0.5x wrk's auctions/s"


@dataclass(frozen=True)
class Round:
    client: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_s: float
    failed: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def build(root: Path) -> tuple[Path, list[Auction]]:
    """Generated logs -> a quick request-feature bid filter; the auctions to send (the last hour's)."""
    from bidflow.config import Config, EvaluateConfig, SimulateConfig, TrainConfig
    from bidflow.data.batch import read_frame
    from bidflow.data.ingest import ingest
    from bidflow.data.simulate import simulate
    from bidflow.kinds import bid_filter
    from bidflow.modeling import inputs, train

    raw = root / "raw"
    simulate(SimulateConfig(start=START, hours=2, auctions_per_hour=4_000, publishers=80), raw)
    ingest(raw, root / "parquet", Config().ingest.model_copy(update={"workers": 1}))
    quick = TrainConfig(n_estimators=60, max_depth=5, nthread=1)
    model = train.fit(read_frame(root / "parquet"), bid_filter.spec(), quick, time_column=inputs.TIME,
                      policy=EvaluateConfig())  # fmt: skip
    folder = train.save_model(model, root / "model")
    return Path(folder), list(read_auctions(sorted(raw.rglob("*.jsonl.gz"))))


def _wrk(url: str, body_file: Path, seconds: float, workdir: Path) -> tuple[dict[str, float], float]:
    """One closed-loop wrk run; its stats and its CPU seconds."""
    import json

    script = workdir / "replay.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    env = os.environ | {"BENCH_BODIES": str(body_file), "BENCH_PATH": V1}
    command = [str(shutil.which("wrk")), "-t1", f"-c{CONCURRENCY}", f"-d{max(1, round(seconds))}s", "-s", str(script),
               url]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = json.loads(next(x for x in done.stderr.splitlines() if x.startswith("BENCH "))[6:])
    return stats, cpu


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _httpx_replay(auctions: Sequence[Auction], url: str, concurrency: int) -> tuple[list[float], int]:
    """The replay loop as it was before this benchmark: httpx, a queue of auctions, a header dict per call."""
    import httpx

    queue: asyncio.Queue[Auction | None] = asyncio.Queue()
    for auction in auctions:
        queue.put_nowait(auction)
    for _ in range(concurrency):
        queue.put_nowait(None)
    latencies: list[float] = []
    failed = 0
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=limits) as client:

        async def worker() -> None:
            nonlocal failed
            while (auction := await queue.get()) is not None:
                sent = time.perf_counter()
                try:
                    response = await client.post(url, content=auction.body, headers=headers)
                    ok = response.status_code == 200
                    response.headers.get("x-bidflow-role", "champion")
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - sent) * 1000)
                failed += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failed


def _rounds(name: str, url: str, pid: int, auctions: list[Auction], body_file: Path, seconds: float,
            workdir: Path) -> list[Round]:  # fmt: skip
    """Alternating rounds of wrk, the replay client and the previous client against one server."""
    out: list[Round] = []
    predict = url + V1
    wrk_rate = 0.0
    for _ in range(ROUNDS):
        cpu0 = cpu_seconds(pid)
        stats, wrk_cpu = _wrk(url, body_file, seconds, workdir)
        out.append(Round(f"{name}: wrk", int(stats["requests"]), stats["duration_us"] / 1e6, stats["p50_us"] / 1000,
                         stats["p99_us"] / 1000, cpu_seconds(pid) - cpu0, wrk_cpu, int(stats["errors"])))  # fmt: skip
        wrk_rate = out[-1].rate
        # As many auctions as wrk answered in its round (at least a pass over the log), so rounds last alike.
        n = max(len(auctions), int(wrk_rate * seconds))
        batch = [auctions[i % len(auctions)] for i in range(n)]
        cpu0, own0 = cpu_seconds(pid), time.process_time()
        report = asyncio.run(replay(batch, predict, concurrency=CONCURRENCY))
        own, server = time.process_time() - own0, cpu_seconds(pid) - cpu0
        out.append(Round(f"{name}: replay client", report.sent, report.seconds, report.percentile(0.5) or 0.0,
                         report.percentile(0.99) or 0.0, server, own, report.failed))  # fmt: skip
        n = min(n, int(out[-1].rate * seconds), 2_000)  # the old client is slow: a shorter round
        cpu0, own0, began = cpu_seconds(pid), time.process_time(), time.perf_counter()
        latencies, failed = asyncio.run(_httpx_replay(batch[:n], predict, CONCURRENCY))
        own, server, wall = time.process_time() - own0, cpu_seconds(pid) - cpu0, time.perf_counter() - began
        out.append(Round(f"{name}: previous client (httpx)", n, wall, _percentile(latencies, 0.5),
                         _percentile(latencies, 0.99), server, own, failed))  # fmt: skip
        for r in out[-3:]:
            print(f"  {r.client}: {r.rate:,.0f}/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms, client CPU "
                  f"{r.client_cpu_s / r.requests * 1e6:.0f} µs/request", file=sys.stderr, flush=True)  # fmt: skip
    return out


def run(seconds: float = 5.0) -> list[Result]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    root = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        model, auctions = build(root)
        body_file = root / "bodies.jsonl"
        body_file.write_bytes(b"\n".join(a.body for a in auctions) + b"\n")
        partners = statistics.fmean(
            len(msgspec.json.decode(a.body)["instances"][0]["partners"]) for a in auctions[:500]
        )
        rounds: list[Round] = []
        me = [sys.executable, "-m", "bench.bench_serving"]
        servers = [
            ("bid filter", [sys.executable, "-m", "bidflow.serving", "--model", str(model), "--log-level", "WARNING",
                            "--http-port"]),
            ("kserve no-op model", [*me, "--serve-noop"]),
        ]  # fmt: skip
        for name, command in servers:
            port = free_port()
            with process([*command, str(port)], port, root) as pid:
                url = f"http://127.0.0.1:{port}"
                _wrk(url, body_file, 2.0, root)  # warm-up: allocator, caches
                rounds += _rounds(name, url, pid, auctions, body_file, seconds, root)
        return _results(rounds, len(auctions), partners)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _results(rounds: list[Round], logged: int, partners: float) -> list[Result]:
    out = []
    by_client: dict[str, list[Round]] = {}
    for r in rounds:
        by_client.setdefault(r.client, []).append(r)
    wrk = {name.split(":")[0]: statistics.median(x.rate for x in rs) for name, rs in by_client.items() if
           name.endswith(": wrk")}  # fmt: skip
    for client, rs in by_client.items():
        server = client.split(":")[0]
        rate = statistics.median(r.rate for r in rs)
        requests = sum(r.requests for r in rs)
        cpu = sum(r.client_cpu_s for r in rs) / requests * 1e6
        server_cpu = sum(r.server_cpu_s for r in rs) / requests * 1e6
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        failed = sum(r.failed for r in rs)
        ratio = "" if client.endswith(": wrk") else f"{rate / wrk[server]:.2f}x wrk's {wrk[server]:,.0f}/s; "
        detail = (
            f"{ratio}c={CONCURRENCY}, median of {len(rs)} rounds ({', '.join(f'{r.rate:,.0f}' for r in rs)}/s); "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms; CPU per request: client {cpu:.0f} µs, server {server_cpu:.0f} µs; "
            f"{requests:,} requests, {failed} failed; {logged:,} logged auctions, {partners:.1f} partners each"
        )
        target = "" if client.endswith(": wrk") or "previous" in client else TARGET
        out.append(Result(f"replay: {client}", rate, "auctions/s", detail, target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    results = run(args.seconds)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

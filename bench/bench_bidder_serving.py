"""Benchmark: the bidder's model server through KServe, its budget in Redis, against the no-op KServe floor.

Setup (private, in a temp folder): the bidder for iPinYou campaign 2997 fitted as the server bids by
default (c0 = 1/32, T = 1000 auctions per episode, the planned policy) on the campaign's tuning log
read in place from ``../shared/data``; a private ``redis-server`` on a free port (the shared Redis is
not touched) holds its budget.

Load: v1 bid requests of one auction each, with the pCTRs of the tuning log and a fresh auction id per
request (50,000 ids, rotated: each id's reservation has expired before it comes round again), from a
second process (``bench.bench_serving``'s load: wrk when installed, else its asyncio client), closed
loop at 1 and 8 connections. Each bid takes the budget state, runs the policy and reserves the bid
with the Lua script (one Redis call); the state is the one the replica's last reservation returned
while younger than ``bidder.state_max_age_s`` (5 ms by default: at these rates, nearly always), else
it is read first (a second call). The server is measured with the default and with the state read
for every bid (``state_max_age_s: 0``). No notices are sent, so every reservation expires
(``reservation_ttl_s`` 1 s here) and is swept by later scripts: the budget's whole Redis work per
auction, notice or not.

Floor, in the same run with the same bodies and load: ``bench.bench_serving``'s ``kserve no-op model``
(bidflow's KServe server serving a model whose stages do nothing). CPU per request is the server
process's CPU over the run divided by the requests, and Redis's apart; the target is the bidder's
server CPU per bid within 2x the floor's (Redis's share is reported beside it).

Also in-process (no HTTP, no KServe): CPU per bid of each step (parse, state read, policy, reserve).

Run alone: ``.venv/bin/python -m bench.bench_bidder_serving [--seconds 6]`` (prints a table);
``python -m bench bidder_serving`` writes the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_serving import cpu_seconds, free_port, load
from bench.harness import Result, machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ipinyou_auction_outcomes"
CONNECTIONS = (1, 8)
AUCTION_IDS = 50_000
TTL_S = 1.0
NAME = "bidder_bench"
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Run:
    server: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server process CPU per request
    redis_us: float  # Redis CPU per request (0 for the floor)
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def fit(folder: Path) -> dict[str, Any]:
    """The served bidder (default level and episode), saved in ``folder``; returns what it is."""
    from bidflow.bidding.artifact import save_bidder
    from bidflow.bidding.auctions import read_auctions, read_campaign
    from bidflow.bidding.fit import BidderSettings, fit_bidder

    campaign = read_campaign(DATA / "info_2997.json")
    tuning = read_auctions(DATA / "validation_by_campaign" / "2997.csv.gz")
    settings = BidderSettings(levels=(1 / 32,), served_level=1 / 32)
    bidder = fit_bidder(campaign, [tuning], settings)
    save_bidder(bidder, folder)
    return {"budget": bidder.budget(settings.served_level), "episode": settings.episode,
            "policy": settings.policy, "pctrs": tuning.pctr}  # fmt: skip


def bodies(pctrs: np.ndarray, n: int = AUCTION_IDS) -> list[bytes]:
    """v1 bodies, one auction each, with the log's pCTRs in order and a fresh auction id each."""
    return [
        json.dumps({"instances": [{"campaign": "2997", "pctr": float(pctrs[i % len(pctrs)]), "auction": f"b-{i}"}]},
                   separators=(",", ":")).encode()
        for i in range(n)
    ]  # fmt: skip


@contextmanager
def server(command: list[str], ready: str, cwd: Path) -> Iterator[int]:
    """Run a server; yield its pid once ``ready`` answers 200."""
    import httpx

    log_path = cwd / f"server-{len(list(cwd.glob('server-*.log')))}.log"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                 env=os.environ | {"PYTHONPATH": path})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def measure(name: str, url: str, path: str, body_file: Path, pids: tuple[int, int | None], seconds: float,
            workdir: Path) -> list[Run]:  # fmt: skip
    """A warm-up, then closed loop at each of ``CONNECTIONS``; CPU of the server and of Redis per request."""
    pid, redis_pid = pids
    load(url, path, body_file, 8, min(2.0, seconds), workdir)
    runs = []
    for connections in CONNECTIONS:
        cpu0, side0 = cpu_seconds(pid), cpu_seconds(redis_pid) if redis_pid else 0.0
        stats = load(url, path, body_file, connections, seconds, workdir)
        cpu, side = cpu_seconds(pid) - cpu0, (cpu_seconds(redis_pid) - side0) if redis_pid else 0.0
        n = max(1, int(stats["requests"]))
        runs.append(Run(name, connections, n, stats["seconds"], stats["p50_ms"], stats["p99_ms"], cpu / n * 1e6,
                        side / n * 1e6, int(stats["errors"])))  # fmt: skip
        print(f"  {runs[-1]}", file=sys.stderr, flush=True)
    return runs


def stages(folder: Path, redis_url: str, raw: list[bytes]) -> dict[str, float]:
    """CPU µs per bid of each step of the bidder's work, in-process (no HTTP, no KServe)."""
    from bidflow.bidding.budget import place_bid
    from bidflow.config import Config
    from bidflow.serving.base import ModelSource
    from bidflow.serving.bidder import BidderModel

    config = Config.model_validate({"bidder": {"budget_url": redis_url, "reservation_ttl_s": TTL_S}})
    model = BidderModel(NAME, config, ModelSource("bidder_bench_stages", uri=str(folder)))
    assert model.load(), model.not_ready_reason
    served = model.served
    assert served is not None
    store, policy = served.store, served.policy
    age = store.state_age_s

    def read(i: int) -> Any:  # what a bid pays when it reads the state
        store.state_age_s = 0.0
        try:
            return store.state()
        finally:
            store.state_age_s = age

    parsed = [model.preprocess(body) for body in raw]
    states = [store.state() for _ in range(len(raw))]
    auctions = [p.auctions[0] for p in parsed]
    steps: dict[str, Callable[[int], Any]] = {
        "parse + check": lambda i: model.preprocess(raw[i]),
        "state read (Redis)": read,
        "policy": lambda i: policy.bid(auctions[i].pctr, states[i].left, states[i].budget, states[i].mean_pctr),
        "reserve script (Redis)": lambda i: store.reserve(0, auctions[i].pctr, None),
        "[whole bid: state, policy, reserve]": lambda i: place_bid(store, policy, auctions[i].pctr, None),
        "[whole request: preprocess, predict, postprocess]": lambda i: model.postprocess(model.predict(parsed[i])),
    }
    out = {}
    for name, step in steps.items():
        for i in range(min(50, len(raw))):
            step(i)
        began = time.process_time()
        for i in range(len(raw)):
            step(i)
        out[name] = (time.process_time() - began) / len(raw) * 1e6
    store.clear()
    model.stop()
    return out


def run(seconds: float = 6.0) -> list[Result]:
    """Fit, start Redis, measure the floor and the bidder, return the rows."""
    root = Path(tempfile.mkdtemp(prefix="bench-bidder-serving-"))
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        started = time.perf_counter()
        fitted = fit(root / "bidder")
        print(f"  fitted the bidder in {time.perf_counter() - started:.0f} s: budget {fitted['budget']} per "
              f"{fitted['episode']} auctions", file=sys.stderr)  # fmt: skip
        raw = bodies(fitted["pctrs"])
        body_file = root / "bids.jsonl"
        body_file.write_bytes(b"\n".join(raw) + b"\n")
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=root, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        breakdown = stages(root / "bidder", redis_url, raw[:2_000])
        print(f"  in-process: {breakdown}", file=sys.stderr, flush=True)
        import yaml

        settings = {"budget_url": redis_url, "reservation_ttl_s": TTL_S}
        configs = {"bidder": root / "bidflow.yaml", "bidder, state read for every bid": root / "bidflow-read.yaml"}
        configs["bidder"].write_text(yaml.safe_dump({"bidder": settings}))
        configs["bidder, state read for every bid"].write_text(
            yaml.safe_dump({"bidder": settings | {"state_max_age_s": 0.0}})
        )
        runs: list[Run] = []
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        noop = [sys.executable, "-m", "bench.bench_serving", "--serve-noop", str(port)]
        with server(noop, f"{url}/v2/models/bid_filter/ready", root) as pid:
            runs += measure("kserve no-op model", url, "/v1/models/bid_filter:predict", body_file, (pid, None),
                            seconds, root)  # fmt: skip
        for label, config in configs.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            bidder = [sys.executable, "-m", "bidflow.serving", "--kind", "bidder", "--model", str(root / "bidder"),
                      "--name", NAME, "--config", str(config), "--http-port", str(port),
                      "--log-level", "WARNING"]  # fmt: skip
            with server(bidder, f"{url}/v2/models/{NAME}/ready", root) as pid:
                runs += measure(label, url, f"/v1/models/{NAME}:predict", body_file, (pid, redis_proc.pid), seconds,
                                root)  # fmt: skip
        return _results(runs, fitted, breakdown)
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _results(runs: list[Run], fitted: dict[str, Any], breakdown: dict[str, float]) -> list[Result]:
    floor = {r.connections: r for r in runs if r.server == "kserve no-op model"}
    out = []
    for r in runs:
        detail = (f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, server CPU {r.cpu_us:.0f} µs/request"
                  + (f" + Redis {r.redis_us:.0f} µs" if r.redis_us else "")
                  + f"; {r.requests:,} requests" + (f", {r.errors} errors" if r.errors else ""))  # fmt: skip
        target = ""
        if r.server.startswith("bidder"):
            base = floor[r.connections]
            detail += (f"; {r.cpu_us / base.cpu_us:.2f}x the no-op floor's {base.cpu_us:.0f} µs "
                       f"({(r.cpu_us + r.redis_us) / base.cpu_us:.2f}x with Redis's CPU)")  # fmt: skip
            detail += (f"; campaign 2997, {fitted['policy']} policy, budget {fitted['budget']} per "
                       f"{fitted['episode']} auctions, one auction per request, reservations expiring")  # fmt: skip
            target = f"server CPU per bid ≤ {TARGET_RATIO:g}x the no-op floor"
        floor_name = "bidder serving floor: kserve no-op model"
        name = "bidder serving" + r.server.removeprefix("bidder") if r.server.startswith("bidder") else floor_name
        out.append(Result(f"{name} c={r.connections}", r.cpu_us, "µs CPU/bid", f"{r.rate:,.0f} bids/s, " + detail,
                          target))  # fmt: skip
    parts = ", ".join(f"{name} {us:.0f}" for name, us in breakdown.items())
    whole = breakdown["[whole request: preprocess, predict, postprocess]"]  # with the recent state, as served
    load1 = os.getloadavg()[0]
    out.append(Result("bidder serving in-process CPU", whole, "µs/bid",
                      f"no HTTP/KServe; µs per step: {parts}; machine shared with other work (load average "
                      f"{load1:.1f} at the end): the server rows' CPU moves by tens of µs between runs"))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    results = run(args.seconds)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

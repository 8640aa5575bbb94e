"""Soak: the local deployment under steady load for minutes, with one fault a minute (issue #27, item 10).

Setup (all private, in a temp folder): three generated hours are ingested, their Feast features built and
materialized into a private ``redis-server`` on a free port (saved to its own dump file, so a restarted
Redis comes back with the rows; the shared Redis is not touched), and a bid filter is trained on the
``bid_filter`` FeatureService (``bidflow train``'s settings). ``bidflow canary serve`` runs the router with
that model as champion (v1) and again as a 10 % canary (v2, the same model: the soak is about staying up,
not about which model is better), its model servers reading Redis (production environment); the drift
monitor runs in its own environment (watch-only: it tests every window but never rolls the canary back,
so the deployment stays the same for the whole run) and receives the router's payloads.

Load: the replay client (``bidflow.deploy.replay``) in a second process, open loop at 2,000 auctions/s,
every auction the largest the generated traffic has: all 30 demand partners (the serving issue's
reference size; the server would take 256 partners and 64 auctions per request, far beyond what two cores
serve at this rate). Each minute, 20 s in, one fault, in rotation:

* Redis: hung (SIGSTOP for 15 s, then SIGCONT) on odd turns; killed (SIGKILL) and restarted from its dump
  15 s later on even turns. The model servers fail open (every partner called) while it is away.
* a model server killed: SIGKILL to the canary's process. The local backend does not restart it; the
  soak repairs the deployment 20 s later as an operator would (``rollback``, then ``deploy`` the same
  version at the same share) and counts what failed in between.
* the monitor restarted: SIGTERM, then started again; the router drops payloads while it is away.

Reported: failed auctions (anything but HTTP 200; a fail-open answer is a served auction), fail-open
answers (the model servers' ``bidflow_serving_fail_open_total``), the achieved rate and p99 per minute
and overall, and the resident memory of the router, the model servers and the monitor after the warm-up
and at the end (target: flat).

Run alone: ``.venv/bin/python -m bench.bench_soak [--duration 600]`` (prints a table);
``python -m bench soak`` writes the rows to bench/README.md (``BENCH_SOAK_SECONDS`` shortens it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, overload

import msgspec
import numpy as np
import yaml

from bench.bench_monitor import _fit, _gz_lines, _record, _wait
from bench.bench_serving import REPO, bodies, free_port, materialize_redis
from bench.harness import Result, machine
from bidflow.deploy.replay import Auction

START = datetime(2026, 11, 2, tzinfo=UTC)
RATE = 2_000.0  # auctions/s offered
PARTNERS = 30
CANARY_PERCENT = 10
DRIVER_CONCURRENCY = 128
CAPACITY_CONCURRENCY = 32  # requests in flight at most: room for 60 ms answers at 2,000/s
FAULT_AT_S = 20.0  # into each minute
REDIS_AWAY_S = 15.0
REPAIR_AFTER_S = 20.0
WARMUP_S = 20.0
DEFAULT_SECONDS = 600.0
V1 = "/v1/models/bid_filter:predict"
FAULTS = ("redis", "model server", "monitor")


@dataclass
class Fleet:
    """The processes the soak starts and watches."""

    root: Path
    config: Path
    env: dict[str, str]
    redis_port: int
    router_url: str
    monitor_url: str
    redis: subprocess.Popen[bytes] | None = None
    router: subprocess.Popen[bytes] | None = None
    monitor: subprocess.Popen[bytes] | None = None
    events: list[str] = field(default_factory=list)

    def start_redis(self) -> None:
        command = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.root), "--dbfilename", "soak.rdb"]  # fmt: skip
        self.redis = subprocess.Popen(command, cwd=self.root, stdout=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.redis_port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:  # still loading its dump
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.close()

    def start_monitor(self) -> float:
        began = time.perf_counter()
        python = str(_monitor_python())
        command = [python, "-m", "bidflow.monitoring", "--config", str(self.config), "serve", "--watch-only"]
        with (self.root / "monitor.log").open("ab") as log:
            self.monitor = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _wait(f"{self.monitor_url}/healthz", 180)
        return time.perf_counter() - began

    def restart_monitor(self) -> float:
        """SIGTERM to the monitor, then a new one; seconds until it answers again."""
        assert self.monitor is not None
        began = time.perf_counter()
        self.monitor.terminate()
        self.monitor.wait(60)
        self.start_monitor()
        return time.perf_counter() - began

    def start_router(self) -> None:
        command = [sys.executable, "-m", "bidflow.cli", "--config", str(self.config), "canary", "serve"]
        with (self.root / "router.log").open("ab") as log:
            self.router = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        _wait(f"{self.router_url}/admin/state", 180)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.router_url}/admin/state", timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def pids(self) -> dict[str, int]:
        detail = self.state().get("detail", {})
        out = {"router": self.router.pid if self.router else 0, "monitor": self.monitor.pid if self.monitor else 0}
        for role in ("champion", "canary"):
            if f"{role}_pid" in detail:
                out[role] = int(detail[f"{role}_pid"])
        return out

    def ports(self) -> dict[str, int]:
        detail = self.state().get("detail", {})
        return {role: int(detail[f"{role}_port"]) for role in ("champion", "canary") if f"{role}_port" in detail}

    def stop(self) -> None:
        for process in (self.router, self.monitor, self.redis):
            if process is not None and process.poll() is None:
                if process is self.redis:
                    os.kill(process.pid, signal.SIGCONT)  # a hung Redis does not hear SIGTERM
                process.terminate()
        for process in (self.router, self.monitor, self.redis):
            if process is not None:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()


def _monitor_python() -> Path:
    from bidflow.deploy.steps import monitor_python

    return monitor_python()


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` (MiB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fail_opens(port: int) -> float:
    """The model server's fail-open answers so far (``bidflow_serving_fail_open_total``, all reasons)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if
               line.startswith("bidflow_serving_fail_open_total{"))  # fmt: skip


# --- building ----------------------------------------------------------------------------------------


def build(root: Path, redis_env: dict[str, str], fleet: Fleet) -> tuple[dict[str, Any], Path]:
    """Generated traffic -> Feast features in the private Redis -> a bid filter; the settings and the model."""
    from bidflow.config import Config, EvaluateConfig, IngestConfig, SimulateConfig, TrainConfig
    from bidflow.data.batch import read_batch
    from bidflow.data.ingest import ingest
    from bidflow.data.simulate import simulate
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.modeling import inputs, train

    simulate(SimulateConfig(start=START, hours=3, auctions_per_hour=3_000, publishers=120), root / "raw")
    ingest(root / "raw", root / "parquet", IngestConfig(workers=1))
    settings: dict[str, Any] = {
        "paths": {"parquet": str(root / "parquet")},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(root / "features"),
            "state": str(root / "feast"),
            "project": "bidflow_bench_soak",
        },
    }
    (root / "feast").mkdir()
    config = Config.model_validate(settings)
    calls = read_batch(root / "parquet")
    write_tables(build_bid_features(calls), config.features.offline)
    store = feature_store.open_store(config.features)
    feature_store.apply(store, config.features)
    rows = inputs.load_rows(config, "bid_filter")
    training, _ = inputs.split_holdout(rows, 1)
    frame, spec = inputs.with_features(training, config, "bid_filter", "feast")
    model = train.fit(frame, spec, TrainConfig(nthread=2), policy=EvaluateConfig())
    folder = Path(train.save_model(model, root / "model"))
    end = calls.column("ts").to_pylist()[-1] + timedelta(hours=1)
    settings["model"] = {"end": end.isoformat()}
    materialize_redis(root, settings, redis_env)
    import redis

    client = redis.Redis(port=fleet.redis_port)
    client.save()  # the dump a killed Redis restarts from
    client.close()
    del settings["model"]
    return settings, folder


def _config(root: Path, settings: dict[str, Any], ports: dict[str, int]) -> Path:
    data = settings | {
        "features": settings["features"] | {"environment": "production"},
        "canary": {
            "state": str(root / "deploy"),
            "router_port": ports["router"],
            "champion_port": ports["champion"],
            "canary_port": ports["canary"],
            "monitor_url": f"http://127.0.0.1:{ports['monitor']}",
            "max_p99_ms": 10_000.0,  # watched, never judged: the monitor is watch-only
            "max_p99_ratio": 100.0,
        },
        "monitor": {"port": ports["monitor"], "window_size": 2_000, "detector": str(root / "detectors")},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    path = root / "bidflow.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --- the load (a second process) -------------------------------------------------------------------


def drive(url: str, body_file: Path, rate: float, seconds: float, out: Path) -> None:
    """Replay ``body_file`` (cycled) open loop at ``rate`` for ``seconds``; write per-minute stats to ``out``."""
    from bidflow.deploy.replay import ReplayReport, replay

    lines = body_file.read_bytes().splitlines()
    pool = [Auction(msgspec.json.decode(b)["instances"][0]["request"]["id"], b, ()) for b in lines]
    auctions = _Until(pool, int(rate * seconds), seconds)
    minutes: dict[int, list[float]] = {}
    began = time.perf_counter()

    def bucket(report: ReplayReport) -> None:
        minutes.setdefault(int((time.perf_counter() - began) / 60), []).append(report.latencies_ms[-1])

    report = asyncio.run(replay(auctions, url, concurrency=DRIVER_CONCURRENCY, rate=rate, on_answer=bucket))
    per_minute = []
    for minute in sorted(minutes):
        ms = np.array(minutes[minute])
        seconds_of = [s for s in report.timeline if s // 60 == minute]
        failed = sum(report.timeline[s]["failed"] for s in seconds_of)
        per_minute.append({
            "minute": minute, "answers": len(ms), "failed": failed,
            "rate": len(ms) / max(1.0, min(60.0, report.seconds - minute * 60)), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
        })  # fmt: skip
    failed_seconds = {s: c["failed"] for s, c in sorted(report.timeline.items()) if c["failed"]}
    summary = report.summary() | {"per_minute": per_minute, "failed_seconds": failed_seconds,
                                  "failures": report.failures, "p999_ms": report.percentile(0.999)}  # fmt: skip
    out.write_text(json.dumps(summary), encoding="utf-8")


class _Until(Sequence[Auction]):
    """``pool`` cycled to ``n`` auctions, whose iteration ends ``seconds`` after it begins.

    An open-loop replay that falls behind its schedule would otherwise go on until it has sent them
    all; the soak lasts a set time instead, and the shortfall shows as the achieved rate.
    """

    def __init__(self, pool: list[Auction], n: int, seconds: float) -> None:
        self.pool, self.n, self.seconds = pool, n, seconds

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> Auction: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Auction]: ...
    def __getitem__(self, index: int | slice) -> Auction | Sequence[Auction]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        return self.pool[index % len(self.pool)]

    def __iter__(self) -> Iterator[Auction]:
        stop = time.perf_counter() + self.seconds
        for i in range(self.n):
            if time.perf_counter() >= stop:
                return
            yield self.pool[i % len(self.pool)]


# --- the soak ----------------------------------------------------------------------------------------


def run(seconds: float | None = None, rate: float = RATE) -> list[Result]:
    if seconds is None:
        seconds = float(os.environ.get("BENCH_SOAK_SECONDS", DEFAULT_SECONDS))
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    ports = {name: free_port() for name in ("router", "champion", "canary", "monitor", "redis")}
    redis_env = {
        "BIDFLOW_FEAST_REGISTRY_URL": f"sqlite:///{root / 'registry-redis.db'}",
        "BIDFLOW_FEAST_REDIS": f"127.0.0.1:{ports['redis']}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")} | redis_env
    fleet = Fleet(root, root / "bidflow.yaml", env, ports["redis"], f"http://127.0.0.1:{ports['router']}",
                  f"http://127.0.0.1:{ports['monitor']}")  # fmt: skip
    try:
        fleet.start_redis()
        began = time.perf_counter()
        settings, model = build(root, redis_env, fleet)
        fleet.config = _config(root, settings, ports)
        raw_lines = [json.loads(line) for path in sorted((root / "raw").rglob("*.jsonl.gz")) for line in
                     _gz_lines(path)]  # fmt: skip
        rng = np.random.default_rng(1)
        detector = _fit(root, [_record(line, rng) for line in raw_lines[-5_000:]], "soak")
        (root / "detectors").mkdir()
        for version in ("1", "2"):
            (root / "detectors" / version).symlink_to(detector, target_is_directory=True)
        body_file = root / "bodies.jsonl"
        body_file.write_bytes(b"\n".join(msgspec.json.encode(b) for b in bodies(root, n=3_000, fixed=PARTNERS)))
        print(f"  built in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        fleet.start_monitor()
        fleet.start_router()
        from bidflow.config import load_config
        from bidflow.deploy.backend import ModelVersion
        from bidflow.deploy.canary import RouterClient
        from bidflow.monitoring.auth import monitor_token

        client = RouterClient(fleet.router_url, token=monitor_token(load_config(fleet.config, environ={})))
        champion, canary = (ModelVersion("bid_filter", v, str(model)) for v in ("1", "2"))
        client.deploy(champion, 100, actor="bench-soak")
        client.deploy(canary, CANARY_PERCENT, actor="bench-soak")
        capacity = _capacity(fleet, body_file)
        return [*_soak(fleet, client, canary, body_file, seconds, rate), capacity]
    finally:
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)


def own_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` itself (not its children: the router's model servers are its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _capacity(fleet: Fleet, body_file: Path) -> Result:
    """What the router forwards flat out (closed loop), beside the champion's server asked directly."""
    from bidflow.deploy.replay import replay

    pool = [Auction(msgspec.json.decode(b)["instances"][0]["request"]["id"], b, ()) for b in
            body_file.read_bytes().splitlines()]  # fmt: skip
    assert fleet.router is not None
    champion = fleet.ports()["champion"]
    figures = {}
    for name, url in (("router", fleet.router_url), ("champion directly", f"http://127.0.0.1:{champion}")):
        asyncio.run(replay(pool[:300], url + V1, concurrency=CAPACITY_CONCURRENCY))  # warm connections and caches
        cpu0 = own_cpu_s(fleet.router.pid)
        report = asyncio.run(replay(pool, url + V1, concurrency=CAPACITY_CONCURRENCY))
        cpu = own_cpu_s(fleet.router.pid) - cpu0
        figures[name] = (report.sent / report.seconds, report.percentile(0.99) or 0.0, cpu / report.sent * 1e6)
    rate, p99, cpu = figures["router"]
    direct, direct_p99, _ = figures["champion directly"]
    return Result("soak: router capacity (closed loop, before the soak)", rate, "auctions/s",
                  f"c={CAPACITY_CONCURRENCY}, {len(pool):,} auctions of {PARTNERS} partners: through the router "
                  f"{rate:,.0f}/s, p99 {p99:.0f} ms, router CPU {cpu:,.0f} µs per auction; the champion's server "
                  f"asked directly {direct:,.0f}/s, p99 {direct_p99:.0f} ms")  # fmt: skip


def _soak(fleet: Fleet, client: Any, canary: Any, body_file: Path, seconds: float, rate: float) -> list[Result]:
    predict = fleet.router_url + V1
    warm = subprocess.run(
        [sys.executable, "-m", "bench.bench_soak", "--drive", predict, str(body_file), str(rate / 2), str(WARMUP_S),
         str(fleet.root / "warmup.json")], cwd=REPO, capture_output=True, text=True, timeout=WARMUP_S + 300,
    )  # fmt: skip
    if warm.returncode != 0:
        raise RuntimeError(f"warm-up load failed: {warm.stderr[-2000:]}")
    start_pids = fleet.pids()
    rss_start = {role: rss_mb(pid) for role, pid in start_pids.items()}
    out = fleet.root / "soak.json"
    driver = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_soak", "--drive", predict, str(body_file), str(rate), str(seconds),
         str(out)], cwd=REPO, stderr=subprocess.PIPE,
    )  # fmt: skip
    t0 = time.perf_counter()
    minutes = int(np.ceil(seconds / 60))
    faults: list[dict[str, Any]] = []
    fail_open_marks: list[float] = []
    rss_marks: list[dict[str, float]] = []
    stderr: list[bytes] = []
    threading.Thread(target=lambda: stderr.append(driver.stderr.read() if driver.stderr else b""), daemon=True).start()
    fail_open_total = 0.0
    last_counts = {role: fail_opens(port) for role, port in fleet.ports().items()}

    def tally() -> None:
        nonlocal fail_open_total, last_counts
        counts = {role: fail_opens(port) for role, port in fleet.ports().items()}
        for role, value in counts.items():
            before = last_counts.get(role, 0.0)
            if value == value:  # not NaN (a server that did not answer /metrics)
                fail_open_total += value - before if value >= before and before == before else value
        last_counts = counts

    for minute in range(minutes):
        _sleep_until(t0 + minute * 60 + FAULT_AT_S)
        if driver.poll() is not None or time.perf_counter() - t0 > seconds - 5:
            break
        kind = FAULTS[minute % len(FAULTS)]
        turn = minute // len(FAULTS)
        fault = {"minute": minute, "fault": kind, "at_s": round(time.perf_counter() - t0, 1)}
        if kind == "redis":
            fault |= _redis_fault(fleet, hang=turn % 2 == 0)
        elif kind == "model server":
            tally()  # the killed server's counter goes with it
            fault |= _kill_canary(fleet, client, canary)
        else:
            fault |= {"restart_s": round(fleet.restart_monitor(), 1)}
        faults.append(fault)
        print(f"  {fault}", file=sys.stderr, flush=True)
        tally()
        fail_open_marks.append(fail_open_total)
        rss_marks.append({role: rss_mb(pid) for role, pid in fleet.pids().items()})
    driver.wait(timeout=seconds + 600)
    tally()
    end_pids = fleet.pids()
    rss_end = {role: rss_mb(pid) for role, pid in end_pids.items()}
    if driver.returncode != 0:
        raise RuntimeError(f"load driver failed: {b''.join(stderr).decode()[-3000:]}")
    stats = json.loads(out.read_text())
    with urllib.request.urlopen(f"{fleet.router_url}/admin/metrics", timeout=10) as response:
        payloads = json.loads(response.read()).get("payloads") or {}
    return _results(stats, faults, fail_open_total, (rss_start, rss_end), (start_pids, end_pids), rss_marks, seconds,
                    rate, payloads)  # fmt: skip


def _sleep_until(moment: float) -> None:
    while (left := moment - time.perf_counter()) > 0:
        time.sleep(min(left, 1.0))


def _redis_fault(fleet: Fleet, *, hang: bool) -> dict[str, Any]:
    assert fleet.redis is not None
    if hang:
        os.kill(fleet.redis.pid, signal.SIGSTOP)
        time.sleep(REDIS_AWAY_S)
        os.kill(fleet.redis.pid, signal.SIGCONT)
        return {"how": f"SIGSTOP {REDIS_AWAY_S:.0f} s, SIGCONT"}
    fleet.redis.kill()
    fleet.redis.wait(10)
    time.sleep(REDIS_AWAY_S)
    began = time.perf_counter()
    fleet.start_redis()
    return {"how": f"SIGKILL, restarted from its dump {REDIS_AWAY_S:.0f} s later",
            "restart_s": round(time.perf_counter() - began, 1)}  # fmt: skip


def _kill_canary(fleet: Fleet, client: Any, canary: Any) -> dict[str, Any]:
    pid = fleet.pids()["canary"]
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    time.sleep(REPAIR_AFTER_S)
    still_routed = fleet.state().get("canary") is not None
    client.rollback(actor="bench-soak", reasons=["soak: canary model server killed"])
    client.deploy(canary, CANARY_PERCENT, actor="bench-soak")
    return {"how": f"SIGKILL to the canary (pid {pid}); rollback + deploy {REPAIR_AFTER_S:.0f} s later",
            "still_routed_after_s": REPAIR_AFTER_S if still_routed else 0,
            "repaired_after_s": round(time.perf_counter() - killed, 1)}  # fmt: skip


def _results(
    stats: dict[str, Any],
    faults: list[dict[str, Any]],
    fail_open_total: float,
    rss: tuple[dict[str, float], dict[str, float]],
    pids: tuple[dict[str, int], dict[str, int]],
    rss_marks: list[dict[str, float]],
    seconds: float,
    rate_offered: float,
    payloads: dict[str, Any],
) -> list[Result]:
    rss_start, rss_end = rss
    start_pids, end_pids = pids
    per_minute = stats["per_minute"]
    by_minute = {f["minute"]: f for f in faults}
    minute_text = "; ".join(
        f"min {m['minute'] + 1} ({by_minute.get(m['minute'], {}).get('fault', 'none')}): "
        f"{m['rate']:,.0f}/s, p99 {m['p99_ms']:.0f} ms, {m['failed']} failed"
        for m in per_minute
    )
    length = f"{seconds / 60:.0f} min" if seconds % 60 == 0 else f"{seconds:.0f} s"
    setup = (f"{length} at {rate_offered:,.0f} auctions/s offered (open loop, replay client, {DRIVER_CONCURRENCY} "
             f"in flight at most), {PARTNERS} partners per auction, router + champion + {CANARY_PERCENT} % canary "
             "(Redis online store) + drift monitor (watch-only)")  # fmt: skip
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(stats["errors"].items(), key=lambda x: -x[1]))
    failures = f" ({kinds}); first: {stats['failures'][0]}" if stats["failures"] else ""
    failed_seconds = stats["failed_seconds"]
    spans = _spans([int(s) for s in failed_seconds])
    where = f"; failed in seconds {spans}" if spans else ""
    fault_text = "; ".join(
        f"min {f['minute'] + 1} {f['fault']}: " + ", ".join(f"{k} {v}" for k, v in f.items() if k not in
                                                             ("minute", "fault"))
        for f in faults
    )  # fmt: skip
    rss_rows = []
    for role in ("router", "champion", "canary", "monitor"):
        same = start_pids.get(role) == end_pids.get(role)
        note = "" if same else " (a new process since: restarted by the soak)"
        rss_rows.append(f"{role} {rss_start.get(role, 0):.0f} -> {rss_end.get(role, 0):.0f} MiB{note}")
    router_marks = ", ".join(f"{m.get('router', 0):.0f}" for m in rss_marks)
    rate = stats["sent"] / stats["seconds"] if stats["seconds"] else 0.0
    return [
        Result("soak: failed auctions", float(stats["failed"]), "auctions", f"{setup}; {stats['sent']:,} sent, "
               f"{stats['ok']:,} answered 200{where}{failures}", "0 (fail-open counts as served)"),
        Result("soak: fail-open answers", fail_open_total, "auctions", "answered without online features (model "
               "servers' bidflow_serving_fail_open_total, summed over the run): served"),
        Result("soak: achieved rate", rate, "auctions/s", f"offered {rate_offered:,.0f}/s; per minute: "
               f"{minute_text}", f"{rate_offered:,.0f}/s"),
        Result("soak: p99 latency", stats["p99_ms"], "ms", f"whole run; p50 {stats['p50_ms']:.1f} ms, p99.9 "
               f"{stats['p999_ms']:.0f} ms; per minute above; faults: {fault_text}"),
        Result("soak: resident memory, router + servers + monitor, end", sum(rss_end.values()), "MiB",
               f"after the warm-up -> at the end: {', '.join(rss_rows)}; router at each fault: {router_marks} MiB; "
               f"router's payloads to the monitor: {payloads.get('sent', 0):,} sent, {payloads.get('dropped', 0):,} "
               "dropped (its queue holds up to 20,000)", "flat"),
    ]  # fmt: skip


def _spans(seconds: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (seconds since the load began)."""
    out: list[str] = []
    for s in sorted(seconds):
        if out and int(out[-1].split("-")[-1]) == s - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_SECONDS, help="seconds of load (default 600)")
    parser.add_argument("--rate", type=float, default=RATE, help="auctions/s offered (default 2,000)")
    parser.add_argument("--drive", nargs=5, metavar=("URL", "BODIES", "RATE", "SECONDS", "OUT"))
    args = parser.parse_args()
    if args.drive is not None:
        url, body_file, rate, seconds, out = args.drive
        drive(url, Path(body_file), float(rate), float(seconds), Path(out))
        return
    results = run(args.duration, args.rate)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

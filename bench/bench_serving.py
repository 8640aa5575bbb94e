"""Benchmark: the bid-filter model server through KServe, with its floors, from a second process on 127.0.0.1.

Setup (all private, in a temp folder): generated OpenRTB traffic (``bidflow simulate``, 4 hours) is
ingested, its Feast features built, applied and materialized into SQLite and into a private
``redis-server`` on a free port (the shared Redis is not touched); a bid filter with **300 trees of
depth 8** (the serving issue's reference size) is trained on the ``bid_filter`` FeatureService's
training set (63 columns), and one with ``bidflow train``'s own settings (depth 6, early stopping).

Replayed: auctions of the last hour, each with 10-30 candidate partners (its logged partners plus
unseen ones), as v1 requests with their logged time (so the online rows are live). Each request:
decode + validate, one online read for all partners (Feast keys, 6 views; the server reuses the
store's answers for up to 60 s, ``--feature-cache-s``, so a warm server asks the store only for keys
it has not seen lately), one predict of the compiled trees, the decisions. Also 30-partner auctions
alone, for the target, once with two server processes (``--workers 2``: the load generator then
competes with them for the two cores), with the default-trained model (one and two workers), and
once more with the cache off (the store asked for every auction).

Floors, in the same run and with the same load generator:

* ``bare``: a Starlette endpoint returning a fixed JSON (uvicorn, uvloop + httptools, no logging),
  closed loop and, like the two-worker servers, open loop at 2,000 / 3,000 / 4,000 auctions/s: what
  one Python HTTP process costs and answers in, whatever it serves;
* ``kserve no-op model``: bidflow's KServe server (one process) serving a model whose stages do
  nothing and answer a fixed JSON, sent the 30-partner bodies: the cost of the KServe path itself;
* ``xgbserver``: what KServe's ``xgbserver`` does (it is not on PyPI, so an equivalent: a
  ``kserve.Model`` whose ``predict`` is ``xgb.DMatrix(instances)`` -> ``booster.predict``) on
  KServe's stock ``ModelServer`` (its default per-request logging on; only the host is set to
  127.0.0.1 and gRPC off), given the already assembled 30 x 63 feature rows of the same model.

Load: ``wrk`` (Debian package) with a Lua script rotating the recorded bodies, one thread, closed loop
at 1, 8 and 64 connections; for the two-worker servers and the first two floors also open loop,
2,000 / 3,000 / 4,000 auctions/s offered on one fixed schedule over 32 connections
(``load(rate=...)``). Without wrk, a small asyncio client in a second process does both. CPU per
request is the server processes' (and Redis's) CPU time over the run divided by the requests: stable on a
shared machine, while wall-clock percentiles are not.

Run alone: ``.venv/bin/python -m bench.bench_serving [--seconds 8]`` (prints a table);
``python -m bench serving`` writes the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Result, machine

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 2, tzinfo=UTC)
CONNECTIONS = (1, 8, 64)
PACED_CONNECTIONS = 32  # open loop: enough that a connection is free at each slot
PACED_RATES = (2_000, 3_000, 4_000)  # auctions/s offered to the two-worker servers
TREES, DEPTH = 300, 8
NEW_PARTNERS = [f"newcomer{i:02d}" for i in range(30)]  # partners the model never saw (defaults, unseen code)
TARGET_P50_MS, TARGET_P99_MS, TARGET_RATE = 0.5, 2.0, 4_000
V1 = "/v1/models/bid_filter:predict"


@dataclass(frozen=True)
class Run:
    server: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server process CPU per request
    side_cpu_us: float  # Redis CPU per request (0 when not involved)
    errors: int
    partners: float  # mean partners per auction
    offered: float | None = None  # open loop: the scheduled rate (None: closed loop)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Plan:
    """One server to measure: its command, the bodies replayed, its environment, its open-loop rates."""

    name: str
    command: list[str]
    bodies: Path
    env: dict[str, str] = field(default_factory=dict)
    rates: tuple[float, ...] = ()


# --- building the model and the traffic ------------------------------------------------------------


def build(root: Path, auctions_per_hour: int = 4_000) -> dict[str, Any]:
    """Generated traffic -> features (SQLite) -> a 300 x depth-8 bid filter; returns the settings."""
    from bidflow.config import Config, EvaluateConfig, IngestConfig, SimulateConfig, TrainConfig
    from bidflow.data.batch import read_batch
    from bidflow.data.ingest import ingest
    from bidflow.data.simulate import simulate
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.modeling import inputs, train

    simulate(SimulateConfig(start=START, hours=4, auctions_per_hour=auctions_per_hour, publishers=200), root / "raw")
    ingest(root / "raw", root / "parquet", IngestConfig(workers=1))
    settings: dict[str, Any] = {
        "paths": {"parquet": str(root / "parquet")},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(root / "features"),
            "state": str(root / "feast"),
            "project": "bidflow_bench_serving",
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
    cfg = TrainConfig(
        n_estimators=TREES, early_stopping_rounds=TREES, max_depth=DEPTH, learning_rate=0.01, nthread=2,
        min_child_weight=0.5,
    )  # fmt: skip
    model = train.fit(frame, spec, cfg, policy=EvaluateConfig())
    train.save_model(model, root / "model")
    default = train.fit(frame, spec, TrainConfig(nthread=2), policy=EvaluateConfig())  # what `bidflow train` makes
    train.save_model(default, root / "model-default")
    end = calls.column("ts").to_pylist()[-1] + timedelta(hours=1)
    views = [v.view for v in _service(store).views]
    feature_store.materialize(store, end - timedelta(days=2), end, views)
    settings["model"] = {
        "trees": model.best_iteration, "columns": len(spec.names), "end": end.isoformat(),
        "default_trees": default.best_iteration, "default_depth": TrainConfig().max_depth,
    }  # fmt: skip
    return settings


def _service(store: Any) -> Any:
    from bidflow.features.spec import service_spec

    return service_spec(store, "bid_filter")


def materialize_redis(root: Path, settings: dict[str, Any], env: dict[str, str]) -> None:
    from bidflow.config import Config
    from bidflow.features import store as feature_store

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        base = {k: v for k, v in settings.items() if k != "model"}
        config = Config.model_validate(base | {"features": settings["features"] | {"environment": "production"}})
        store = feature_store.open_store(config.features)
        feature_store.apply(store, config.features)
        end = datetime.fromisoformat(settings["model"]["end"])
        feature_store.materialize(store, end - timedelta(days=2), end, [v.view for v in _service(store).views])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def bodies(root: Path, n: int = 2_000, fixed: int | None = None, seed: int = 5) -> list[dict[str, Any]]:
    """v1 bodies of last-hour auctions with 10-30 partners (or exactly ``fixed``)."""
    import gzip

    files = sorted((root / "raw").rglob("*.jsonl.gz"))
    with gzip.open(files[-1], "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle][:n]
    rng = np.random.default_rng(seed)
    out = []
    for record in records:
        logged = [o["partner"] for o in record["outcomes"]]
        k = fixed or int(rng.integers(10, 31))
        partners = (logged + NEW_PARTNERS)[:k]
        out.append({"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]})
    return out


def feature_rows(root: Path, settings: dict[str, Any], v1_bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """xgbserver bodies: the same auctions' assembled rows (NaN sent as -999: JSON has no NaN)."""
    from bidflow.config import Config
    from bidflow.features.online import OnlineFeatureReader
    from bidflow.features.store import open_store
    from bidflow.modeling.train import load_model
    from bidflow.openrtb import decode_request_obj
    from bidflow.openrtb.features import FEATURE_NAMES, request_features
    from bidflow.serving.assemble import BidFilterAssembler
    from bidflow.serving.bid_filter_features import LAYOUT

    model = load_model(root / "model")
    base = {k: v for k, v in settings.items() if k != "model"}
    reader = OnlineFeatureReader(open_store(Config.model_validate(base).features), "bid_filter", layout=LAYOUT)
    assembler = BidFilterAssembler(model.spec, model.encoder, FEATURE_NAMES, "partner", reader.feature_names)
    out = []
    for body in v1_bodies:
        instance = body["instances"][0]
        features = request_features(decode_request_obj(instance["request"]), instance["ts_ms"])
        block = reader.features(
            instance["partners"], features.publisher_id, features.country, features.format, features.device_type,
            at=instance["ts_ms"] / 1000,
        )  # fmt: skip
        x = assembler.matrix(features, instance["partners"], block)
        out.append({"instances": np.nan_to_num(x, nan=-999.0).tolist()})
    reader.close()
    return out


# --- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def process(command: list[str], port: int, cwd: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server; yield its pid once ``GET /`` (or the model's ready endpoint) answers."""
    import httpx

    log = (cwd / f"server-{port}.log").open("wb")
    # The floor servers are this module run from ``cwd`` (a temp folder): the repository must be importable.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environ = os.environ | {"PYTHONPATH": path} | (env or {})
    child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=environ)
    try:
        deadline = time.monotonic() + 300
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"server exited: {(cwd / f'server-{port}.log').read_text()[-3000:]}")
            try:
                # Several answers on new connections: with --workers each worker must be ready.
                ready = [httpx.get(f"http://127.0.0.1:{port}/v2/models/bid_filter/ready", timeout=2) for _ in range(8)]
                bare = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                if all(r.status_code == 200 for r in ready) or (bare.status_code == 200 and "bare" in bare.text):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.3)
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
        log.close()


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live child processes (the workers of ``--workers N``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


# --- load ---------------------------------------------------------------------------------------------

WRK_LUA = """
local bodies = {}
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate then
  -- Open loop: every request has a slot on one schedule (rate per second, all connections
  -- together); a free connection waits for the next slot. LuaJIT's ffi reads the clock.
  local ffi = require("ffi")
  ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local now, slot, interval = ffi.new("bench_timespec"), nil, 1000 / rate
  delay = function()
    ffi.C.clock_gettime(1, now)  -- CLOCK_MONOTONIC
    local ms = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
    slot = (slot or ms) + interval
    return math.max(0, slot - ms)
  end
end
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local path = os.getenv("BENCH_PATH")
local headers = {["Content-Type"] = "application/json"}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.stderr:write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def load(
    url: str, path: str, body_file: Path, connections: int, seconds: float, workdir: Path, rate: float | None = None
) -> dict[str, float]:
    """Load from a second process: wrk if installed, else the asyncio client below.

    Closed loop (each connection sends its next request when the answer arrives), or with
    ``rate``, open loop: requests are sent on a fixed schedule of ``rate`` per second, spread over
    the connections, whatever the server's answers take (latency at a given load, not the
    server's limit). An open-loop run that falls behind its schedule shows as an achieved rate
    below ``rate``.
    """
    wrk = shutil.which("wrk")
    if wrk is not None:
        script = workdir / "replay.lua"
        script.write_text(WRK_LUA, encoding="utf-8")
        env = os.environ | {"BENCH_BODIES": str(body_file), "BENCH_PATH": path}
        if rate is not None:
            env["BENCH_RATE"] = str(rate)
        command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
        line = next(x for x in done.stderr.splitlines() if x.startswith("BENCH "))
        stats = json.loads(line[6:])
        return {
            "requests": stats["requests"],
            "seconds": stats["duration_us"] / 1e6,
            "errors": stats["errors"],
            "p50_ms": stats["p50_us"] / 1000,
            "p99_ms": stats["p99_us"] / 1000,
        }
    command = [sys.executable, "-m", "bench.bench_serving", "--client", url, path, str(body_file), str(connections)]
    command += [str(seconds), str(rate or 0)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=seconds + 60)
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: float(v) for k, v in stats.items()}


async def _client(
    url: str, path: str, body_file: Path, connections: int, seconds: float, rate: float = 0.0
) -> dict[str, float]:
    """A minimal HTTP/1.1 keep-alive client (asyncio streams): much cheaper per request than httpx.

    ``rate`` > 0: open loop, as wrk's script does it (one schedule for all connections).
    """
    host, port = url.removeprefix("http://").split(":")
    bodies = [line.encode() for line in body_file.read_text().splitlines()]
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    slot = time.perf_counter()

    async def connection(offset: int) -> None:
        nonlocal errors, slot
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        while time.perf_counter() < stop:
            if rate > 0:
                slot += 1 / rate
                await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            body = bodies[i % len(bodies)]
            i += 1
            head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            started = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = await reader.readline()
            length, chunked = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                    chunked = True
            if chunked:  # KServe's v2 route answers a model's raw bytes this way (the no-op model's)
                while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                    await reader.readexactly(size + 2)  # the chunk and its CRLF
                await reader.readline()  # the CRLF after the last (empty) chunk
            else:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            errors += not status.startswith(b"HTTP/1.1 200")
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(k * 97) for k in range(connections)))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "requests": len(ms),
        "seconds": elapsed,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def measure(
    name: str,
    url: str,
    path: str,
    body_file: Path,
    pids: tuple[int, int | None],
    seconds: float,
    workdir: Path,
    rates: tuple[float, ...] = (),
) -> list[Run]:
    """Closed loop at each of ``CONNECTIONS``, then open loop at each of ``rates`` (``PACED_CONNECTIONS``).

    Args:
        pids: the server process (its workers counted with it) and the store's (Redis) or None.
    """
    pid, side_pid = pids
    partners = float(np.mean([_partners(line) for line in body_file.read_text().splitlines()[:500]]))
    load(url, path, body_file, 8, min(2.0, seconds), workdir)  # warm-up: caches, allocator, key encoder
    runs = []
    loads: list[tuple[int, float | None]] = [(c, None) for c in CONNECTIONS] + [(PACED_CONNECTIONS, r) for r in rates]
    for connections, rate in loads:
        cpu0, side0 = cpu_seconds(pid), cpu_seconds(side_pid) if side_pid else 0.0
        stats = load(url, path, body_file, connections, seconds, workdir, rate)
        cpu, side = cpu_seconds(pid) - cpu0, (cpu_seconds(side_pid) - side0) if side_pid else 0.0
        n = max(1, int(stats["requests"]))
        runs.append(
            Run(name, connections, n, stats["seconds"], stats["p50_ms"], stats["p99_ms"], cpu / n * 1e6,
                side / n * 1e6, int(stats["errors"]), partners, rate)
        )  # fmt: skip
        print(f"  {runs[-1]}", file=sys.stderr, flush=True)
    return runs


def _partners(line: str) -> int:
    body = json.loads(line)
    instance = body["instances"][0]
    return len(instance["partners"]) if isinstance(instance, dict) else len(body["instances"])


# --- floor servers (run in their own process: --serve-bare / --serve-xgb) ----------------------------


def serve_bare(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    payload = b'{"bare": true, "predictions": [0.5]}'

    async def fixed(request: Any) -> Response:
        await request.body()
        return Response(payload, media_type="application/json")

    app = Starlette(routes=[Route("/", fixed, methods=["GET", "POST"]), Route(V1, fixed, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="auto", http="auto")


def serve_noop(port: int) -> None:
    """bidflow's KServe server (``bidflow.serving.server``) with a model that does nothing: a fixed answer."""
    from bidflow.config import Config
    from bidflow.serving.base import ModelSource, ServedModel
    from bidflow.serving.server import ServerOptions, serve

    payload = b'{"predictions": []}'

    class NoopModel(ServedModel):
        def load(self) -> bool:
            self.ready, self.not_ready_reason = True, None
            return True

        def preprocess(self, payload: Any, headers: Any = None) -> Any:
            return payload

        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            return payload

        def postprocess(self, result: Any, headers: Any = None, response_headers: Any = None) -> Any:
            if response_headers is not None:
                response_headers["content-type"] = "application/json"
            return payload

    serve([NoopModel("bid_filter", Config(), ModelSource("bid_filter"))], ServerOptions(http_port=port))


def serve_xgb(port: int, model_file: str) -> None:
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported
    import kserve
    import xgboost as xgb
    from kserve.utils.utils import get_predict_input, get_predict_response

    class XGBoostModel(kserve.Model):  # type: ignore[misc]
        """KServe's xgbserver model: DMatrix from the instances, booster.predict, a list back."""

        def __init__(self) -> None:
            super().__init__("bid_filter")
            self.booster: Any = None

        def load(self) -> bool:
            self.booster = xgb.Booster(params={"nthread": 1}, model_file=model_file)
            self.ready = True
            return True

        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            instances = get_predict_input(payload)
            result = self.booster.predict(xgb.DMatrix(instances, nthread=1))
            return get_predict_response(payload, result, self.name)

    class LoopbackModelServer(kserve.ModelServer):  # type: ignore[misc]
        def setup_event_loop(self) -> None:
            self._rest_server.config.host = "127.0.0.1"  # the one change: never listen beyond this machine
            super().setup_event_loop()

    model = XGBoostModel()
    model.load()
    LoopbackModelServer(http_port=port, enable_grpc=False).start([model])


# --- where the time goes (in-process, no HTTP) --------------------------------------------------------


def stages(
    config_file: Path, model_dir: Path, v1_bodies: list[dict[str, Any]], env: dict[str, str]
) -> dict[str, float]:
    """CPU µs per auction of each step of the model's work, without HTTP or KServe."""
    from bidflow.config import load_config
    from bidflow.openrtb.features import request_features
    from bidflow.serving.base import ModelSource, ServeOptions
    from bidflow.serving.bid_filter import BidFilterModel, _v1_decision

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        config, source = load_config(config_file, environ={}), ModelSource("bid_filter", uri=str(model_dir))
        model = BidFilterModel("bid_filter", config, source)
        direct = BidFilterModel("bid_filter", config, source, ServeOptions(feature_cache_s=0))
        assert model.load(), model.not_ready_reason
        assert direct.load(), direct.not_ready_reason
        state = model.state
        assert state is not None and state.online is not None
        assembler = state.mapping.assembler
        uncached = direct.state.online if direct.state is not None else None
        assert uncached is not None
        raw = [json.dumps(body).encode() for body in v1_bodies]  # what KServe's data plane hands the model
        auctions = [model.preprocess(body).auctions[0] for body in raw]
        features = [request_features(a.request, a.ts_ms) for a in auctions]

        def online(i: int) -> Any:
            a, f = auctions[i], features[i]
            return state.online.bid_filter(
                a.partners, f.publisher_id, f.country, f.format, f.device_type, a.ts_ms / 1000
            )

        def store_read(i: int) -> Any:
            a, f = auctions[i], features[i]
            return uncached.bid_filter(a.partners, f.publisher_id, f.country, f.format, f.device_type, a.ts_ms / 1000)

        blocks = [online(i).values for i in range(len(auctions))]  # the partners' rows, as the server reads them
        matrices = [assembler.complete(blocks[i].copy(), features[i]) for i in range(len(auctions))]
        decisions = [model._decide(state, a) for a in auctions]
        steps = {
            "decode + validate + envelope": lambda i: model.preprocess(raw[i]),
            "request features": lambda i: request_features(auctions[i].request, auctions[i].ts_ms),
            "online read (cache warm)": online,
            "[online read, store every time]": store_read,
            "request columns into the rows": lambda i: assembler.complete(blocks[i].copy(), features[i]),
            "predict (compiled trees)": lambda i: state.predictor.predict(matrices[i]),
            "decide + response": lambda i: _v1_decision(decisions[i], "1"),
        }
        out = {}
        for name, step in steps.items():
            for i in range(min(50, len(auctions))):
                step(i)
            began = time.process_time()
            for i in range(len(auctions)):
                step(i)
            out[name] = (time.process_time() - began) / len(auctions) * 1e6
        model.stop()
        direct.stop()
        return out
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the benchmark ------------------------------------------------------------------------------------


def run(seconds: float = 6.0) -> list[Result]:
    """Build everything, measure every server of the plan, return the rows."""
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        started = time.perf_counter()
        settings = build(root)
        print(
            f"  built model and stores in {time.perf_counter() - started:.0f} s: {settings['model']}", file=sys.stderr
        )
        mixed, thirty = bodies(root), bodies(root, n=1_000, fixed=30)
        files = {}
        for name, data in (("mixed", mixed), ("thirty", thirty), ("rows", feature_rows(root, settings, thirty))):
            files[name] = root / f"{name}.jsonl"
            files[name].write_text("\n".join(json.dumps(b) for b in data) + "\n", encoding="utf-8")
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=root, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        redis_env = {
            "BIDFLOW_FEAST_REGISTRY_URL": f"sqlite:///{root / 'registry-redis.db'}",
            "BIDFLOW_FEAST_REDIS": f"127.0.0.1:{redis_port}",
        }
        materialize_redis(root, settings, redis_env)
        import yaml

        configs = {}
        for env_name in ("local", "production"):
            configs[env_name] = root / f"bidflow-{env_name}.yaml"
            data = settings | {"features": settings["features"] | {"environment": env_name}}
            configs[env_name].write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "model"}))
        model_file = root / "model-anonymous.ubj"
        _anonymous_booster(root / "model" / "model.ubj", model_file)

        breakdown = {
            store: stages(configs[env_name], root / "model", thirty[:500], env)
            for store, env_name, env in (("sqlite", "local", {}), ("redis", "production", redis_env))
        }
        for store, steps in breakdown.items():
            print(f"  in-process, 30 partners, {store}: {steps}", file=sys.stderr, flush=True)
        runs: list[Run] = []
        me = [sys.executable, "-m", "bench.bench_serving"]

        def server(model: Path) -> list[str]:
            return [sys.executable, "-m", "bidflow.serving", "--model", str(model), "--log-level", "WARNING"]

        ours, default = server(root / "model"), server(root / "model-default")
        production, local = ["--config", str(configs["production"])], ["--config", str(configs["local"])]
        two = ["--workers", "2"]
        plans = [
            Plan("bare", [*me, "--serve-bare"], files["mixed"], rates=PACED_RATES),
            Plan("kserve no-op model", [*me, "--serve-noop"], files["thirty"], rates=PACED_RATES),
            Plan("xgbserver (30 rows)", [*me, "--serve-xgb"], files["rows"]),
            Plan("bidflow sqlite", [*ours, *local], files["mixed"]),
            Plan("bidflow redis", [*ours, *production], files["mixed"], redis_env),
            Plan("bidflow sqlite, 30 partners", [*ours, *local], files["thirty"]),
            Plan("bidflow redis, 30 partners", [*ours, *production], files["thirty"], redis_env),
            Plan("bidflow redis, 30 partners, 2 workers", [*ours, *production, *two], files["thirty"], redis_env,
                 PACED_RATES),
            Plan("bidflow redis, 30 partners, default-trained model", [*default, *production], files["thirty"],
                 redis_env),
            Plan("bidflow redis, 30 partners, default-trained model, 2 workers", [*default, *production, *two],
                 files["thirty"], redis_env, PACED_RATES),
            Plan("bidflow redis, 30 partners, no cache", [*ours, *production, "--feature-cache-s", "0"],
                 files["thirty"], redis_env),
        ]  # fmt: skip
        for plan in plans:
            port = free_port()
            if "--serve-xgb" in plan.command:
                extra = [str(port), str(model_file)]
            elif "--serve-bare" in plan.command or "--serve-noop" in plan.command:
                extra = [str(port)]
            else:
                extra = ["--http-port", str(port)]
            side = redis_proc.pid if "BIDFLOW_FEAST_REDIS" in plan.env else None
            with process([*plan.command, *extra], port, root, plan.env) as pid:
                url = f"http://127.0.0.1:{port}"
                runs += measure(plan.name, url, V1, plan.bodies, (pid, side), seconds, root, plan.rates)
        return _results(runs, settings, breakdown)
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _anonymous_booster(source: Path, target: Path) -> None:
    """The same booster without feature names (xgbserver builds unnamed DMatrix objects)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(source))
    booster.feature_names = None
    booster.feature_types = None
    booster.save_model(str(target))


def _results(runs: list[Run], settings: dict[str, Any], breakdown: dict[str, dict[str, float]]) -> list[Result]:
    bare = {r.connections: r for r in runs if r.server == "bare"}
    model = settings["model"]
    out = []
    for r in runs:
        floor = bare.get(r.connections) if r.offered is None else None
        ratio = f", {r.cpu_us / floor.cpu_us:.1f}x bare" if floor is not None and r.server != "bare" else ""
        side = f" + redis {r.side_cpu_us:.0f} µs" if r.side_cpu_us else ""
        per_decision = f" ({r.cpu_us / r.partners:.1f} µs/decision)" if r.server.startswith("bidflow") else ""
        detail = (
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, CPU {r.cpu_us:.0f} µs/request{side}{per_decision}{ratio}; "
            f"{r.partners:.1f} partners/auction, {r.requests:,} requests" + (f", {r.errors} errors" if r.errors else "")
        )
        target = ""
        if r.server.startswith("bidflow") and "30 partners" in r.server:
            target = f"p50 ≤ {TARGET_P50_MS} ms, p99 ≤ {TARGET_P99_MS} ms at ≥ {TARGET_RATE:,}/s; CPU ≤ 5x bare"
        if r.offered is None:
            out.append(Result(f"serving {r.server} c={r.connections}", r.rate, "auctions/s", detail, target))
        else:
            detail = f"open loop, {r.connections} connections; " + detail
            out.append(Result(f"serving {r.server}, {r.offered:,.0f}/s offered", r.rate, "auctions/s", detail, target))
    for store, steps in breakdown.items():
        parts = ", ".join(f"{name} {us:.0f}" for name, us in steps.items())
        out.append(
            Result(
                f"serving in-process CPU, 30 partners, {store}",
                sum(us for name, us in steps.items() if not name.startswith("[")),
                "µs/auction",
                f"no HTTP/KServe; µs per step: {parts}",
            )
        )
    out.append(
        Result(
            "serving model",
            float(model["trees"]),
            "trees",
            f"depth {DEPTH}, {model['columns']} columns, compiled trees (numba), 1 thread; "
            "machine shared (noisy wall clock)",
        )
    )
    out.append(
        Result(
            "serving default-trained model",
            float(model["default_trees"]),
            "trees",
            f"depth {model['default_depth']}: `bidflow train`'s settings (early stopping) on the same training set",
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--serve-bare", type=int, metavar="PORT")
    parser.add_argument("--serve-xgb", nargs=2, metavar=("PORT", "MODEL_FILE"))
    parser.add_argument("--serve-noop", type=int, metavar="PORT")
    parser.add_argument("--client", nargs=6, metavar=("URL", "PATH", "BODIES", "CONNECTIONS", "SECONDS", "RATE"))
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return
    if args.serve_xgb is not None:
        serve_xgb(int(args.serve_xgb[0]), args.serve_xgb[1])
        return
    if args.serve_noop is not None:
        serve_noop(args.serve_noop)
        return
    if args.client is not None:
        url, path, body_file, connections, seconds, rate = args.client
        stats = asyncio.run(_client(url, path, Path(body_file), int(connections), float(seconds), float(rate)))
        print(json.dumps(stats))
        return
    results = run(args.seconds)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

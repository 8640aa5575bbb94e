"""Benchmark: the fraud model server through KServe, its streaming velocity features in Redis, against the no-op floor.

Issue #22's target: fraud scoring through KServe with its streaming features costs at most 3x the
server CPU per scored click of the no-op KServe floor measured in the same run.

Setup (private, in a temp folder; the shared Redis is not touched):

* the model: ``bidflow fraud train`` on the real TalkingData sample (``fraud.source``, read in place
  from ``../shared/data``): XGBoost on the raw ids and the streaming velocity features, hold-out
  2017-11-08 (the same model as the ``fraud`` rows; 100 bootstrap resamples instead of 1,000, which
  changes only the reported AUC interval);
* the online store: a private ``redis-server`` on a free port, the production feature store
  (``features.environment: production``: Redis online store, a SQLite-backed SQL registry) under a
  project of its own, filled the way production fills it: ``bidflow features apply``, then
  ``bidflow stream publish`` of the sample's 71,439 clicks and ``bidflow stream process --idle-exit``
  (the velocity processor with its direct Redis sink), so every key the server reads holds the
  processor's rows.

Load: the hold-out day's real clicks as v2 Open Inference Protocol requests with named inputs (ip,
app, device, os, channel, click_time; ``bidflow.serving.fraud``), one click per request and 32 per
request, from a second process (``bench.bench_serving``'s load: wrk when installed, else its asyncio
client), closed loop at 1 and 8 connections. The server (``python -m bidflow.serving --kind fraud``)
reads the three velocity views of every click from Redis (no online cache for this kind: each click
rewrites its keys' rows), builds the matrix, runs the compiled trees and answers ``p_genuine``.
Its wait on Redis is raised from 20 to 250 ms (``--feature-timeout-ms``) so that a slow read on a busy
machine does not turn a click into a fail-open answer, which skips the read; fail-opens are counted.
Each load run replays its body file from the start, so most keys were read in an earlier run, and the
reader had already encoded them as Feast entity keys (it caches them): the in-process step
``[online read, keys not read before]`` shows what a first read of a click's keys costs.

Floor, in the same run with the same bodies and load: ``bench.bench_serving``'s ``kserve no-op
model`` (bidflow's KServe server with a model whose stages do nothing; KServe still decodes each v2
body into its request object). Both servers run side by side and are measured in alternating rounds
(floor, then fraud, for each batch size), so both see the same load on the machine; each figure is
the median over the rounds. CPU per request is the server process's CPU over the run divided by the
requests, Redis's apart; per scored click it is divided by the clicks per request.

Also in-process (no HTTP): CPU per click of each step of the fraud server's request, for one click
and for 32, to say where the CPU goes.

Run alone: ``.venv/bin/python -m bench.bench_fraud_serving [--seconds 5] [--rounds 5]`` (prints a
table); ``python -m bench fraud_serving`` writes the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_bidder_serving import Run, measure, server
from bench.bench_serving import free_port
from bench.harness import Result, machine

REPO = Path(__file__).resolve().parents[1]
CLICKS = REPO.parent / "shared" / "data" / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
HOLDOUT_DAY = "2017-11-08"
FIELDS = ("ip", "app", "device", "os", "channel")
BATCHES = (1, 32)  # clicks per request
NAME = "fraud_bench"
NOOP = "kserve no-op model"
FEATURE_TIMEOUT_MS = 250
TARGET_RATIO = 3.0
MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
WHOLE = "[whole: decode, preprocess, predict, postprocess, encode]"


@dataclass(frozen=True)
class Setup:
    """What the measured server serves: the model, its store, and how they were made."""

    root: Path
    config: Path
    env: dict[str, str]
    report: dict[str, Any]
    fill: dict[str, float]


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) these variables of this process's environment, and put them back afterwards.

    Only these keys: whatever else changes meanwhile stays (importing Feast sets its metrics folder).
    """
    saved = {key: os.environ.get(key) for key in values}

    def put(pairs: Mapping[str, str | None]) -> None:
        for key, value in pairs.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    put(values)
    try:
        yield
    finally:
        put(saved)


def settings(root: Path, redis_port: int) -> dict[str, Any]:
    """The bidflow configuration (as YAML data): production feature store on the private Redis, a project of its own."""
    return {
        "features": {
            "repo": str(REPO / "feature_repo"),
            "environment": "production",
            "offline": str(root / "features"),
            "project": f"bench_fraud_{uuid.uuid4().hex[:8]}",
        },
        "stream": {"redis_url": f"redis://127.0.0.1:{redis_port}/0", "stream": "bench_fraud:clicks"},
        "fraud": {"source": str(CLICKS), "bootstrap": 100},
    }


def bidflow(config: Path, *args: str) -> float:
    """``bidflow --config CONFIG ARGS...`` in its own process; its wall seconds (raises with its output on failure)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bidflow.cli", "--config", str(config), *args], cwd=config.parent,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"bidflow {' '.join(args)} failed ({done.returncode}):\n{output}")
    return time.perf_counter() - started


def prepare(root: Path, redis_port: int) -> Setup:
    """Train the model, apply the feature store and fill it with the stream processor (each a ``bidflow`` command)."""
    import yaml

    config = root / "bidflow.yaml"
    config.write_text(yaml.safe_dump(settings(root, redis_port)), encoding="utf-8")
    env = {
        "BIDFLOW_FEAST_REGISTRY_URL": f"sqlite:///{root / 'registry.db'}",
        "BIDFLOW_FEAST_REDIS": f"127.0.0.1:{redis_port}",
    }
    with environment(env):
        fill = {"train_s": bidflow(config, "fraud", "train", "--out", str(root / "fraud"))}
        fill["apply_s"] = bidflow(config, "features", "apply")
        fill["publish_s"] = bidflow(config, "stream", "publish")
        fill["process_s"] = bidflow(config, "stream", "process", "--idle-exit")
    report = json.loads((root / "fraud" / "report.json").read_text(encoding="utf-8"))
    return Setup(root, config, env, report, fill)


def holdout_clicks() -> Any:
    """The hold-out day's clicks (a DataFrame, in time order)."""
    from bidflow.features.talkingdata import read_clicks

    clicks = read_clicks(CLICKS)
    return clicks[clicks["day"] == HOLDOUT_DAY].reset_index(drop=True)


def bodies(clicks: Any, batch: int) -> list[bytes]:
    """v2 bodies of ``batch`` consecutive hold-out clicks each (named INT64 inputs, click_time in UTC seconds)."""
    columns = {name: clicks[name].to_numpy(dtype=np.int64).tolist() for name in FIELDS}
    columns["click_time"] = clicks["ts"].to_numpy(dtype=np.int64).tolist()
    out = []
    for start in range(0, len(clicks) - batch + 1, batch):
        inputs = [{"name": name, "shape": [batch], "datatype": "INT64", "data": values[start : start + batch]}
                  for name, values in columns.items()]  # fmt: skip
        out.append(json.dumps({"inputs": inputs}, separators=(",", ":")).encode())
    return out


def live_share(setup: Setup, clicks: Any, n: int = 2_000) -> float:
    """Share of ``n`` hold-out clicks whose online rows are not all the service's defaults (the reads find rows)."""
    from bidflow.config import load_config
    from bidflow.features.online import OnlineFeatureReader
    from bidflow.features.store import open_store

    with environment(setup.env):
        reader = OnlineFeatureReader(open_store(load_config(setup.config, environ={}).features), "fraud")
        sample = clicks.iloc[:: max(1, len(clicks) // n)].head(n)
        keys = reader.spec.join_keys
        rows = reader.read({k: sample[k].tolist() for k in keys}, at=float(sample["ts"].max()))
        live = ~np.isclose(rows, reader.defaults, equal_nan=True).all(axis=1)
        reader.close()
    return float(live.mean())


def check_answers(url: str, body: bytes, batch: int) -> None:
    """The fraud server scores the body with its online features (no fail-open), one p_genuine per click."""
    import httpx

    response = httpx.post(f"{url}/v2/models/{NAME}/infer", content=body, timeout=10,
                          headers={"content-type": "application/json"})  # fmt: skip
    answer = response.json()
    outputs = answer.get("outputs") or [{}]
    if response.status_code != 200 or outputs[0].get("name") != "p_genuine" or len(outputs[0]["data"]) != batch:
        raise RuntimeError(f"the fraud server did not score the clicks: {response.status_code} {response.text[:500]}")
    if answer.get("parameters", {}).get("fail_open") is not False:
        raise RuntimeError(f"the fraud server failed open (its online store unread): {response.text[:500]}")


def fail_opens(url: str) -> float:
    """Requests the server answered without its online features, from its metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bidflow_serving_fail_open_total{"))  # fmt: skip


def stages(setup: Setup, raw: dict[int, list[bytes]]) -> dict[int, dict[str, float]]:
    """CPU µs per click of each step of the fraud server's request, in-process (no HTTP), per batch size.

    The v2 body is decoded and the answer encoded as KServe's v2 route does it: FastAPI validates the
    JSON into KServe's ``InferenceRequest`` model, which becomes an ``InferRequest``; the model's
    ``InferResponse`` goes out through ``to_rest`` and KServe's ``InferenceResponse`` model.
    """
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse

    from bidflow.config import load_config
    from bidflow.serving.base import ModelSource
    from bidflow.serving.fraud import FraudModel
    from bidflow.serving.server import settle_heap

    def decode(body: bytes) -> InferRequest:
        return InferRequest.from_inference_request(InferenceRequest.model_validate(json.loads(body)), NAME)

    def encode(response: Any) -> bytes:
        text: str = InferenceResponse.model_validate(response.to_rest()[0]).model_dump_json()
        return text.encode()

    with environment(setup.env):
        config = load_config(setup.config, environ={})
        model = FraudModel(NAME, config, ModelSource.parse("fraud_talkingdata", str(setup.root / "fraud" / "model")))
        if not model.load():
            raise RuntimeError(f"the fraud model did not load: {model.not_ready_reason}")
        settle_heap()  # as the server does after loading: no full collection walks the loaded heap mid-loop
        try:
            out = {
                batch: _stage_times(model, decode, encode, requests[:1_000], batch) for batch, requests in raw.items()
            }
        finally:
            gc.unfreeze()
            model.stop()
    return out


def _stage_times(model: Any, decode: Callable[[bytes], Any], encode: Callable[[Any], bytes], sample: list[bytes],
                 batch: int) -> dict[str, float]:  # fmt: skip
    """CPU µs per click of each step for the requests ``sample`` (``batch`` clicks each), warm loops."""
    state = model.state
    online_reader, (assembler, keys) = state.online, state.mapping
    requests = [decode(body) for body in sample]
    rows = [model.preprocess(request) for request in requests]
    entities = [{key: [str(row[key]) for row in r.rows] for key in keys} for r in rows]
    # The first read of each key also encodes it as Feast's entity key (cached for later reads): timed apart.
    began = time.process_time()
    online = [online_reader.rows(e, r.ts_ms / 1000.0).values for e, r in zip(entities, rows, strict=True)]
    first_read = (time.process_time() - began) / len(sample) / batch * 1e6
    matrices = [assembler.matrix(r.rows, o) for r, o in zip(rows, online, strict=True)]
    scored = [model.predict(r) for r in rows]
    answers = [model.postprocess(s) for s in scored]
    steps: dict[str, Callable[[int], Any]] = {
        "v2 JSON -> InferRequest (KServe)": lambda i: decode(sample[i]),
        "preprocess (rows, checks)": lambda i: model.preprocess(requests[i]),
        "online read (Redis, 3 views)": lambda i: online_reader.rows(entities[i], rows[i].ts_ms / 1000.0),
        "matrix (hour, online columns)": lambda i: assembler.matrix(rows[i].rows, online[i]),
        "compiled trees": lambda i: state.predictor.predict(matrices[i]),
        "postprocess (InferResponse)": lambda i: model.postprocess(scored[i]),
        "InferResponse -> JSON (KServe)": lambda i: encode(answers[i]),
        WHOLE: lambda i: encode(model.postprocess(model.predict(model.preprocess(decode(sample[i]))))),
    }
    times = {"[online read, keys not read before]": first_read}
    for name, step in steps.items():
        for i in range(len(sample)):  # warm: every key of the sample read (and encoded) once before
            step(i)
        began = time.process_time()
        for i in range(len(sample)):
            step(i)
        times[name] = (time.process_time() - began) / len(sample) / batch * 1e6
    return times


@contextmanager
def redis_server(root: Path) -> Iterator[tuple[int, int]]:
    """A private redis-server (no persistence) on a free port; yields (pid, port)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=root, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError("redis-server did not start")
        yield proc.pid, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def run(seconds: float = 5.0, rounds: int = 5) -> list[Result]:
    """Train, fill the store through the stream, measure the floor and the fraud server in rounds, return the rows."""
    root = Path(tempfile.mkdtemp(prefix="bench-fraud-serving-"))
    try:
        with redis_server(root) as (redis_pid, redis_port):
            setup = prepare(root, redis_port)
            print(f"  prepared: {setup.fill}", file=sys.stderr, flush=True)
            clicks = holdout_clicks()
            live = live_share(setup, clicks)
            raw = {batch: bodies(clicks, batch) for batch in BATCHES}
            files = {}
            for batch, lines in raw.items():
                files[batch] = root / f"clicks-{batch}.jsonl"
                files[batch].write_bytes(b"\n".join(lines) + b"\n")
            breakdown = stages(setup, raw)
            print(f"  in-process: {breakdown}", file=sys.stderr, flush=True)
            runs: dict[tuple[str, int], list[list[Run]]] = {}
            noop_port, fraud_port = free_port(), free_port()
            noop_url, fraud_url = f"http://127.0.0.1:{noop_port}", f"http://127.0.0.1:{fraud_port}"
            noop = [sys.executable, "-m", "bench.bench_serving", "--serve-noop", str(noop_port)]
            # A longer wait on Redis than the default 20 ms: on a machine shared with other work a read
            # now and then takes longer, and a click scored without its features (fail-open) is not
            # what is measured here. Fail-open answers are counted from the server's metrics.
            fraud = [sys.executable, "-m", "bidflow.serving", "--kind", "fraud", "--model",
                     str(root / "fraud" / "model"), "--name", NAME, "--config", str(setup.config),
                     "--http-port", str(fraud_port), "--feature-timeout-ms", str(FEATURE_TIMEOUT_MS),
                     "--log-level", "WARNING"]  # fmt: skip
            # The servers start without the metrics folder Feast's import set in this process: a server
            # inheriting it would keep its Prometheus values in memory-mapped files, as workers do.
            servers_env = setup.env | dict.fromkeys(MULTIPROCESS_VARIABLES)
            with environment(servers_env), \
                    server(noop, f"{noop_url}/v2/models/bid_filter/ready", root) as noop_pid, \
                    server(fraud, f"{fraud_url}/v2/models/{NAME}/ready", root) as fraud_pid:  # fmt: skip
                for batch in BATCHES:
                    check_answers(fraud_url, raw[batch][0], batch)
                targets = {
                    NOOP: (noop_url, "/v2/models/bid_filter/infer", (noop_pid, None)),
                    "fraud": (fraud_url, f"/v2/models/{NAME}/infer", (fraud_pid, redis_pid)),
                }
                for k in range(rounds):
                    for batch in BATCHES:
                        print(f"  round {k + 1}/{rounds}, {_clicks(batch)} per request", file=sys.stderr, flush=True)
                        for label, (url, path, pids) in targets.items():
                            found = measure(label, url, path, files[batch], pids, seconds, root)
                            runs.setdefault((label, batch), []).append(found)
                failed = fail_opens(fraud_url)
            return _results(setup, runs, breakdown, live, failed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _median_run(rounds: list[Run]) -> Run:
    """One run whose figures are the medians over the rounds (requests summed)."""
    med = statistics.median
    first = rounds[0]
    return Run(first.server, first.connections, sum(r.requests for r in rounds), sum(r.seconds for r in rounds),
               med(r.p50_ms for r in rounds), med(r.p99_ms for r in rounds), med(r.cpu_us for r in rounds),
               med(r.redis_us for r in rounds), sum(r.errors for r in rounds))  # fmt: skip


def _clicks(n: int) -> str:
    return "1 click" if n == 1 else f"{n} clicks"


def _results(setup: Setup, runs: dict[tuple[str, int], list[list[Run]]], breakdown: dict[int, dict[str, float]],
             live: float, failed: float) -> list[Result]:  # fmt: skip
    load1 = os.getloadavg()[0]
    chosen = setup.report["models"]["velocity_xgboost"]
    model = (f"XGBoost, {chosen['chosen']['trees']} trees of depth {chosen['chosen']['max_depth']}, hold-out AUC "
             f"{chosen['auc']:.3f}")  # fmt: skip
    out = []
    for batch in BATCHES:
        floor_rounds, fraud_rounds = runs[(NOOP, batch)], runs[("fraud", batch)]
        connections = [r.connections for r in fraud_rounds[0]]
        for j, c in enumerate(connections):
            floor = _median_run([rounds[j] for rounds in floor_rounds])
            fraud = _median_run([rounds[j] for rounds in fraud_rounds])
            ratios = [f[j].cpu_us / n[j].cpu_us for f, n in zip(fraud_rounds, floor_rounds, strict=True)]
            ratio = statistics.median(ratios)
            per_click, floor_click = fraud.cpu_us / batch, floor.cpu_us / batch
            rate = fraud.requests * batch / fraud.seconds
            per = _clicks(batch)
            detail = (
                f"{rate:,.0f} clicks/s, p50 {fraud.p50_ms:.2f} ms, p99 {fraud.p99_ms:.2f} ms (requests of {per}); "
                f"server CPU {per_click:.0f} µs/click + Redis {fraud.redis_us / batch:.0f} µs/click; no-op floor "
                f"{floor_click:.0f} µs/click (p50 {floor.p50_ms:.2f} ms, p99 {floor.p99_ms:.2f} ms): "
                f"{ratio:.2f}x the floor (rounds: {', '.join(f'{x:.2f}' for x in ratios)}), "
                f"{(fraud.cpu_us + fraud.redis_us) / floor.cpu_us:.2f}x with Redis's CPU; target "
                f"{'met' if ratio <= TARGET_RATIO else 'not met'}; medians of {len(ratios)} alternating rounds, "
                f"{fraud.requests:,} requests" + (f", {fraud.errors + floor.errors} errors" if fraud.errors +
                                                  floor.errors else "")
            )  # fmt: skip
            out.append(Result(f"fraud serving, {per} per request c={c}", per_click, "µs CPU/click", detail,
                              f"server CPU per click ≤ {TARGET_RATIO:g}x the no-op floor"))  # fmt: skip
    fill = setup.fill
    out.append(Result(
        "fraud serving setup", setup.report["rows"]["holdout"], "hold-out clicks",
        f"v2 named inputs, real clicks of {HOLDOUT_DAY}; {model}; features from a private Redis filled by "
        f"`bidflow stream publish` ({fill['publish_s']:.1f} s) + `bidflow stream process --idle-exit` "
        f"({fill['process_s']:.1f} s) over the sample's 3 days; {live:.0%} of sampled hold-out clicks read live "
        f"rows; {failed:.0f} fail-open answers over the run; machine shared with other work (load average "
        f"{load1:.1f} at the end)",
    ))  # fmt: skip
    for batch, times in breakdown.items():
        whole = times[WHOLE]
        parts = ", ".join(f"{name} {us:.1f}" for name, us in times.items())
        out.append(Result(f"fraud serving in-process CPU, {_clicks(batch)} per request", whole, "µs/click",
                          f"no HTTP; µs per click of each step: {parts}"))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of floor and fraud server")
    args = parser.parse_args()
    results = run(args.seconds, args.rounds)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

"""Benchmark: what the model servers' ``:explain`` route costs beside predict, and that predict kept its cost.

Setup: the serving benchmark's (``bench.bench_serving.build``: generated traffic, its Feast features
materialized into SQLite, the default-trained bid filter -- ``bidflow train``'s settings -- and the
300-tree reference model), and its 30-partner v1 bodies of the last hour (``bodies(fixed=30)``).

Through the server (``python -m bidflow.serving``, the default-trained model, SQLite online store, one
process each, 127.0.0.1, load from a second process at one connection, closed loop, as the serving
benchmark drives it): the servers run side by side for the whole run,

* ``now``: this working tree's server, which answers ``POST /v1/models/bid_filter:explain`` (TreeSHAP
  through XGBoost, one thread, top 8 contributions per partner, the server's default);
* ``before``: the same command on the source of the commit before the explain route (``BEFORE_EXPLAIN``,
  read from git's objects with ``git archive`` into the temp folder and put first on ``PYTHONPATH``),
  serving the same model files from the same store. Skipped, and said so, when git cannot give it.

A third server, ``now`` with ``OMP_NUM_THREADS=1``, gets only explain rounds: a diagnostic (XGBoost
builds the DMatrix it explains with OpenMP's default threads, every core, whatever the booster's
``nthread``).

Rounds of ``--seconds`` each. First ``--rounds`` rounds of predict on both servers, before any explain
request has reached either; then ``--rounds`` rounds of predict on both and explain on ``now`` and
on the diagnostic server, one after the other. Per route and server: auctions/s, p50/p99 (medians
over rounds) and CPU per auction (server process CPU / requests), with its min-max over rounds: the
noise of side-by-side runs. Last, ``--rounds`` rounds of predict on ``now`` while a second client sends
it explain requests at one connection: the predict latency an explain request in the same process
causes (CPU is not split by route there).

In-process (no HTTP; warm loops over the same bodies, CPU time, medians of ``PASSES`` passes, a pass of a
costly step over fewer bodies, ``PASS_CPU_S``): the predict
path (``preprocess`` -> ``predict`` -> ``postprocess`` to the JSON bytes the server sends) against
``explain(preprocess(body))`` plus the orjson encoding KServe gives its answer, with 8 contributions per
partner and with all of them (``x-bidflow-explain-top: 0``), and XGBoost's TreeSHAP alone on the same
matrices; for the default-trained and the reference model, and for the CTR kind's server
(``bidflow.serving.ctr``, one iPinYou impression per request from the hold-out hour of
``../shared/data/ipinyou_2997_sample``, a model trained by ``train.fit`` with ``bidflow.yaml``'s
``train.ctr`` settings on the sample's own columns).

Run alone: ``.venv/bin/python -m bench.bench_explain [--seconds 4] [--rounds 4]`` (prints a table);
``python -m bench explain`` writes the rows to bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.bench_serving import REPO, V1, bodies, build, cpu_seconds, free_port, load, process
from bench.harness import Result, machine

# The parent of bed0595 ("Model servers answer KServe's :explain route ..."): the server before the route.
BEFORE_EXPLAIN: Final = "f1732da2ce49c2030e2b3ad60fc361d62c9a50f1"
EXPLAIN: Final = V1.replace(":predict", ":explain")
OMP1: Final = "now, OMP_NUM_THREADS=1"
BESIDE: Final = "beside explain"  # the phase of predict rounds sent while explain requests arrive too
TOP_HEADER: Final = "x-bidflow-explain-top"
IPINYOU: Final = REPO.parent / "shared" / "data" / "ipinyou_2997_sample" / "train.csv.gz"
PASSES: Final = 3  # in-process: passes over the bodies, interleaved; the median is reported
PASS_CPU_S: Final = 1.0  # in-process: CPU one pass of one step may take (fewer bodies when it would take more)
MIN_CALLS: Final = 5
IN_PROCESS_AUCTIONS: Final = 300
CTR_IMPRESSIONS: Final = 1_000


@dataclass(frozen=True)
class Round:
    """One round of load on one server and route."""

    server: str  # "now", "before" or OMP1
    route: str  # "predict" or "explain"
    phase: str  # "alone" (no explain request yet), "interleaved" (rounds of each in turn) or BESIDE
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server process CPU per request
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


# --- the server before the explain route ----------------------------------------------------------------


def before_explain_source(workdir: Path) -> tuple[Path | None, str]:
    """``src/`` of ``BEFORE_EXPLAIN`` unpacked under ``workdir`` (``git archive`` only reads the repository).

    Returns the folder to put first on ``PYTHONPATH``, or None and why there is none.
    """
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", BEFORE_EXPLAIN, "src"],
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")
        why = " ".join((stderr or str(exc)).split())[:200].replace("|", "/")  # one table cell
        return None, f"git archive {BEFORE_EXPLAIN[:7]} failed: {why}"
    target = workdir / "before-explain"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src", BEFORE_EXPLAIN[:7]


# --- through the server ---------------------------------------------------------------------------------


def rounds_through_servers(
    root: Path, config_file: Path, model_dir: Path, body_file: Path, seconds: float, rounds: int
) -> tuple[list[Round], dict[str, Any]]:
    """Predict and explain rounds against the server now and (if git gives it) the one before the route.

    A third server, the server now with ``OMP_NUM_THREADS=1``, is sent only explain rounds: XGBoost
    builds the DMatrix it explains with OpenMP's default threads (every core), whatever the booster's
    ``nthread``, and its threads' waiting shows in the process's CPU.
    """
    command = [sys.executable, "-m", "bidflow.serving", "--model", str(model_dir), "--config", str(config_file)]
    command += ["--log-level", "WARNING"]
    old_src, why = before_explain_source(root)
    notes: dict[str, Any] = {"before": why}
    environments = {"now": {}, "before": {"PYTHONPATH": f"{old_src}{os.pathsep}{REPO}"}, OMP1: {"OMP_NUM_THREADS": "1"}}
    servers: dict[str, tuple[int, str]] = {}  # name -> (pid, url)
    with ExitStack() as stack:
        for name, env in environments.items():
            if name == "before" and old_src is None:
                continue
            port = free_port()
            try:
                pid = stack.enter_context(process([*command, "--http-port", str(port)], port, root, env))
            except RuntimeError as exc:
                if name != "before":
                    raise
                # e.g. a model saved by later code that the old server cannot read: measure the rest
                why = " ".join(str(exc).split())[-300:].replace("|", "/")  # one table cell
                notes["before"] = f"the server of {BEFORE_EXPLAIN[:7]} did not start: {why}"
                continue
            servers[name] = (pid, f"http://127.0.0.1:{port}")
        for _, url in servers.values():  # warm-up: caches, allocator, key encoder
            load(url, V1, body_file, 1, 2.0, root)
        out: list[Round] = []

        def one(server: str, route: str, phase: str) -> None:
            pid, url = servers[server]
            cpu0 = cpu_seconds(pid)
            stats = load(url, EXPLAIN if route == "explain" else V1, body_file, 1, seconds, root)
            cpu = cpu_seconds(pid) - cpu0
            n = max(1, int(stats["requests"]))
            out.append(
                Round(server, route, phase, n, stats["seconds"], stats["p50_ms"], stats["p99_ms"], cpu / n * 1e6,
                      int(stats["errors"]))
            )  # fmt: skip
            print(f"  {out[-1]}", file=sys.stderr, flush=True)

        names = [name for name in ("now", "before") if name in servers]
        for r in range(rounds):  # predict alone: no explain request has reached either server
            for server in names if r % 2 == 0 else names[::-1]:
                one(server, "predict", "alone")
        notes |= _check_answers(servers, body_file)
        for name in ("now", OMP1):  # warm-up of the explain route
            load(servers[name][1], EXPLAIN, body_file, 1, 2.0, root)
        for r in range(rounds):
            for server in names if r % 2 == 0 else names[::-1]:
                one(server, "predict", "interleaved")
            one("now", "explain", "interleaved")
            one(OMP1, "explain", "interleaved")
        for _ in range(rounds):  # predict while a second client sends explain requests to the same process
            with ThreadPoolExecutor(1) as pool:
                explaining = pool.submit(load, servers["now"][1], EXPLAIN, body_file, 1, seconds + 3.0, root)
                time.sleep(1.5)  # the explain client has started (its process imports numpy)
                one("now", "predict", BESIDE)
                stats = explaining.result()
            notes.setdefault("beside_explain_requests", []).append(int(stats["requests"]))
    return out, notes


def _check_answers(servers: dict[str, tuple[int, str]], body_file: Path) -> dict[str, Any]:
    """One explain answer of the server now (its shape), and what the server before answers on the route."""
    import httpx

    body = body_file.read_text(encoding="utf-8").splitlines()[0]
    headers = {"content-type": "application/json"}
    answer = httpx.post(servers["now"][1] + EXPLAIN, content=body, headers=headers, timeout=30)
    answer.raise_for_status()
    (auction,) = answer.json()["explanations"]
    notes: dict[str, Any] = {
        "explained_partners": len(auction["partners"]),
        "contributions": len(auction["partners"][0]["contributions"]),
        "explain_bytes": len(answer.content),
        "predict_bytes": len(httpx.post(servers["now"][1] + V1, content=body, headers=headers, timeout=30).content),
    }
    if "before" in servers:
        old = httpx.post(servers["before"][1] + EXPLAIN, content=body, headers=headers, timeout=30)
        notes["before_explain_status"] = old.status_code
    return notes


# --- in-process -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """CPU µs per call of one in-process step, per pass, and the calls a pass made."""

    us: list[float]
    calls: int

    @property
    def median(self) -> float:
        return statistics.median(self.us)


def _passes(steps: dict[str, Callable[[int], object]], n: int) -> dict[str, Timing]:
    """CPU µs per call of each step, ``PASSES`` passes with the steps interleaved.

    A pass of a step goes over the first ``n`` inputs, or fewer (at least ``MIN_CALLS``) when that
    would take more than ``PASS_CPU_S`` of CPU: an explanation of the reference model costs a
    fifth of a second.
    """
    counts = {}
    for name, step in steps.items():
        began = time.process_time()
        for i in range(3):  # warm-up, and what a call costs
            step(i)
        cost = (time.process_time() - began) / 3
        counts[name] = max(MIN_CALLS, min(n, int(PASS_CPU_S / max(cost, 1e-6))))
    out: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(PASSES):
        for name, step in steps.items():
            began = time.process_time()
            for i in range(counts[name]):
                step(i)
            out[name].append((time.process_time() - began) / counts[name] * 1e6)
    return {name: Timing(us, counts[name]) for name, us in out.items()}


def _explain_steps(served: Any, raw: list[bytes], matrices: list[Any]) -> dict[str, Callable[[int], object]]:
    """The explain route's work (top 8, all), and TreeSHAP alone, each as the server runs it and on one thread.

    "as served": XGBoost's DMatrix of the rows is built with OpenMP's default threads (every core; the
    booster's ``nthread=1`` does not reach it). "1 thread": the same call inside
    ``xgboost.config_context(nthread=1)``, which holds the DMatrix to one thread too.
    """
    import orjson
    import xgboost as xgb

    from bidflow.modeling.explain import contributions

    model = served.state.model
    top8, every = {TOP_HEADER: "8"}, {TOP_HEADER: "0"}

    def one_thread(step: Callable[[int], object]) -> Callable[[int], object]:
        def run(i: int) -> object:
            with xgb.config_context(nthread=1):
                return step(i)

        return run

    steps: dict[str, Callable[[int], object]] = {
        "explain top 8": lambda i: orjson.dumps(served.explain(served.preprocess(raw[i]), top8)),
        "explain all": lambda i: orjson.dumps(served.explain(served.preprocess(raw[i]), every)),
        "treeshap": lambda i: contributions(model, matrices[i]),
    }
    return steps | {f"{name}, 1 thread": one_thread(step) for name, step in steps.items()}


def bid_filter_in_process(config_file: Path, model_dir: Path, v1_bodies: list[dict[str, Any]]) -> dict[str, Timing]:
    """Predict path vs explain (top 8 / all) vs TreeSHAP alone, µs per 30-partner auction."""
    from bidflow.config import load_config
    from bidflow.serving.base import ModelSource
    from bidflow.serving.bid_filter import BidFilterModel

    config = load_config(config_file, environ={})
    model = BidFilterModel("bid_filter", config, ModelSource("bid_filter", uri=str(model_dir)))
    assert model.load(), model.not_ready_reason
    state = model.state
    assert state is not None
    raw = [json.dumps(body).encode() for body in v1_bodies]  # what KServe's data plane hands the model
    matrices = []
    for body in raw:
        x, failed = model._matrix(state, model.preprocess(body).auctions[0])
        assert x is not None, failed
        matrices.append(x.copy())
    every = model.explain(model.preprocess(raw[0]), {TOP_HEADER: "0"})
    assert len(every["explanations"][0]["partners"][0]["contributions"]) > 8

    def predict(i: int) -> object:
        return model.postprocess(model.predict(model.preprocess(raw[i])), None, {})  # -> JSON bytes, as served

    steps = {"predict": predict, **_explain_steps(model, raw, matrices)}
    try:
        return _passes(steps, len(raw))
    finally:
        model.stop()


def ctr_in_process(workdir: Path) -> tuple[dict[str, Timing], dict[str, Any]]:
    """The CTR server's predict path vs explain, one iPinYou impression per request."""
    import orjson

    from bidflow.config import Config, load_config
    from bidflow.modeling import ctr, inputs, train
    from bidflow.serving.base import ModelSource
    from bidflow.serving.ctr import CTRModel

    settings = load_config(REPO / "bidflow.yaml", environ={}).train.for_kind("ctr")
    rows = ctr.read_ipinyou_impressions(IPINYOU, Config().features.ctr_day)
    history, holdout = inputs.split_holdout(rows, 1)
    spec = ctr.ipinyou_spec()
    trained = train.fit(history, spec, settings, refit=settings.refit, category_order=settings.category_order)
    folder = train.save_model(trained, workdir / "ctr-model")
    model = CTRModel("ctr", Config(), ModelSource.parse("ctr_ipinyou", str(folder)))
    assert model.load(), model.not_ready_reason
    records = holdout[list(spec.names)].head(CTR_IMPRESSIONS).to_dict("records")
    instances = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    instances = [{k: v for k, v in r.items() if not (isinstance(v, float) and v != v)} for r in instances]  # no NaN
    raw = [json.dumps({"instances": [row]}).encode() for row in instances]
    matrices = [model._matrix(model.preprocess(body))[0] for body in raw]

    def predict(i: int) -> object:
        return orjson.dumps(model.postprocess(model.predict(model.preprocess(raw[i]))))

    steps = {"predict": predict, **_explain_steps(model, raw, matrices)}
    info = {
        "trees": trained.best_iteration,
        "validated_trees": trained.info.get("validated_trees", trained.best_iteration),
        "depth": settings.max_depth,
        "columns": len(spec.names),
        "impressions": len(raw),
    }
    try:
        return _passes(steps, len(raw)), info
    finally:
        model.stop()


# --- the benchmark --------------------------------------------------------------------------------------


@contextmanager
def _root(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    root = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(seconds: float = 4.0, rounds: int = 4, keep: Path | None = None) -> list[Result]:
    """Build the serving benchmark's models and stores, measure, return the rows.

    ``keep``: build in this folder and keep it (a folder that already holds a build is reused).
    """
    import yaml

    with _root(keep) as root:
        started = time.perf_counter()
        saved = root / "settings.json"
        if saved.exists():
            settings = json.loads(saved.read_text())
        else:
            settings = build(root)
            saved.write_text(json.dumps(settings))
        print(
            f"  built models and stores in {time.perf_counter() - started:.0f} s: {settings['model']}", file=sys.stderr
        )
        thirty = bodies(root, n=1_000, fixed=30)
        body_file = root / "thirty.jsonl"
        body_file.write_text("\n".join(json.dumps(b) for b in thirty) + "\n", encoding="utf-8")
        config_file = root / "bidflow-local.yaml"
        data = settings | {"features": settings["features"] | {"environment": "local"}}
        config_file.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "model"}))

        in_process = {}
        for name, folder in (("default-trained model", "model-default"), ("reference model", "model")):
            in_process[name] = bid_filter_in_process(config_file, root / folder, thirty[:IN_PROCESS_AUCTIONS])
            print(f"  in-process, {name}: {_medians(in_process[name])}", file=sys.stderr, flush=True)
        ctr_steps, ctr_info = ctr_in_process(root)
        print(f"  in-process, CTR: {_medians(ctr_steps)} {ctr_info}", file=sys.stderr, flush=True)
        served, notes = rounds_through_servers(root, config_file, root / "model-default", body_file, seconds, rounds)
        print(f"  {notes}", file=sys.stderr, flush=True)
        return _results(served, notes, in_process, ctr_steps, ctr_info, settings["model"], seconds)


def _medians(steps: dict[str, Timing]) -> dict[str, float]:
    return {name: round(timing.median, 1) for name, timing in steps.items()}


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def _spread_ms(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _results(
    served: list[Round],
    notes: dict[str, Any],
    in_process: dict[str, dict[str, Timing]],
    ctr_steps: dict[str, Timing],
    ctr_info: dict[str, Any],
    model: dict[str, Any],
    seconds: float,
) -> list[Result]:
    out = []
    default = f"default-trained model ({model['default_trees']} trees of depth {model['default_depth']})"
    where = f"{default}, SQLite, one process, c=1 closed loop, rounds of {seconds:.0f} s"

    def pick(server: str, route: str, phase: str | None = None) -> list[Round]:
        return [r for r in served if r.server == server and r.route == route and phase in (None, r.phase)]

    def figures(rounds: list[Round]) -> str:
        return (
            f"{statistics.median(r.rate for r in rounds):,.0f} auctions/s, "
            f"p50 {statistics.median(r.p50_ms for r in rounds):.2f} ms, "
            f"p99 {statistics.median(r.p99_ms for r in rounds):.2f} ms (medians of {len(rounds)} rounds), "
            f"{sum(r.requests for r in rounds):,} requests" + _errors(rounds)
        )

    predict_now = [r for r in pick("now", "predict") if r.phase != BESIDE]
    explain_now = pick("now", "explain")
    cpu_predict = statistics.median(r.cpu_us for r in predict_now)
    alone, mixed = pick("now", "predict", "alone"), pick("now", "predict", "interleaved")
    out.append(
        Result(
            "explain: server, 30 partners: predict",
            cpu_predict,
            "µs CPU/auction",
            f"CPU per auction over rounds {_spread([r.cpu_us for r in predict_now])} µs; before any explain request "
            f"{_spread([r.cpu_us for r in alone])} µs, between explain rounds {_spread([r.cpu_us for r in mixed])} "
            f"µs; {figures(predict_now)}; {where}",
        )
    )
    before = pick("before", "predict")
    if before:
        cpu_before = statistics.median(r.cpu_us for r in before)
        old_alone, old_mixed = pick("before", "predict", "alone"), pick("before", "predict", "interleaved")
        out.append(
            Result(
                f"explain: server, 30 partners: predict, server before the explain route ({notes['before']})",
                cpu_before,
                "µs CPU/auction",
                f"CPU per auction over rounds {_spread([r.cpu_us for r in before])} µs (same phases: "
                f"{_spread([r.cpu_us for r in old_alone])}, {_spread([r.cpu_us for r in old_mixed])}); the server "
                f"now minus this one: {cpu_predict - cpu_before:+.0f} µs ({cpu_predict / cpu_before - 1:+.1%}); "
                f"its :explain answers {notes.get('before_explain_status')}; {figures(before)}; same model, store "
                "and bodies, rounds alternating with the server now's",
            )
        )
    else:
        out.append(Result("explain: server, 30 partners: predict, server before the explain route", 0.0, "-",
                          f"not measured: {notes['before']}"))  # fmt: skip
    cpu_explain = statistics.median(r.cpu_us for r in explain_now)
    out.append(
        Result(
            "explain: server, 30 partners: explain (top 8)",
            cpu_explain,
            "µs CPU/auction",
            f"{cpu_explain / cpu_predict:.1f}x predict's CPU; CPU per auction over rounds "
            f"{_spread([r.cpu_us for r in explain_now])} µs; {figures(explain_now)}; answer "
            f"{notes['explain_bytes']:,} B ({notes['explained_partners']} partners x {notes['contributions']} "
            f"contributions) against predict's {notes['predict_bytes']:,} B; {where}",
        )
    )
    explain_omp1 = pick(OMP1, "explain")
    cpu_omp1 = statistics.median(r.cpu_us for r in explain_omp1)
    out.append(
        Result(
            "explain: server, 30 partners: explain (top 8), OMP_NUM_THREADS=1",
            cpu_omp1,
            "µs CPU/auction",
            f"diagnostic: the same server with OpenMP held to one thread (XGBoost's DMatrix of the rows to explain "
            f"is built with the default threads), {cpu_omp1 / cpu_predict:.1f}x predict's CPU; CPU per auction over "
            f"rounds {_spread([r.cpu_us for r in explain_omp1])} µs; {figures(explain_omp1)}; its rounds follow the "
            "server now's explain rounds",
        )
    )
    beside = pick("now", "predict", BESIDE)
    if beside:
        p99 = statistics.median(r.p99_ms for r in beside)
        alone_p50 = statistics.median(r.p50_ms for r in predict_now)
        alone_p99 = statistics.median(r.p99_ms for r in predict_now)
        explained = sum(notes.get("beside_explain_requests", []))
        p99s = _spread_ms([r.p99_ms for r in beside])
        out.append(
            Result(
                "explain: server, 30 partners: predict beside explain traffic",
                p99,
                "ms p99",
                f"predict at one connection while a second connection sends explain requests to the same server "
                f"process: {statistics.median(r.rate for r in beside):,.0f} auctions/s, "
                f"p50 {statistics.median(r.p50_ms for r in beside):.2f} ms, p99 {p99s} ms over {len(beside)} "
                f"rounds, against p50 {alone_p50:.2f} ms and p99 {alone_p99:.2f} ms in the predict rounds above;"
                f" {explained:,} explain requests answered meanwhile; CPU not split by route",
            )
        )
    for name, steps in [*in_process.items(), ("CTR", ctr_steps)]:
        if name == "CTR":
            label = "explain: in-process, CTR, 1 impression"
            what = (
                f"CTR server (tabular), {ctr_info['trees']} trees of depth {ctr_info['depth']} (`train.ctr` of "
                f"bidflow.yaml: early stopping chose {ctr_info['validated_trees']}, then the refit), the sample's "
                f"{ctr_info['columns']} columns (no Feast historical CTR); hold-out impressions of iPinYou 2997, "
                "one per request"
            )
            unit = "µs/impression"
        else:
            trees = (
                f"{model['default_trees']} trees of depth {model['default_depth']}"
                if name.startswith("default")
                else f"{model['trees']} trees of depth 8"
            )
            label = f"explain: in-process, 30 partners, {name}"
            what = f"{trees}, {model['columns']} columns, SQLite (cache warm)"
            unit = "µs/auction"
        predict = steps["predict"]
        out.append(
            Result(
                f"{label}: predict path",
                predict.median,
                unit,
                f"preprocess + predict (compiled trees) + postprocess to JSON; {PASSES} passes "
                f"{_spread(predict.us)} µs, {predict.calls} requests each; {what}",
            )
        )
        shap, shap1 = steps["treeshap"], steps["treeshap, 1 thread"]
        for top in ("top 8", "all"):
            timing, one = steps[f"explain {top}"], steps[f"explain {top}, 1 thread"]
            out.append(
                Result(
                    f"{label}: explain ({top})",
                    timing.median,
                    unit,
                    f"{timing.median / predict.median:.0f}x the predict path; preprocess + explain + orjson (as "
                    f"KServe encodes it), as served: {PASSES} passes {_spread(timing.us)} µs, {timing.calls} "
                    f"requests each; inside xgboost.config_context(nthread=1): {one.median:.0f} µs "
                    f"({one.median / predict.median:.0f}x; passes {_spread(one.us)}); of which TreeSHAP "
                    f"(`contributions`, XGBoost pred_contribs) {shap.median:.0f} µs as served, "
                    f"{shap1.median:.0f} µs on one thread",
                )
            )
    return out


def _errors(rounds: list[Round]) -> str:
    errors = sum(r.errors for r in rounds)
    return f", {errors} errors" if errors else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per route and phase")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it (reused if built)")
    args = parser.parse_args()
    results = run(args.seconds, args.rounds, args.keep)
    print(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}\n")
    print("| benchmark | result | target | detail |\n|---|---|---|---|")
    for result in results:
        print("| " + " | ".join(result.cells()) + " |")


if __name__ == "__main__":
    main()

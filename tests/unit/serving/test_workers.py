"""Several server processes: their option checks, and the metrics they publish for each other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bidflow.errors import ConfigError
from bidflow.serving.metrics import MULTIPROCESS_ENV, WORKERS_DIR_ENV, ServingMetrics, shares
from bidflow.serving.server import ServerOptions
from bidflow.serving.workers import check_workers, listen, run_workers


def _samples(registry: CollectorRegistry, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """``name``'s samples keyed by the values of ``labels``, in that order."""
    return {
        tuple(s.labels[k] for k in labels): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_a_worker_publishes_what_it_counted_once() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, multiprocess=True)
    counts = metrics.model("bf", ["atlas", "beacon"], version="3", source="models:/bf@champion", predictor="numba")
    counts.record(["atlas", "beacon", "zed"], [True, False, True], explored=False, fail_open=False)
    counts.record(["atlas"], [True], explored=True, fail_open=False)
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    labels = ("model", "partner", "decision")
    decisions = _samples(registry, "bidflow_serving_decisions_total", *labels)
    assert decisions == {("bf", "atlas", "call"): 2.0, ("bf", "beacon", "skip"): 1.0, ("bf", "other", "call"): 1.0}
    counts.record(["beacon"], [True], explored=False, fail_open=True)
    metrics.flush()
    decisions = _samples(registry, "bidflow_serving_decisions_total", *labels)
    assert decisions == {
        ("bf", "atlas", "call"): 2.0, ("bf", "beacon", "skip"): 1.0, ("bf", "other", "call"): 1.0,
        ("bf", "beacon", "call"): 1.0,
    }  # fmt: skip
    auctions = _samples(registry, "bidflow_serving_auctions_total", "model", "explored", "fail_open")
    assert auctions == {("bf", "false", "false"): 1.0, ("bf", "true", "false"): 1.0, ("bf", "false", "true"): 1.0}

    filtered, explored = shares(list(registry.collect()))
    assert [(s.labels, s.value) for s in filtered.samples] == [({"model": "bf"}, 1 / 5)]
    assert [(s.labels, s.value) for s in explored.samples] == [({"model": "bf"}, 1 / 3)]


def test_a_reloaded_model_zeroes_its_old_version_in_multiprocess_mode() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, multiprocess=True)
    metrics.model("bf", [], version="3", source="s", predictor="numba")
    metrics.model("bf", [], version="4", source="s", predictor="numba")
    info = _samples(registry, "bidflow_serving_model_info", "model", "version")
    assert info == {("bf", "3"): 0.0, ("bf", "4"): 1.0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ServerOptions(workers=0), "--workers must be at least 1"),
        (ServerOptions(workers=2, grpc_port=9000), "gRPC is served by one process only"),
    ],
)
def test_settings_several_workers_cannot_serve_are_refused(options: ServerOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_workers(options)


def test_workers_share_a_port_and_a_taken_port_is_refused_before_any_starts() -> None:
    first = listen("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listen("127.0.0.1", port)  # SO_REUSEPORT: a second worker binds the same port
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_workers([], None, ServerOptions(http_port=port, workers=2))  # type: ignore[arg-type]
    finally:
        first.close()
        second.close()
    with socket.socket() as plain:  # and a port held the ordinary way is refused too
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            run_workers([], None, ServerOptions(http_port=plain.getsockname()[1], workers=2))  # type: ignore[arg-type]


def test_the_command_line_explains_bad_worker_settings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bidflow.serving", "--model", "/nonexistent-model", "--workers", "2",
         "--grpc-port", "9001"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "gRPC is served by one process only" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("workers_dir", "expected"), [(False, "False"), (True, "True")])
def test_only_the_workers_parent_switches_metrics_to_multiprocess_mode(
    tmp_path: Path, workers_dir: bool, expected: str
) -> None:
    # feast sets PROMETHEUS_MULTIPROC_DIR when it is imported: a lone server that imported feast
    # first must still count in memory.
    script = (
        "import feast.metrics, os\n"
        "assert os.environ.get('PROMETHEUS_MULTIPROC_DIR')\n"
        "from bidflow.serving.metrics import serving_metrics\n"
        "print(serving_metrics().multiprocess)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (MULTIPROCESS_ENV, WORKERS_DIR_ENV)}
    if workers_dir:
        env |= {MULTIPROCESS_ENV: str(tmp_path), WORKERS_DIR_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected


def test_bidflow_serve_takes_exactly_the_server_modules_options() -> None:
    import typer
    from typer.testing import CliRunner

    from bidflow.serving.__main__ import parser
    from bidflow.serving.commands import register_serving_commands
    from bidflow.serving.online import DEFAULT_CACHE_S

    app = typer.Typer()
    app.callback()(lambda: None)
    register_serving_commands(app)
    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0
    assert shown.output.split() == parser(prog="bidflow serve").format_help().split()  # one definition, not two
    assert parser().parse_args(["--model", "champion"]).feature_cache_s == DEFAULT_CACHE_S

"""Several model-server processes on one port (``--workers N``).

One Python process runs one request at a time: on a machine with two cores a single server uses
one of them. With ``--workers N`` a parent process starts N workers, each a complete server (its own
model, compiled predictor and online reader) in a fresh interpreter, and restarts one that dies.

* **One port, balanced by the kernel.** Every worker binds ``host:http_port`` with
  ``SO_REUSEPORT``, so the kernel spreads new connections over the workers by their addresses. A
  socket shared by accept() is known to concentrate new connections on few workers under epoll
  (the waiter that slept last is woken first; not measured here), and an exchange holds a few
  long-lived keep-alive connections, so an unlucky split would last. The parent binds the
  port once first (without ``SO_REUSEPORT``), so a port in use is a clear error before anything
  starts.
* **Metrics of all workers** on every worker's ``/metrics``: the parent sets prometheus_client's
  ``PROMETHEUS_MULTIPROC_DIR`` and bidflow's ``BIDFLOW_SERVING_METRICS_DIR`` (a private temporary
  folder, removed at exit) before the workers start; see ``bidflow.serving.metrics``.
* **Stopping.** SIGTERM or SIGINT to the parent stops every worker (each finishes its requests).
  A worker killed by a signal (the OOM killer, say) or exiting after ``CRASH_WINDOW_S`` is
  started again; one that fails on its own right after starting (an error exit within
  ``CRASH_WINDOW_S``) would fail again: the server stops with its exit code.

Not with gRPC: its server would need the same treatment, and nothing here uses it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from bidflow.errors import ConfigError
from bidflow.serving.metrics import MULTIPROCESS_ENV, WORKERS_DIR_ENV

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from bidflow.config import Config
    from bidflow.serving.server import ServerOptions

log = logging.getLogger(__name__)

CRASH_WINDOW_S: Final = 10.0
STOP_GRACE_S: Final = 20.0
_BACKLOG: Final = 2048  # uvicorn's default


def check_workers(options: ServerOptions) -> None:
    """Refuse settings several workers cannot serve.

    Raises:
        ConfigError: fewer than one worker, or gRPC asked for with more than one.
    """
    if options.workers < 1:
        raise ConfigError("--workers must be at least 1", got=str(options.workers))
    if options.workers > 1 and options.grpc_port is not None:
        raise ConfigError(
            "gRPC is served by one process only", got=f"--workers {options.workers} with --grpc-port",
            hint="leave out --grpc-port, or serve gRPC from a server with --workers 1",
        )  # fmt: skip


def run_workers(argv: Sequence[str], config: Config, options: ServerOptions) -> int:
    """Start ``options.workers`` servers for the command line ``argv`` and supervise them.

    Args:
        argv: the server's own options (``python -m bidflow.serving`` syntax); each worker builds
            its model from them.
        config: the configuration the parent loaded (workers do not read it again).
        options: where to listen, and how many workers.

    Returns:
        The exit code: 0 after SIGTERM/SIGINT, else the code of a worker that could not start.

    Raises:
        ConfigError: the port is in use or cannot be bound.
    """
    _check_port(options.host, options.http_port)
    directory = tempfile.mkdtemp(prefix="bidflow-metrics-")
    saved = {name: os.environ.get(name) for name in (MULTIPROCESS_ENV, WORKERS_DIR_ENV)}
    os.environ.update(dict.fromkeys(saved, directory))  # inherited by the workers, read at their import
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing half-initialised is inherited

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_worker, args=(list(argv), config), name="bidflow-serving-worker")
        process.start()
        return process, time.monotonic()

    workers = [start() for _ in range(options.workers)]
    log.info("%d workers on http://%s:%d: %s", len(workers), options.host, options.http_port,
             ", ".join(str(p.pid) for p, _ in workers))  # fmt: skip
    code = 0
    try:
        while not stopping.wait(0.5):
            for i, (process, started) in enumerate(workers):
                if process.is_alive():
                    continue
                _forget(directory, process.pid)
                if (process.exitcode or 0) > 0 and time.monotonic() - started < CRASH_WINDOW_S:
                    log.error("worker %d exited with %s within %.0f s of starting: stopping the server",
                              process.pid, process.exitcode, CRASH_WINDOW_S)  # fmt: skip
                    code = process.exitcode or 1
                    stopping.set()
                    break
                log.warning("worker %d exited with %s: starting another", process.pid, process.exitcode)
                workers[i] = start()
    finally:
        _stop([process for process, _ in workers])
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)
    return code


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other workers may bind too (``SO_REUSEPORT``)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(_BACKLOG)
    return sock


def _worker(argv: list[str], config: Config) -> None:
    """One worker: build the model from ``argv`` and serve it on a ``SO_REUSEPORT`` socket."""
    from bidflow.serving.__main__ import LOG_FORMAT, build, parser
    from bidflow.serving.server import serve

    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    model, options = build(args, config)
    serve([model], options, sockets=[listen(options.host, options.http_port)])


def _check_port(host: str, port: int) -> None:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}", got=exc.strerror or str(exc)) from exc


def _forget(directory: str, pid: int | None) -> None:
    """Drop a dead worker's live gauges (its counters stay: they count what it served)."""
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _stop(processes: Sequence[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)

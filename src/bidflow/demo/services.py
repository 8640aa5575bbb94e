"""The demo's long-running processes: the local deployment (router + model servers) and the drift monitor."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bidflow.deploy.steps import monitor_python
from bidflow.errors import BidflowError


class ServiceError(BidflowError):
    """A demo service did not start."""


@dataclass(frozen=True)
class Services:
    """Where the demo's services answer."""

    router: str
    monitor: str


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_services(config_file: Path, router_port: int, monitor_port: int, logs: Path) -> Iterator[Services]:
    """Start ``bidflow canary serve`` and the monitor (its own environment) with ``config_file``; stop both after."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")}
    router_cmd = [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), "canary", "serve"]
    monitor_cmd = [str(monitor_python()), "-m", "bidflow.monitoring", "--config", str(config_file), "serve"]
    if not monitor_python().exists():
        raise ServiceError(
            "the drift monitor's environment is missing",
            where=str(monitor_python()),
            hint="run `make monitor-setup` (make demo does it)",
        )
    started: list[subprocess.Popen[bytes]] = []
    try:
        services = Services(f"http://127.0.0.1:{router_port}", f"http://127.0.0.1:{monitor_port}")
        for name, command, url in (
            ("router", router_cmd, f"{services.router}/admin/state"),
            ("monitor", monitor_cmd, f"{services.monitor}/healthz"),
        ):
            log = logs / f"{name}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started.append(process)
            _wait(name, process, url, log)
        yield services
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait(name: str, process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
            raise ServiceError(f"the {name} exited at start", where=log, got=tail)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ServiceError(f"the {name} did not answer within {timeout_s:.0f} s", where=log)

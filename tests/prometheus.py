"""Debian's Prometheus for tests: ``promtool``, and a real server on a free loopback port.

The binaries come from Debian's ``prometheus`` package, which ``scripts/install-prometheus.sh`` installs
(``make test`` and ``.ci/run`` run it). A missing binary fails the test with that instruction, in CI and
locally: never a skip, so a green run always means the rules were checked by Prometheus itself.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port


def binary(name: str) -> Path:
    """``prometheus`` or ``promtool`` from Debian's package (PATH, else /usr/bin)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if found is None:
        pytest.fail(
            f"Debian's prometheus package is missing ({name} not found): run scripts/install-prometheus.sh "
            "(make test and .ci/run do); this is never a skip",
            pytrace=False,
        )
    return Path(found)


@dataclass(frozen=True)
class Target:
    """One scrape job: ``host:port`` of a server, and the labels Prometheus adds to its series."""

    job: str
    address: str
    labels: dict[str, str]


@dataclass
class PrometheusServer:
    """A running Prometheus: its URL and its HTTP API."""

    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, targets: list[Target], rules_yaml: str, interval: str = "1s", timeout_s: float = 30.0
) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``targets`` and evaluating ``rules_yaml`` every ``interval``, in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yml").write_text(rules_yaml, encoding="utf-8")
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": t.job, "static_configs": [{"targets": [t.address], "labels": t.labels}]} for t in targets
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        str(binary("prometheus")),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT)
    server = PrometheusServer(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, f"prometheus exited:\n{server.output()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"prometheus not ready after {timeout_s}s:\n{server.output()}"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

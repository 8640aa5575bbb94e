"""A Feast-backed bid filter in a private registry and store, and model-server processes on 127.0.0.1.

The model is trained on the ``bid_filter`` FeatureService's training set (request features plus 42
aggregated columns) and registered in a throwaway MLflow store as ``candidate``; the server loads it
by that alias, as in production. Online features are materialized into SQLite (local environment)
or into a private ``redis-server`` on a free port (production environment, with a SQLite-backed
SQL registry): the shared Redis on 6379 is never touched, and the private one may be killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO, free_port
from tests.unit.modeling.conftest import bid_parquet, bid_rows, split_rows, trained
from tests.unit.serving.conftest import bid_logs, model_dir

__all__ = ["bid_logs", "bid_parquet", "bid_rows", "model_dir", "split_rows", "trained"]


@dataclass
class Setup:
    """Where the trained model and its feature store live."""

    root: Path
    settings: dict[str, Any]  # the bidflow configuration (as YAML data)

    def config_file(self, environment: str, name: str) -> Path:
        settings = self.settings | {"features": self.settings["features"] | {"environment": environment}}
        path = self.root / name
        path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        return path

    def config(self, environment: str = "local") -> Any:
        from bidflow.config import load_config

        return load_config(self.config_file(environment, f"bidflow-{environment}.yaml"), environ={})


@pytest.fixture(scope="session")
def feast_model(bid_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """Features built from the generated logs, a Feast-trained bid filter registered as ``candidate``."""
    from bidflow.data.batch import read_batch
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.modeling import steps

    root = tmp_path_factory.mktemp("serving-feast")
    (root / "feast").mkdir()
    settings = {
        "paths": {"parquet": str(bid_parquet), "reports": str(root / "reports")},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(root / "features"),
            "state": str(root / "feast"),
            "project": "bidflow_serving_it",
        },
        "train": {"feature_source": "feast", "n_estimators": 60, "max_depth": 5, "nthread": 1},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts")},
    }
    setup = Setup(root, settings)
    config = setup.config()
    calls = read_batch(bid_parquet)
    write_tables(build_bid_features(calls), config.features.offline)
    store = feature_store.open_store(config.features)
    feature_store.apply(store, config.features)
    outcome = steps.train_step(config, "bid_filter")
    assert outcome.model.spec.feature_service == "bid_filter"
    end = calls.column("ts").to_pylist()[-1] + timedelta(hours=1)
    feature_store.materialize(store, end - timedelta(days=2), end, bid_filter_views(store))
    return setup


def bid_filter_views(store: Any) -> list[str]:
    from bidflow.features.spec import service_spec

    return [view.view for view in service_spec(store, "bid_filter").views]


@dataclass
class RedisServer:
    """A private redis-server (no persistence) that a test may kill and restart."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        _wait(lambda: _connects(self.port), 10, "redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


@dataclass
class ServerProcess:
    """``python -m bidflow.serving`` in a child process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start model servers (waiting until the model is ready); stops them with SIGTERM afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> ServerProcess:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        command = [sys.executable, "-m", "bidflow.serving", "--http-port", str(port), *args]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, env=os.environ | (env or {})
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        _wait(lambda: process.poll() is not None or _connects(port), 120, "server did not listen")
        assert process.poll() is None, server.output()
        if ready:
            _wait(lambda: _ready(server), 180, f"model did not become ready:\n{server.output()}")
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)


def _ready(server: ServerProcess) -> bool:
    assert server.process.poll() is None, server.output()
    try:
        return httpx.get(f"{server.url}/v2/models/bid_filter/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.2)

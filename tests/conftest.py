"""Shared test fixtures: where the real data lives, and small generated auction logs."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bidflow.config import SimulateConfig
from bidflow.data.simulate import simulate
from bidflow.demo.services import free_port as free_port  # shared with the tests that start servers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
START = datetime(2026, 11, 2, 8, tzinfo=UTC)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public ad data beside the repository (read-only, never copied into it)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}: clone the project with ../shared beside it")
    return SHARED_DATA


def read_log(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def small_config(**overrides: Any) -> SimulateConfig:
    settings: dict[str, Any] = {"start": START, "hours": 2, "auctions_per_hour": 3_000, "publishers": 120}
    return SimulateConfig.model_validate(settings | overrides)


@pytest.fixture(scope="session")
def generated_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hours of baseline traffic, generated once per test session."""
    out = tmp_path_factory.mktemp("raw")
    simulate(small_config(), out)
    return out


@pytest.fixture
def make_logs(tmp_path: Path) -> Callable[..., Path]:
    """Generate logs with config overrides into a fresh folder."""

    def make(**overrides: Any) -> Path:
        out = tmp_path / f"raw-{len(list(tmp_path.iterdir()))}"
        simulate(small_config(**overrides), out)
        return out

    return make


@pytest.fixture(scope="session")
def ingested(generated_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's generated logs, ingested to parquet once."""
    from bidflow.config import IngestConfig
    from bidflow.data.ingest import ingest

    out = tmp_path_factory.mktemp("parquet")
    ingest(generated_logs, out, IngestConfig())
    return out


REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis on 127.0.0.1; an unreachable server fails the test (CI must not skip it)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (see .ci/run) and rerun")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """PostgreSQL on 127.0.0.1; an unreachable server fails the test (CI must not skip it)."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_DSN} ({exc}); start it (see .ci/run) and rerun")
    return POSTGRES_DSN


@contextlib.contextmanager
def running_router(config_file: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """``bidflow canary serve`` as a process with ``config_file``; yields its URL, stops it (and its servers) after."""
    import httpx

    from bidflow.config import load_config

    config = load_config(config_file, environ={})
    url = f"http://{config.canary.host}:{config.canary.router_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")}
    command = [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), "canary", "serve"]
    log_path = config_file.parent / "router.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/admin/state", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"router did not start: {log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextlib.contextmanager
def running_monitor(config_file: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """The drift monitor in its own environment with ``config_file``; yields its URL, stops it after."""
    import httpx

    from bidflow.config import load_config
    from bidflow.deploy.steps import monitor_python

    config = load_config(config_file, environ={})
    url = f"http://127.0.0.1:{config.monitor.port}"
    log_path = config_file.parent / "monitor.log"
    command = [str(monitor_python()), "-m", "bidflow.monitoring", "--config", str(config_file), "serve"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "monitor did not start"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(condition: Callable[[], Any], timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)

"""A fitted bidder for campaign 2997 and budget stores on the real Redis, each under its own model name.

The stores use Redis database ``REDIS_DB`` (bidflow's bidder tests only) and a model name no other
test uses, and delete their keys afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bidflow.bidding.budget import BudgetStore, Plan
from tests.conftest import free_port
from tests.unit.serving.bidder_support import EPISODE, fit_test_bidder

__all__ = ["EPISODE"]

REDIS_DB = 12  # bidflow bidder tests only


@pytest.fixture(scope="session")
def bidder_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bidder fitted on the tuning log of campaign 2997 at c0 = 1/32, saved as a folder."""
    return fit_test_bidder(shared_data, tmp_path_factory.mktemp("bidder"))


@pytest.fixture
def budget_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"


def unique_name(prefix: str = "bidder_it") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_store(budget_url: str) -> Iterator[Callable[..., BudgetStore]]:
    """Budget stores under fresh model names on the shared Redis; their keys are deleted afterwards."""
    made: list[BudgetStore] = []

    def make(budget: int = 100, episode: int = 5, ttl_s: float = 30.0, name: str | None = None,
             state_age_s: float = 0.0) -> BudgetStore:  # fmt: skip
        store = BudgetStore.connect(budget_url, name or unique_name(), "2997", Plan(budget, episode), ttl_s=ttl_s,
                                    timeout_s=2.0, state_age_s=state_age_s)  # fmt: skip
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()
        store.close()


@dataclass
class Replica:
    """``python -m bidflow.serving --kind bidder`` in a child process."""

    url: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_replica(folder: Path, config_file: Path, name: str, workdir: Path) -> Replica:
    """Start a bidder server on a free port (not waiting for it: see ``wait_ready``)."""
    port = free_port()
    log = workdir / f"bidder-{port}.log"
    command = [sys.executable, "-m", "bidflow.serving", "--kind", "bidder", "--model", str(folder),
               "--config", str(config_file), "--http-port", str(port), "--breaker-cooldown-s", "0.2",
               "--log-level", "WARNING"]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT)
    return Replica(f"http://127.0.0.1:{port}", name, process, log)


def wait_ready(replica: Replica, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert replica.process.poll() is None, replica.output()
        try:
            if httpx.get(f"{replica.url}/v2/models/{replica.name}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the bidder did not become ready:\n{replica.output()}"
        time.sleep(0.1)


def write_config(path: Path, name: str, budget_url: str) -> Path:
    """A bidflow.yaml whose bidder kind is registered as ``name`` (its budget keys) on ``budget_url``."""
    # A generous wait: the tests' machine runs servers, Redis and clients on a few cores, and a reply that
    # times out after the script ran leaves a reservation no notice will settle (it expires as spent).
    bidder = {"budget_url": budget_url, "budget_timeout_s": 2.0}
    settings = {"bidder": bidder, "registry": {"models": {"bidder": name}}}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path

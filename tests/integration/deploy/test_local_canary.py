"""The local backend for real: the router and model-server processes on 127.0.0.1.

Champion and canary are real ``python -m bidflow.serving`` processes behind ``bidflow canary serve``;
traffic is replayed from generated auction logs while the canary is rolled back or promoted, and
not one client request may fail across the switch. The router is restarted in between: it must
come back serving what the transition log says.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bidflow.config import load_config
from bidflow.data.simulate import simulate
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.canary import RouterClient
from bidflow.deploy.replay import Auction, read_auctions, replay
from bidflow.deploy.split import route
from bidflow.errors import DeploymentError
from bidflow.modeling.train import TrainedModel, save_model
from bidflow.monitoring.auth import monitor_token
from tests.conftest import REPO, free_port, running_router, small_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def auctions(tmp_path_factory: pytest.TempPathFactory) -> list[Auction]:
    raw = tmp_path_factory.mktemp("canary-raw")
    simulate(small_config(hours=1, auctions_per_hour=1_500, publishers=60), raw)
    return list(read_auctions(sorted(raw.rglob("*.jsonl.gz"))))


@pytest.fixture(scope="module")
def models(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> list[ModelVersion]:
    root = tmp_path_factory.mktemp("canary-models")
    return [ModelVersion("bid_filter", v, str(save_model(trained, root / f"v{v}"))) for v in ("1", "2", "3")]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canary-local")
    settings = {
        "canary": {
            "state": str(root / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,
        },
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    path = root / "bidflow.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


class Router:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.client = RouterClient(url, token=token)

    def predict_url(self) -> str:
        return f"{self.url}/v1/models/bid_filter:predict"


@pytest.fixture
def router(config_file: Path) -> Iterator[Router]:
    """``bidflow canary serve`` as a process (a fresh one per test; the state folder persists)."""
    with running_router(config_file) as url:
        yield Router(url, monitor_token(load_config(config_file, environ={})))


def _replay_while(router: Router, auctions: list[Auction], action: object, after: int) -> object:
    """Replay ``auctions``; once ``after`` answers are in, run ``action`` in a thread (the switch)."""
    fired = threading.Event()
    result: dict[str, object] = {}

    def tick(report: object) -> None:
        if not fired.is_set() and report.ok >= after:  # type: ignore[attr-defined]
            fired.set()
            threading.Thread(target=lambda: result.setdefault("t", action()), daemon=True).start()  # type: ignore[operator]

    report = asyncio.run(replay(auctions, router.predict_url(), concurrency=8, on_answer=tick))
    deadline = time.monotonic() + 30
    while "t" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    return report, result.get("t")


def test_canary_split_and_rollback_without_a_failed_request(
    router: Router, models: list[ModelVersion], auctions: list[Auction]
) -> None:
    client = router.client
    for anonymous in (RouterClient(router.url), RouterClient(router.url, token="not-the-deployments-token")):
        with pytest.raises(DeploymentError, match="bearer token"):
            anonymous.deploy(models[0], 20, actor="anyone")  # nothing unauthenticated moves traffic
    first = client.deploy(models[0], 20, actor="test")
    assert first.state is not None and first.state.champion == models[0] and first.state.canary is None

    client.deploy(models[1], 20, actor="test")
    state = client.status()
    assert state.canary == models[1] and state.canary_percent == 20 and state.ready

    # Before the switch: the split is deterministic by auction id, ~20 %.
    head = auctions[:600]
    report = asyncio.run(replay(head, router.predict_url(), concurrency=8))
    assert report.failed == 0, report.failures
    assert 0.12 < report.roles["canary"] / report.ok < 0.28
    assert all(role == route(auction_id, 20) for auction_id, role in report.by_auction.items())

    report, transition = _replay_while(
        router, auctions[600:], lambda: client.rollback(actor="monitor", reasons=["test drift"]), after=200
    )
    assert report.failed == 0, report.failures  # nobody noticed the switch
    assert transition is not None and transition.action == "rollback"  # type: ignore[attr-defined]
    after = client.status()
    assert after.champion == models[0] and after.canary is None and after.canary_percent == 0

    # After the rollback, the canary's share of the same auctions goes to the champion.
    again = asyncio.run(replay(head, router.predict_url(), concurrency=4))
    assert again.roles == {"champion": len(head)}

    actions = [(t.action, t.model.version if t.model else None, t.actor) for t in client.transitions()]
    assert actions[-3:] == [("deploy", "1", "test"), ("deploy", "2", "test"), ("rollback", "2", "monitor")]
    assert client.transitions()[-1].reasons == ("test drift",)


def test_restart_restores_the_recorded_deployment_then_promotion_without_a_failed_request(
    router: Router, models: list[ModelVersion], auctions: list[Auction]
) -> None:
    # A new router process (the previous test's was stopped): it serves what the log recorded.
    restored = router.client.status()
    assert restored.champion == models[0] and restored.canary is None

    router.client.deploy(models[2], 50, actor="ci:42")
    report, transition = _replay_while(
        router, auctions[:900], lambda: router.client.promote(actor="analysis", reasons=["healthy"]), after=300
    )
    assert report.failed == 0, report.failures
    assert transition is not None and transition.action == "promote"  # type: ignore[attr-defined]
    assert {"champion", "canary"} <= set(report.roles)
    state = router.client.status()
    assert state.champion == models[2] and state.canary is None
    tail = asyncio.run(replay(auctions[:200], router.predict_url(), concurrency=4))
    assert tail.failed == 0 and tail.roles == {"champion": 200}

    # Promote or roll back with no canary live: a clear refusal, not a crash.
    with pytest.raises(Exception, match="no canary is live"):
        router.client.rollback(actor="test")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_stopping_the_router_stops_its_model_servers(config_file: Path) -> None:
    config = load_config(config_file, environ={})
    with running_router(config_file) as url:  # restores the champion the previous tests left
        assert RouterClient(url).status().champion is not None
        assert _listening(config.canary.champion_port)
    # running_router sent SIGTERM and waited for the router to exit: its model servers went with it.
    assert not _listening(config.canary.champion_port)


def test_a_router_killed_with_sigkill_is_replaced_without_a_leftover_server(
    config_file: Path, auctions: list[Auction]
) -> None:
    """kill -9 of the router leaves its model server running; the next router adopts it (recorded pid and start
    token), serves through it, and stops it when it stops itself."""
    config = load_config(config_file, environ={})
    command = [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), "canary", "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")}
    with (config_file.parent / "router.log").open("ab") as log:
        killed = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{config.canary.host}:{config.canary.router_port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert killed.poll() is None and time.monotonic() < deadline
            try:
                before = RouterClient(url, timeout_s=2).status()
                break
            except DeploymentError:
                time.sleep(0.2)
    finally:
        killed.kill()
        killed.wait()
    leftover = before.detail["champion_pid"]
    assert before.champion is not None and _alive(leftover) and _listening(config.canary.champion_port)

    with running_router(config_file) as url:
        after = RouterClient(url).status()
        assert after.champion == before.champion and after.ready
        assert after.detail["champion_pid"] == leftover, "the recorded server is adopted, not raced"
        report = asyncio.run(replay(auctions[:100], f"{url}/v1/models/bid_filter:predict", concurrency=4))
        assert report.failed == 0, report.failures
    assert not _listening(config.canary.champion_port) and not _alive(leftover)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

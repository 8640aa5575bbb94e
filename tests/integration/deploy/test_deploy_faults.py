"""Deployment state under faults: crash points, a full disk, a killed router, racing requests and deciders.

The router is the real one (``serve_router``: journal, recovery, model-server processes, admin API) run as a
process by ``router_runner.py``, with stand-in model servers (``stub_server.py``, real processes that answer at
once) and one injected fault at the journal boundary. Crash points are SIGKILL (kill -9) of the router between
the steps of a transition; the router is then started again on the same state folder, and must serve exactly
what its journal records, with no server of the dead router left running beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bidflow.config import load_config
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.canary import Controller, RouterClient
from bidflow.deploy.journal import FileLog
from bidflow.deploy.local import START_TOKEN_ENV, ProcessBackend, Server
from bidflow.deploy.router import RouterState, build_router
from bidflow.errors import ConflictError, DeploymentError, StateUnavailable
from bidflow.monitoring.auth import monitor_token
from tests.conftest import REPO, free_port
from tests.integration.deploy.router_runner import stub_command

pytestmark = pytest.mark.integration

V1, V2, V3 = (ModelVersion("bid_filter", v, f"stub://bid_filter/{v}") for v in ("1", "2", "3"))
BODY = b'{"instances": [{"request": {"id": "auction-1", "imp": []}}]}'


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    settings = {
        "canary": {
            "state": str(tmp_path / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,
        },
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "bidflow.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


class Router:
    """One router process over the test's state folder."""

    def __init__(self, config_file: Path, fault: str | None) -> None:
        config = load_config(config_file, environ={})
        self.config = config
        self.url = f"http://{config.canary.host}:{config.canary.router_port}"
        self.client = RouterClient(self.url, timeout_s=60, token=monitor_token(config))
        command = [sys.executable, "-m", "tests.integration.deploy.router_runner", "--config", str(config_file)]
        self.log_path = config_file.parent / "router.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command + (["--fault", fault] if fault else []), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/admin/state", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            time.sleep(0.1)

    def predict(self, n: int = 20) -> list[tuple[int, int | None]]:
        """(status, pid of the server that answered) for ``n`` scoring requests."""
        answers = []
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                body = BODY.replace(b"auction-1", f"auction-{i}".encode())
                response = client.post(f"{self.url}/v1/models/bid_filter:predict", content=body)
                answers.append((response.status_code, response.json().get("pid") if response.is_success else None))
        return answers

    def killed(self) -> None:
        """Wait for the router to die of its injected SIGKILL."""
        self.process.wait(timeout=30)
        assert self.process.returncode == -9, self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture
def routers(config_file: Path) -> Iterator[Any]:
    """Start routers (one at a time) over the test's state folder; every one still running is stopped after."""
    started: list[Router] = []

    def start(fault: str | None = None) -> Router:
        router = Router(config_file, fault)
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()
    for pid in stub_pids(config_file):  # nothing may outlive the test, whatever it asserted
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stub_pids(config_file: Path) -> list[int]:
    """Stand-in servers on this test's ports (whoever started them)."""
    config = load_config(config_file, environ={})
    ports = {str(config.canary.champion_port), str(config.canary.canary_port)}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if status != "Z" and b"tests.integration.deploy.stub_server" in argv:
            port = argv[argv.index(b"--port") + 1].decode()
            if port in ports:
                found.append(int(proc.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def served_by(state: Any) -> set[int]:
    return {state.detail[f"{role}_pid"] for role in ("champion", "canary") if f"{role}_pid" in state.detail}


def assert_serves_only_the_recorded(router: Router, config_file: Path) -> None:
    """Every stand-in on the ports is one the routes name, and every request is answered by one of them."""
    state = router.client.status()
    assert state.ready, state
    assert stub_pids(config_file) == sorted(served_by(state)), "a server outside the routes is running"
    answers = router.predict()
    assert all(code == 200 for code, _ in answers), answers  # no request lost
    assert {pid for _, pid in answers} <= served_by(state)


# --- crash points ---------------------------------------------------------------------------------------------------


def test_kill_9_after_a_rollback_acted_recovers_the_rollback(routers: Any, config_file: Path) -> None:
    """Before: the journal was written after the backend acted, so a crash in between brought the canary back."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 50, actor="test")
    router.stop()

    router = routers("kill-after-effect:rollback")
    with pytest.raises(DeploymentError):
        router.client.rollback(actor="monitor", reasons=["drift"])
    router.killed()

    router = routers()
    state = router.client.status()
    assert (state.champion, state.canary, state.canary_percent) == (V1, None, 0)
    last = router.client.transitions()[-1]
    assert (last.action, last.model, last.actor) == ("rollback", V2, "monitor")
    assert "completed after a router restart" in last.reasons
    assert_serves_only_the_recorded(router, config_file)


def test_kill_9_after_the_intent_completes_the_promotion_on_restart(routers: Any, config_file: Path) -> None:
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 50, actor="test")
    router.stop()

    router = routers("kill-after-intent:promote")
    with pytest.raises(DeploymentError):
        router.client.promote(actor="ci")
    router.killed()

    router = routers()
    state = router.client.status()
    assert (state.champion, state.canary) == (V2, None)
    assert [t.action for t in router.client.transitions()] == ["deploy", "deploy", "promote"]
    assert_serves_only_the_recorded(router, config_file)
    # What the journal commits to is what is served.
    from bidflow.deploy.journal import replay_journal

    committed, pending = replay_journal(FileLog(router.config.canary.state / "transitions.jsonl").records())
    assert pending is None and committed is not None and (committed.champion, committed.canary) == (V2, None)


# --- a full disk ----------------------------------------------------------------------------------------------------


def test_enospc_on_the_intent_refuses_the_deploy_and_starts_nothing(routers: Any, config_file: Path) -> None:
    router = routers("enospc-intent:deploy")
    with pytest.raises(DeploymentError, match="journal cannot be written"):
        router.client.deploy(V1, 0, actor="test")
    assert router.client.status().champion is None
    assert stub_pids(config_file) == []


def test_enospc_on_the_canary_deploys_intent_refuses_it(routers: Any, config_file: Path) -> None:
    """Before: the canary started and took traffic, then the append failed and the caller got a 500."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.stop()
    router = routers("enospc-intent:deploy")
    before = router.client.status()
    with pytest.raises(StateUnavailable, match="journal cannot be written") as refused:
        router.client.deploy(V2, 50, actor="test")
    assert "HTTP 503" in (refused.value.got or "")  # the router's disk, not the request: not a client error
    after = router.client.status()
    assert (after.champion, after.canary, after.canary_percent) == (V1, None, 0)
    assert after.detail["version"] == before.detail["version"]
    assert_serves_only_the_recorded(router, config_file)


def test_enospc_on_the_outcome_answers_the_rollback_and_loses_no_request(routers: Any, config_file: Path) -> None:
    """Before: traffic had moved and the caller got a 500; now the transition stands and restart records it."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 100, actor="test")
    router.stop()

    router = routers("enospc-outcome:rollback")
    failures: list[Any] = []
    done = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                try:
                    response = client.post(f"{router.url}/v1/models/bid_filter:predict", content=BODY)
                    if response.status_code != 200:
                        failures.append(response.status_code)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.3)
        transition = router.client.rollback(actor="monitor", reasons=["drift"])
        time.sleep(0.3)
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert transition.action == "rollback" and transition.state is not None and transition.state.canary is None
    assert router.client.status().canary is None
    router.stop()

    router = routers()  # the outcome was never written: recovery resolves the intent to the same state
    state = router.client.status()
    assert (state.champion, state.canary) == (V1, None)
    assert router.client.transitions()[-1].action == "rollback"
    assert_serves_only_the_recorded(router, config_file)


def test_a_torn_append_is_cut_back_and_the_next_record_survives(tmp_path: Path, monkeypatch: Any) -> None:
    """ENOSPC half-way through a line: before, the torn half stayed and swallowed the next record."""
    from bidflow.deploy.journal import Transition

    journal = FileLog(tmp_path / "transitions.jsonl")
    journal.append(Transition("deploy", V1, "test"))
    real_open = Path.open

    class HalfWritten:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def write(self, data: Any) -> int:
            self.inner.write(data[: len(data) // 2])
            self.inner.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened = real_open(self, *args, **kwargs)
        return HalfWritten(opened) if self == journal.path and "a" in (args[0] if args else kwargs["mode"]) else opened

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(OSError, match="No space"):
        journal.append(Transition("deploy", V2, "test"))
    monkeypatch.setattr(Path, "open", real_open)
    journal.append(Transition("rollback", V2, "test"))
    assert [(t.action, t.model) for t in journal.read()] == [("deploy", V1), ("rollback", V2)]


# --- a router killed with SIGKILL ---------------------------------------------------------------------------------


def test_a_router_killed_with_sigkill_leaves_no_server_behind(routers: Any, config_file: Path) -> None:
    """Before: the servers of the dead router kept their ports, the new router took a leftover's answer for its
    new server's readiness (the new one then died on the busy port) and the leftovers ran on after it stopped."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 30, actor="test")
    before = router.client.status()
    router.process.kill()
    router.process.wait(timeout=30)
    leftovers = stub_pids(config_file)
    assert sorted(served_by(before)) == leftovers  # the dead router's servers run on

    router = routers()
    state = router.client.status()
    assert (state.champion, state.canary, state.canary_percent) == (V1, V2, 30)
    assert_serves_only_the_recorded(router, config_file)
    assert served_by(state) == set(leftovers), "servers recorded by pid and start token are adopted"

    router.stop()
    assert stub_pids(config_file) == []
    assert not any(alive(pid) for pid in leftovers)


def test_a_server_recorded_for_another_model_is_stopped_not_adopted(routers: Any, config_file: Path) -> None:
    router = routers("kill-after-effect:promote")
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 30, actor="test")
    with pytest.raises(DeploymentError):
        router.client.promote(actor="ci")
    router.killed()
    router = routers()
    state = router.client.status()
    assert (state.champion, state.canary) == (V2, None)
    assert_serves_only_the_recorded(router, config_file)


def test_a_strangers_answer_on_the_port_is_not_readiness(config_file: Path, tmp_path: Path) -> None:
    """A server nobody recorded holds the champion port: the deploy is refused instead of taking its answer."""
    config = load_config(config_file, environ={})
    backend = ProcessBackend(config.canary, "bid_filter", ready_timeout_s=20)
    stranger = subprocess.Popen(stub_command(backend, V3, config.canary.champion_port), cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while not _listening(config.canary.champion_port):
            assert time.monotonic() < deadline and stranger.poll() is None
            time.sleep(0.05)
        backend.server_command = lambda model, port: stub_command(backend, model, port)  # type: ignore[method-assign]
        with pytest.raises(DeploymentError, match="in use"):
            backend.deploy(V1, 0)
        assert backend.status().champion is None
        # The probe itself: the stranger answers ready, but does not carry the new server's start token.
        impostor = Server(V1, config.canary.champion_port, subprocess.Popen(["sleep", "30"]), tmp_path / "x", "t0")
        try:
            assert not backend._answers_ready(impostor)
        finally:
            impostor.stop(0)
        token_env = (Path("/proc") / str(stranger.pid) / "environ").read_bytes()
        assert START_TOKEN_ENV.encode() not in token_env
    finally:
        stranger.kill()
        stranger.wait()
        backend.shutdown()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- the proxy's in-flight race -------------------------------------------------------------------------------------


def test_a_request_that_picked_a_route_is_counted_before_the_route_can_be_retired(
    config_file: Path, tmp_path: Path
) -> None:
    """Before: the proxy read the routes, then awaited the body; a rollback in between stopped the canary (nothing
    counted in flight on it yet) and the request was sent to a dead server: a 502."""
    config = load_config(config_file, environ={})
    backend = ProcessBackend(config.canary, "bid_filter", ready_timeout_s=20)
    backend.server_command = lambda model, port: stub_command(backend, model, port)  # type: ignore[method-assign]
    controller = Controller(backend, FileLog(tmp_path / "transitions.jsonl"))
    try:
        controller.deploy(V1, 0, actor="test")
        controller.deploy(V2, 100, actor="test")  # every scoring request picks the canary
        canary = backend.routes.canary
        assert canary is not None
        app = build_router(RouterState(controller, backend, None))
        status = asyncio.run(_request_held_at_the_body(app, lambda: _rollback_and_wait(controller, canary)))
        assert status == 200
    finally:
        backend.shutdown()


def _rollback_and_wait(controller: Controller, canary: Server) -> None:
    controller.rollback(actor="monitor")
    canary.process.wait(timeout=30)  # retired: nothing was counted in flight on it


async def _request_held_at_the_body(app: Any, meanwhile: Any) -> int:
    asked, release = asyncio.Event(), asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        asked.set()
        await release.wait()
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/models/bid_filter:predict", "raw_path": b"/v1/models/bid_filter:predict", "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    task = asyncio.create_task(app(scope, receive, send))
    await asked.wait()
    await asyncio.to_thread(meanwhile)
    release.set()
    await task
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


# --- compare-and-set ------------------------------------------------------------------------------------------------


def test_a_rollback_decided_on_one_canary_does_not_hit_the_next(routers: Any, config_file: Path) -> None:
    """The monitor judged canary v2; by the time it acts, v2 was promoted and v3 is the canary."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 30, actor="test")
    seen = router.client.status()
    router.client.promote(actor="ci")
    router.client.deploy(V3, 30, actor="test")
    with pytest.raises(ConflictError, match="canary v2"):
        router.client.rollback(actor="monitor", expect_canary="2")
    with pytest.raises(ConflictError, match="changed since"):
        router.client.rollback(actor="analysis", expect=seen.detail["version"])
    state = router.client.status()
    assert (state.champion, state.canary, state.canary_percent) == (V2, V3, 30)
    done = router.client.rollback(actor="monitor", expect_canary="3", expect=state.detail["version"])
    assert done.model == V3


@pytest.mark.parametrize("killed", ["canary", "champion"])
def test_a_killed_model_server_costs_no_auction(routers: Any, config_file: Path, killed: str) -> None:
    """kill -9 of one role's server: its share is scored by the other's, and its errors still count against it."""
    router = routers()
    router.client.deploy(V1, 0, actor="test")
    router.client.deploy(V2, 50, actor="test")
    state = router.client.status()
    os.kill(state.detail[f"{killed}_pid"], signal.SIGKILL)
    survivor = state.detail["champion_pid" if killed == "canary" else "canary_pid"]
    deadline = time.monotonic() + 10
    while alive(state.detail[f"{killed}_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = router.predict(40)
    assert all(code == 200 for code, _ in answers), answers
    assert {pid for _, pid in answers} == {survivor}
    assert router.client.metrics()[killed]["errors"] > 0  # the analysis still sees the dead role fail

"""The local backend: champion and canary model-server processes on 127.0.0.1 behind one router.

Each model runs in its own ``python -m bidflow.serving`` process (the same server the KServe image
runs), on one of two ports (``champion_port``, ``canary_port``; a promoted canary keeps its port).
The router (``bidflow.deploy.router``) reads ``ProcessBackend.routes`` for every request: one
immutable ``Routes`` object, replaced whole by a transition, so a request sees the old split or the
new one, never half of each.

No request is dropped by a switch: a server leaving the routes is stopped only after the requests
already sent to it have finished (its in-flight count drains to zero), and a new server joins the
routes only once it answers ready.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.deploy.backend import DeploymentState, ModelVersion, Role
from bidflow.errors import DeploymentError

if TYPE_CHECKING:
    from bidflow.config import CanaryConfig

log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 300.0
DRAIN_TIMEOUT_S: Final = 30.0
_LOG_TAIL_BYTES: Final = 2_000


@dataclass(eq=False)
class Server:
    """One model-server process.

    Attributes:
        model: what it serves.
        port: its HTTP port on the backend's host.
        process: the running process.
        log_path: its stdout/stderr.
        inflight: requests the router has sent and not yet seen answered (the router's event loop
            is the only writer; the drain thread only reads).
    """

    model: ModelVersion
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    inflight: int = 0

    def stop(self, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait for in-flight requests (at most ``drain_timeout_s``), then stop the process."""
        deadline = time.monotonic() + drain_timeout_s
        while self.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class Routes:
    """Where requests go now (replaced whole on every transition)."""

    champion: Server | None = None
    canary: Server | None = None
    percent: int = 0


@dataclass
class ProcessBackend:
    """Model servers as local processes (see the module docstring); runs inside the router process.

    Attributes:
        cfg: ports, host and the state folder.
        endpoint: the model name clients use in ``/v1/models/<endpoint>:predict``.
        config_path: the bidflow YAML the servers read (registry, feature store), or None for defaults.
        ready_timeout_s: longest wait for a new server to load its model.
    """

    cfg: CanaryConfig
    endpoint: str
    config_path: Path | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    routes: Routes = field(default_factory=Routes)
    kind: str = "local"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._retiring: list[threading.Thread] = []

    # -- DeploymentBackend --

    def status(self) -> DeploymentState:
        routes = self.routes
        detail: dict[str, object] = {"router": f"http://{self.cfg.host}:{self.cfg.router_port}"}
        for role, server in (("champion", routes.champion), ("canary", routes.canary)):
            if server is not None:
                detail[f"{role}_port"] = server.port
                detail[f"{role}_pid"] = server.process.pid
        alive = all(s.process.poll() is None for s in (routes.champion, routes.canary) if s is not None)
        return DeploymentState(
            champion=routes.champion.model if routes.champion else None,
            canary=routes.canary.model if routes.canary else None,
            canary_percent=routes.percent if routes.canary else 0,
            ready=alive,
            detail=detail,
        )

    def deploy(self, model: ModelVersion, percent: int) -> DeploymentState:
        with self._lock:
            routes = self.routes
            if routes.champion is None:
                self.routes = Routes(champion=self._start(model, self.cfg.champion_port, "champion"))
                return self.status()
            if routes.canary is not None:
                raise DeploymentError(
                    f"a canary (v{routes.canary.model.version}) is already live at {routes.percent} %",
                    hint="promote it or roll it back first (`bidflow canary promote | rollback`)",
                )
            port = self.cfg.canary_port if routes.champion.port != self.cfg.canary_port else self.cfg.champion_port
            canary = self._start(model, port, "canary")
            self.routes = replace(routes, canary=canary, percent=percent)
            return self.status()

    def promote(self) -> DeploymentState:
        with self._lock:
            routes = self.routes
            if routes.canary is None:
                raise DeploymentError("nothing to promote: no canary is live")
            old = routes.champion
            self.routes = Routes(champion=routes.canary)
            if old is not None:
                self._retire(old)
            return self.status()

    def rollback(self) -> DeploymentState:
        with self._lock:
            routes = self.routes
            if routes.canary is None:
                raise DeploymentError("nothing to roll back: no canary is live")
            self.routes = Routes(champion=routes.champion)
            self._retire(routes.canary)
            return self.status()

    # -- life cycle --

    def restore(self, state: DeploymentState) -> None:
        """Start the servers ``state`` describes (the last recorded one, after a router restart)."""
        with self._lock:
            if state.champion is None:
                return
            champion = self._start(state.champion, self.cfg.champion_port, "champion")
            canary = None
            if state.canary is not None and state.canary_percent > 0:
                canary = self._start(state.canary, self.cfg.canary_port, "canary")
            self.routes = Routes(champion=champion, canary=canary, percent=state.canary_percent if canary else 0)

    def shutdown(self) -> None:
        """Stop every server (the router is going away)."""
        with self._lock:
            routes, self.routes = self.routes, Routes()
            for server in (routes.canary, routes.champion):
                if server is not None:
                    server.stop(drain_timeout_s=5.0)
            for thread in self._retiring:  # a server still draining after a rollback or promotion
                thread.join(timeout=30)

    def _retire(self, server: Server) -> None:
        # The routes no longer name it; stop it once what it was sent has been answered.
        thread = threading.Thread(target=server.stop, name=f"stop-{server.port}", daemon=True)
        self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
        thread.start()

    def _start(self, model: ModelVersion, port: int, role: Role) -> Server:
        logs = self.cfg.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{role}-v{model.version}-{port}.log"
        argv = [
            sys.executable, "-m", "bidflow.serving",
            "--model", model.uri,
            "--name", self.endpoint,
            "--kind", self.cfg.kind,
            "--host", self.cfg.host,
            "--http-port", str(port),
            "--load-retry-s", "2",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        with log_path.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(model, port, process, log_path)
        try:
            self._wait_ready(server)
        except DeploymentError:
            server.stop(drain_timeout_s=0)
            raise
        log.info("%s v%s ready on port %d (pid %d)", role, model.version, port, process.pid)
        return server

    def _wait_ready(self, server: Server) -> None:
        url = f"http://{self.cfg.host}:{server.port}/v1/models/{self.endpoint}"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise DeploymentError(
                    f"the model server for v{server.model.version} exited with status {server.process.returncode}",
                    where=server.log_path,
                    got=_tail(server.log_path),
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200 and b'"ready":true' in response.read().replace(b" ", b""):
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise DeploymentError(
            f"the model server for v{server.model.version} was not ready after {self.ready_timeout_s:.0f} s",
            where=server.log_path,
            got=_tail(server.log_path),
        )


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-_LOG_TAIL_BYTES:]
    except OSError:
        return "(no log)"
    return data.decode("utf-8", "replace").strip() or "(empty log)"

"""The local backend: champion and canary model-server processes on 127.0.0.1 behind one router.

Each model runs in its own ``python -m bidflow.serving`` process (the same server the KServe image
runs), on one of two ports (``champion_port``, ``canary_port``; a promoted canary keeps its port).
The router (``bidflow.deploy.router``) reads ``ProcessBackend.routes`` for every request: one
immutable ``Routes`` object, replaced whole by a transition, so a request sees the old split or the
new one, never half of each.

No request is dropped by a switch: a request picks its server and counts itself in flight on it in
one step under ``routes_lock``, the lock a transition holds to replace the routes, so once the
routes no longer name a server every request that picked it is counted; the server is stopped only
after those have finished (its in-flight count drains to zero), and a new server joins the routes
only once it answers ready.

A router can die without stopping its servers (SIGKILL, OOM). Every server is started with a random
**start token** in its environment and recorded, token and pid, in ``servers.json`` in the state
folder before and after it starts. So:

* readiness counts only when the process listening on the port carries the token (``/proc``): a
  server left on the port by a dead router is never taken for the new one, whatever it answers;
* a restarted router (:meth:`ProcessBackend.restore`) finds the recorded servers by pid and token (or
  by token alone, for a server started just before its pid was recorded), adopts those that serve
  what the journal says and answer ready, and stops the rest. A pid that no longer carries its
  token is some other process now and is never signalled.

Without ``/proc`` (not Linux) neither check is possible: a port that is busy before a server starts
is refused instead, and leftovers must be stopped by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from bidflow.deploy.backend import DeploymentState, ModelVersion, Role
from bidflow.deploy.journal import FileLog, replay_journal
from bidflow.errors import DeploymentError

if TYPE_CHECKING:
    from bidflow.config import CanaryConfig
    from bidflow.deploy.journal import Transition

log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 300.0
DRAIN_TIMEOUT_S: Final = 30.0
START_TOKEN_ENV: Final = "BIDFLOW_START_TOKEN"
LEDGER_FILE: Final = "servers.json"
_LOG_TAIL_BYTES: Final = 2_000
_PROC: Final = Path("/proc")
_LISTEN: Final = "0A"  # TCP_LISTEN in /proc/net/tcp


class Process(Protocol):
    """What the backend needs of a server process: ``subprocess.Popen``, or :class:`AdoptedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class AdoptedProcess:
    """A model server started by an earlier router process: not a child, known by pid and start token.

    It counts as running while ``/proc/<pid>`` carries the token, so a recycled pid is never signalled.
    """

    def __init__(self, pid: int, token: str) -> None:
        self.pid = pid
        self.token = token
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not holds_token(self.pid, self.token):
            self.returncode = -1  # its exit status went to whoever reaped it
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return code

    def _signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


@dataclass(eq=False)
class Server:
    """One model-server process.

    Attributes:
        model: what it serves.
        port: its HTTP port on the backend's host.
        process: the running process.
        log_path: its stdout/stderr.
        token: its start token (in its environment; see the module docstring).
        inflight: requests the router has sent and not yet seen answered (incremented under the
            backend's ``routes_lock`` by the router's event loop, its only writer; the drain thread only reads).
    """

    model: ModelVersion
    port: int
    process: Process
    log_path: Path
    token: str = ""
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
        routes_lock: held while the routes are replaced, and by the router while a request picks its
            server and counts itself in flight on it (never across an ``await``).
    """

    cfg: CanaryConfig
    endpoint: str
    config_path: Path | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    routes: Routes = field(default_factory=Routes)
    kind: str = "local"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.routes_lock = threading.Lock()
        self._retiring: dict[int, threading.Thread] = {}
        self._ledger_lock = threading.Lock()
        self._servers: dict[str, Server] = {}  # token -> every server this backend runs or adopted

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

    def deploy(
        self,
        model: ModelVersion,
        percent: int,
        *,
        resource_version: str | None = None,
        record: Transition | None = None,
    ) -> DeploymentState:
        _local_only(resource_version, record)
        with self._lock:
            routes = self.routes
            if routes.champion is None:
                self._set_routes(Routes(champion=self._start(model, self.cfg.champion_port, "champion")))
                return self.status()
            if routes.canary is not None:
                raise DeploymentError(
                    f"a canary (v{routes.canary.model.version}) is already live at {routes.percent} %",
                    hint="promote it or roll it back first (`bidflow canary promote | rollback`)",
                )
            port = self.cfg.canary_port if routes.champion.port != self.cfg.canary_port else self.cfg.champion_port
            canary = self._start(model, port, "canary")
            self._set_routes(Routes(champion=routes.champion, canary=canary, percent=percent))
            return self.status()

    def promote(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        _local_only(resource_version, record)
        with self._lock:
            routes = self.routes
            if routes.canary is None:
                raise DeploymentError("nothing to promote: no canary is live")
            old = routes.champion
            self._set_routes(Routes(champion=routes.canary))
            if old is not None:
                self._retire(old)
            return self.status()

    def rollback(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        _local_only(resource_version, record)
        with self._lock:
            routes = self.routes
            if routes.canary is None:
                raise DeploymentError("nothing to roll back: no canary is live")
            self._set_routes(Routes(champion=routes.champion))
            self._retire(routes.canary)
            return self.status()

    # -- life cycle --

    def restore(self, state: DeploymentState) -> None:
        """Serve ``state`` (the journal's, after a router restart), adopting or stopping the servers left running.

        A recorded server that is still running, serves a model ``state`` names and answers ready is adopted;
        every other recorded server still running is stopped before anything new starts on its port.
        """
        with self._lock:
            self._load_ledger()
            wanted: list[tuple[Role, ModelVersion]] = []
            if state.champion is not None:
                wanted.append(("champion", state.champion))
                if state.canary is not None and state.canary_percent > 0:
                    wanted.append(("canary", state.canary))
            serving = {s for s in (self.routes.champion, self.routes.canary) if s is not None}
            keep: dict[Role, Server] = {}
            for role, model in wanted:
                found = next(
                    (
                        s
                        for s in self._servers.values()
                        if s.model == model and s not in keep.values() and (s in serving or self._answers_ready(s))
                    ),
                    None,
                )
                if found is not None:
                    keep[role] = found
            for server in list(self._servers.values()):
                if server not in keep.values():
                    log.info("stopping v%s on port %d (pid %d): not in the recorded deployment",
                             server.model.version, server.port, server.process.pid)  # fmt: skip
                    self._stop(server, 0.0)
            for role, model in wanted:
                if role not in keep:
                    used = {s.port for s in keep.values()}
                    preferred = self.cfg.champion_port if role == "champion" else self.cfg.canary_port
                    other = self.cfg.canary_port if role == "champion" else self.cfg.champion_port
                    keep[role] = self._start(model, preferred if preferred not in used else other, role)
            canary = keep.get("canary")
            self._set_routes(
                Routes(champion=keep.get("champion"), canary=canary, percent=state.canary_percent if canary else 0)
            )

    def shutdown(self) -> None:
        """Stop every server (the router is going away)."""
        with self._lock:
            routes = self.routes
            self._set_routes(Routes())
            for server in (routes.canary, routes.champion):
                if server is not None:
                    self._stop(server, 5.0)
            for thread in list(self._retiring.values()):  # a server still draining after a rollback or promotion
                thread.join(timeout=30)

    def server_command(self, model: ModelVersion, port: int) -> list[str]:
        """The model server's command line (tests run a stand-in through this)."""
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
        return argv

    def _set_routes(self, routes: Routes) -> None:
        with self.routes_lock:
            self.routes = routes

    def _retire(self, server: Server) -> None:
        # The routes no longer name it, and every request that picked it is counted: stop it once they are answered.
        thread = threading.Thread(target=self._stop, args=(server, DRAIN_TIMEOUT_S), name=f"stop-{server.port}")
        thread.daemon = True
        self._retiring = {p: t for p, t in self._retiring.items() if t.is_alive()} | {server.port: thread}
        thread.start()

    def _stop(self, server: Server, drain_timeout_s: float) -> None:
        server.stop(drain_timeout_s=drain_timeout_s)
        self._forget(server)

    def _start(self, model: ModelVersion, port: int, role: Role) -> Server:
        draining = self._retiring.get(port)
        if draining is not None:  # the server this port had is still answering its last requests
            draining.join(timeout=DRAIN_TIMEOUT_S + 20)
        self._check_port_free(port)
        logs = self.cfg.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{role}-v{model.version}-{port}.log"
        token = secrets.token_hex(16)
        # Recorded before the process exists, so a router killed right after the fork still finds it by token.
        pending = Server(model, port, AdoptedProcess(0, token), log_path, token)
        self._remember(pending)
        env = {**os.environ, START_TOKEN_ENV: token}
        try:
            with log_path.open("ab") as out:
                process = subprocess.Popen(
                    self.server_command(model, port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env,
                )  # fmt: skip
        except OSError as exc:
            self._forget(pending)
            raise DeploymentError(
                f"the model server for v{model.version} could not be started", where=log_path, got=repr(exc)
            ) from exc
        server = Server(model, port, process, log_path, token)
        try:
            self._remember(server)
            self._wait_ready(server)
        except DeploymentError:
            self._stop(server, 0.0)
            raise
        log.info("%s v%s ready on port %d (pid %d)", role, model.version, port, process.pid)
        return server

    def _check_port_free(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
            try:
                probe.bind((self.cfg.host, port))
                return
            except OSError as exc:
                got = repr(exc)
        raise DeploymentError(
            f"port {port} is in use by a process this deployment did not record",
            where=f"{self.cfg.host}:{port}",
            got=got,
            hint=f"stop it (`ss -ltnp 'sport = :{port}'` names it), or set canary.champion_port / canary_port",
        )

    def _wait_ready(self, server: Server) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise DeploymentError(
                    f"the model server for v{server.model.version} exited with status {server.process.returncode}",
                    where=server.log_path,
                    got=_tail(server.log_path),
                )
            if self._answers_ready(server):
                return
            time.sleep(0.2)
        raise DeploymentError(
            f"the model server for v{server.model.version} was not ready after {self.ready_timeout_s:.0f} s",
            where=server.log_path,
            got=_tail(server.log_path),
        )

    def _answers_ready(self, server: Server) -> bool:
        """Ready, and the answer came from ``server``'s own process (its start token holds the listening socket)."""
        url = f"http://{self.cfg.host}:{server.port}/v1/models/{self.endpoint}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status != 200 or b'"ready":true' not in response.read().replace(b" ", b""):
                    return False
        except (urllib.error.URLError, OSError):
            return False
        return listener_has_token(server.port, server.process.pid, server.token) is not False

    # -- the servers ledger (servers.json) --

    def _ledger_path(self) -> Path:
        return self.cfg.state / LEDGER_FILE

    def _remember(self, server: Server) -> None:
        """Record ``server``; a ledger that cannot be written refuses it (a server nobody recorded is a leftover)."""
        with self._ledger_lock:
            self._servers[server.token] = server
            try:
                self._save_ledger()
            except OSError as exc:
                raise DeploymentError(
                    f"the servers ledger cannot be written, so v{server.model.version} is not started",
                    where=self._ledger_path(),
                    got=repr(exc),
                    hint="free space on (or fix) the state folder (canary.state)",
                ) from exc

    def _forget(self, server: Server) -> None:
        with self._ledger_lock:
            if self._servers.get(server.token) is server:
                del self._servers[server.token]
                try:
                    self._save_ledger()
                except OSError as exc:  # harmless: a recorded pid that no longer carries its token is skipped
                    log.warning("%s not updated after v%s stopped: %s", self._ledger_path(), server.model.version, exc)

    def _save_ledger(self) -> None:
        entries = [
            {"token": s.token, "pid": s.process.pid or None, "port": s.port, "model": s.model.to_dict(),
             "log": str(s.log_path)}
            for s in self._servers.values()
        ]  # fmt: skip
        path = self._ledger_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            json.dump({"servers": entries}, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)

    def _load_ledger(self) -> None:
        """Take over the servers an earlier router process recorded and left running."""
        path = self._ledger_path()
        try:
            entries = json.loads(path.read_text(encoding="utf-8")).get("servers", [])
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("%s unreadable (%s): servers it recorded are not adopted", path, exc)
            return
        for entry in entries:
            try:
                token, port, model = str(entry["token"]), int(entry["port"]), ModelVersion.from_dict(entry["model"])
                pid = int(entry["pid"]) if entry.get("pid") else None
            except (KeyError, TypeError, ValueError):
                continue
            if token in self._servers:
                continue
            if pid is None or not holds_token(pid, token):
                pid = find_by_token(token)  # started, but killed with the router before its pid was recorded
            if pid is None:
                continue  # gone
            log_path = Path(entry.get("log") or self.cfg.state / "logs" / f"adopted-{port}.log")
            self._servers[token] = Server(model, port, AdoptedProcess(pid, token), log_path, token)
            log.info("found v%s on port %d (pid %d) left by an earlier router", model.version, port, pid)
        with self._ledger_lock:
            self._save_ledger()


def recover(backend: ProcessBackend, journal: FileLog) -> DeploymentState | None:
    """Bring ``backend`` to the state ``journal`` commits to (after a router restart); returns it.

    A transition whose intent is recorded without an outcome is carried out (the intent is the commit point: see
    ``bidflow.deploy.journal``) and its outcome recorded; if it cannot be (its server does not start), the state
    before it is restored and the intent recorded as aborted.
    """
    committed, pending = replay_journal(journal.records())
    if pending is None or pending.state is None:
        backend.restore(committed or DeploymentState(champion=None))
        return committed
    log.warning("completing the %s of v%s recorded before the router stopped",
                pending.action, pending.model.version if pending.model else "?")  # fmt: skip
    try:
        backend.restore(pending.state)
    except DeploymentError as exc:
        log.error("the interrupted %s cannot be completed (%s); restoring the state before it", pending.action, exc)
        backend.restore(committed or DeploymentState(champion=None))
        _close(journal, pending.outcome("aborted", None, reasons=(*pending.reasons, f"not completed: {exc.what}")))
        return committed
    reached = backend.status()
    _close(journal, pending.outcome("done", reached, reasons=(*pending.reasons, "completed after a router restart")))
    return reached


def _close(journal: FileLog, outcome: Transition) -> None:
    try:
        journal.append(outcome)
    except OSError as exc:  # the intent stays open: the next restart resolves it the same way
        log.error("the outcome of the interrupted %s was not recorded: %s", outcome.action, exc)


def holds_token(pid: int, token: str) -> bool:
    """Whether process ``pid`` runs with ``token`` as its start token (False when it cannot be read)."""
    if pid <= 0:
        return False
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{START_TOKEN_ENV}={token}".encode() in environ.split(b"\0")


def find_by_token(token: str) -> int | None:
    """The pid of a running process with ``token`` as its start token (None without ``/proc`` or none found)."""
    return next(iter(_token_pids(token)), None)


def listener_has_token(port: int, pid: int, token: str) -> bool | None:
    """Whether the socket listening on ``port`` is held by a process with ``token`` (``pid`` first).

    None when ``/proc`` cannot tell (not Linux). Worker processes inherit the token, so any of them may hold it.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    if holds_token(pid, token) and _holds_socket(pid, inodes):
        return True
    return any(_holds_socket(p, inodes) for p in _token_pids(token) if p != pid)


def _token_pids(token: str) -> list[int]:
    try:
        pids = sorted(int(p.name) for p in _PROC.iterdir() if p.name.isdigit())
    except OSError:
        return []
    return [p for p in pids if holds_token(p, token)]


def _listening_inodes(port: int) -> set[str] | None:
    tables = [_PROC / "net" / "tcp", _PROC / "net" / "tcp6"]
    if not any(t.exists() for t in tables):
        return None
    inodes = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    try:
        fds = list((_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if str(fd.readlink()) in wanted:
                return True
        except OSError:
            continue
    return False


def _local_only(resource_version: str | None, record: Transition | None) -> None:
    if resource_version is not None or record is not None:
        raise DeploymentError(
            "the local backend keeps no versions or records of its own: its controller checks and journals",
            got=f"resource_version={resource_version!r}, record={'given' if record else None}",
        )


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-_LOG_TAIL_BYTES:]
    except OSError:
        return "(no log)"
    return data.decode("utf-8", "replace").strip() or "(empty log)"

"""The canary controller: a backend that moves traffic, a log that records, a registry that mirrors.

Every transition goes through ``Controller``: the backend carries it out, the transition (actor,
reasons, metrics, resulting state) is appended to the log, then the MLflow registry is made to
say the same (``champion`` / ``canary`` aliases, rolled-back versions tagged).

Who runs a controller:

* **local backend**: the router process (``bidflow canary serve``) owns the model-server
  processes, so it runs the one controller; the CLI and the drift monitor ask it over HTTP
  (``RouterClient``), which gives every caller the same log and the same registry mirroring.
* **kserve backend**: whoever acts (the CLI, CI, the monitor in the cluster) runs a controller over
  ``KServeBackend`` with the log kept on the InferenceService itself. The monitor's environment has
  no MLflow, so a rollback it makes is mirrored into the registry by the next ``bidflow canary
  status`` (mirroring is idempotent: it sets the state, it does not replay events).
"""

from __future__ import annotations

import getpass
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bidflow.deploy.backend import Action, DeploymentBackend, DeploymentState, ModelVersion
from bidflow.deploy.journal import Transition, TransitionLog
from bidflow.errors import BidflowError, ConflictError, DeploymentError

if TYPE_CHECKING:
    from bidflow.config import Config

log = logging.getLogger(__name__)

Mirror = Callable[[DeploymentState, Sequence[Transition]], None]


def default_actor() -> str:
    """``cli:<user>`` for a person at a terminal."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class DeploymentController(Protocol):
    """What the CLI, CI and the monitor can ask of a deployment."""

    def status(self) -> DeploymentState: ...

    def transitions(self) -> list[Transition]: ...

    def deploy(
        self, model: ModelVersion, percent: int, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None
    ) -> Transition: ...

    def promote(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition: ...

    def rollback(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition: ...


@dataclass
class Controller:
    """Transitions over ``backend``, recorded in ``log`` and mirrored by ``mirror`` (when given)."""

    backend: DeploymentBackend
    log: TransitionLog
    mirror: Mirror | None = None

    def status(self) -> DeploymentState:
        return self.backend.status()

    def transitions(self) -> list[Transition]:
        return self.log.read()

    def deploy(
        self, model: ModelVersion, percent: int, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None
    ) -> Transition:
        if not 0 <= percent <= 100:
            raise DeploymentError("canary traffic percent must be between 0 and 100", got=str(percent))
        return self._record("deploy", model, self.backend.deploy(model, percent), actor, reasons, metrics)

    def promote(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition:
        canary = self._canary("promote")
        return self._record("promote", canary, self.backend.promote(), actor, reasons, metrics)

    def rollback(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition:
        canary = self._canary("roll back")
        return self._record("rollback", canary, self.backend.rollback(), actor, reasons, metrics)

    def sync_registry(self) -> None:
        """Mirror the current state and the whole log into the registry (idempotent)."""
        if self.mirror is not None:
            self.mirror(self.backend.status(), self.log.read())

    def _canary(self, verb: str) -> ModelVersion:
        state = self.backend.status()
        if state.canary is None or (verb == "roll back" and state.canary_percent == 0):
            raise DeploymentError(
                f"nothing to {verb}: no canary is live",
                got=f"champion {state.champion.version if state.champion else 'none'}",
                hint="deploy a canary first (`bidflow canary deploy --version N`)",
            )
        return state.canary

    def _record(
        self,
        action: Action,
        model: ModelVersion,
        state: DeploymentState,
        actor: str,
        reasons: Sequence[str],
        metrics: Any,
    ) -> Transition:
        transition = Transition(action, model, actor, tuple(reasons), dict(metrics or {}), state)
        self.log.append(transition)
        log.info("%s %s v%s by %s: %s", action, model.name, model.version, actor, "; ".join(reasons) or "-")
        if self.mirror is not None:
            try:
                self.mirror(state, self.log.read())
            except BidflowError as exc:  # traffic has moved and is recorded; the registry catches up later
                log.warning("registry not updated after %s (run `bidflow canary status` to retry): %s", action, exc)
        return transition


def registry_mirror(config: Config) -> Mirror:
    """A mirror into the MLflow registry of ``config`` (main environment only: imports mlflow lazily)."""

    def mirror(state: DeploymentState, transitions: Sequence[Transition]) -> None:
        from bidflow.modeling import registry

        live = [m for m in (state.champion, state.canary) if m is not None]
        if not live or not all(_registered(m) for m in live):
            return  # models served from folders or run URIs have no registry versions to point at
        rolled_back: dict[str, str] = {}
        for t in transitions:
            if t.action == "rollback" and t.model is not None and _registered(t.model):
                rolled_back[t.model.version] = "; ".join(t.reasons) or f"rolled back by {t.actor}"
        live_canary = state.canary if state.canary is not None and state.canary_percent > 0 else None
        registry.mirror_deployment(
            config.registry,
            live[0].name,
            champion_version=state.champion.version if state.champion else None,
            canary_version=live_canary.version if live_canary else None,
            rolled_back=rolled_back,
        )

    return mirror


def _registered(model: ModelVersion) -> bool:
    return model.version.isdigit() and model.uri.startswith("models:/")


class RouterClient:
    """The local backend's controller, reached over the router's admin API (``bidflow canary serve``)."""

    def __init__(self, url: str, timeout_s: float = 300.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})

    def status(self) -> DeploymentState:
        from bidflow.deploy.journal import state_from_dict

        return state_from_dict(self._call("GET", "/admin/state"))

    def transitions(self) -> list[Transition]:
        return [Transition.from_dict(t) for t in self._call("GET", "/admin/transitions")]

    def metrics(self) -> dict[str, Any]:
        """The router's per-role request counts, errors and latency percentiles (current window)."""
        result: dict[str, Any] = self._call("GET", "/admin/metrics")
        return result

    def deploy(
        self, model: ModelVersion, percent: int, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None
    ) -> Transition:
        body = {"model": model.to_dict(), "percent": percent} | _why(actor, reasons, metrics)
        return Transition.from_dict(self._call("POST", "/admin/deploy", body))

    def promote(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition:
        return Transition.from_dict(self._call("POST", "/admin/promote", _why(actor, reasons, metrics)))

    def rollback(self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None) -> Transition:
        return Transition.from_dict(self._call("POST", "/admin/rollback", _why(actor, reasons, metrics)))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            cls = ConflictError if exc.code == 409 else DeploymentError
            raise cls(detail, where=self.url + path, got=f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeploymentError(
                "the local deployment router is not running",
                where=self.url,
                got=str(getattr(exc, "reason", exc)),
                hint="start it with `bidflow canary serve` (it runs the champion and canary servers)",
            ) from exc


def _why(actor: str, reasons: Sequence[str], metrics: Any) -> dict[str, Any]:
    return {"actor": actor, "reasons": list(reasons), "metrics": metrics or {}}


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, AttributeError):
        return str(exc.reason)


def controller_for(config: Config, *, mirror: bool = True, image: str | None = None) -> DeploymentController:
    """The controller of ``config.canary.backend``.

    Args:
        config: the configuration (``canary`` section: backend, router address or namespace).
        mirror: mirror transitions into the MLflow registry (False in the monitor's environment).
        image: kserve backend: the model-server image a new InferenceService runs.
    """
    cfg = config.canary
    if cfg.backend == "local":
        from bidflow.monitoring.auth import monitor_token

        return RouterClient(f"http://{cfg.host}:{cfg.router_port}", token=monitor_token(config))
    from bidflow.deploy.kserve import InferenceServiceLog, KServeBackend

    backend = KServeBackend.from_config(cfg, image=image or default_image())
    return Controller(backend, InferenceServiceLog(backend), registry_mirror(config) if mirror else None)


def default_image() -> str:
    """The serving image of this release, named as the chart names it (``bidflow/serving:<version>``)."""
    from bidflow import __version__

    return f"bidflow/serving:{__version__.split('+')[0]}"

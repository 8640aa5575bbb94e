"""The canary controller: a backend that moves traffic, a log that records, a registry that mirrors.

Every transition goes through ``Controller``, one at a time:

1. it reads the state and checks the caller's expectations against it (compare-and-set): ``expect``, the
   state's ``detail["version"]`` the decision was based on (KServe: the InferenceService's resourceVersion;
   local: the journal's sequence number), and ``expect_canary``, the canary version the decision was about
   (the monitor rolls back the canary whose traffic drifted, never the one deployed since). A mismatch is a
   ``ConflictError`` and nothing changes;
2. the intent is recorded (the journal is written before the backend acts; a journal that cannot be written
   refuses the transition, nothing moves), the backend carries it out (KServe: the resourceVersion read in 1
   goes with the patch, so a change in between is refused by the apiserver, and the record rides in the same
   patch), then the outcome is recorded;
3. the MLflow registry is made to say the same (``champion`` / ``canary`` aliases, rolled-back versions tagged).

Once the backend has acted, the transition stands: an outcome that cannot be written (a full disk) is logged,
not raised, because the intent already committed it and a restart recovers the same state from it.

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
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from bidflow.deploy.backend import Action, DeploymentBackend, DeploymentState, ModelVersion
from bidflow.deploy.journal import Transition, TransitionLog, new_transition_id
from bidflow.errors import BidflowError, ConflictError, DeploymentError, StateUnavailable

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
        self,
        model: ModelVersion,
        percent: int,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
    ) -> Transition: ...

    def promote(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition: ...

    def rollback(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition: ...


@dataclass
class Controller:
    """Transitions over ``backend``, recorded in ``log`` and mirrored by ``mirror`` (when given).

    ``expect`` / ``expect_canary`` (every transition): act only if the state's ``detail["version"]`` / the live
    canary's version are still these, else ``ConflictError`` (see the module docstring).
    """

    backend: DeploymentBackend
    log: TransitionLog
    mirror: Mirror | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def status(self) -> DeploymentState:
        """The backend's state; ``detail["version"]`` is what a decision based on it passes back as ``expect``."""
        state = self.backend.status()
        if self.log.written_with_effect:  # the store versions itself (KServe: "" until the object exists)
            version = str(state.detail.get("resourceVersion") or "")
        else:  # the journal's sequence number: every transition appends to it
            version = str(len(self.log.records()))
        return replace(state, detail={**state.detail, "version": version})

    def transitions(self) -> list[Transition]:
        """What happened, oldest first (intents and aborted transitions are the journal's own bookkeeping)."""
        return self.log.read()

    def deploy(
        self,
        model: ModelVersion,
        percent: int,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
    ) -> Transition:
        if not 0 <= percent <= 100:
            raise DeploymentError("canary traffic percent must be between 0 and 100", got=str(percent))
        return self._transition("deploy", model, percent, actor, reasons, metrics, expect, None)

    def promote(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition:
        return self._transition("promote", None, 0, actor, reasons, metrics, expect, expect_canary)

    def rollback(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition:
        return self._transition("rollback", None, 0, actor, reasons, metrics, expect, expect_canary)

    def sync_registry(self) -> None:
        """Mirror the current state and the whole log into the registry (idempotent)."""
        if self.mirror is not None:
            self.mirror(self.backend.status(), self.transitions())

    def _transition(
        self,
        action: Action,
        model: ModelVersion | None,
        percent: int,
        actor: str,
        reasons: Sequence[str],
        metrics: Any,
        expect: str | None,
        expect_canary: str | None,
    ) -> Transition:
        with self._lock:  # read, check and act as one step (the local controller is the only writer)
            state = self.status()
            version = state.detail["version"]
            _check_expectations(action, state, version, expect, expect_canary)
            if model is None:
                model = _canary(state, "promote" if action == "promote" else "roll back")
            target = _target(state, action, model, percent)
            intent = Transition(
                action, model, actor, tuple(reasons), dict(metrics or {}), target, phase="intent",
                id=new_transition_id(),
            )  # fmt: skip
            if self.log.written_with_effect:  # one write: the record cannot exist without the effect or vice versa
                record = replace(intent, phase="done")
                reached = self._act(action, model, percent, resource_version=version or None, record=record)
                done = record.outcome("done", reached)
            else:
                done = self._journalled(intent, percent)
        log.info("%s %s v%s by %s: %s", action, model.name, model.version, actor, "; ".join(reasons) or "-")
        if self.mirror is not None:
            try:
                self.mirror(done.state or target, self.transitions())
            except BidflowError as exc:  # traffic has moved and is recorded; the registry catches up later
                log.warning("registry not updated after %s (run `bidflow canary status` to retry): %s", action, exc)
        return done

    def _journalled(self, intent: Transition, percent: int) -> Transition:
        """Intent, effect, outcome (see the module docstring for what each failure means)."""
        assert intent.model is not None
        try:
            self.log.append(intent)
        except OSError as exc:
            raise StateUnavailable(
                f"the transition journal cannot be written, so the {intent.action} was not carried out; nothing "
                "was changed",
                where=str(getattr(self.log, "path", "the transition journal")),
                got=repr(exc),
                hint="free space on (or fix) the state folder (canary.state), then run the command again",
            ) from exc
        try:
            reached = self._act(intent.action, intent.model, percent)
        except BidflowError as exc:  # a refusal: backends raise these before they move anything
            self._close(intent.outcome("aborted", None, reasons=(*intent.reasons, f"failed: {exc.what}")))
            raise
        except Exception as exc:
            # Unexpected, so it may have struck after the effect: record what the backend shows now, so the journal
            # never commits to a state nobody serves.
            now = self.backend.status()
            if intent.state is not None and _serving(now) == _serving(intent.state):
                self._close(intent.outcome("done", now))
            else:
                self._close(intent.outcome("aborted", None, reasons=(*intent.reasons, f"failed: {exc!r}")))
            raise
        done = intent.outcome("done", reached)
        self._close(done)
        return done

    def _close(self, outcome: Transition) -> None:
        try:
            self.log.append(outcome)
        except OSError as exc:
            # The intent is on disk: a restart resolves it to the same state, so the caller is told what happened.
            log.error("the %s outcome of %s was not recorded (%s); recovery on restart completes it",
                      outcome.phase, outcome.action, exc)  # fmt: skip

    def _act(
        self,
        action: Action,
        model: ModelVersion,
        percent: int,
        resource_version: str | None = None,
        record: Transition | None = None,
    ) -> DeploymentState:
        if action == "deploy":
            return self.backend.deploy(model, percent, resource_version=resource_version, record=record)
        if action == "promote":
            return self.backend.promote(resource_version=resource_version, record=record)
        return self.backend.rollback(resource_version=resource_version, record=record)


def _check_expectations(
    action: Action, state: DeploymentState, version: str, expect: str | None, expect_canary: str | None
) -> None:
    if expect is not None and expect != version:
        raise ConflictError(
            f"the deployment changed since the state this {action} was decided on; nothing was changed",
            got=f"version {expect} expected, now {version}",
            hint="read the state again (`bidflow canary status`) and decide again",
        )
    if expect_canary is not None:
        live = state.canary.version if state.canary is not None and state.canary_percent > 0 else None
        if live != expect_canary:
            raise ConflictError(
                f"the {action} was decided on canary v{expect_canary}, which is no longer the live canary; "
                "nothing was changed",
                got=f"live canary: {'v' + live if live else 'none'}",
                hint="the decision has to be made again on the current canary",
            )


def _serving(state: DeploymentState) -> tuple[ModelVersion | None, ModelVersion | None, int]:
    canary = state.canary if state.canary_percent > 0 else None
    return state.champion, canary, state.canary_percent if canary else 0


def _canary(state: DeploymentState, verb: str) -> ModelVersion:
    if state.canary is None or (verb == "roll back" and state.canary_percent == 0):
        raise DeploymentError(
            f"nothing to {verb}: no canary is live",
            got=f"champion {state.champion.version if state.champion else 'none'}",
            hint="deploy a canary first (`bidflow canary deploy --version N`)",
        )
    return state.canary


def _target(state: DeploymentState, action: Action, model: ModelVersion, percent: int) -> DeploymentState:
    """The state ``action`` is meant to reach from ``state`` (what an intent records)."""
    if action == "deploy":
        if state.champion is None:
            return DeploymentState(champion=model)
        return DeploymentState(champion=state.champion, canary=model, canary_percent=percent)
    if action == "promote":
        return DeploymentState(champion=model)
    return DeploymentState(champion=state.champion)


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
        self,
        model: ModelVersion,
        percent: int,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
    ) -> Transition:
        body = {"model": model.to_dict(), "percent": percent} | _why(actor, reasons, metrics, expect, None)
        return Transition.from_dict(self._call("POST", "/admin/deploy", body))

    def promote(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition:
        body = _why(actor, reasons, metrics, expect, expect_canary)
        return Transition.from_dict(self._call("POST", "/admin/promote", body))

    def rollback(
        self,
        *,
        actor: str,
        reasons: Sequence[str] = (),
        metrics: Any = None,
        expect: str | None = None,
        expect_canary: str | None = None,
    ) -> Transition:
        body = _why(actor, reasons, metrics, expect, expect_canary)
        return Transition.from_dict(self._call("POST", "/admin/rollback", body))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            cls = {409: ConflictError, 503: StateUnavailable}.get(exc.code, DeploymentError)
            raise cls(detail, where=self.url + path, got=f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeploymentError(
                "the local deployment router is not running",
                where=self.url,
                got=str(getattr(exc, "reason", exc)),
                hint="start it with `bidflow canary serve` (it runs the champion and canary servers)",
            ) from exc


def _why(
    actor: str, reasons: Sequence[str], metrics: Any, expect: str | None, expect_canary: str | None
) -> dict[str, Any]:
    body = {"actor": actor, "reasons": list(reasons), "metrics": metrics or {}}
    return body | {k: v for k, v in (("expect", expect), ("expect_canary", expect_canary)) if v is not None}


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

"""The monitor's core: served payloads in, drift windows, online recall and rollbacks out.

``Monitor`` has no HTTP in it (``bidflow.monitoring.service`` is the server), so a test can feed it
payloads and outcomes directly. It watches the deployment's kind (``canary.kind``): the kind's drift
shape maps each served call to monitored rows (the bid filter: one per auction, request features
from the same transform training uses plus the auction's mean score; a kind served as instances:
one per instance, its fields plus its prediction). Per role (champion, canary) it keeps:

* a **window** of those rows. When ``window_size`` rows have arrived the detector fitted for the
  model version that served them is run; the report is kept, exported as metrics and acted on.
* **online bid recall** on the exploration share (kinds with partners; others have none): explored
  auctions call every partner, so once the exchange reports which partners bid (``outcomes``) we
  know how many of those bids the model would have kept (score >= threshold).
* recent **scores**, for the population stability index of canary vs champion scores.

Actions: drift in the canary's traffic rolls the canary back through the deployment controller
(then the canary's window is cleared); drift in the champion's traffic raises an alert and a
retraining request, which ``bidflow.monitoring.retrain`` records and turns into at most one
training-pipeline run per cool-down. A payload that cannot be read is counted and skipped.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.deploy.analysis import RoleMetrics, WindowMetrics, analyse
from bidflow.errors import BidflowError, ConfigError, MonitorError
from bidflow.kinds import kind
from bidflow.monitoring.drift import Columns, drift_frame
from bidflow.monitoring.retrain import RetrainTrigger

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.deploy.canary import DeploymentController
    from bidflow.kinds.base import DriftShape
    from bidflow.monitoring.drift import DriftDetector, DriftReport

log = logging.getLogger(__name__)

ROLES: Final = ("champion", "canary")
_EXPLORED_KEPT: Final = 200_000  # explored auctions waiting for their outcomes
_SCORES_KEPT: Final = 20_000
_HISTORY_KEPT: Final = 500
_WINDOWS_KEPT_WAITING: Final = 3
_DETECTOR_RETRY_S: Final = 2.0
_PSI_BINS: Final = 10
_DETECTORS_KEPT: Final = 4
_VERSION: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PSI_FLOOR: Final = 1e-4


@dataclass
class Recall:
    """Bids seen on explored auctions and how many of them the model would have kept."""

    bids: int = 0
    kept: int = 0

    @property
    def value(self) -> float | None:
        return self.kept / self.bids if self.bids else None


@dataclass
class RoleWatch:
    """Everything the monitor keeps for one role."""

    version: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=_SCORES_KEPT))
    recall: Recall = field(default_factory=Recall)
    auctions: int = 0
    requests: deque[dict[str, Any]] = field(default_factory=deque)  # the latest v1 bodies, to explain a window

    def reset(self, version: str | None) -> None:
        self.version = version
        self.rows.clear()
        self.requests.clear()
        self.scores.clear()
        self.recall = Recall()
        self.auctions = 0


@dataclass(frozen=True)
class WindowResult:
    """One detection window's outcome (kept for status and the report)."""

    role: str
    version: str
    at: float
    report: dict[str, Any]
    action: str | None = None  # "rollback" | "alert" | None
    detected_at: float = 0.0  # when the test finished, before any action (``at``: after it)
    attribution: dict[str, Any] | None = None  # the features that moved the scores (``bidflow.monitoring.attribution``)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "version": self.version,
            "at": self.at,
            "detected_at": self.detected_at,
            "report": self.report,
            "action": self.action,
            "attribution": self.attribution,
        }


class Monitor:
    """Drift windows, online recall and the rollback trigger (see the module docstring).

    Args:
        config: ``monitor`` (window, p-value, detector folder) and ``canary`` (the watched kind, analysis limits).
        controller: the deployment to roll back; None watches only (no actions).
        detector_loader: version -> fitted detector (default: ``load_detector`` on the detector folder,
            ``<detector>/<version>/`` when it exists, else ``<detector>/`` itself).
        router_metrics: the router's per-role request/latency figures, for the SLO rules (local backend).
        state_dir: where retraining requests and runs are recorded (default ``canary.state``).
        retrain: the retraining trigger (default: one over ``monitor.retrain*`` in ``state_dir``).

    Raises:
        ConfigError: the deployment's kind has no drift shape (nothing to watch it with).
    """

    def __init__(
        self,
        config: Config,
        controller: DeploymentController | None,
        *,
        detector_loader: Callable[[str], DriftDetector] | None = None,
        router_metrics: Callable[[], Mapping[str, Any]] | None = None,
        state_dir: Path | None = None,
        retrain: RetrainTrigger | None = None,
    ) -> None:
        self.config = config
        self.kind = config.canary.kind
        self.shape: DriftShape = _shape(config)
        # Online labels come from explored auctions: only a kind that decides per partner has them.
        self._labelled = kind(config, self.kind).thresholded
        self.columns = Columns.of(self.shape)
        self.controller = controller
        self.router_metrics = router_metrics
        self.state_dir = state_dir or config.canary.state
        self.retrain = retrain or RetrainTrigger(config, self.state_dir)
        self._load = detector_loader or self._load_from_folder
        self._detectors: OrderedDict[str, DriftDetector] = OrderedDict()
        kept = config.explain.drift_requests
        self.watch = {role: RoleWatch(requests=deque(maxlen=kept)) for role in ROLES}
        self.explored: OrderedDict[str, tuple[str, dict[str, bool]]] = OrderedDict()
        self.unmatched: OrderedDict[str, set[str]] = OrderedDict()
        self.history: deque[WindowResult] = deque(maxlen=_HISTORY_KEPT)
        self.transitions: list[dict[str, Any]] = []
        self.counts = {"payloads": 0, "auctions": 0, "bad": 0, "outcomes": 0, "alerts": 0, "rollbacks": 0}
        self.errors: deque[str] = deque(maxlen=20)
        self.listeners: list[Callable[[WindowResult], None]] = []
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- intake --

    def payloads(self, records: Iterable[Any]) -> int:
        """Take served payloads (``{"role", "version", "ts", "request", "response"}``); returns how many were read."""
        read = 0
        with self._lock:
            for record in records:
                self.counts["payloads"] += 1
                try:
                    read += self._payload(record)
                except (KeyError, TypeError, ValueError, IndexError, BidflowError) as exc:
                    self.counts["bad"] += 1
                    self.errors.append(f"bad payload: {exc!r}"[:300])
            now = time.monotonic()
            ready = [
                role
                for role in ROLES
                if len(self.watch[role].rows) >= self.config.monitor.window_size
                and self._retry_at.get(role, 0.0) <= now
            ]
        for role in ready:
            self._close_window(role)
        return read

    def outcomes(self, records: Iterable[Any]) -> int:
        """Which partners bid on explored auctions: ``{"id": <auction id>, "bids": [partner, ...]}``."""
        matched = 0
        with self._lock:
            for record in records:
                try:
                    found = self.explored.pop(str(record["id"]), None)
                    bids = {str(p) for p in record["bids"]}
                except (KeyError, TypeError):
                    self.counts["bad"] += 1
                    continue
                if found is None:  # its payload has not arrived yet (batches travel separately)
                    self.unmatched[str(record["id"])] = bids
                    while len(self.unmatched) > _EXPLORED_KEPT:
                        self.unmatched.popitem(last=False)
                    continue
                self._count_recall(*found, bids)
                matched += 1
            self.counts["outcomes"] += matched
        return matched

    def _count_recall(self, role: str, would_call: Mapping[str, bool], bids: Iterable[str]) -> None:
        recall = self.watch[role].recall
        for partner in bids:
            if partner in would_call:
                recall.bids += 1
                recall.kept += would_call[partner]

    def _payload(self, record: Mapping[str, Any]) -> int:
        role = str(record["role"])
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        version = str(record["version"])
        watch = self.watch[role]
        if watch.version != version:
            watch.reset(version)  # a new model in this role: its own window
            if role == "canary":  # compare the new canary with the champion over the same stretch of traffic
                champion = self.watch["champion"]
                champion.scores.clear()
                champion.recall = Recall()
        ts_ms = int(float(record.get("ts") or time.time()) * 1000)
        # Mapped whole before anything is kept: a call that cannot be read adds nothing to the window.
        rows = self.shape.served(record["request"], record["response"], ts_ms)
        request = record["request"]
        if rows and isinstance(request, dict) and isinstance(request.get("instances"), list):
            watch.requests.append(request)  # v1 bodies only: the explain route speaks v1
        for row in rows:
            watch.rows.append(row.values)
            if row.score is not None:
                watch.scores.append(row.score)
            explored = row.exploration
            if explored is not None:
                bids = self.unmatched.pop(explored.id, None)
                if bids is not None:
                    self._count_recall(role, explored.would_call, bids)
                    self.counts["outcomes"] += 1
                else:
                    self.explored[explored.id] = (role, dict(explored.would_call))
                    while len(self.explored) > _EXPLORED_KEPT:
                        self.explored.popitem(last=False)
            watch.auctions += 1
            self.counts["auctions"] += 1
        return len(rows)

    # -- windows --

    def _close_window(self, role: str) -> None:
        with self._lock:
            watch = self.watch[role]
            rows, watch.rows = watch.rows, []
            version = watch.version
        if version is None or not rows:
            return
        try:
            detector = self._detector(version)
        except MonitorError as exc:
            # Its detector is fitted right after the deploy: keep the rows (the newest few windows) and try again.
            with self._lock:
                keep = self.config.monitor.window_size * _WINDOWS_KEPT_WAITING
                if watch.version == version:
                    watch.rows = (rows + watch.rows)[-keep:]
                self._retry_at[role] = time.monotonic() + _DETECTOR_RETRY_S
            self.errors.append(exc.render()[:300])
            log.warning("no drift detector yet for %s v%s: %s", role, version, exc.what)
            return
        try:
            report = detector.predict(drift_frame(rows, self.columns))
        except BidflowError as exc:
            self.errors.append(exc.render()[:300])
            log.error("drift check skipped for %s v%s: %s", role, version, exc.render())
            return
        detected_at = time.time()
        action, attribution = self._act(role, version, report)
        result = WindowResult(role, version, time.time(), report.to_dict(), action, detected_at, attribution)
        self.history.append(result)
        for listener in self.listeners:
            listener(result)

    def _act(self, role: str, version: str, report: DriftReport) -> tuple[str | None, dict[str, Any] | None]:
        """Roll a drifted canary back or raise a champion alert; (the action, the window's attribution)."""
        if role == "champion":
            if not report.drift:
                return None, None
            attribution = self._attribution(role, version)
            self._alert(version, report, attribution)
            return "alert", attribution
        window = self.window_metrics(report.drifted)
        verdict = analyse(window, self.config.canary, labelled=self._labelled)
        if verdict.outcome != "rollback":
            return None, None
        if self.controller is None:
            log.warning("canary v%s should be rolled back (%s); no controller", version, "; ".join(verdict.reasons))
            return None, None
        # Before the rollback: afterwards the canary's server may be gone (the local backend retires it).
        attribution = self._attribution(role, version)
        try:
            transition = self.controller.rollback(
                actor="monitor",
                reasons=[*verdict.reasons, *_attribution_reason(attribution)],
                metrics={"window": window.to_dict(), "drift": report.to_dict(), "attribution": attribution},
                # The window judged this version: if another canary is live by now, the decision is not about it.
                expect_canary=version,
            )
        except BidflowError as exc:
            self.errors.append(f"rollback failed: {exc.render()}"[:300])
            log.error("rollback of canary v%s failed: %s", version, exc.render())
            return None, attribution
        self.counts["rollbacks"] += 1
        self.transitions.append(transition.to_dict())
        with self._lock:
            self.watch["canary"].reset(None)
        log.warning("canary v%s rolled back: %s", version, "; ".join(verdict.reasons))
        return "rollback", attribution

    def _alert(self, version: str, report: DriftReport, attribution: dict[str, Any]) -> None:
        self.counts["alerts"] += 1
        drifted = f"drift in the champion's traffic (v{version}): {', '.join(report.drifted)}"
        reason = "; ".join([drifted, *_attribution_reason(attribution)])
        try:
            self.retrain.request(version=version, reason=reason, drift=report.to_dict() | {"attribution": attribution})
        except OSError as exc:  # the state folder is not writable: the alert stands, the window goes on
            self.errors.append(f"retraining request not recorded: {exc!r}"[:300])
            log.error("%s: retraining request not recorded: %s", reason, exc)

    def _attribution(self, role: str, version: str) -> dict[str, Any]:
        """Which features' contributions moved in ``role``'s recent traffic (or why that is not known)."""
        from bidflow.monitoring.attribution import REFERENCE_FILE, attribute, read_reference_contributions

        with self._lock:
            requests = list(self.watch[role].requests)
        try:
            reference = read_reference_contributions(self._version_folder(version) / REFERENCE_FILE)
            return attribute(self.config, role, version, requests, reference)
        except MonitorError as exc:
            self.errors.append(f"no attribution for {role} v{version}: {exc.render()}"[:300])
            log.warning("no attribution for %s v%s: %s", role, version, exc.render())
            return {"role": role, "version": version, "error": exc.render()[:300]}

    def window_metrics(self, drifted: Iterable[str] = ()) -> WindowMetrics:
        """Champion vs canary now: router figures (when known), online recall, score PSI, drift."""
        router = dict(self.router_metrics()) if self.router_metrics is not None else {}

        def side(role: str) -> RoleMetrics:
            figures = router.get(role) or {}
            recall = self.watch[role].recall
            return RoleMetrics(
                requests=int(figures.get("requests", self.watch[role].auctions)),
                errors=int(figures.get("errors", 0)),
                p99_ms=figures.get("p99_ms"),
                explored_bids=recall.bids,
                recall=recall.value,
            )

        return WindowMetrics(side("champion"), side("canary"), self.score_psi(), tuple(drifted))

    def score_psi(self) -> float | None:
        """PSI of the canary's recent mean scores against the champion's (None with too few)."""
        reference, current = np.asarray(self.watch["champion"].scores), np.asarray(self.watch["canary"].scores)
        if len(reference) < 100 or len(current) < 100:
            return None
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, _PSI_BINS + 1)[1:-1]))
        expected = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1) / len(reference)
        actual = np.bincount(np.searchsorted(edges, current), minlength=len(edges) + 1) / len(current)
        e, a = np.clip(expected, _PSI_FLOOR, None), np.clip(actual, _PSI_FLOOR, None)
        value = float(np.sum((a - e) * np.log(a / e)))
        return value if math.isfinite(value) else None

    def _detector(self, version: str) -> DriftDetector:
        if version not in self._detectors:
            self._detectors[version] = self._load(version)  # a failed load is not cached: retried next window
            while len(self._detectors) > _DETECTORS_KEPT:  # champion, canary and a few just replaced
                self._detectors.popitem(last=False)
        self._detectors.move_to_end(version)
        return self._detectors[version]

    def _load_from_folder(self, version: str) -> DriftDetector:
        from bidflow.monitoring.drift import load_detector

        folder = self._version_folder(version)
        if not folder.exists():
            raise MonitorError(
                f"no fitted drift detector for model version {version}",
                where=folder,
                hint="fit one at training time: `python -m bidflow.monitoring fit` in the monitor environment",
            )
        return load_detector(folder)

    def _version_folder(self, version: str) -> Path:
        """A version's detector and reference contributions: in ``<detector>/<version>/``, else ``<detector>/``."""
        if not _VERSION.fullmatch(version) or version in {".", ".."}:
            # A version becomes a folder name below monitor.detector: never a path of its own choosing.
            raise MonitorError("a model version is not a plain name", got=repr(version)[:80])
        root = self.config.monitor.detector
        return root / version if (root / version).is_dir() else root

    # -- status --

    def status(self, *, history: bool = True) -> dict[str, Any]:
        """What ``GET /status`` answers: windows, recall, latest reports, actions, counts; ``history``: every window."""
        with self._lock:
            roles = {
                role: {
                    "version": w.version,
                    "window_fill": len(w.rows),
                    "window_size": self.config.monitor.window_size,
                    "auctions": w.auctions,
                    "explored_bids": w.recall.bids,
                    "online_recall": w.recall.value,
                }
                for role, w in self.watch.items()
            }
            latest = {r.role: r.to_dict() for r in self.history}
            retrain = self.retrain.status()
            return {
                "kind": self.kind,
                "roles": roles,
                "score_psi": self.score_psi(),
                "latest": latest,
                "history": [r.to_dict() for r in self.history] if history else [],
                "transitions": list(self.transitions),
                "retrain": retrain,
                "counts": dict(self.counts) | retrain["counts"],
                "errors": list(self.errors),
            }


def _attribution_reason(attribution: Mapping[str, Any]) -> list[str]:
    """The attribution as a reason line (none when there is none)."""
    from bidflow.modeling.explain import describe_shift

    moved = attribution.get("features")
    return [f"contributions shifted most: {describe_shift(moved)}"] if moved else []


def _shape(config: Config) -> DriftShape:
    """The drift shape of the deployment's kind."""
    watched = kind(config, config.canary.kind)
    if watched.drift is None:
        raise ConfigError(
            f"the deployment's kind '{watched.name}' has no drift shape: the monitor cannot watch it",
            where="canary.kind",
            hint="give the kind a `drift` (bidflow.kinds.base.DriftShape, or instance_drift for instance kinds)",
        )
    return watched.drift

"""The KServe backend: champion and canary as one v1beta1 InferenceService, moved with KServe's canaryTrafficPercent.

Two parts here, on two modules beside it:

* :class:`KServeBackend`, a :class:`~bidflow.deploy.backend.DeploymentBackend` that sends the spec of
  :func:`~bidflow.deploy.kserve_spec.inference_service` (a pure builder) through
  :class:`~bidflow.deploy.kserve_api.InferenceServiceClient` (the ``kubernetes`` client's ``CustomObjectsApi``,
  refusals explained), and
* :class:`InferenceServiceLog`, a :class:`~bidflow.deploy.journal.TransitionLog` kept in an annotation of the same
  InferenceService, so the cluster holds its own history.

KServe's canary semantics (serverless mode only; see KServe's "Canary Rollout Strategy" docs):

* the first revision of an InferenceService gets 100 % of the traffic;
* a spec change while ``spec.predictor.canaryTrafficPercent`` is set creates a new revision that gets that share,
  the last revision that had 100 % (``LatestRolledoutRevision``) keeps the rest;
* **promote**: remove ``canaryTrafficPercent`` (the latest revision takes 100 %);
* **rollback**: ``canaryTrafficPercent: 0`` (everything back on the last rolled-out revision; the canary revision
  stays, idle).

KServe keeps the revisions but not *which model* each serves in a form a client can read without Knative, so the
backend records that itself, as JSON ``ModelVersion`` objects in annotations of the InferenceService:

============================ ==================================================================================
``bidflow.io/champion``      the model the last rolled-out revision serves
``bidflow.io/canary``        the model under test (absent when no canary is live)
``bidflow.io/rolled-back``   every model rolled back so far (a list, oldest first, at most 50)
``bidflow.io/transitions``   the :class:`InferenceServiceLog` (a list of transitions, newest last, at most 50)
============================ ==================================================================================

After a rollback the spec still names the rolled-back model at 0 %: the champion is served only because
``canaryTrafficPercent`` is 0. ``bidflow.io/canary`` is removed, so ``status()`` reports no canary and ``promote``
is refused; the next ``deploy`` replaces the predictor with the new model (a new revision at the new share, split
against the champion's revision, which is still KServe's ``LatestRolledoutRevision``). Do not remove
``canaryTrafficPercent`` by hand after a rollback: that would roll the rejected model out to 100 %.

Every write is a JSON merge patch carrying the ``metadata.resourceVersion`` it was based on, so the apiserver refuses
it (409) when anyone changed the InferenceService in between; that becomes :class:`~bidflow.errors.ConflictError`.
A caller that decided on an earlier ``status()`` passes its ``detail["resourceVersion"]`` to ``deploy`` /
``promote`` / ``rollback`` (``resource_version=``) and gets ``ConflictError`` if anything changed since. Transitions
are never retried: the decision has to be made again. The controller passes the resourceVersion of the state it
checked, and the transition's record (``record=``) rides in the same patch as its effect: the log and the traffic
cannot disagree, whatever dies in between. The verbs used are ``get`` and ``patch`` (and ``create`` for
the very first deploy), so the chart's rollback-controller Role (get/list/watch/patch) is enough to roll back.

Operators must know:

* KServe copies the InferenceService's annotations and labels onto each Knative revision, so changing one starts a
  new revision of the current spec. Add the four ``bidflow.io/*`` keys above (:data:`BOOKKEEPING_ANNOTATIONS`) to
  ``serviceAnnotationDisallowedList`` in KServe's ``inferenceservice-config`` ConfigMap (``deploy`` section),
  or every recorded transition restarts the predictor pods (same model, but a rollout).
* KServe documents canary rollouts for its serverless (Knative) mode; check your KServe release before relying on
  ``canaryTrafficPercent`` in RawDeployment (Standard) mode.
* Do not let the chart (``bidFilter.enabled``) and this backend manage the same InferenceService.

Validated on paper only (the test apiserver has no KServe controller, webhook or Knative): the traffic split itself,
``status.conditions``, the storage initializer. The tests cover every request against a real kube-apiserver.

Nothing here imports ``kserve``: the drift monitor's environment (no kserve, but ``kubernetes``) rolls back too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.journal import Transition
from bidflow.deploy.kserve_api import InferenceServiceClient, api_client_from_environment
from bidflow.deploy.kserve_spec import MODEL_ANNOTATION, inference_service
from bidflow.deploy.kserve_spec import annotation_json as _json
from bidflow.errors import ConflictError, DeploymentError

if TYPE_CHECKING:
    from bidflow.config import CanaryConfig

CHAMPION_ANNOTATION: Final = "bidflow.io/champion"
CANARY_ANNOTATION: Final = "bidflow.io/canary"
ROLLED_BACK_ANNOTATION: Final = "bidflow.io/rolled-back"
TRANSITIONS_ANNOTATION: Final = "bidflow.io/transitions"
BOOKKEEPING_ANNOTATIONS: Final = (
    CHAMPION_ANNOTATION,
    CANARY_ANNOTATION,
    ROLLED_BACK_ANNOTATION,
    TRANSITIONS_ANNOTATION,
)
"""Annotations the backend rewrites on transitions: list them in KServe's ``serviceAnnotationDisallowedList``."""

LOG_LIMIT: Final = 50
MAX_ANNOTATION_BYTES: Final = 128 * 1024  # Kubernetes allows 256 KiB for all annotations of an object together
REQUEST_TIMEOUT_S: Final = 30.0


# --- the backend --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Observed:
    """What one read of the InferenceService says (bookkeeping annotations parsed)."""

    obj: dict[str, Any]
    resource_version: str
    champion: ModelVersion | None
    canary: ModelVersion | None
    rolled_back: list[dict[str, Any]]


class KServeBackend:
    """Champion and canary as one InferenceService (see the module docstring for the semantics).

    Attributes:
        kind: ``"kserve"`` (the backend's kind; ``model_kind`` is the model kind it serves).
        namespace, name: the InferenceService.
    """

    kind = "kserve"

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str,
        name: str,
        image: str,
        service_account: str | None = None,
        monitor_url: str | None = None,
        endpoint: str | None = None,
        kind: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        """Args:
        api_client: a ``kubernetes.client.ApiClient`` (see :meth:`from_config`).
        namespace, name: the InferenceService to manage.
        image, service_account, monitor_url, endpoint, kind: passed to :func:`inference_service` on every deploy
            (``monitor_url`` None leaves an existing payload logger as it is).
        timeout_s: per-request timeout.
        """
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.image = image
        self.service_account = service_account
        self.monitor_url = monitor_url
        self.endpoint = endpoint
        self.model_kind = kind
        self._isvc = InferenceServiceClient(api_client, namespace, name, timeout_s)

    @classmethod
    def from_config(
        cls,
        cfg: CanaryConfig,
        image: str,
        *,
        service_account: str | None = None,
        monitor_url: str | None = None,
        endpoint: str | None = None,
    ) -> KServeBackend:
        """A backend for ``cfg.namespace``/``cfg.inference_service``, with the pod's ServiceAccount when running in a
        cluster, else the current kubeconfig context.

        ``cfg.monitor_url`` is not used: it is the local backend's loopback address; pass the monitor's in-cluster
        URL as ``monitor_url``.
        """
        return cls(
            api_client_from_environment(),
            namespace=cfg.namespace,
            name=cfg.inference_service,
            image=image,
            service_account=service_account,
            monitor_url=monitor_url,
            endpoint=endpoint,
            kind=cfg.kind,
        )

    # -- DeploymentBackend --

    def status(self) -> DeploymentState:
        """The state recorded on the InferenceService.

        ``ready`` is True only when KServe reports the ``Ready`` condition True for the current generation. Without
        a status (no KServe controller has reconciled it yet, or none is running) it is False, with
        ``detail["readiness"]`` saying so: nobody has confirmed that anything serves.
        """
        observed = self._read()
        if observed is None:
            return DeploymentState(
                champion=None,
                ready=False,
                detail={**self._where(), "exists": False, "readiness": "no InferenceService yet"},
            )
        return self._state(observed)

    def deploy(
        self,
        model: ModelVersion,
        percent: int,
        *,
        resource_version: str | None = None,
        record: Transition | None = None,
    ) -> DeploymentState:
        """Create the InferenceService with ``model`` as the champion, or start ``model`` as the canary at ``percent``.

        ``resource_version`` (all three transitions): act only if the InferenceService is still at this version,
        e.g. the ``status().detail["resourceVersion"]`` a decision was based on; otherwise ``ConflictError``.
        Default: the version just read, so only a write racing this very call conflicts.
        ``record`` (all three): appended to ``bidflow.io/transitions`` in the same write as the effect.
        """
        if not 0 <= percent <= 100:
            raise DeploymentError("canary traffic percent must be between 0 and 100", got=str(percent))
        observed = self._read()
        if observed is None:
            if resource_version is not None:
                raise self._changed(resource_version, None, "the InferenceService no longer exists")
            body = self._spec(model, canary_percent=None)
            body["metadata"]["annotations"] = {CHAMPION_ANNOTATION: _json(model.to_dict())}
            if record is not None:
                body["metadata"]["annotations"][TRANSITIONS_ANNOTATION] = _log_text([], record, LOG_LIMIT)
            return self._state(self._observe(self._isvc.create(body)))
        champion = observed.champion
        if champion is None:
            raise self._refusal(
                observed,
                resource_version,
                DeploymentError(
                    f"the InferenceService exists but was not created by bidflow (no {CHAMPION_ANNOTATION} annotation)",
                    where=self._isvc.ref,
                    hint="install it with the chart's bidFilter.modelVersion set (it records the champion), or "
                    "point canary.inference_service at another name",
                ),
            )
        if observed.canary is not None:
            raise self._refusal(
                observed,
                resource_version,
                DeploymentError(
                    f"a canary (v{observed.canary.version}) is already live at {self._percent(observed.obj)} %",
                    where=self._isvc.ref,
                    got=f"deploy of v{model.version}",
                    hint="promote it or roll it back first (`bidflow canary promote | rollback`)",
                ),
            )
        if model == champion:
            raise self._refusal(
                observed,
                resource_version,
                DeploymentError(
                    f"v{model.version} is already the champion", where=self._isvc.ref, hint="deploy another version"
                ),
            )
        spec = self._spec(model, canary_percent=percent)
        predictor = spec["spec"]["predictor"]
        # minReplicas/maxReplicas stay as they are (an operator may have tuned them); the rest follows the model.
        for key in ("minReplicas", "maxReplicas"):
            predictor.pop(key)
        patch = {
            "metadata": {
                "labels": spec["metadata"]["labels"],
                "annotations": {CANARY_ANNOTATION: _json(model.to_dict())},
            },
            "spec": {"predictor": predictor},
        }
        return self._write(observed, patch, resource_version, record)

    def promote(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        """The canary takes all traffic (``canaryTrafficPercent`` removed) and becomes the champion."""
        observed = self._read_existing("promote", resource_version)
        canary = observed.canary
        if canary is None:
            raise self._refusal(
                observed,
                resource_version,
                DeploymentError(
                    "nothing to promote: no canary is live", where=self._isvc.ref, hint="deploy a canary first"
                ),
            )
        patch = {
            "metadata": {"annotations": {CHAMPION_ANNOTATION: _json(canary.to_dict()), CANARY_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        }
        return self._write(observed, patch, resource_version, record)

    def rollback(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        """The canary gets no traffic (``canaryTrafficPercent: 0``); it is recorded in ``bidflow.io/rolled-back``."""
        observed = self._read_existing("roll back", resource_version)
        canary = observed.canary
        if canary is None:
            raise self._refusal(
                observed,
                resource_version,
                DeploymentError(
                    "nothing to roll back: no canary is live", where=self._isvc.ref, hint="deploy a canary first"
                ),
            )
        entry = canary.to_dict()
        rolled_back = [*(m for m in observed.rolled_back if m != entry), entry][-LOG_LIMIT:]
        patch = {
            "metadata": {"annotations": {CANARY_ANNOTATION: None, ROLLED_BACK_ANNOTATION: _json(rolled_back)}},
            "spec": {"predictor": {"canaryTrafficPercent": 0}},
        }
        return self._write(observed, patch, resource_version, record)

    # -- helpers --

    def rolled_back(self) -> list[ModelVersion]:
        """Every model rolled back so far, oldest first."""
        observed = self._read()
        return [] if observed is None else _models(observed.rolled_back)

    def _spec(self, model: ModelVersion, canary_percent: int | None = None) -> dict[str, Any]:
        return inference_service(
            self.name,
            self.namespace,
            model,
            image=self.image,
            canary_percent=canary_percent,
            service_account=self.service_account,
            monitor_url=self.monitor_url,
            endpoint=self.endpoint,
            kind=self.model_kind,
        )

    def _read(self) -> _Observed | None:
        obj = self._isvc.get()
        return None if obj is None else self._observe(obj)

    def _read_existing(self, verb: str, resource_version: str | None) -> _Observed:
        observed = self._read()
        if observed is None:
            if resource_version is not None:
                raise self._changed(resource_version, None, "the InferenceService no longer exists")
            raise DeploymentError(
                f"nothing to {verb}: the InferenceService does not exist",
                where=self._isvc.ref,
                hint="deploy a champion first (`bidflow canary deploy --version N`)",
            )
        return observed

    def _refusal(self, observed: _Observed, resource_version: str | None, error: DeploymentError) -> DeploymentError:
        """``error``, unless the object changed since ``resource_version``: then the decision is stale (a conflict)."""
        if resource_version is not None and resource_version != observed.resource_version:
            return self._changed(resource_version, observed.resource_version, error.what)
        return error

    def _changed(self, expected: str, now: str | None, consequence: str) -> ConflictError:
        return ConflictError(
            "someone else changed the InferenceService since the state this decision was based on; nothing was changed",
            where=self._isvc.ref,
            got=f"resourceVersion {expected} expected, now {now or 'deleted'} ({consequence})",
            hint=f"re-run the command (it re-reads the state); see `kubectl get isvc -n {self.namespace} {self.name} "
            "-o yaml`",
        )

    def _write(
        self, observed: _Observed, patch: dict[str, Any], resource_version: str | None, record: Transition | None
    ) -> DeploymentState:
        if record is not None:
            entries = _json_list(
                ((observed.obj.get("metadata") or {}).get("annotations") or {}).get(TRANSITIONS_ANNOTATION),
                TRANSITIONS_ANNOTATION,
                self._isvc.ref,
            )
            patch["metadata"]["annotations"][TRANSITIONS_ANNOTATION] = _log_text(entries, record, LOG_LIMIT)
        return self._state(self._observe(self._isvc.patch(resource_version or observed.resource_version, patch)))

    def _observe(self, obj: dict[str, Any]) -> _Observed:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        rolled_back = _json_list(annotations.get(ROLLED_BACK_ANNOTATION), ROLLED_BACK_ANNOTATION, self._isvc.ref)
        return _Observed(
            obj=obj,
            resource_version=str(obj["metadata"]["resourceVersion"]),
            champion=_model(annotations.get(CHAMPION_ANNOTATION), CHAMPION_ANNOTATION, self._isvc.ref),
            canary=_model(annotations.get(CANARY_ANNOTATION), CANARY_ANNOTATION, self._isvc.ref),
            rolled_back=[m for m in rolled_back if isinstance(m, dict)],
        )

    def _state(self, observed: _Observed) -> DeploymentState:
        obj = observed.obj
        metadata = obj.get("metadata") or {}
        status = obj.get("status") or {}
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        ready, readiness = _readiness(status, metadata.get("generation"))
        detail: dict[str, Any] = {
            **self._where(),
            "exists": True,
            "resourceVersion": observed.resource_version,
            "generation": metadata.get("generation"),
            "readiness": readiness,
            "spec_canary_traffic_percent": predictor.get("canaryTrafficPercent"),
            "rolled_back": [m.version for m in _models(observed.rolled_back)],
        }
        if status.get("url"):
            detail["url"] = status["url"]
        spec_model = _model(
            (predictor.get("annotations") or {}).get(MODEL_ANNOTATION), MODEL_ANNOTATION, self._isvc.ref
        )
        if spec_model is not None:
            detail["spec_model"] = spec_model.to_dict()
        return DeploymentState(
            champion=observed.champion,
            canary=observed.canary,
            canary_percent=self._percent(obj) if observed.canary is not None else 0,
            ready=ready,
            detail=detail,
        )

    @staticmethod
    def _percent(obj: dict[str, Any]) -> int:
        value = ((obj.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0

    def _where(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "inference_service": self.name}


def _readiness(status: dict[str, Any], generation: Any) -> tuple[bool, str]:
    conditions = status.get("conditions") or []
    ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)
    if ready is None:
        return False, "unknown: no Ready condition (the KServe controller has not reported on it)"
    observed = status.get("observedGeneration")
    if isinstance(observed, int) and isinstance(generation, int) and observed < generation:
        return False, f"rolling out: KServe has seen generation {observed} of {generation}"
    if ready.get("status") == "True":
        return True, "ready"
    reason = ready.get("reason") or ready.get("message") or ready.get("status", "?")
    return False, f"not ready: {reason}"


# --- the transition log -------------------------------------------------------------------------------------------


class InferenceServiceLog:
    """Transitions in the ``bidflow.io/transitions`` annotation of the InferenceService (JSON list, newest last).

    At most ``limit`` transitions are kept (and fewer if they would exceed 128 KiB: Kubernetes allows 256 KiB of
    annotations per object). Each append is a read and a merge patch carrying that read's resourceVersion; when
    someone else wrote in between (409), the append re-reads and tries again (up to ``attempts`` times) — an append
    does not depend on the state it read, so nothing is lost or overwritten — then gives up with ``ConflictError``.

    The controller does not append transitions here: :class:`KServeBackend` writes each record in the patch that
    carries the transition out (``written_with_effect``).
    """

    written_with_effect = True

    def __init__(self, backend: KServeBackend, *, limit: int = LOG_LIMIT, attempts: int = 3) -> None:
        """Args:
        backend: whose InferenceService (and client) to use.
        limit: transitions kept, newest last.
        attempts: tries of an append that meets concurrent writes (409).
        """
        if limit < 1 or attempts < 1:
            raise ValueError("limit and attempts must be at least 1")
        self.limit = limit
        self.attempts = attempts
        self._isvc = backend._isvc

    def append(self, transition: Transition) -> None:
        for attempt in range(1, self.attempts + 1):
            obj = self._isvc.get()
            if obj is None:
                raise DeploymentError(
                    "cannot record the transition: the InferenceService does not exist",
                    where=self._isvc.ref,
                    hint="the first deploy creates it",
                )
            text = _log_text(self._entries(obj), transition, self.limit)
            patch = {"metadata": {"annotations": {TRANSITIONS_ANNOTATION: text}}}
            try:
                self._isvc.patch(str(obj["metadata"]["resourceVersion"]), patch)
                return
            except ConflictError:
                if attempt == self.attempts:
                    raise

    def read(self) -> list[Transition]:
        obj = self._isvc.get()
        if obj is None:
            return []
        found = []
        for entry in self._entries(obj):
            try:
                found.append(Transition.from_dict(entry))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # an entry edited by hand into something unreadable; the rest still counts
        return found

    def records(self) -> list[Transition]:
        return self.read()  # every record here is a transition that happened (written with its effect)

    def _entries(self, obj: dict[str, Any]) -> list[Any]:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return _json_list(annotations.get(TRANSITIONS_ANNOTATION), TRANSITIONS_ANNOTATION, self._isvc.ref)


def _log_text(entries: list[Any], transition: Transition, limit: int) -> str:
    """The ``bidflow.io/transitions`` value with ``transition`` appended (newest ``limit``, within the byte cap)."""
    entries = [*entries, json.loads(json.dumps(transition.to_dict(), default=str))][-limit:]
    text = _json(entries)
    while len(text.encode()) > MAX_ANNOTATION_BYTES and len(entries) > 1:
        entries = entries[1:]
        text = _json(entries)
    return text


# --- annotation values ----------------------------------------------------------------------------------------


def _model(raw: str | None, key: str, where: str) -> ModelVersion | None:
    if raw is None:
        return None
    try:
        return ModelVersion.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentError(
            f"annotation {key} is not a model version",
            where=where,
            expected='JSON like {"name": "bid_filter", "version": "7", "uri": "s3://..."}',
            got=raw[:200],
            hint="fix or remove the annotation (`kubectl annotate isvc ...`)",
        ) from exc


def _json_list(raw: str | None, key: str, where: str) -> list[Any]:
    if raw is None:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise DeploymentError(
            f"annotation {key} is not JSON",
            where=where,
            got=raw[:200],
            hint="fix or remove the annotation (`kubectl annotate isvc ...`)",
        ) from exc
    if not isinstance(value, list):
        raise DeploymentError(f"annotation {key} is not a JSON list", where=where, got=raw[:200])
    return value


def _models(entries: list[dict[str, Any]]) -> list[ModelVersion]:
    models = []
    for entry in entries:
        try:
            models.append(ModelVersion.from_dict(entry))
        except (KeyError, TypeError):
            continue
    return models

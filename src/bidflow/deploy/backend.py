"""What every deployment backend offers: one interface, a local and a KServe implementation.

A deployment is one endpoint with a **champion** (serving) and at most one **canary** (a new model
version taking ``canary_percent`` of the requests). The semantics follow KServe's
``canaryTrafficPercent``:

* ``deploy(model, percent)`` with no champion yet makes ``model`` the champion (100 %); with a
  champion it starts ``model`` as the canary at ``percent``.
* ``promote()``: the canary takes 100 % and becomes the champion; the old champion stops.
* ``rollback()``: the canary gets 0 %; the champion keeps serving every request.

Backends only move traffic. Recording transitions and mirroring them in the model registry is the
``bidflow.deploy.canary`` controller's job, so both backends behave the same there. Nothing here
imports mlflow, kserve or numpy: the drift monitor (its own environment) drives backends too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from bidflow.deploy.journal import Transition

Role = Literal["champion", "canary"]
Action = Literal["deploy", "promote", "rollback"]


@dataclass(frozen=True)
class ModelVersion:
    """A model a backend can serve.

    Attributes:
        name: the registered model name (``bid_filter``).
        version: the registry version (``"7"``); the label shown in status and metrics.
        uri: where the server loads it from: ``models:/bid_filter/7`` locally, an ``s3://`` storage
            URI for KServe's storage initializer.
    """

    name: str
    version: str
    uri: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "uri": self.uri}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVersion:
        return cls(name=str(data["name"]), version=str(data["version"]), uri=str(data["uri"]))


@dataclass(frozen=True)
class DeploymentState:
    """Who serves what, as the backend sees it now.

    Attributes:
        champion: the serving model, None before the first deploy.
        canary: the model under test, None when there is no canary.
        canary_percent: the canary's share of requests (0-100; 0 when there is no canary).
        ready: False while a server is starting or a rollout is in progress.
        detail: backend-specific facts (ports, resourceVersion, ...), for ``status`` output.
    """

    champion: ModelVersion | None
    canary: ModelVersion | None = None
    canary_percent: int = 0
    ready: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion.to_dict() if self.champion else None,
            "canary": self.canary.to_dict() if self.canary else None,
            "canary_percent": self.canary_percent,
            "ready": self.ready,
            "detail": self.detail,
        }


class DeploymentBackend(Protocol):
    """Moves traffic between a champion and a canary.

    Every method raises ``DeploymentError`` when the transition is impossible (promote without a
    canary, deploy while a canary is still under test) and ``ConflictError`` when the deployment
    changed under it (KServe: a stale ``resourceVersion``).

    ``resource_version`` and ``record`` are for a backend whose store checks versions and keeps the
    transition log itself (KServe): act only if the store is still at ``resource_version``, and write
    ``record`` in the same write as the effect. A backend without such a store (local processes, run
    by the one controller that owns them) refuses them.
    """

    kind: str

    def status(self) -> DeploymentState:
        """The current state (reads the backend, never a cache)."""
        ...

    def deploy(
        self,
        model: ModelVersion,
        percent: int,
        *,
        resource_version: str | None = None,
        record: Transition | None = None,
    ) -> DeploymentState:
        """First deploy: ``model`` becomes the champion. Later: ``model`` starts as the canary at ``percent``."""
        ...

    def promote(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        """The canary takes all traffic and becomes the champion."""
        ...

    def rollback(self, *, resource_version: str | None = None, record: Transition | None = None) -> DeploymentState:
        """The canary gets no traffic; the champion serves everything."""
        ...

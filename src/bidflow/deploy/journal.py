"""The record of every deployment transition: who or what triggered it, why, and the metrics then.

A transition is appended *before* the caller reports success, and the log is the only state a
restarted controller or monitor needs: nothing is kept only in memory. Two stores:

* ``FileLog`` (the local backend): JSON lines, one write + fsync per transition; a torn last line
  (a crash mid-write) is skipped on read, never fatal.
* the KServe backend keeps the same records in an annotation of the InferenceService itself
  (``bidflow.deploy.kserve``), so the cluster holds its own history.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bidflow.deploy.backend import Action, DeploymentState, ModelVersion


@dataclass(frozen=True)
class Transition:
    """One deploy / promote / rollback.

    Attributes:
        action: what happened.
        model: the model it concerned (the canary for promote/rollback).
        actor: who triggered it: ``cli:<user>``, ``monitor``, ``ci:<run id>``.
        reasons: why (the analysis' or the monitor's reasons; empty for a manual deploy).
        metrics: the figures the decision saw (p-values, latency, recall, ...).
        state: the deployment after the transition.
        at: epoch seconds.
    """

    action: Action
    model: ModelVersion | None
    actor: str
    reasons: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    state: DeploymentState | None = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "model": self.model.to_dict() if self.model else None,
            "actor": self.actor,
            "reasons": list(self.reasons),
            "metrics": self.metrics,
            "state": self.state.to_dict() if self.state else None,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transition:
        state = data.get("state")
        return cls(
            action=data["action"],
            model=ModelVersion.from_dict(data["model"]) if data.get("model") else None,
            actor=str(data.get("actor", "?")),
            reasons=tuple(data.get("reasons", ())),
            metrics=dict(data.get("metrics", {})),
            state=state_from_dict(state) if state else None,
            at=float(data.get("at", 0.0)),
        )


class TransitionLog(Protocol):
    """Where transitions are kept."""

    def append(self, transition: Transition) -> None: ...

    def read(self) -> list[Transition]: ...


class FileLog:
    """Transitions as JSON lines in ``path`` (created with its folder on first append)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, transition: Transition) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(transition.to_dict(), sort_keys=True, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def read(self) -> list[Transition]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(Transition.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-write
        return found


def state_from_dict(data: dict[str, Any]) -> DeploymentState:
    """The inverse of ``DeploymentState.to_dict``."""
    return DeploymentState(
        champion=ModelVersion.from_dict(data["champion"]) if data.get("champion") else None,
        canary=ModelVersion.from_dict(data["canary"]) if data.get("canary") else None,
        canary_percent=int(data.get("canary_percent", 0)),
        ready=bool(data.get("ready", True)),
        detail=dict(data.get("detail", {})),
    )

"""The record of every deployment transition: who or what triggered it, why, and the metrics then.

The log is the only state a restarted controller or monitor needs: nothing is kept only in memory.
Two stores:

* ``FileLog`` (the local backend): JSON lines, one write + fsync per record. Each transition is
  written twice: an **intent** (``phase="intent"``, the state it is meant to reach) *before* the
  backend acts, then its outcome (``"done"`` with the state reached, or ``"aborted"``) after. The
  intent is the commit point: a router that dies between the two finds the intent on restart and
  carries it out (:func:`replay_journal`), so a crash never brings back the state the transition
  left. An append that fails (a full disk) is cut back to where it started, so the next append
  still begins on a line of its own; a line torn by a crash is skipped on read, never fatal.
* the KServe backend keeps the records in an annotation of the InferenceService itself
  (``bidflow.deploy.kserve``), written in the same patch as the transition's effect, so there is no
  moment where one exists without the other (``written_with_effect``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from bidflow.deploy.backend import Action, DeploymentState, ModelVersion

Phase = Literal["intent", "done", "aborted"]


@dataclass(frozen=True)
class Transition:
    """One deploy / promote / rollback.

    Attributes:
        action: what happened.
        model: the model it concerned (the canary for promote/rollback).
        actor: who triggered it: ``cli:<user>``, ``monitor``, ``ci:<run id>``.
        reasons: why (the analysis' or the monitor's reasons; empty for a manual deploy).
        metrics: the figures the decision saw (p-values, latency, recall, ...).
        state: the deployment after the transition (an intent: the state it is meant to reach).
        at: epoch seconds.
        phase: ``intent`` (written before the backend acts), ``done`` or ``aborted`` (after).
        id: shared by an intent and its outcome.
    """

    action: Action
    model: ModelVersion | None
    actor: str
    reasons: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    state: DeploymentState | None = None
    at: float = field(default_factory=time.time)
    phase: Phase = "done"
    id: str = ""

    def outcome(self, phase: Phase, state: DeploymentState | None, **changes: Any) -> Transition:
        """The record that closes this intent: same id, ``phase``, the state reached."""
        return replace(self, phase=phase, state=state, at=time.time(), **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "model": self.model.to_dict() if self.model else None,
            "actor": self.actor,
            "reasons": list(self.reasons),
            "metrics": self.metrics,
            "state": self.state.to_dict() if self.state else None,
            "at": self.at,
            "phase": self.phase,
            "id": self.id,
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
            phase=_phase(data.get("phase", "done")),
            id=str(data.get("id", "")),
        )


def new_transition_id() -> str:
    """A fresh id for an intent and its outcome."""
    return uuid.uuid4().hex


def _phase(value: Any) -> Phase:
    if value in ("intent", "done", "aborted"):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"unknown transition phase {value!r}")


class TransitionLog(Protocol):
    """Where transitions are kept.

    ``written_with_effect``: the backend writes each record in the same write as the transition's
    effect (its methods take ``record=``); ``append`` is then not used for transitions. Otherwise
    the controller appends an intent before the effect and the outcome after it.
    """

    written_with_effect: bool

    def append(self, transition: Transition) -> None: ...

    def read(self) -> list[Transition]:
        """The transitions that happened, oldest first (``done`` records)."""
        ...

    def records(self) -> list[Transition]:
        """Every record, intents and aborted ones included (every transition adds at least one)."""
        ...


class FileLog:
    """Transitions as JSON lines in ``path`` (created with its folder on first append)."""

    written_with_effect = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, transition: Transition) -> None:
        """Write one record and fsync it; on ``OSError`` (ENOSPC, EIO) the file is cut back to its old length."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(transition.to_dict(), sort_keys=True, default=str).encode("utf-8") + b"\n"
        with self._open() as out:
            start = out.seek(0, os.SEEK_END)
            if start > 0:
                out.seek(start - 1)
                if out.read(1) != b"\n":  # a line torn by a crash: end it, or this record would join it
                    line = b"\n" + line
            try:
                written = 0
                while written < len(line):
                    written += out.write(line[written:]) or 0
                os.fsync(out.fileno())
            except OSError:
                with contextlib.suppress(OSError):  # else the torn tail is skipped on read, ended by the next append
                    out.truncate(start)
                raise

    def _open(self) -> BinaryIO:
        # Unbuffered: a failed write raises here, not later from a buffer flushed at close.
        return self.path.open("a+b", buffering=0)

    def read(self) -> list[Transition]:
        return [t for t in self.records() if t.phase == "done"]

    def records(self) -> list[Transition]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(Transition.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-write
        return found


def replay_journal(transitions: list[Transition]) -> tuple[DeploymentState | None, Transition | None]:
    """The state the log commits to, and the intent still open at its end (None when every intent has an outcome).

    An open intent is committed: the controller wrote it before the backend acted, and the backend may have acted
    (fully, partly or not at all) before the process died. Recovery carries it out and then records its outcome.
    An intent followed by another intent had its effect (the controller writes the next intent only after the
    previous transition returned), so its target counts as committed.
    """
    committed: DeploymentState | None = None
    pending: Transition | None = None
    for t in transitions:
        if t.phase == "intent":
            if pending is not None:
                committed = pending.state
            pending = t
            continue
        if pending is not None and t.id == pending.id:
            pending = None
        if t.phase == "done" and t.state is not None:
            committed = t.state
    return committed, pending


def state_from_dict(data: dict[str, Any]) -> DeploymentState:
    """The inverse of ``DeploymentState.to_dict``."""
    return DeploymentState(
        champion=ModelVersion.from_dict(data["champion"]) if data.get("champion") else None,
        canary=ModelVersion.from_dict(data["canary"]) if data.get("canary") else None,
        canary_percent=int(data.get("canary_percent", 0)),
        ready=bool(data.get("ready", True)),
        detail=dict(data.get("detail", {})),
    )

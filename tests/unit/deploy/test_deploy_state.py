"""The controller's write order and compare-and-set, over fake backends (no processes, no network).

* intent before effect: a journal that cannot take the intent refuses the transition before the backend acts; an
  outcome that cannot be written after the effect does not turn a transition that happened into an error, and the
  journal still commits to the state reached;
* compare-and-set: a decision carries what it was based on (the state's version, the canary it judged), and the
  controller acts only if that still holds; on KServe the resourceVersion it checked goes with the patch, and the
  record rides in the same patch.
"""

from __future__ import annotations

import copy
import errno
import json
from pathlib import Path
from typing import Any

import pytest

from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.canary import Controller
from bidflow.deploy.journal import FileLog, Transition, replay_journal
from bidflow.deploy.kserve import TRANSITIONS_ANNOTATION, InferenceServiceLog, KServeBackend
from bidflow.errors import ConflictError, DeploymentError

V1, V2, V3 = (ModelVersion("bid_filter", v, f"models:/bid_filter/{v}") for v in ("1", "2", "3"))


class FakeBackend:
    """Moves an in-memory state; counts the calls that would move traffic."""

    kind = "fake"

    def __init__(self, state: DeploymentState) -> None:
        self.state = state
        self.acted: list[str] = []
        self.fail: DeploymentError | None = None

    def status(self) -> DeploymentState:
        return self.state

    def deploy(self, model: ModelVersion, percent: int, **_: Any) -> DeploymentState:
        self._act("deploy")
        if self.state.champion is None:
            self.state = DeploymentState(champion=model)
        else:
            self.state = DeploymentState(champion=self.state.champion, canary=model, canary_percent=percent)
        return self.state

    def promote(self, **_: Any) -> DeploymentState:
        self._act("promote")
        self.state = DeploymentState(champion=self.state.canary)
        return self.state

    def rollback(self, **_: Any) -> DeploymentState:
        self._act("rollback")
        self.state = DeploymentState(champion=self.state.champion)
        return self.state

    def _act(self, action: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.acted.append(action)


class FullDisk(FileLog):
    """A journal whose appends fail with ENOSPC from the ``fail_from``-th one on (0: the next)."""

    def __init__(self, path: Path, fail_from: int) -> None:
        super().__init__(path)
        self.fail_from = fail_from

    def append(self, transition: Transition) -> None:
        if self.fail_from <= 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        self.fail_from -= 1
        super().append(transition)


def canary_live() -> DeploymentState:
    return DeploymentState(champion=V1, canary=V2, canary_percent=20)


# --- intent before effect -----------------------------------------------------------------------------------------


def test_a_journal_that_cannot_take_the_intent_refuses_before_the_backend_acts(tmp_path: Path) -> None:
    backend = FakeBackend(canary_live())
    controller = Controller(backend, FullDisk(tmp_path / "t.jsonl", fail_from=0))
    with pytest.raises(DeploymentError, match="journal cannot be written") as refused:
        controller.rollback(actor="monitor")
    assert "nothing was changed" in refused.value.what and "ENOSPC" not in refused.value.what
    assert backend.acted == [] and backend.state == canary_live()


def test_an_outcome_that_cannot_be_written_leaves_the_transition_standing(tmp_path: Path) -> None:
    backend = FakeBackend(canary_live())
    journal = FullDisk(tmp_path / "t.jsonl", fail_from=1)  # the intent goes through, the outcome does not
    controller = Controller(backend, journal)
    done = controller.rollback(actor="monitor", reasons=["drift"])
    assert backend.acted == ["rollback"]
    assert done.action == "rollback" and done.state == DeploymentState(champion=V1)
    _, pending = replay_journal(journal.records())
    assert pending is not None and pending.action == "rollback" and pending.state == DeploymentState(champion=V1)


def test_the_intent_is_on_disk_before_the_backend_acts(tmp_path: Path) -> None:
    journal = FileLog(tmp_path / "t.jsonl")
    backend = FakeBackend(canary_live())
    seen: list[list[str]] = []
    act = backend.promote

    def promote(**kw: Any) -> DeploymentState:
        seen.append([t.phase for t in journal.records()])
        return act(**kw)

    backend.promote = promote  # type: ignore[method-assign]
    Controller(backend, journal).promote(actor="ci")
    assert seen == [["intent"]]
    records = journal.records()
    assert [r.phase for r in records] == ["intent", "done"] and records[0].id == records[1].id
    assert records[0].state == DeploymentState(champion=V2)  # the intent names where it goes
    assert journal.read() == [records[1]]  # the history: what happened


def test_a_failed_effect_is_recorded_as_aborted_and_not_recovered(tmp_path: Path) -> None:
    journal = FileLog(tmp_path / "t.jsonl")
    backend = FakeBackend(DeploymentState(champion=V1))
    backend.fail = DeploymentError("the model server for v2 exited with status 1")
    with pytest.raises(DeploymentError, match="exited"):
        Controller(backend, journal).deploy(V2, 20, actor="ci")
    assert [r.phase for r in journal.records()] == ["intent", "aborted"]
    assert journal.read() == []
    assert replay_journal(journal.records()) == (None, None)


def test_replay_commits_outcomes_and_superseded_intents() -> None:
    first = Transition("deploy", V1, "ci", state=DeploymentState(champion=V1), phase="intent", id="a")
    second = Transition("deploy", V2, "ci", state=canary_live(), phase="intent", id="b")
    assert replay_journal([first, first.outcome("done", first.state)]) == (DeploymentState(champion=V1), None)
    # The outcome of the first was lost (a full disk), the second was decided after it: the first happened.
    assert replay_journal([first, second]) == (DeploymentState(champion=V1), second)
    legacy = Transition("deploy", V1, "cli", state=DeploymentState(champion=V1))  # written before intents existed
    assert Transition.from_dict({k: v for k, v in legacy.to_dict().items() if k not in ("phase", "id")}) == legacy


# --- compare-and-set ----------------------------------------------------------------------------------------------


def test_a_rollback_decided_on_canary_v2_does_not_roll_back_v3(tmp_path: Path) -> None:
    backend = FakeBackend(DeploymentState(champion=V2, canary=V3, canary_percent=20))  # v2 promoted, v3 deployed
    controller = Controller(backend, FileLog(tmp_path / "t.jsonl"))
    with pytest.raises(ConflictError, match="canary v2"):
        controller.rollback(actor="monitor", expect_canary="2")
    assert backend.acted == []
    assert controller.rollback(actor="monitor", expect_canary="3").model == V3


def test_a_decision_on_an_older_version_of_the_state_is_a_conflict(tmp_path: Path) -> None:
    backend = FakeBackend(DeploymentState(champion=V1))
    controller = Controller(backend, FileLog(tmp_path / "t.jsonl"))
    seen = controller.status().detail["version"]
    controller.deploy(V2, 20, actor="ci")
    with pytest.raises(ConflictError, match="changed since"):
        controller.promote(actor="analysis", expect=seen)
    assert backend.acted == ["deploy"]
    now = controller.status().detail["version"]
    assert now != seen and controller.promote(actor="analysis", expect=now).model == V2


class FakeApiServer:
    """One InferenceService with the apiserver's resourceVersion check and JSON merge patch."""

    ref = "inferenceservice test/bid-filter"

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0
        self.before_get: list[Any] = []  # callbacks run before a get (another writer, between our reads)

    def get(self) -> dict[str, Any] | None:
        if self.before_get:
            self.before_get.pop(0)()
        return copy.deepcopy(self.obj)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.obj = copy.deepcopy(body)
        return self._stored()

    def patch(self, resource_version: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.obj is not None
        if resource_version != self.obj["metadata"]["resourceVersion"]:
            raise ConflictError("the object has been modified", where=self.ref, got="HTTP 409")
        _merge(self.obj, copy.deepcopy(body))
        return self._stored()

    def _stored(self) -> dict[str, Any]:
        assert self.obj is not None
        self.version += 1
        self.writes += 1
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.obj)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def kserve(api: FakeApiServer) -> Controller:
    backend = KServeBackend(None, namespace="test", name="bid-filter", image="bidflow/serving:0.1.0")
    backend._isvc = api  # type: ignore[assignment]
    return Controller(backend, InferenceServiceLog(backend))


def test_kserve_the_checked_resource_version_goes_with_the_patch() -> None:
    """The controller read canary v2; before the patch, v2 was promoted and v3 deployed: the patch is refused.

    Before, the controller did not pass what it had read, and the backend patched against its own later read.
    """
    api = FakeApiServer()
    controller = kserve(api)
    controller.deploy(V1, 0, actor="ci")
    controller.deploy(V2, 20, actor="ci")
    other = kserve(api)

    def someone_else_moves_on() -> None:
        other.promote(actor="ci")
        other.deploy(V3, 20, actor="ci")

    api.before_get = [lambda: None, someone_else_moves_on]  # after the controller's read, before the backend's
    with pytest.raises(ConflictError):
        controller.rollback(actor="monitor")
    state = controller.status()
    assert (state.champion, state.canary, state.canary_percent) == (V2, V3, 20), "v3 was not rolled back"


def test_kserve_the_record_is_written_in_the_transitions_own_patch() -> None:
    api = FakeApiServer()
    controller = kserve(api)
    controller.deploy(V1, 0, actor="ci")
    controller.deploy(V2, 20, actor="ci")
    writes = api.writes
    done = controller.rollback(actor="monitor", reasons=["drift"])
    assert api.writes == writes + 1, "effect and record in one write: nothing can die between them"
    assert api.obj is not None
    recorded = json.loads(api.obj["metadata"]["annotations"][TRANSITIONS_ANNOTATION])
    assert [(r["action"], r["model"]["version"], r["phase"]) for r in recorded] == [
        ("deploy", "1", "done"), ("deploy", "2", "done"), ("rollback", "2", "done"),
    ]  # fmt: skip
    assert done.state is not None and done.state.canary is None
    assert [t.action for t in controller.transitions()] == ["deploy", "deploy", "rollback"]

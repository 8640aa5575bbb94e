"""The transition log: what is appended is read back, a torn last line is skipped."""

from __future__ import annotations

from pathlib import Path

from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.journal import FileLog, Transition

V1 = ModelVersion("bid_filter", "1", "models:/bid_filter/1")
V2 = ModelVersion("bid_filter", "2", "models:/bid_filter/2")


def test_transitions_round_trip(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "deploy" / "transitions.jsonl")
    assert log.read() == []
    first = Transition("deploy", V1, "cli:alice", state=DeploymentState(champion=V1))
    second = Transition(
        "rollback",
        V2,
        "monitor",
        reasons=("drift in the canary's traffic: os",),
        metrics={"p_value": 0.001},
        state=DeploymentState(champion=V1, detail={"router": "http://127.0.0.1:8080"}),
    )
    log.append(first)
    log.append(second)
    assert log.read() == [first, second]


def test_a_line_torn_by_a_crash_is_skipped(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "transitions.jsonl")
    log.append(Transition("deploy", V1, "cli"))
    with log.path.open("a") as out:
        out.write('{"action": "promote", "mod')
    assert [t.action for t in log.read()] == ["deploy"]

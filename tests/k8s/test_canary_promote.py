"""scripts/k8s/canary-promote.sh, the analysis loop of .github/workflows/promote.yml, against a stand-in bidflow CLI.

The stand-in answers `bidflow canary analyse` with scripted exit codes (0 promote, 3 rollback, 4 continue, anything
else an error) and records every call, so each path of the loop is run for real: promote, rollback by the analysis,
"continue" until the windows run out, and a failing analysis. Offline, no cluster, about a second.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.k8s.cluster import REPO

SCRIPT = REPO / "scripts" / "k8s" / "canary-promote.sh"

STANDIN = """#!/usr/bin/env bash
# bidflow stand-in: log the call; `canary analyse` pops its exit code from codes.txt.
echo "$*" >>"{dir}/calls.txt"
if [[ "$1 $2" == "canary analyse" ]]; then
    code="$(head -n1 "{dir}/codes.txt")"
    sed -i 1d "{dir}/codes.txt"
    echo "verdict for exit $code: reasons..."
    exit "$code"
fi
if [[ "$1 $2" == "canary rollback" ]]; then
    exit "$(cat "{dir}/rollback-code.txt")"
fi
exit 64
"""

# kubectl stand-in for `kubectl -n NS port-forward svc/NAME :PORT`: logs, records its pid, forwards "forever".
KUBECTL_OK = """#!/usr/bin/env bash
echo "kubectl $*" >>"{dir}/calls.txt"
echo $$ >>"{dir}/forward-pids.txt"
echo "Forwarding from 127.0.0.1:45678 -> 8090"
echo "Forwarding from [::1]:45678 -> 8090"
exec sleep 60
"""
KUBECTL_FAILING = """#!/usr/bin/env bash
echo "kubectl $*" >>"{dir}/calls.txt"
echo 'error: services "bidflow-monitor" not found' >&2
exit 1
"""


@dataclass
class Run:
    code: int
    stdout: str
    calls: list[str]
    outputs: dict[str, str]
    summary: str


def run(tmp_path: Path, codes: list[int], windows: int, rollback_code: int = 0, kubectl: str | None = None) -> Run:
    fake = tmp_path / "bidflow"
    fake.write_text(STANDIN.format(dir=tmp_path), encoding="utf-8")
    fake.chmod(0o755)
    forward: list[str] = []
    if kubectl is not None:
        (tmp_path / "kubectl").write_text(kubectl.format(dir=tmp_path), encoding="utf-8")
        (tmp_path / "kubectl").chmod(0o755)
        forward = ["--port-forward", "bidflow/bidflow-monitor:8090"]
    (tmp_path / "codes.txt").write_text("".join(f"{code}\n" for code in codes), encoding="utf-8")
    (tmp_path / "rollback-code.txt").write_text(str(rollback_code), encoding="utf-8")
    (tmp_path / "calls.txt").touch()
    output, summary = tmp_path / "github-output", tmp_path / "summary.md"
    env = {
        "PATH": os.environ["PATH"],
        "BIDFLOW": str(fake),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "KUBECTL": str(tmp_path / "kubectl"),
        "FORWARD_RETRY_SECONDS": "0",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "--windows", str(windows), "--window-seconds", "0", *forward],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    outputs: dict[str, str] = {}
    if output.exists():
        for line in output.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            outputs[key] = value  # the last value wins, as in GitHub Actions
    return Run(
        done.returncode,
        done.stdout + done.stderr,
        (tmp_path / "calls.txt").read_text(encoding="utf-8").splitlines(),
        outputs,
        summary.read_text(encoding="utf-8") if summary.exists() else "",
    )


ANALYSE = "canary analyse --backend kserve --apply"
ROLLBACK = "canary rollback --backend kserve"


def test_promote_in_the_first_window(tmp_path: Path) -> None:
    result = run(tmp_path, [0], windows=3)
    assert result.code == 0
    assert result.calls == [ANALYSE]
    assert result.outputs == {"windows": "1", "decision": "promote"}
    assert "::notice title=Canary promoted::" in result.stdout
    assert "**Promoted**" in result.summary


def test_continue_then_promote(tmp_path: Path) -> None:
    result = run(tmp_path, [4, 4, 0], windows=3)
    assert result.code == 0
    assert result.calls == [ANALYSE] * 3
    assert result.outputs["decision"] == "promote"
    assert result.outputs["windows"] == "3"


def test_a_rollback_verdict_fails_the_job_without_a_second_rollback(tmp_path: Path) -> None:
    result = run(tmp_path, [4, 3], windows=3)
    assert result.code == 1
    assert result.calls == [ANALYSE, ANALYSE], "analyse --apply already rolled back"
    assert result.outputs["decision"] == "rollback"
    assert "::error title=Canary rolled back::" in result.stdout
    assert "verdict for exit 3: reasons..." in result.stdout  # the reasons are in the log


def test_no_verdict_after_the_last_window_rolls_back(tmp_path: Path) -> None:
    result = run(tmp_path, [4, 4], windows=2)
    assert result.code == 1
    assert result.calls == [ANALYSE, ANALYSE, ROLLBACK]
    assert result.outputs["decision"] == "rollback"
    assert "no verdict after 2 window(s)" in result.stdout


def test_a_failing_analysis_rolls_back_as_a_precaution(tmp_path: Path) -> None:
    result = run(tmp_path, [1], windows=3)
    assert result.code == 1
    assert result.calls == [ANALYSE, ROLLBACK]
    assert result.outputs["decision"] == "rollback"
    assert "analyse failed with exit 1" in result.stdout


def test_a_failed_rollback_is_reported_as_an_error(tmp_path: Path) -> None:
    result = run(tmp_path, [4], windows=1, rollback_code=1)
    assert result.code == 1
    assert result.calls == [ANALYSE, ROLLBACK]
    assert result.outputs["decision"] == "error"
    assert "::error title=Canary rollback failed::" in result.stdout
    assert "roll it back by hand" in result.stdout


def test_each_analysis_reads_the_monitor_through_a_fresh_port_forward(tmp_path: Path) -> None:
    result = run(tmp_path, [4, 0], windows=3, kubectl=KUBECTL_OK)
    assert result.code == 0
    forward = "kubectl -n bidflow port-forward svc/bidflow-monitor :8090"
    analyse = f"{ANALYSE} --monitor-url http://127.0.0.1:45678"
    assert result.calls == [forward, analyse, forward, analyse]
    # Every forward was stopped: none outlives its analysis (or the script).
    for pid in (tmp_path / "forward-pids.txt").read_text(encoding="utf-8").split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_an_unreachable_monitor_rolls_back_after_three_tries(tmp_path: Path) -> None:
    result = run(tmp_path, [0], windows=3, kubectl=KUBECTL_FAILING)
    assert result.code == 1
    forward = "kubectl -n bidflow port-forward svc/bidflow-monitor :8090"
    assert result.calls == [forward, forward, forward, ROLLBACK], "no analysis without the monitor"
    assert result.outputs["decision"] == "rollback"
    assert 'services "bidflow-monitor" not found' in result.stdout
    assert "the drift monitor (svc/bidflow-monitor in bidflow) is out of reach" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--windows", "0", "--window-seconds", "1"],
        ["--windows", "2"],
        ["--x"],
        ["--windows", "1", "--window-seconds", "1", "--port-forward", "bidflow-monitor:8090"],
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "usage:" in done.stderr

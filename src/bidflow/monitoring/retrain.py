"""The retraining trigger: drift in the champion's traffic starts at most one training-pipeline run per cool-down.

A run goes through the platform's own command line, the path a person takes: ``bidflow pipeline run
--local`` (kfp.local here) or ``bidflow pipeline submit`` (a Kubeflow Pipelines endpoint). The
monitor's environment cannot run either itself (alibi-detect pins numpy<2, so it has neither the
platform's dependencies nor kfp-kubernetes), so the command runs as a subprocess of the platform's
environment (``monitor.retrain_command``), waited on by a background thread: the monitor keeps
answering payloads while the candidate trains.

State, in the monitor's state folder (beside the deployment's journal):

* ``retrain_requests.jsonl``: every request (the champion's version, what drifted) with the decision
  taken: ``started`` (and the run's id), ``running`` or ``cooldown`` (not started; the run that holds
  the pipeline), ``recorded`` (``monitor.retrain: record``);
* ``retrain_runs.jsonl``: each run's events, ``started`` then one outcome: ``succeeded`` (gate results,
  registered version, how it was deployed), ``gate_failed`` (gate results, nothing registered),
  ``submitted`` (the Kubeflow run's id; its gates are judged on the cluster) or ``failed`` (the error);
* ``retrain/<run id>/``: the run's configuration (the monitor's own), its log and kfp.local's outputs.

The cool-down counts from a run's start, whatever its outcome, so a failing run is not retried before
it ends; it is read back from ``retrain_runs.jsonl``, so a restarted monitor keeps it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bidflow.errors import ConfigError

if TYPE_CHECKING:
    from bidflow.config import Config

log = logging.getLogger(__name__)

REQUESTS: Final = "retrain_requests.jsonl"
RUNS: Final = "retrain_runs.jsonl"
RUNS_DIR: Final = "retrain"
_PLATFORM_VENV: Final = ".venv"
_LOG_TAIL: Final = 2_000
_STOP_GRACE_S: Final = 30.0
# The command's own lines (bidflow.pipelines.commands and the deploy_canary task); the e2e tests of both
# assert these lines, so a change there is seen.
_GATE: Final = re.compile(r"^(evaluation|bias) gate (passed|FAILED); report: (.+)$", re.MULTILINE)
_REGISTERED: Final = re.compile(r"^registered (.+) v(\S+) as (.+)$", re.MULTILINE)
_DEPLOYED: Final = re.compile(r"deployed version (\S+) as (champion|canary)")
_STOPPED_AT_GATE: Final = "pipeline stopped before register_model"
_SUBMITTED: Final = re.compile(r"^(?:recurring )?run (\S+) '", re.MULTILINE)


def platform_command() -> list[str]:
    """The platform's ``bidflow``: in ``.venv`` beside the running environment (the Makefile builds both
    environments in the repository root), else whichever ``bidflow`` is on PATH."""
    beside = Path(sys.prefix).parent / _PLATFORM_VENV / "bin" / "bidflow"
    return [str(beside)] if beside.exists() else ["bidflow"]


def read_outcome(mode: str, returncode: int, output: str) -> tuple[str, dict[str, Any]]:
    """How a finished run ended, from its exit status and its log.

    Returns:
        (``succeeded`` | ``gate_failed`` | ``submitted`` | ``failed``, the details to record).
    """
    if mode == "submit":
        if returncode == 0:
            found = _SUBMITTED.search(output)
            return "submitted", {"kfp_run": found.group(1) if found else None}
        return "failed", {"exit_code": returncode, "error": output[-_LOG_TAIL:]}
    gates = {name: verdict == "passed" for name, verdict, _ in _GATE.findall(output)}
    reports = {name: report.strip() for name, _, report in _GATE.findall(output)}
    details: dict[str, Any] = {"gates": gates, "reports": reports}
    registered = _REGISTERED.search(output)
    if returncode == 0 and registered is not None:
        deployed = _DEPLOYED.search(output)
        return "succeeded", details | {
            "model": registered.group(1),
            "version": registered.group(2),
            "aliases": registered.group(3).replace("'", "").split(", "),
            "deployed_as": deployed.group(2) if deployed else None,
        }
    if returncode != 0 and _STOPPED_AT_GATE in output:
        return "gate_failed", details | {"failed_gates": sorted(name for name, ok in gates.items() if not ok)}
    return "failed", details | {"exit_code": returncode, "error": output[-_LOG_TAIL:]}


class RetrainTrigger:
    """Turns retraining requests into pipeline runs: one at a time, one per cool-down (module docstring).

    Args:
        config: the monitor's configuration (``monitor.retrain*``); a run is given the same configuration.
        state_dir: where the requests, the runs' events and their folders are kept.
        clock: seconds since the epoch (a test moves it past the cool-down).
    """

    def __init__(self, config: Config, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        settings = config.monitor
        if settings.retrain == "submit" and not settings.retrain_host:
            raise ConfigError(
                "monitor.retrain is 'submit' but no Kubeflow Pipelines endpoint is set",
                expected="monitor.retrain_host, e.g. https://kubeflow.example.com/pipeline",
            )
        self.config = config
        self.mode = settings.retrain
        self.pipeline = config.canary.kind  # the kind this monitor watches; its pipeline is named after it
        self.cooldown_s = settings.retrain_cooldown_hours * 3600.0
        self.state_dir = state_dir
        self.counts = {"retrain_requests": 0, "retrain_runs": 0, "retrain_succeeded": 0, "retrain_gate_failed": 0,
                       "retrain_submitted": 0, "retrain_failed": 0}  # fmt: skip
        self.last: dict[str, Any] | None = None  # the newest run event
        self._clock = clock
        self._lock = threading.Lock()
        self._running: str | None = None
        self._thread: threading.Thread | None = None
        self._last_start = self._read_runs()

    # -- requests --

    def request(self, *, version: str, reason: str, drift: Mapping[str, Any]) -> dict[str, Any]:
        """Record a retraining request and start a run unless one is running or the cool-down holds.

        Returns:
            the request as recorded (``decision``: started | running | cooldown | recorded; ``run``).
        """
        with self._lock:
            now = self._clock()
            decision, run = self._decide(now)
            if decision == "started":
                run = self._new_run_id(now)
            record = {"at": now, "pipeline": self.pipeline, "version": version, "reason": reason,
                      "decision": decision, "run": run, "drift": dict(drift)}  # fmt: skip
            self._append(REQUESTS, record)
            self.counts["retrain_requests"] += 1
            if decision == "started" and run is not None:
                self._start(run, now)
        if decision == "started":
            log.warning("%s: retraining run %s started (%s)", reason, run, self.mode)
        else:
            log.warning("%s: retraining requested, not started (%s%s)", reason, decision, f", run {run}" if run else "")
        return record

    def _decide(self, now: float) -> tuple[str, str | None]:
        if self.mode == "record":
            return "recorded", None
        if self._running is not None:
            return "running", self._running
        if self._last_start is not None and now - self._last_start[0] < self.cooldown_s:
            return "cooldown", self._last_start[1]
        return "started", None

    def _new_run_id(self, now: float) -> str:
        base = f"{self.pipeline}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
        run, n = base, 1
        while (self.state_dir / RUNS_DIR / run).exists():  # a zero cool-down can start two runs in one second
            n += 1
            run = f"{base}-{n}"
        return run

    def _start(self, run: str, now: float) -> None:
        workdir = self.state_dir / RUNS_DIR / run
        command = self.command(workdir)
        self._append(RUNS, {"at": now, "run": run, "pipeline": self.pipeline, "event": "started", "mode": self.mode,
                            "command": command, "log": str(workdir / "run.log")})  # fmt: skip
        self._last_start = (now, run)
        self._running = run
        self.counts["retrain_runs"] += 1
        self._thread = threading.Thread(target=self._run, args=(run, workdir, command), name=f"retrain-{run}")
        self._thread.daemon = True  # a stopping monitor does not wait for a training run
        self._thread.start()

    def command(self, workdir: Path) -> list[str]:
        """The command line of a run whose folder is ``workdir``."""
        settings = self.config.monitor
        base = [*(settings.retrain_command or platform_command()), "--config", str(workdir / "bidflow.yaml")]
        if self.mode == "submit":
            assert settings.retrain_host is not None  # checked in __init__
            action = ["submit", "--host", settings.retrain_host, "--config-file", str(workdir / "bidflow.yaml"),
                      "--run-name", workdir.name]  # fmt: skip
        else:
            action = ["run", "--local", "--out", str(workdir / "pipeline")]
        return [*base, "pipeline", *action, "--pipeline", self.pipeline, *settings.retrain_args]

    # -- a run, on its own thread --

    def _run(self, run: str, workdir: Path, command: list[str]) -> None:
        started = self._clock()
        try:
            outcome, details = self._execute(workdir, command)
        except Exception as exc:
            outcome, details = "failed", {"error": f"{type(exc).__name__}: {exc}"[:_LOG_TAIL]}
        if outcome == "succeeded" and self.mode == "local":
            details |= self._publish_detector(workdir, details)
        finished = self._clock()
        event = {"at": finished, "run": run, "pipeline": self.pipeline, "event": outcome,
                 "seconds": round(finished - started, 1), **details}  # fmt: skip
        with self._lock:
            self._append(RUNS, event)
            self.counts[f"retrain_{outcome}"] += 1
            self._running = None
        if outcome == "failed":
            log.error("retraining run %s failed (not retried before the cool-down ends): %s", run, details["error"])
        else:
            log.warning("retraining run %s: %s %s", run, outcome, json.dumps(details, default=str)[:500])

    def _execute(self, workdir: Path, command: list[str]) -> tuple[str, dict[str, Any]]:
        import yaml

        workdir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.config.model_dump(mode="json", by_alias=True), sort_keys=False)
        (workdir / "bidflow.yaml").write_text(text, encoding="utf-8")
        # The outcome is read from the command's lines: no wrapping (rich wraps at 80 columns off a terminal)
        # and no colour codes.
        env = os.environ | {"COLUMNS": "4000", "NO_COLOR": "1", "TERM": "dumb"}
        log_path = workdir / "run.log"
        with log_path.open("wb") as out:
            # Its own session: a timeout stops kfp.local's task processes too, not only the command.
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                returncode = process.wait(timeout=self.config.monitor.retrain_timeout_minutes * 60.0)
            except subprocess.TimeoutExpired:
                _stop(process)
                limit = self.config.monitor.retrain_timeout_minutes
                return "failed", {"error": f"stopped after monitor.retrain_timeout_minutes ({limit:g})"}
        return read_outcome(self.mode, returncode, log_path.read_text(encoding="utf-8", errors="replace"))

    def _publish_detector(self, workdir: Path, details: Mapping[str, Any]) -> dict[str, Any]:
        """Copy the run's fitted drift detector to where this monitor loads it, so its canary is watched."""
        version = details.get("version")
        found = sorted((workdir / "pipeline" / "outputs").glob("*/fit-drift-detector/detector"))
        if not version or not found:
            return {"detector": None}
        target = self.config.monitor.detector / str(version)
        try:
            shutil.copytree(found[-1], target, dirs_exist_ok=True)
        except OSError as exc:
            return {"detector": None, "detector_error": f"{exc}"[:300]}
        return {"detector": str(target)}

    # -- state --

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / name).open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")
        if name == RUNS:
            self.last = dict(record)

    def _read_runs(self) -> tuple[float, str] | None:
        """The newest start of this pipeline's runs (and the newest event) from an earlier monitor."""
        path = self.state_dir / RUNS
        if not path.is_file():
            return None
        newest: tuple[float, str] | None = None
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                event = json.loads(line)
                if event["pipeline"] != self.pipeline:
                    continue
                if event["event"] == "started" and (newest is None or float(event["at"]) >= newest[0]):
                    newest = (float(event["at"]), str(event["run"]))
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d is not a run event; skipped", path, number)
                continue
            self.last = event
        return newest

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows under ``retrain``."""
        with self._lock:
            last_start = self._last_start[0] if self._last_start else None
            return {
                "mode": self.mode,
                "pipeline": self.pipeline,
                "cooldown_hours": self.cooldown_s / 3600.0,
                "running": self._running,
                "last_started_at": last_start,
                "next_run_after": last_start + self.cooldown_s if last_start is not None else None,
                "last": self.last,
                "counts": dict(self.counts),
            }

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the running run's thread (tests, an orderly stop); True when none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self._running is None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a run's process group: SIGTERM, then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=_STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue

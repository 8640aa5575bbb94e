"""``bidflow canary serve`` with stand-in model servers and one injected fault, as the fault tests run it.

    python -m tests.integration.deploy.router_runner --config bidflow.yaml [--fault KIND:ACTION]

Faults, each at the ``FileLog`` boundary of the transition ``ACTION`` (deploy, promote, rollback):

* ``kill-after-intent``: SIGKILL right after the intent is on disk, before the backend acts;
* ``kill-after-effect``: SIGKILL after the backend acted, before its outcome is written;
* ``enospc-intent`` / ``enospc-outcome``: that append fails with ENOSPC (a full disk).

Everything else is the real router: ``serve_router`` with its journal, recovery and model-server processes (the
stand-in of ``stub_server.py`` instead of ``python -m bidflow.serving``).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bidflow.config import load_config
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.journal import FileLog, Transition
from bidflow.deploy.local import ProcessBackend
from bidflow.deploy.router import serve_router

FAULTS = ("kill-after-intent", "kill-after-effect", "enospc-intent", "enospc-outcome")


def stub_command(self: ProcessBackend, model: ModelVersion, port: int) -> list[str]:
    return [
        sys.executable, "-m", "tests.integration.deploy.stub_server",
        "--host", self.cfg.host, "--port", str(port), "--name", self.endpoint, "--model", model.uri,
    ]  # fmt: skip


def inject(fault: str, action: str) -> None:
    append = FileLog.append

    def faulty(self: FileLog, transition: Transition, *args: Any, **kwargs: Any) -> None:
        intent = getattr(transition, "phase", "done") == "intent"
        if transition.action == action and not intent:
            if fault == "kill-after-effect":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "enospc-outcome":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        if transition.action == action and intent and fault == "enospc-intent":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        append(self, transition, *args, **kwargs)
        if transition.action == action and intent and fault == "kill-after-intent":
            os.kill(os.getpid(), signal.SIGKILL)

    FileLog.append = faulty  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--fault", default=None, help="KIND:ACTION, KIND one of " + ", ".join(FAULTS))
    args = parser.parse_args()
    ProcessBackend.server_command = stub_command  # type: ignore[method-assign]
    if args.fault:
        fault, action = args.fault.split(":")
        assert fault in FAULTS, fault
        inject(fault, action)
    serve_router(load_config(args.config, environ={}), args.config)


if __name__ == "__main__":
    main()

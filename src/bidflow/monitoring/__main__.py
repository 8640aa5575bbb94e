"""``python -m bidflow.monitoring``: the drift monitor (runs in its own environment, ``.venv-monitor``).

Examples::

    python -m bidflow.monitoring fit --reference deploy/reference/7.parquet --out deploy/detector/7
    python -m bidflow.monitoring serve                      # 127.0.0.1:8090, backend from bidflow.yaml
    python -m bidflow.monitoring serve --host 0.0.0.0       # inside a pod
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def parser() -> argparse.ArgumentParser:
    """The command-line options (also listed by ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m bidflow.monitoring", description=__doc__.split("\n", 1)[0])
    p.add_argument("--config", type=Path, default=None, help="bidflow YAML configuration (default ./bidflow.yaml)")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="receive served payloads, detect drift, roll the canary back")
    serve.add_argument("--host", default=None, help="bind address (default monitor.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default monitor.port, 8090)")
    serve.add_argument("--watch-only", action="store_true", help="detect and report, never roll back")
    fit = sub.add_parser("fit", help="fit drift detectors on a reference parquet file and save them")
    fit.add_argument("--reference", type=Path, required=True, help="parquet written at deploy time (names its columns)")
    fit.add_argument("--out", type=Path, required=True, help="folder for the saved detector")
    fit.add_argument("--p-value", type=float, default=None, help="test level (default monitor.p_value)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, load the configuration once, run the command."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    from bidflow.config import load_config
    from bidflow.errors import BidflowError

    try:
        config = load_config(args.config)
        if args.command == "fit":
            from bidflow.monitoring.fit import fit_from_reference

            detector = fit_from_reference(args.reference, args.out, args.p_value or config.monitor.p_value)
            columns = ", ".join(detector.columns)
            print(f"drift detector ({detector.backend}; columns {columns}) saved to {args.out}")
            return
        serve(config, args.host, args.port, watch_only=args.watch_only)
    except BidflowError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)


def serve(config: object, host: str | None, port: int | None, *, watch_only: bool = False) -> None:
    """Run the monitor service until SIGINT/SIGTERM."""
    import uvicorn

    from bidflow.config import Config
    from bidflow.deploy.canary import RouterClient, controller_for
    from bidflow.monitoring.service import build_app
    from bidflow.monitoring.watch import Monitor

    assert isinstance(config, Config)
    controller = None if watch_only else controller_for(config, mirror=False)
    router_metrics = controller.metrics if isinstance(controller, RouterClient) else None
    from bidflow.monitoring.auth import monitor_token

    monitor = Monitor(config, controller, router_metrics=router_metrics)
    app = build_app(monitor, monitor_token(config))
    host = host or config.monitor.host
    port = port or config.monitor.port
    logging.getLogger(__name__).info(
        "drift monitor of %s models on http://%s:%d (backend %s)", monitor.kind, host, port, config.canary.backend
    )
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()

"""``python -m bidflow.serving``: serve a model kind (the bid filter by default) on 127.0.0.1.

Examples::

    python -m bidflow.serving                               # bid_filter@champion from the registry
    python -m bidflow.serving --model candidate --http-port 8081
    python -m bidflow.serving --model /tmp/model-folder     # a folder written by save_model
    python -m bidflow.serving --kind ctr --model models:/ctr_ipinyou/3   # any registered kind
    python -m bidflow.serving --host 0.0.0.0                # inside a pod
    python -m bidflow.serving --workers 2                   # one server process per core
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.serving.server import ServerOptions
    from bidflow.serving.staged import StagedModel


def parser(prog: str = "python -m bidflow.serving") -> argparse.ArgumentParser:
    """The command-line options of the model server (``bidflow serve`` takes the same ones)."""
    from bidflow.kinds import DEFAULT_KIND
    from bidflow.serving.errors import DEFAULT_MAX_BODY_BYTES
    from bidflow.serving.online import DEFAULT_CACHE_S, DEFAULT_COOLDOWN_S, DEFAULT_TIMEOUT_S

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--kind", default=DEFAULT_KIND, help="the model kind to serve (`bidflow kinds` lists the registered ones)"
    )
    p.add_argument(
        "--model",
        default="champion",
        help="alias or version in the registry, an MLflow URI (models:/..., runs:/...) or a model folder",
    )
    # KServe's own spellings (--model_name, --http_port) too: InferenceService manifests pass them.
    p.add_argument("--name", "--model_name", default=None, help="endpoint name (default: the registered model name)")
    p.add_argument("--config", type=Path, default=None, help="bidflow YAML configuration (default ./bidflow.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 only inside a container")
    p.add_argument("--http-port", "--http_port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=None, help="serve gRPC v2 on this port too (default: off)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own model (one per core; default 1)",
    )
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument(
        "--feature-timeout-ms",
        type=float,
        default=DEFAULT_TIMEOUT_S * 1000,
        help="online store wait before failing open",
    )
    p.add_argument("--breaker-cooldown-s", type=float, default=DEFAULT_COOLDOWN_S)
    p.add_argument(
        "--feature-cache-s",
        type=float,
        default=DEFAULT_CACHE_S,
        help="the oldest an online-store answer may be when reused (0: read the store for every auction)",
    )
    p.add_argument(
        "--auction-entry",
        action="store_true",
        help="requests come straight from clients (Prebid's auction endpoint rules: site/app/dooh, bidders named)",
    )
    p.add_argument(
        "--model-version",
        default=None,
        help="the version label to report (default: the registry's version, or the URI or folder loaded)",
    )
    p.add_argument("--load-retry-s", type=float, default=10.0, help="pause between attempts to load the model")
    p.add_argument("--log-level", default="INFO")
    return p


def build(args: argparse.Namespace, config: Config) -> tuple[StagedModel, ServerOptions]:
    """The model (not loaded yet) and the server options that ``args`` describe."""
    with _quiet_argv():  # before anything imports kserve (see _quiet_argv)
        import kserve  # noqa: F401

    from bidflow.kinds import kind, load_object, registered_name
    from bidflow.openrtb import ValidationContext
    from bidflow.serving.base import ModelSource, ServeOptions
    from bidflow.serving.server import ServerOptions
    from bidflow.serving.workers import check_workers

    served = kind(config, args.kind)
    registered = registered_name(config, served.name)
    source = replace(ModelSource.parse(registered, args.model), version=args.model_version)
    options = ServeOptions(
        validation=ValidationContext(auction_entry=args.auction_entry),
        feature_timeout_s=args.feature_timeout_ms / 1000,
        breaker_cooldown_s=args.breaker_cooldown_s,
        feature_cache_s=args.feature_cache_s,
        explain_top=config.explain.top,
    )
    name = args.name or registered
    model: StagedModel = load_object(served.served_model, where=f"the served model of kind '{served.name}'")(
        name, config, source, options
    )
    server = ServerOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_body_bytes=args.max_body_bytes,
        load_retry_s=args.load_retry_s,
        workers=args.workers,
    )
    check_workers(server)
    return model, server


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, load the configuration once, serve until SIGINT/SIGTERM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    from bidflow.config import load_config
    from bidflow.errors import BidflowError

    try:
        config = load_config(args.config)
        model, options = build(args, config)
        code = run(model, options, argv, config)
    except BidflowError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if code:
        sys.exit(code)


def run(model: StagedModel, options: ServerOptions, argv: Sequence[str], config: Config) -> int:
    """Serve ``model`` until SIGINT/SIGTERM, or start ``options.workers`` processes that each build it from ``argv``.

    Returns the exit code (logging is set up here when nobody has yet).
    """
    from bidflow.serving.server import serve
    from bidflow.serving.workers import run_workers

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if options.workers > 1:
        return run_workers(argv, config, options)
    serve([model], options)
    return 0


class _quiet_argv:
    """Hide our options from ``kserve.model_server``, which parses ``sys.argv`` when imported.

    Its parser allows abbreviations and exits on a bad value: ``--config x`` reads as its
    ``--configure_logging x`` and kills the process. No library should see options not its own.
    """

    def __enter__(self) -> None:
        self._saved = sys.argv
        sys.argv = sys.argv[:1]

    def __exit__(self, *exc: object) -> None:
        sys.argv = self._saved


if __name__ == "__main__":
    main()

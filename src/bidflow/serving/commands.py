"""``bidflow serve``: the model server from the main CLI (the same options as ``python -m bidflow.serving``)."""

from __future__ import annotations

from typing import Annotated

import typer


def register_serving_commands(cli: typer.Typer) -> None:
    """Add ``serve`` to the top-level ``bidflow`` app."""
    cli.command("serve")(serve)


def serve(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="bid_filter or ctr.")] = "bid_filter",
    model: Annotated[
        str, typer.Option(help="Registry alias or version, an MLflow URI, or a model folder.")
    ] = "champion",
    name: Annotated[str | None, typer.Option(help="Endpoint name (default: the registered model name).")] = None,
    host: Annotated[str, typer.Option(help="Bind address; 0.0.0.0 only inside a container.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="REST port.")] = 8080,
    grpc_port: Annotated[int | None, typer.Option(help="Also serve gRPC v2 on this port (default: off).")] = None,
    auction_entry: Annotated[
        bool, typer.Option(help="Apply Prebid's auction-endpoint rules (requests straight from clients).")
    ] = False,
    feature_timeout_ms: Annotated[float, typer.Option(help="Online store wait before failing open.")] = 20.0,
    feature_cache_s: Annotated[
        float, typer.Option(help="Oldest an online-store answer may be when reused (0: ask it for every auction).")
    ] = 60.0,  # serving.online.DEFAULT_CACHE_S, not imported: it would load numpy for every CLI call
    workers: Annotated[
        int, typer.Option(help="Server processes sharing the port, each with its own model (one per core).")
    ] = 1,
) -> None:
    """Serve a model with KServe's v1 and v2 endpoints (bid filter: call/skip per demand partner)."""
    from bidflow.config import Config
    from bidflow.serving.__main__ import build, parser, run

    if kind not in ("bid_filter", "ctr"):
        raise typer.BadParameter("bid_filter or ctr", param_hint="--kind")
    argv = ["--kind", kind, "--model", model, "--host", host, "--http-port", str(http_port)]
    argv += ["--feature-timeout-ms", str(feature_timeout_ms), "--feature-cache-s", str(feature_cache_s)]
    argv += ["--workers", str(workers)]
    argv += ["--name", name] if name else []
    argv += ["--grpc-port", str(grpc_port)] if grpc_port is not None else []
    argv += ["--auction-entry"] if auction_entry else []
    config: Config = ctx.obj
    served, options = build(parser().parse_args(argv), config)
    code = run(served, options, argv, config)
    if code:
        raise typer.Exit(code)

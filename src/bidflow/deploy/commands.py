"""``bidflow canary ...``: deploy, watch, promote and roll back the versions of one model kind (``canary.kind``).

The same commands drive both backends (``--backend local | kserve``, default ``canary.backend``).
Locally, ``bidflow canary serve`` runs the router and the model servers; the other commands talk
to it. With KServe they patch the InferenceService through the Kubernetes API.

Exit codes of ``analyse``: 0 promote, 3 roll back, 4 continue (CI branches on them).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bidflow.kinds import registered_name

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.deploy.analysis import WindowMetrics
    from bidflow.deploy.backend import DeploymentState, ModelVersion
    from bidflow.deploy.canary import DeploymentController
    from bidflow.deploy.journal import Transition

out = Console()
canary_cli = typer.Typer(help="Canary deployments: deploy, status, analyse, promote, roll back.", no_args_is_help=True)

EXIT_PROMOTE = 0
EXIT_ROLLBACK = 3
EXIT_CONTINUE = 4


class Backend(StrEnum):
    """Where models are deployed."""

    local = "local"
    kserve = "kserve"


BackendOption = Annotated[
    Backend | None, typer.Option(help="local (processes on 127.0.0.1) or kserve (default: canary.backend).")
]
ActorOption = Annotated[str | None, typer.Option(help="Who triggers this, for the record (default cli:<user>).")]
ReasonOption = Annotated[list[str] | None, typer.Option("--reason", help="Why (repeat for several reasons).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register_canary_commands(cli: typer.Typer) -> None:
    """Add the ``canary`` command group to the top-level ``bidflow`` app (once)."""
    if not any(group.typer_instance is canary_cli for group in cli.registered_groups):
        cli.add_typer(canary_cli, name="canary")


@canary_cli.command("serve")
def serve_command(ctx: typer.Context) -> None:
    """Run the local deployment: the router on canary.router_port and the model-server processes.

    Restores the last recorded deployment on start. Stop with Ctrl-C (the model servers stop too).
    """
    from bidflow.deploy.router import serve_router

    config = _config(ctx, Backend.local)
    serve_router(config, _config_path(ctx))


@canary_cli.command("deploy")
def deploy_command(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="Registry version number or alias (of canary.kind).")] = "candidate",
    percent: Annotated[
        int | None, typer.Option(min=0, max=100, help="Canary share of requests (default canary.traffic_percent).")
    ] = None,
    backend: BackendOption = None,
    image: Annotated[str | None, typer.Option(help="kserve: model-server image (default: this release's).")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Deploy a registered version of canary.kind: the champion if none serves yet, else a canary at --percent."""
    config = _config(ctx, backend)
    model = _model_version(config, version)
    controller = _controller(config, image)
    percent = config.canary.traffic_percent if percent is None else percent
    done = controller.deploy(model, percent, actor=_actor(actor), reasons=reason or [])
    _print_transition(done)


@canary_cli.command("promote")
def promote_command(
    ctx: typer.Context, backend: BackendOption = None, actor: ActorOption = None, reason: ReasonOption = None
) -> None:
    """The canary takes all traffic and becomes the champion (registry alias ``champion`` follows)."""
    controller = _controller(_config(ctx, backend))
    _print_transition(controller.promote(actor=_actor(actor), reasons=reason or []))


@canary_cli.command("rollback")
def rollback_command(
    ctx: typer.Context, backend: BackendOption = None, actor: ActorOption = None, reason: ReasonOption = None
) -> None:
    """The canary gets no traffic; the champion serves everything (the version is tagged rolled back)."""
    controller = _controller(_config(ctx, backend))
    _print_transition(controller.rollback(actor=_actor(actor), reasons=reason or []))


@canary_cli.command("status")
def status_command(ctx: typer.Context, backend: BackendOption = None, as_json: JsonOption = False) -> None:
    """Who serves what, the canary's share, and the recorded transitions (also re-syncs the registry)."""
    from bidflow.deploy.canary import Controller

    controller = _controller(_config(ctx, backend))
    if isinstance(controller, Controller):
        controller.sync_registry()  # catch up with transitions made where the registry was out of reach
    state, transitions = controller.status(), controller.transitions()
    if as_json:
        print(json.dumps({"state": state.to_dict(), "transitions": [t.to_dict() for t in transitions]}, indent=2))
        return
    _print_state(state)
    if transitions:
        table = Table("when (UTC)", "action", "version", "by", "why", title="transitions")
        for t in transitions[-10:]:
            table.add_row(
                _when(t.at), t.action, t.model.version if t.model else "-", t.actor, "; ".join(t.reasons) or "-"
            )
        out.print(table)


@canary_cli.command("analyse")
def analyse_command(
    ctx: typer.Context,
    backend: BackendOption = None,
    monitor_url: Annotated[
        str | None, typer.Option(help="Drift monitor (default http://monitor.host:monitor.port).")
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Carry out promote or rollback.")] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Judge the canary (drift, errors, latency, score shift, online recall): continue, promote or roll back.

    Exit status: 0 promote, 3 roll back, 4 continue (with --apply the action is carried out first).
    """
    from bidflow.deploy.analysis import analyse
    from bidflow.kinds import kind

    config = _config(ctx, backend)
    controller = _controller(config)
    seen = controller.status()  # before the figures: --apply acts only if nothing changed since (compare-and-set)
    window = _window(config, controller, monitor_url)
    verdict = analyse(window, config.canary, labelled=kind(config, config.canary.kind).thresholded)
    if as_json:
        print(json.dumps({"verdict": verdict.to_dict(), "window": window.to_dict()}, indent=2))
    else:
        out.print(f"[bold]{verdict.outcome}[/]: " + "; ".join(verdict.reasons), highlight=False)
    if apply and verdict.outcome != "continue":
        act = controller.promote if verdict.outcome == "promote" else controller.rollback
        done = act(
            actor=_actor(actor, "analysis"),
            reasons=verdict.reasons,
            metrics=window.to_dict(),
            expect=seen.detail.get("version"),
            expect_canary=seen.canary.version if seen.canary is not None else None,
        )
        _print_transition(done)
    raise typer.Exit({"promote": EXIT_PROMOTE, "rollback": EXIT_ROLLBACK}.get(verdict.outcome, EXIT_CONTINUE))


@canary_cli.command("replay")
def replay_command(
    ctx: typer.Context,
    logs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="OpenRTB kinds: auction-log files (bidflow simulate output, .jsonl.gz). Instance kinds: one rows "
            "file (default: the kind's own source)."
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Endpoint (default: the local router, canary.host:canary.router_port).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most this many requests.")] = None,
    outcomes: Annotated[
        bool, typer.Option(help="Report explored auctions' outcomes to the drift monitor (online recall).")
    ] = True,
    per_request: Annotated[int, typer.Option(min=1, max=256, help="Instance kinds: rows per request.")] = 4,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Instance kinds: send only rows with COLUMN=VALUE (repeat for several; a drift drill)."),
    ] = None,
) -> None:
    """Replay logged traffic of canary.kind through the served endpoint, showing requests/s and latency as it goes."""
    import asyncio

    from bidflow.deploy.replay import read_auctions, read_instances, replay_with_progress, select_rows
    from bidflow.errors import ConfigError, InputError
    from bidflow.kinds import kind
    from bidflow.monitoring.auth import monitor_token

    config: Config = ctx.obj
    served = kind(config, config.canary.kind)
    if served.replay == "openrtb":
        if not logs:
            raise InputError("name the auction-log files to replay", hint="e.g. data/raw/**/*.jsonl.gz")
        auctions = list(read_auctions(logs, limit))
    elif served.replay == "instances":
        if logs and len(logs) > 1:
            raise InputError("an instance kind replays one rows file", got=", ".join(map(str, logs)))
        source = logs[0] if logs else served.default_source(config)
        rows = select_rows(served.load_rows(config, source, None, None), only or [])
        auctions = list(read_instances(rows, served.fields, per_request=per_request, limit=limit))
    else:
        raise ConfigError(f"kind '{served.name}' has no replay", where="canary.kind", got=str(served.replay))
    endpoint = url or f"http://{config.canary.host}:{config.canary.router_port}"
    target = f"{endpoint.rstrip('/')}/v1/models/{registered_name(config, config.canary.kind)}:predict"
    monitor = f"http://{config.monitor.host}:{config.monitor.port}" if outcomes else None
    token = monitor_token(config) if outcomes else None
    report = asyncio.run(
        replay_with_progress(auctions, target, out, concurrency=concurrency, monitor_url=monitor, monitor_token=token)
    )
    summary = report.summary()
    out.print(
        f"{summary['sent']:,} requests in {summary['seconds']} s ({summary['auctions_per_s']}/s), "
        f"failed {summary['failed']}, p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
        f"answered by {summary['roles']}",
        highlight=False,
    )
    if report.failed:
        out.print("first failures: " + " | ".join(report.failures[:3]), highlight=False)
        raise typer.Exit(1)


@canary_cli.command("reference")
def reference_command(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="Registry version number or alias (of canary.kind).")] = "candidate",
    source: Annotated[Path | None, typer.Option(help="The kind's rows (default: its own source).")] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Parquet file (default canary.state/reference/<version>.parquet).")
    ] = None,
) -> None:
    """Write the drift monitor's reference for a model version of canary.kind (held-out rows: features and scores)."""
    from bidflow.modeling.steps import drift_reference_step

    config: Config = ctx.obj
    ref, path, rows = drift_reference_step(config, model=version, source=source, out=out_path)
    detector = config.monitor.detector / (ref.version or "run")
    out.print(f"drift reference for {ref.label} ({config.canary.kind}): {rows:,} rows -> {path}", highlight=False)
    out.print(
        f"fit the detector in the monitor environment:\n  .venv-monitor/bin/python -m bidflow.monitoring fit "
        f"--reference {path} --out {detector}",
        highlight=False,
    )


# -- helpers --


def _config(ctx: typer.Context, backend: Backend | None) -> Config:
    from bidflow.config import override

    config: Config = ctx.obj
    return override(config, "canary", {"backend": backend.value if backend else None})


def _config_path(ctx: typer.Context) -> Path | None:
    root = ctx.find_root()
    value = root.params.get("config")
    return Path(value) if value else None


def _controller(config: Config, image: str | None = None) -> DeploymentController:
    from bidflow.deploy.canary import controller_for

    return controller_for(config, image=image)


def _actor(given: str | None, default_kind: str | None = None) -> str:
    from bidflow.deploy.canary import default_actor

    if given:
        return given
    return default_kind or default_actor()


def _model_version(config: Config, version: str) -> ModelVersion:
    from bidflow.deploy.steps import model_version

    return model_version(config, version)


def _window(config: Config, controller: DeploymentController, monitor_url: str | None) -> WindowMetrics:
    """Router figures (local backend) and the monitor's drift, recall and score PSI."""
    import urllib.error
    import urllib.request

    from bidflow.deploy.analysis import RoleMetrics, WindowMetrics
    from bidflow.deploy.canary import RouterClient
    from bidflow.errors import DeploymentError

    router: dict[str, Any] = controller.metrics() if isinstance(controller, RouterClient) else {}
    url = (monitor_url or f"http://{config.monitor.host}:{config.monitor.port}").rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            monitor = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeploymentError(
            "the drift monitor is not answering: without it the canary cannot be judged",
            where=url,
            got=str(getattr(exc, "reason", exc)),
            hint="start it: `.venv-monitor/bin/python -m bidflow.monitoring serve`",
        ) from exc
    roles = monitor.get("roles", {})
    latest = monitor.get("latest", {}).get("canary")
    canary_version = roles.get("canary", {}).get("version")
    drifted: tuple[str, ...] = ()
    if latest and latest.get("version") == canary_version:
        drifted = tuple(f["name"] for f in latest["report"]["features"] if f["drift"])

    def side(role: str) -> RoleMetrics:
        figures, watched = router.get(role) or {}, roles.get(role, {})
        return RoleMetrics(
            requests=int(figures.get("requests", watched.get("auctions", 0))),
            errors=int(figures.get("errors", 0)),
            p99_ms=figures.get("p99_ms"),
            explored_bids=int(watched.get("explored_bids", 0)),
            recall=watched.get("online_recall"),
        )

    return WindowMetrics(side("champion"), side("canary"), monitor.get("score_psi"), drifted)


def _print_state(state: DeploymentState) -> None:
    champion = f"v{state.champion.version}" if state.champion else "none"
    canary = f"v{state.canary.version} at {state.canary_percent} %" if state.canary else "none"
    out.print(f"champion: {champion}   canary: {canary}   ready: {state.ready}", highlight=False)


def _print_transition(done: Transition) -> None:
    version = done.model.version if done.model else "?"
    out.print(f"{done.action} v{version} by {done.actor}" + (f": {'; '.join(done.reasons)}" if done.reasons else ""))
    if done.state is not None:
        _print_state(done.state)


def _when(at: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")

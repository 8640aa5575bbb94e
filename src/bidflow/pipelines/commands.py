"""``bidflow pipeline compile | run --local | submit``: the Kubeflow pipelines from the command line.

kfp, Feast and MLflow are imported inside the commands, so ``bidflow --help`` does not pay for them.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from bidflow.kinds import DEFAULT_KIND

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.kinds import Kind

out = Console()

pipeline_cli = typer.Typer(
    help="Kubeflow pipelines: compile to IR YAML, run locally with kfp.local, submit to a KFP endpoint.",
    no_args_is_help=True,
)


PipelineOption = Annotated[
    str,
    typer.Option(
        "--pipeline", "-p", "--kind", help="The model kind whose training pipeline to use (`bidflow kinds` lists them)."
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="Pipeline argument key=value (repeatable; lists and structs as JSON)."),
]


def register_pipeline_commands(cli: typer.Typer) -> None:
    """Add the ``pipeline`` command group to the top-level ``bidflow`` app (once, however often called)."""
    if not any(group.typer_instance is pipeline_cli for group in cli.registered_groups):
        cli.add_typer(pipeline_cli, name="pipeline")


@pipeline_cli.command("compile")
def compile_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for <pipeline>.yaml files.")] = Path("pipelines"),
    image: Annotated[
        str | None, typer.Option(help="Component image instead of ghcr.io/bidflow/bidflow-components:<version>.")
    ] = None,
) -> None:
    """Compile every pipeline to Kubeflow Pipelines IR YAML."""
    from bidflow.pipelines.catalog import compile_all

    for path in compile_all(out_dir, image):
        out.print(f"[green]compiled[/] {path}")


@pipeline_cli.command("run")
def run_command(
    ctx: typer.Context,
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local (SubprocessRunner).")] = False,
    pipeline: PipelineOption = DEFAULT_KIND,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Working folder (default: runs/pipeline-<pipeline>).")
    ] = None,
    raw: Annotated[
        Path | None,
        typer.Option(help="Kinds trained on auction logs (the bid filter): the logs (default: generate them)."),
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="Other kinds: the kind's data (default: its configured source).")
    ] = None,
    hours: Annotated[int | None, typer.Option(help="Generated logs: hours (default: simulate.hours).")] = None,
    auctions_per_hour: Annotated[int | None, typer.Option(help="Generated logs: mean auctions per hour.")] = None,
    start: Annotated[datetime | None, typer.Option(help="Generated logs: first hour, UTC.")] = None,
    param: ParamOption = None,
) -> None:
    """Run a training pipeline end to end; exit 1 if a gate stopped it before registration."""
    import yaml

    from bidflow.config import override
    from bidflow.errors import GateFailed
    from bidflow.pipelines.catalog import declared_parameters, parse_arguments
    from bidflow.pipelines.local import run_local

    if not local:
        raise typer.BadParameter("only --local runs are supported here; use `bidflow pipeline submit` for a cluster")
    config: Config = ctx.obj
    kind = _kind_with_pipeline(config, pipeline)
    workdir = (out_dir or Path(f"runs/pipeline-{kind.name}")).resolve()
    if kind.pipeline_source == "raw_logs":
        overrides = {"hours": hours, "auctions_per_hour": auctions_per_hour, "start": start}
        data = {"raw_logs": str((raw or _generate(override(config, "simulate", overrides), workdir)).resolve())}
    else:
        data = {kind.pipeline_source: str((source or kind.default_source(config)).resolve())}
    text = yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
    arguments = {"config": text} | data | parse_arguments(declared_parameters(kind.name, config), param or [])
    run = run_local(kind.name, arguments, config, workdir)
    gates = [(gate, passed, run.reports.get(gate)) for gate, passed in run.gates.items()]
    for gate, passed, report in gates:
        verdict = "[green]passed[/]" if passed else "[bold red]FAILED[/]"
        out.print(f"{gate} gate {verdict}; report: [bold]{report}[/]")
    out.print(f"task outputs under {run.outputs}; {run.seconds:.0f} s")
    if run.registered is None:
        failed = {g: r for g, ok, r in gates if not ok}
        raise GateFailed(
            f"pipeline stopped before register_model: nothing was registered (MLflow run {run.candidate_run})",
            report_path=next(iter(failed.values()), None),
            got="failed gates: " + (", ".join(failed) or "none, yet no version was registered"),
        )
    out.print(f"[green]registered[/] {run.registered.label} as {', '.join(repr(a) for a in run.registered.aliases)}")
    if kind.name == config.canary.kind:
        out.print(
            f"deployed through the {config.canary.backend} backend (deploy_canary); "
            "`bidflow canary status` shows the champion and the canary"
        )


@pipeline_cli.command("submit")
def submit_command(
    host: Annotated[
        str, typer.Option(help="Kubeflow Pipelines API endpoint, e.g. https://kubeflow.example.com/pipeline.")
    ],
    ctx: typer.Context,
    pipeline: PipelineOption = DEFAULT_KIND,
    experiment: Annotated[str, typer.Option(help="Experiment to file the run under (created if missing).")] = "bidflow",
    run_name: Annotated[str | None, typer.Option(help="Run name (default: <pipeline>-<UTC time>).")] = None,
    param: ParamOption = None,
    config_file: Annotated[
        Path | None, typer.Option(help="A bidflow.yaml whose text becomes the pipeline's config argument.")
    ] = None,
    recurring: Annotated[
        str | None, typer.Option(help="Cron schedule for a recurring run instead of one run (5 or 6 fields).")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Component image instead of the default.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace (multi-user).")] = None,
) -> None:
    """Compile a pipeline and submit it to Kubeflow Pipelines (upload, experiment, run or recurring run)."""
    from bidflow.config import load_config
    from bidflow.errors import InputError
    from bidflow.pipelines.catalog import declared_parameters, parse_arguments
    from bidflow.pipelines.submit import submit

    config: Config = ctx.obj
    if config_file is not None:
        if not config_file.is_file():
            raise InputError("configuration file not found", where=config_file)
        config = load_config(config_file)
    kind = _kind_with_pipeline(config, pipeline)
    arguments: dict[str, Any] = parse_arguments(declared_parameters(kind.name, config), param or [])
    if config_file is not None:
        arguments["config"] = config_file.read_text(encoding="utf-8")
    name = run_name or f"{kind.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    result = submit(
        host,
        kind.name,
        arguments=arguments,
        experiment=experiment,
        run_name=name,
        cron=recurring,
        image=image,
        namespace=namespace,
        config=config,
    )
    out.print(f"pipeline {result.pipeline_id}, version {result.version_name} ({result.version_id})")
    if result.recurring_run_id:
        out.print(f"[green]recurring run[/] {result.recurring_run_id} '{name}' in experiment {experiment}")
    else:
        out.print(f"[green]run[/] {result.run_id} '{name}' in experiment {experiment}")


def _kind_with_pipeline(config: Config, name: str) -> Kind:
    """The registered kind ``name``, which must have a training pipeline.

    Raises:
        ConfigError: no such kind, or it has no pipeline.
    """
    from bidflow.errors import ConfigError
    from bidflow.kinds import kind
    from bidflow.pipelines.catalog import pipeline_names

    found = kind(config, name)
    if found.pipeline is None:
        raise ConfigError(f"model kind '{name}' has no training pipeline", expected=", ".join(pipeline_names(config)))
    return found


def _generate(config: Config, workdir: Path) -> Path:
    """Auction logs for a local run, generated fresh under ``workdir/raw``."""
    from bidflow.data.simulate import simulate

    target = workdir / "raw"
    shutil.rmtree(target, ignore_errors=True)
    summary = simulate(config.simulate, target)
    out.print(f"generated {summary.auctions:,} auctions over {len(summary.files)} hours under {target}")
    return target

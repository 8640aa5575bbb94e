"""``bidflow bidder fit | replay | gate``: the bidder kind's own loop from the command line.

The bidder is not trained on rows (``bidflow train`` refuses it): it is fitted on a campaign's auction
logs, replayed on held-out auctions and gated on the replay. numpy, numba, mlflow and matplotlib are
imported inside the commands, so ``bidflow --help`` does not pay for them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from bidflow.kinds.bidder import NAME

if TYPE_CHECKING:
    from bidflow.config import Config

out = Console()
err = Console(stderr=True)

bidder_cli = typer.Typer(
    help="The bidder kind: fit a campaign's bid landscape and bidding policies, replay them on held-out "
    "auctions, and gate a candidate against the champion on the replay.",
    no_args_is_help=True,
)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Folder of the campaigns' auction outcomes (default: bidder.data).", show_default=False
    ),
]
CampaignOption = Annotated[
    str | None, typer.Option(help="Campaign id, e.g. 2997 (default: bidder.campaign).", show_default=False)
]
LevelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--level",
        help="Budget level c0 in (0, 1], as 1/32 or 0.03125 (repeatable; default: bidder.levels).",
        show_default=False,
    ),
]
ReportOption = Annotated[Path | None, typer.Option("--report", help="Report folder.", show_default=False)]


def register_bidder_commands(cli: typer.Typer) -> None:
    """Add the bidder's command group to the top-level ``bidflow`` app (once, however often called)."""
    if not any(group.typer_instance is bidder_cli for group in cli.registered_groups):
        cli.add_typer(bidder_cli, name=NAME)


@bidder_cli.command("fit")
def fit_command(
    ctx: typer.Context,
    data: DataOption = None,
    campaign: CampaignOption = None,
    level: LevelOption = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the fit as a version with alias 'candidate'.")
    ] = True,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Also keep the bidder folder (bidder.json) here.", show_default=False)
    ] = None,
) -> None:
    """Fit the landscape and the four policies at every budget level, log the fit to MLflow, register it.

    Policies (constant, linear, ORTB, planned) are tuned on the campaign's tuning log; the held-out
    test log is only used for the landscape's log loss.
    """
    from bidflow.bidding.steps import fit_step

    config = _bidder_config(ctx, data=data, campaign=campaign, levels=level)
    outcome = fit_step(config, out_dir=out_dir, register=register, progress=lambda line: err.print(line))
    bidder = outcome.bidder
    out.print(
        f"[green]fitted[/] campaign {bidder.campaign.id} at {len(bidder.policies)} budget levels in "
        f"{outcome.seconds:.0f} s; landscape win log loss on the held-out auctions "
        f"{outcome.metrics['landscape_win_logloss']:.4f}"
    )
    where = f"version [bold]{outcome.version.version}[/] ('candidate')" if outcome.version else "not registered"
    out.print(f"MLflow run {outcome.run_id}; {where}")
    if out_dir is not None:
        out.print(f"bidder saved to [bold]{out_dir}[/]")


@bidder_cli.command("replay")
def replay_command(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(help="Alias or version in the registry, an MLflow URI (models:/...) or a bidder folder."),
    ] = "candidate",
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", help="constant, linear, ortb or planned (repeatable; default: all four).", show_default=False
        ),
    ] = None,
    level: LevelOption = None,
    data: DataOption = None,
    campaign: CampaignOption = None,
    report_dir: ReportOption = None,
    log: Annotated[bool, typer.Option("--log/--no-log", help="Log every replay to MLflow.")] = True,
) -> None:
    """Replay a bidder's policies on the held-out auctions under each level's budget; write an HTML + JSON report.

    Per policy and level the report gives clicks, impressions, cost, budget, spend share, win rate, CPM
    and eCPC, with plots (clicks and spend against budget, bid against pCTR, win rate over the log,
    the landscape against the held-out win rates).
    """
    from bidflow.bidding.names import POLICIES
    from bidflow.bidding.steps import replay_step

    config = _bidder_config(ctx, data=data, campaign=campaign, levels=level)
    chosen = _policies(policy or list(POLICIES))
    levels = tuple(config.bidder.levels)
    with _Replaying() as advance:
        outcome = replay_step(
            config, model=model, policies=chosen, levels=levels, report_dir=report_dir, log=log, progress=advance
        )
    for r in outcome.replays:
        s = r.outcome.summary()
        out.print(
            f"{r.policy:>8} c0={_label(r.level):>5}: {r.outcome.clicks:>4} clicks, {r.outcome.impressions:>7,} "
            f"impressions, cost {r.outcome.cost:>10,} of {r.outcome.total_budget:>10,} ({s['spend_share']:.1%}), "
            f"eCPC {'-' if not r.outcome.clicks else format(s['ecpc'], ',.0f')}",
            highlight=False,
        )
    logged = f"; MLflow run {outcome.run_id}" if outcome.run_id else ""
    out.print(f"report: [bold]{outcome.html_path}[/] and {outcome.json_path.name}{logged}")


@bidder_cli.command("gate")
def gate_command(
    ctx: typer.Context,
    candidate: Annotated[str, typer.Option(help="Candidate: alias or version number.")] = "candidate",
    champion: Annotated[
        str,
        typer.Option(help="Champion: alias or version; 'none' compares with the candidate's own linear policy."),
    ] = "champion",
    data: DataOption = None,
    report_dir: ReportOption = None,
) -> None:
    """Replay candidate and champion on the same held-out auctions at every bidder.levels; exit 1 unless it wins.

    The candidate passes only with strictly more clicks than the champion at EVERY budget level, both
    held to the same budget (and, with bidder.gate_spend_tolerance, at most the champion's cost x
    (1 + tolerance)). With no champion yet it must beat the linear policy fitted in its own run. The
    verdict is tagged gate.replay on the candidate, which `bidflow promote --kind bidder` requires.
    """
    from bidflow.bidding.steps import gate_step

    config = _bidder_config(ctx, data=data, campaign=None, levels=None)
    with _Replaying() as advance:
        outcome = gate_step(
            config,
            candidate=candidate,
            champion=None if champion.lower() == "none" else champion,
            report_dir=report_dir,
            progress=advance,
        )
    for v in outcome.gate.levels:
        out.print(
            f"c0={_label(v.level):>5}: {v.candidate.clicks} clicks vs {v.baseline.clicks} "
            f"(cost {v.candidate.cost:,} vs {v.baseline.cost:,}, budget {v.candidate.budget:,})",
            highlight=False,
        )
    out.print(f"[green]replay gate passed[/]: {outcome.candidate.label} against {outcome.gate.baseline}")
    for note in outcome.gate.notes:
        out.print(f"[yellow]note[/]: {note}")
    out.print(f"report: [bold]{outcome.html_path}[/]; MLflow run {outcome.run_id}")


def parse_level(text: str) -> float:
    """A budget level from ``1/32`` or ``0.03125``.

    Raises:
        typer.BadParameter: not a number or a fraction.
    """
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise typer.BadParameter(f"not a budget level: {text!r} (expected e.g. 1/32 or 0.03125)") from exc


def _bidder_config(ctx: typer.Context, *, data: Path | None, campaign: str | None, levels: list[str] | None) -> Config:
    """The configuration with the command's options over ``bidder``.

    Raises:
        ConfigError: a level outside (0, 1] or another invalid value (exit 2).
    """
    from bidflow.config import override
    from bidflow.errors import ConfigError

    config: Config = ctx.obj
    values: dict[str, Any] = {"data": data, "campaign": campaign}
    if levels:
        parsed = tuple(parse_level(text) for text in levels)
        outside = [text for text, value in zip(levels, parsed, strict=True) if not 0.0 < value <= 1.0]
        if outside:
            raise ConfigError(
                "a budget level must lie in (0, 1]: a share of the training cost per auction",
                where="--level",
                got=", ".join(outside),
                hint="e.g. --level 1/32 --level 1/8",
            )
        values["levels"] = parsed
        if config.bidder.served_level not in parsed:
            values["served_level"] = parsed[0]  # the served level must be one of the fitted ones
    return override(config, NAME, values)  # the kind's settings section is named after it


def _policies(names: list[str]) -> tuple[Any, ...]:
    from bidflow.bidding.names import POLICIES

    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise typer.BadParameter(f"unknown policy {unknown[0]!r} (expected one of {', '.join(POLICIES)})")
    return tuple(names)


def _label(level: float) -> str:
    from bidflow.bidding.gate import level_label

    return level_label(level)


class _Replaying:
    """A live rich progress bar over the auctions replayed (one task per policy and level)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]replaying[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
        )  # fmt: skip
        self.task: Any = None

    def __enter__(self) -> Any:
        self.progress.start()
        self.task = self.progress.add_task("", total=None)

        def advance(what: str, auctions: int, total: int) -> None:
            self.progress.update(self.task, description=what, advance=auctions, total=total)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

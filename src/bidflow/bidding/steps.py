"""The bidder's steps as the CLI and the pipeline components run them: read the campaign, fit, replay, gate.

Each step wires the core (``auctions``, ``fit``, ``artifact``, the policies' replay, ``gate``) to its
inputs (the campaign's files, the registry) and outputs (the bidder folder, reports, MLflow), and
returns a small summary. A failing gate raises ``GateFailed`` *after* its report is written and logged.

The protocol: policies are tuned on the campaign's tuning log (the RLB authors' validation episodes)
and judged on the held-out test log, which neither fitting nor tuning ever sees. A campaign without a
test log is tuned on the first half of its tuning log and judged on the second half.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bidflow.bidding.auctions import Auctions, Campaign, CampaignFiles
from bidflow.bidding.gate import Played, ReplayGate, judge, level_key, level_label
from bidflow.bidding.names import POLICIES, PolicyName
from bidflow.errors import GateFailed, InputError

if TYPE_CHECKING:
    from bidflow.bidding.fit import Bidder, BidderSettings
    from bidflow.bidding.replay import Outcome
    from bidflow.config import BidderConfig, Config
    from bidflow.modeling.registry import ModelRef

BASELINE_POLICY: Final[PolicyName] = "linear"  # what a first candidate must beat when no champion exists
Advance = Callable[[str, int], None]  # (what is being replayed now, auctions just replayed)
Progress = Callable[[str, int, int], None]  # (what, auctions just replayed, auctions to replay in all)


@dataclass(frozen=True)
class CampaignData:
    """A campaign's statistics, its tuning logs and its held-out auctions, read per the protocol.

    Attributes:
        campaign: the training-period statistics.
        tuning: the tuning logs the policies are tuned on.
        heldout: the auctions the gate and the replay command judge on.
        files: where they came from.
        heldout_source: ``test log`` or ``second half of the tuning log``.
    """

    campaign: Campaign
    tuning: list[Auctions]
    heldout: Auctions
    files: CampaignFiles
    heldout_source: str


@dataclass(frozen=True)
class Replayed:
    """One policy of one bidder replayed at one budget level."""

    model: str
    policy: PolicyName
    level: float
    outcome: Outcome

    @property
    def name(self) -> str:
        return f"{self.model} {self.policy}"


@dataclass(frozen=True)
class FitOutcome:
    """What ``fit_step`` produced."""

    bidder: Bidder
    folder: Path
    run_id: str
    version: ModelRef | None
    metrics: dict[str, float]
    data: CampaignData
    seconds: float


@dataclass(frozen=True)
class ReplayOutcome:
    """What ``replay_step`` produced."""

    replays: list[Replayed]
    html_path: Path
    json_path: Path
    run_id: str | None
    model: str


@dataclass(frozen=True)
class GateStepOutcome:
    """What ``gate_step`` decided and where its report went."""

    gate: ReplayGate
    html_path: Path
    json_path: Path
    candidate: ModelRef
    champion: ModelRef | None
    run_id: str
    replays: list[Replayed] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.gate.passed


def settings_of(cfg: BidderConfig) -> BidderSettings:
    """The fit settings of the ``bidder`` configuration section."""
    from bidflow.bidding.fit import BidderSettings

    return BidderSettings(
        episode=cfg.episode, levels=tuple(cfg.levels), served_level=cfg.served_level, policy=cfg.policy,
        value_bins=cfg.value_bins, max_bid=cfg.max_bid,
    )  # fmt: skip


def load_campaign(cfg: BidderConfig, data: Path | None = None) -> CampaignData:
    """The configured campaign's statistics, tuning logs and held-out auctions.

    Args:
        cfg: the ``bidder`` section (campaign, data folder).
        data: the data folder instead of ``bidder.data``.

    Raises:
        InputError: the folder is missing, or lacks the campaign's files.
    """
    from bidflow.bidding.auctions import campaign_files, read_auctions, read_campaign

    folder = data or cfg.data
    if not folder.is_dir():
        raise InputError(
            "bidder data folder not found",
            where=str(folder),
            hint="set bidder.data (or --data) to the folder of the campaigns' auction outcomes",
        )
    files = campaign_files(folder, cfg.campaign)
    campaign = read_campaign(files.statistics, cfg.campaign)
    tuning = _head(read_auctions(files.tuning), cfg.max_auctions)
    source = "test log"
    if files.heldout is None:
        half = len(tuning) // 2
        heldout = tuning.tail(half)
        tuning, source = tuning.head(half), "second half of the tuning log"
    else:
        heldout = _head(read_auctions(files.heldout), cfg.max_auctions)
    return CampaignData(campaign, [tuning], heldout, files, source)


def fit_step(
    config: Config,
    *,
    data: Path | None = None,
    out_dir: Path | None = None,
    register: bool = True,
    progress: Callable[[str], None] | None = None,
) -> FitOutcome:
    """Fit the bidder (landscape + every policy at every level), log the fit to MLflow, register it.

    Args:
        config: the configuration (``bidder`` and ``registry`` sections).
        data: the data folder instead of ``bidder.data``.
        out_dir: where the bidder folder goes (default: a temporary folder, gone after logging).
        register: create a registered version and point ``candidate`` at it (the pipeline registers
            only after the replay gate, so it logs without registering).
        progress: called with a line per fitted level.
    """
    from bidflow.bidding import registry
    from bidflow.bidding.artifact import save_bidder
    from bidflow.bidding.fit import fit_bidder
    from bidflow.bidding.report import tuning_figure
    from bidflow.kinds import registered_name
    from bidflow.kinds.bidder import NAME
    from bidflow.modeling.plots import png

    started = time.perf_counter()
    loaded = load_campaign(config.bidder, data)
    bidder = fit_bidder(loaded.campaign, loaded.tuning, settings_of(config.bidder), progress=progress)
    metrics = fit_metrics(bidder, loaded.heldout)
    with tempfile.TemporaryDirectory() as tmp:
        folder = out_dir or Path(tmp) / registry.ARTIFACT
        save_bidder(bidder, folder)
        curves = Path(tmp) / "tuning_curves.png"
        curves.write_bytes(png(tuning_figure(bidder)))
        run_id, version = registry.log_fit(
            config.registry,
            folder,
            model_name=registered_name(config, NAME),
            params=fit_params(bidder, config.bidder),
            metrics=metrics,
            files=[curves],
            tags=data_tags(loaded),
            run_name=f"fit campaign {loaded.campaign.id}",
            register=register,
        )
    return FitOutcome(bidder, folder, run_id, version, metrics, loaded, time.perf_counter() - started)


def fit_params(bidder: Bidder, cfg: BidderConfig) -> dict[str, str]:
    """Settings and every policy's fitted parameters per level, as MLflow parameters."""
    import json

    s = bidder.settings
    params = {
        "campaign": bidder.campaign.id,
        "episode": str(s.episode),
        "levels": ",".join(level_label(v) for v in s.levels),
        "served_level": level_label(s.served_level),
        "policy": s.policy,
        "value_bins": str(s.value_bins),
        "max_bid": str(s.max_bid),
    }
    for level, policies in bidder.policies.items():
        params[f"{level_key(level)}.budget"] = str(bidder.budget(level))
        for name, policy in policies.items():
            for key, value in policy.params().items():
                text = json.dumps(value) if isinstance(value, list) else str(value)
                params[f"{level_key(level)}.{name}.{key}"] = text
    return params


def fit_metrics(bidder: Bidder, heldout: Auctions) -> dict[str, float]:
    """Tuning clicks per level and policy (the chosen parameter's mean), and the landscape's win log loss.

    The log loss is of the landscape's P(win | bid) against the wins on the held-out auctions, for the
    bids the served policy places there at the served level: how well the training histogram
    predicts the market the bidder will meet.
    """
    metrics = {
        f"tuning_clicks.{level_key(level)}.{name}": max(curve.values())
        for level, curves in bidder.tuning.items()
        for name, curve in curves.items()
        if curve
    }
    served = bidder.policy().replay(heldout)
    metrics["landscape_win_logloss"] = bidder.landscape.log_loss(served.bids, heldout.price)
    metrics["heldout_auctions"] = float(len(heldout))
    return metrics


def data_tags(loaded: CampaignData) -> dict[str, str]:
    """Run tags naming the campaign and its files (the files are read in place, never copied)."""
    return {
        "bidder.campaign": loaded.campaign.id,
        "data.statistics": str(loaded.files.statistics),
        "data.tuning": str(loaded.files.tuning),
        "data.heldout": str(loaded.files.heldout or loaded.files.tuning),
        "data.heldout_source": loaded.heldout_source,
    }


def replay_all(
    bidder: Bidder,
    auctions: Auctions,
    levels: Sequence[float],
    policies: Sequence[PolicyName],
    *,
    model: str,
    advance: Advance | None = None,
) -> list[Replayed]:
    """Replay each policy of ``bidder`` at each level through ``auctions``.

    Raises:
        BiddingError: the bidder has no policy fitted at a level.
    """
    from bidflow.errors import BiddingError

    done = []
    for level in levels:
        if level not in bidder.policies:
            raise BiddingError(
                f"{model} has no policies fitted at c0={level_label(level)}",
                expected=", ".join(level_label(v) for v in bidder.policies),
                got=level_label(level),
                hint="replay at the levels it was fitted at, or fit it with these levels",
            )
        for name in policies:
            if advance is not None:
                advance(f"{model} {name} c0={level_label(level)}", 0)
            outcome = bidder.policy(level, name).replay(auctions)
            done.append(Replayed(model, name, level, outcome))
            if advance is not None:
                advance(f"{model} {name} c0={level_label(level)}", len(auctions))
    return done


def replay_metrics(replays: Sequence[Replayed]) -> dict[str, dict[str, float]]:
    """Per replayed (model, policy): its summary per level, keyed ``c0_1_32.clicks`` etc."""
    out: dict[str, dict[str, float]] = {}
    for r in replays:
        for key, value in r.outcome.summary().items():
            out.setdefault(r.name, {})[f"{level_key(r.level)}.{key}"] = value
    return out


def replay_step(
    config: Config,
    *,
    model: str = "candidate",
    policies: Sequence[PolicyName] = POLICIES,
    levels: Sequence[float] | None = None,
    data: Path | None = None,
    report_dir: Path | None = None,
    log: bool = True,
    progress: Progress | None = None,
) -> ReplayOutcome:
    """Replay a bidder's policies on the held-out auctions; write the HTML + JSON report; log to MLflow.

    Args:
        config: the configuration.
        model: alias or version in the registry, a ``models:/``/``runs:/`` URI, or a bidder folder.
        policies: the policies to replay (default all four).
        levels: the budget levels (default ``bidder.levels``).
        data: the data folder instead of ``bidder.data``.
        report_dir: where replay.html / replay.json go (default ``paths.reports/replay-<kind>``).
        log: log the replays as MLflow runs.
        progress: called as replays go (what is replayed now, auctions just replayed, auctions in all).
    """
    from bidflow.bidding import registry
    from bidflow.bidding.artifact import load_bidder
    from bidflow.bidding.report import replay_html
    from bidflow.kinds import registered_name
    from bidflow.kinds.bidder import NAME
    from bidflow.modeling.report import write_html, write_json

    name = registered_name(config, NAME)
    folder, label = registry.fetch_named(config, name, model)
    bidder = load_bidder(folder)
    loaded = load_campaign(config.bidder, data)
    chosen = tuple(levels or config.bidder.levels)
    described = f"v{label}" if label.isdigit() else label
    advance = _advance(progress, len(loaded.heldout) * len(chosen) * len(policies))
    replays = replay_all(bidder, loaded.heldout, chosen, policies, model=described, advance=advance)
    out = report_dir or config.paths.reports / f"replay-{NAME}"
    summary = {
        "model": described,
        "campaign": bidder.campaign.id,
        "heldout": loaded.heldout_source,
        "auctions": len(loaded.heldout),
        "replays": [{"policy": r.policy, "level": r.level, **r.outcome.summary()} for r in replays],
    }
    json_path = write_json(summary, out / "replay.json")
    html_path = write_html(replay_html(bidder, loaded, replays, described), out / "replay.html")
    run_id = None
    if log:
        run_id = registry.log_replays(
            config.registry,
            run_name=f"replay {described}",
            replays=replay_metrics(replays),
            tags=data_tags(loaded) | {"bidder.model": described},
            replay_tags={r.name: {"bidder.policy": r.policy} for r in replays},
            files=[json_path, html_path],
        )
    return ReplayOutcome(replays, html_path, json_path, run_id, described)


def gate_step(
    config: Config,
    *,
    candidate: str = "candidate",
    champion: str | None = "champion",
    data: Path | None = None,
    report_dir: Path | None = None,
    enforce: bool = True,
    progress: Progress | None = None,
) -> GateStepOutcome:
    """Replay the candidate and the champion on the same held-out auctions at every level; judge; log; tag.

    With no champion yet (or ``champion`` None) the baseline is the linear policy fitted in the
    candidate's own run. The verdict is tagged ``gate.replay`` on the candidate's version and run.

    Args:
        config: the configuration.
        candidate: alias or version, or the ``runs:/`` URI of a fit not registered yet (its run is tagged).
        champion: alias or version of the champion; None compares with the candidate's linear policy.
        data: the data folder instead of ``bidder.data``.
        report_dir: where gate.html / gate.json go (default ``paths.reports/gate-<kind>``).
        enforce: raise ``GateFailed`` on failure; False returns the failed outcome (a pipeline branches on it).
        progress: called as replays go (what, auctions just replayed, auctions in all).

    Raises:
        GateFailed: the candidate failed at some level (after the report is written and logged).
    """
    from bidflow.bidding import registry as bidding_registry
    from bidflow.bidding.artifact import load_bidder
    from bidflow.bidding.report import gate_html
    from bidflow.kinds import registered_name
    from bidflow.kinds.bidder import GATE, NAME
    from bidflow.modeling import registry
    from bidflow.modeling.report import write_html, write_json

    name = registered_name(config, NAME)
    cand_ref = registry.resolve(config.registry, name, candidate)
    cand_bidder = load_bidder(_fetch(config, name, cand_ref))
    champ_ref = None
    if champion is not None and not (
        champion == registry.CHAMPION and registry.champion(config.registry, name) is None
    ):
        champ_ref = registry.resolve(config.registry, name, champion)
    loaded = load_campaign(config.bidder, data)
    levels = tuple(config.bidder.levels)
    cand_label = cand_ref.label
    cand_policy = cand_bidder.settings.policy
    notes = []
    advance = _advance(progress, 2 * len(loaded.heldout) * len(levels))
    cand_replays = _replay_levels(cand_bidder, loaded.heldout, levels, cand_policy, f"candidate {cand_label}", advance)
    if champ_ref is None:
        baseline_name = f"the {BASELINE_POLICY} policy fitted in the candidate's run"
        notes.append(f"no champion yet: the candidate is compared with {baseline_name}")
        base_bidder, base_policy, base_label = cand_bidder, BASELINE_POLICY, f"candidate {cand_label}"
    else:
        folder, _ = bidding_registry.fetch(config, name, ref=champ_ref.version)
        base_bidder = load_bidder(folder)
        base_policy = base_bidder.settings.policy
        base_label = f"champion {champ_ref.label}"
        baseline_name = f"champion {champ_ref.label} ({base_policy})"
    base_replays = _replay_levels(base_bidder, loaded.heldout, levels, base_policy, base_label, advance)
    gate = judge(
        {r.level: Played.of(r.outcome) for r in cand_replays},
        {r.level: Played.of(r.outcome) for r in base_replays},
        levels,
        baseline_name=baseline_name,
        tolerance=config.bidder.gate_spend_tolerance,
        notes=notes,
        strict=champ_ref is not None,
    )
    replays = cand_replays + base_replays
    out = report_dir or config.paths.reports / f"gate-{NAME}"
    payload = gate.to_json() | {"candidate": cand_label, "heldout": loaded.heldout_source}
    payload["auctions"] = len(loaded.heldout)
    json_path = write_json(payload, out / "gate.json")
    html_path = write_html(gate_html(gate, cand_bidder, loaded, replays, cand_label), out / "gate.html")
    verdict = "passed" if gate.passed else "failed"
    parent_metrics = {"gate_passed": float(gate.passed)}
    parent_metrics |= {f"{level_key(v.level)}.click_gain": float(v.click_gain) for v in gate.levels}
    run_id = bidding_registry.log_replays(
        config.registry,
        run_name=f"gate {cand_label}",
        replays=replay_metrics(replays),
        tags=data_tags(loaded) | {"bidder.candidate": cand_label, "bidder.baseline": baseline_name},
        replay_tags={r.name: {"bidder.policy": r.policy} for r in replays},
        metrics=parent_metrics,
        files=[json_path, html_path],
    )
    bidding_registry.tag_version(config.registry, cand_ref, {f"gate.{GATE}": verdict})
    outcome = GateStepOutcome(gate, html_path, json_path, cand_ref, champ_ref, run_id, replays)
    if enforce and not gate.passed:
        raise GateFailed(
            f"candidate {cand_label} failed the replay gate against {baseline_name}",
            report_path=html_path,
            got="; ".join(gate.failures[:5]),
        )
    return outcome


def _replay_levels(
    bidder: Bidder, auctions: Auctions, levels: Sequence[float], policy: PolicyName, model: str,
    advance: Advance | None,
) -> list[Replayed]:  # fmt: skip
    """One policy at every gated level; a level the bidder lacks is left out (the gate fails it)."""
    present = [level for level in levels if level in bidder.policies]
    return replay_all(bidder, auctions, present, (policy,), model=model, advance=advance)


def _head(auctions: Auctions, limit: int | None) -> Auctions:
    return auctions if limit is None else auctions.head(limit)


def _advance(progress: Progress | None, total: int) -> Advance | None:
    if progress is None:
        return None
    return lambda what, auctions: progress(what, auctions, total)


def _fetch(config: Config, name: str, ref: Any) -> Path:
    """The folder of a registered version, or of a fit's run that is not registered yet."""
    from bidflow.bidding import registry as bidding_registry

    if ref.registered:
        return bidding_registry.fetch(config, name, ref=ref.version)[0]
    return bidding_registry.fetch(config, name, uri=bidding_registry.run_uri(str(ref.run_id)))[0]

"""The bidder's release gate: more clicks at equal or lower spend, at every budget level (a pure decision).

The candidate and the baseline (the champion, or with no champion yet the linear policy fitted in
the same run) are replayed on the same held-out auctions at each level c0 of ``bidder.levels``. The
candidate passes only if, at EVERY level:

1. it wins strictly more clicks than the champion. With no champion yet, the baseline is the linear
   policy of the candidate's own run, and the bar is one step lower: no fewer clicks than linear at
   any level and more over all levels together (``strict=False``). A first version must not lose to
   the simplest policy anywhere, but a tie at one budget (on 2997, both policies win the same clicks
   at c0 = 1/2) should not block the loop from ever having a champion to improve on;
2. it spends no more than the level's budget (the replay caps every bid at the budget left, so this
   holds by construction; it is checked so that a broken policy cannot pass);
3. both were held to the same budget: the comparison is at equal budget. Two bidders fitted on
   different campaign statistics or episode lengths have different budgets at the same c0, and
   comparing their clicks would compare budgets, not policies: the level fails;
4. with ``bidder.gate_spend_tolerance`` set, its cost is also at most the baseline's cost times
   (1 + tolerance).

Why "equal spend" means "equal budget" by default: the budget is what the advertiser commits per
episode, and a budget-aware policy's job is to spend it where the clicks are. Judged on the cost it
actually incurred, the policy that bids too low and leaves budget unspent would look "cheaper"
without being better (on campaign 2997 the RLB-style policy spends more of the same budget than the
linear one, and at most levels wins more clicks with it). At equal budget,
more clicks means more clicks per unit of budget, which is the quantity the RTB literature compares
policies by. An operator who wants the stricter reading (no more actual spend than the champion,
up to a tolerance) sets ``bidder.gate_spend_tolerance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Played:
    """What one policy won and spent in one replay (the numbers the gate reads from an ``Outcome``)."""

    clicks: int
    impressions: int
    cost: int
    budget: int  # the total budget of the replay: per-episode budget x episodes

    @classmethod
    def of(cls, outcome: Any) -> Played:
        """From a ``bidflow.bidding.replay.Outcome``."""
        return cls(int(outcome.clicks), int(outcome.impressions), int(outcome.cost), int(outcome.total_budget))


@dataclass(frozen=True)
class LevelVerdict:
    """The gate at one budget level.

    Attributes:
        level: the budget level c0.
        candidate, baseline: what each won and spent.
        failures: why it failed (empty: it passed).
    """

    level: float
    candidate: Played
    baseline: Played
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def click_gain(self) -> int:
        return self.candidate.clicks - self.baseline.clicks

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "label": level_label(self.level),
            "passed": self.passed,
            "candidate": vars(self.candidate),
            "baseline": vars(self.baseline),
            "failures": list(self.failures),
        }


@dataclass(frozen=True)
class ReplayGate:
    """The gate over every level.

    Attributes:
        levels: one verdict per level, in the configured order.
        baseline: what the candidate was compared with (``champion v3``, ``linear policy of the candidate``).
        tolerance: ``bidder.gate_spend_tolerance`` (None: compared at equal budget only).
    """

    levels: tuple[LevelVerdict, ...]
    baseline: str
    tolerance: float | None = None
    notes: tuple[str, ...] = field(default=())
    strict: bool = True

    @property
    def total_gain(self) -> int:
        """Clicks the candidate wins over the baseline, summed over the levels."""
        return sum(v.click_gain for v in self.levels)

    @property
    def passed(self) -> bool:
        if not self.levels or not all(v.passed for v in self.levels):
            return False
        return self.strict or self.total_gain > 0

    @property
    def failures(self) -> list[str]:
        found = [f"c0={level_label(v.level)}: {reason}" for v in self.levels for reason in v.failures]
        if not self.strict and not found and self.total_gain <= 0:
            found.append(f"{self.total_gain:+d} clicks over all levels: not more than the baseline's")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "baseline": self.baseline,
            "spend_tolerance": self.tolerance,
            "rule": RULE if self.strict else FIRST_RULE,
            "levels": [v.to_json() for v in self.levels],
            "notes": list(self.notes),
        }


RULE = (
    "at every budget level: strictly more clicks than the baseline, cost within the level's budget, "
    "both replays under the same budget (and, with bidder.gate_spend_tolerance, cost at most the "
    "baseline's x (1 + tolerance))"
)


FIRST_RULE = (
    "no champion yet: at every budget level no fewer clicks than the linear policy and more over all levels, "
    "cost within the level's budget, both replays under the same budget"
)


def judge_level(
    level: float, candidate: Played, baseline: Played, tolerance: float | None = None, *, strict: bool = True
) -> LevelVerdict:
    """The gate at one level (see the module's docstring for the rule and why)."""
    failures = []
    if candidate.budget != baseline.budget:
        failures.append(
            f"different budgets ({candidate.budget:,} vs {baseline.budget:,}): the bidders were fitted on different "
            "campaign statistics or episodes, so their clicks are not comparable"
        )
    if candidate.cost > candidate.budget:
        failures.append(f"spent {candidate.cost:,}, above the budget {candidate.budget:,}")
    if strict and candidate.clicks <= baseline.clicks:
        failures.append(f"{candidate.clicks} clicks, not more than the baseline's {baseline.clicks}")
    if not strict and candidate.clicks < baseline.clicks:
        failures.append(f"{candidate.clicks} clicks, fewer than the baseline's {baseline.clicks}")
    if tolerance is not None and candidate.cost > baseline.cost * (1 + tolerance):
        failures.append(f"cost {candidate.cost:,} above the baseline's {baseline.cost:,} x (1 + {tolerance:g})")
    return LevelVerdict(level, candidate, baseline, tuple(failures))


def judge(
    candidate: Mapping[float, Played],
    baseline: Mapping[float, Played],
    levels: Sequence[float],
    *,
    baseline_name: str,
    tolerance: float | None = None,
    notes: Sequence[str] = (),
    strict: bool = True,
) -> ReplayGate:
    """The gate over ``levels``: each level must be replayed for both; a missing one fails.

    ``strict`` (against a champion): more clicks at every level; otherwise (against the candidate's own
    linear policy, no champion yet): no fewer at any level and more over all levels.
    """
    verdicts = []
    for level in levels:
        if level not in candidate or level not in baseline:
            missing = "candidate" if level not in candidate else "baseline"
            empty = Played(0, 0, 0, 0)
            reason = (f"the {missing} has no policy fitted at this level",)
            verdicts.append(LevelVerdict(level, candidate.get(level, empty), baseline.get(level, empty), reason))
            continue
        verdicts.append(judge_level(level, candidate[level], baseline[level], tolerance, strict=strict))
    return ReplayGate(tuple(verdicts), baseline_name, tolerance, tuple(notes), strict)


def level_label(level: float) -> str:
    """A budget level as people write it: ``1/32``, ``0.3`` for one that is not a simple fraction."""
    fraction = Fraction(level).limit_denominator(1024)
    if abs(float(fraction) - level) > 1e-12:
        return f"{level:g}"
    return str(fraction)


def level_key(level: float) -> str:
    """A budget level as part of an MLflow key: ``c0_1_32``."""
    return "c0_" + level_label(level).replace("/", "_").replace(".", "p")

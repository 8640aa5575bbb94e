"""The bidder's release gate as a pure decision: more clicks at equal or lower spend, at every budget level."""

from __future__ import annotations

import pytest

from bidflow.bidding.gate import Played, judge, judge_level, level_key, level_label

BUDGET = 310_000


def played(clicks: int, cost: int, budget: int = BUDGET) -> Played:
    return Played(clicks=clicks, impressions=clicks * 500, cost=cost, budget=budget)


def test_more_clicks_under_the_same_budget_passes_even_spending_more_of_it() -> None:
    verdict = judge_level(1 / 32, played(78, 304_000), played(71, 284_000))
    assert verdict.passed and verdict.click_gain == 7


@pytest.mark.parametrize(
    ("candidate", "baseline", "reason"),
    [
        (played(71, 200_000), played(71, 284_000), "not more than the baseline's 71"),  # equal clicks: no promotion
        (played(60, 200_000), played(71, 284_000), "not more than"),
        (played(90, BUDGET + 1), played(71, 284_000), "above the budget"),
        (played(90, 200_000, budget=2 * BUDGET), played(71, 284_000), "different budgets"),
    ],
)
def test_a_level_fails_without_more_clicks_within_the_same_budget(
    candidate: Played, baseline: Played, reason: str
) -> None:
    verdict = judge_level(1 / 32, candidate, baseline)
    assert not verdict.passed and any(reason in f for f in verdict.failures), verdict.failures


def test_the_spend_tolerance_also_caps_the_candidates_cost_at_the_baselines() -> None:
    candidate, baseline = played(78, 304_000), played(71, 284_000)
    assert not judge_level(1 / 32, candidate, baseline, tolerance=0.05).passed  # +7% spend
    assert judge_level(1 / 32, candidate, baseline, tolerance=0.10).passed
    assert judge_level(1 / 32, played(78, 280_000), baseline, tolerance=0.0).passed


def test_every_level_must_pass_and_a_missing_level_fails() -> None:
    levels = (1 / 32, 1 / 8)
    good = {1 / 32: played(78, 300_000), 1 / 8: played(180, 290_000)}
    base = {1 / 32: played(71, 284_000), 1 / 8: played(170, 280_000)}
    assert judge(good, base, levels, baseline_name="linear").passed
    worse = good | {1 / 8: played(170, 250_000)}
    gate = judge(worse, base, levels, baseline_name="linear")
    assert not gate.passed and [v.passed for v in gate.levels] == [True, False]
    assert gate.failures == ["c0=1/8: 170 clicks, not more than the baseline's 170"]
    missing = judge({1 / 32: good[1 / 32]}, base, levels, baseline_name="linear")
    assert not missing.passed and "no policy fitted" in missing.failures[0]
    assert not judge({}, {}, (), baseline_name="linear").passed  # nothing judged is not a pass


def test_the_report_payload_says_the_rule_and_each_levels_numbers() -> None:
    gate = judge({0.5: played(3, 10)}, {0.5: played(2, 10)}, (0.5,), baseline_name="champion v1", tolerance=None)
    payload = gate.to_json()
    assert payload["passed"] and payload["baseline"] == "champion v1" and "same budget" in payload["rule"]
    assert payload["levels"][0]["label"] == "1/2" and payload["levels"][0]["candidate"]["clicks"] == 3


def test_levels_are_written_as_fractions() -> None:
    assert [level_label(v) for v in (1 / 32, 1 / 16, 0.5, 1.0, 0.3)] == ["1/32", "1/16", "1/2", "1", "3/10"]
    assert level_key(1 / 32) == "c0_1_32"


def test_with_no_champion_a_tie_at_one_level_passes_but_a_loss_or_no_gain_does_not() -> None:
    from bidflow.bidding.gate import Played, judge

    def at(*clicks: int) -> dict[float, Played]:
        return {level: Played(c, 100, 900, 1_000) for level, c in zip((1 / 32, 1 / 2), clicks, strict=True)}

    levels = (1 / 32, 1 / 2)
    assert judge(at(10, 20), at(8, 20), levels, baseline_name="linear", strict=False).passed
    assert not judge(at(10, 20), at(8, 20), levels, baseline_name="champion").passed  # a champion needs more at both
    lost = judge(at(10, 19), at(8, 20), levels, baseline_name="linear", strict=False)
    assert not lost.passed and "fewer than the baseline's 20" in lost.failures[0]
    even = judge(at(8, 20), at(8, 20), levels, baseline_name="linear", strict=False)
    assert not even.passed and "over all levels" in even.failures[0]

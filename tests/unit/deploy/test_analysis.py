"""The canary verdict: every rollback rule, waiting for evidence, promotion."""

from __future__ import annotations

from bidflow.config import CanaryConfig
from bidflow.deploy.analysis import RoleMetrics, WindowMetrics, analyse

CFG = CanaryConfig(min_requests=500, min_explored_bids=30)
HEALTHY = RoleMetrics(requests=5_000, errors=2, p99_ms=4.0, explored_bids=400, recall=0.96)


def window(**canary: object) -> WindowMetrics:
    fields = {"requests": 1_000, "errors": 1, "p99_ms": 4.5, "explored_bids": 80, "recall": 0.95} | canary
    return WindowMetrics(champion=HEALTHY, canary=RoleMetrics(**fields))  # type: ignore[arg-type]


def test_a_healthy_canary_with_enough_evidence_is_promoted() -> None:
    assert analyse(window(), CFG).outcome == "promote"


def test_too_few_requests_or_labels_means_continue() -> None:
    few = analyse(window(requests=100), CFG)
    assert few.outcome == "continue" and "100 requests" in few.reasons[0]
    unlabelled = analyse(window(explored_bids=3), CFG)
    assert unlabelled.outcome == "continue" and "3 bids" in unlabelled.reasons[0]


def test_drift_rolls_back_and_names_the_features() -> None:
    verdict = analyse(
        WindowMetrics(HEALTHY, RoleMetrics(requests=50), drifted_features=("device_type", "ad_size")), CFG
    )
    assert verdict.outcome == "rollback"
    assert "device_type, ad_size" in verdict.reasons[0]


def test_each_slo_rule_rolls_back_with_its_reason() -> None:
    cases = {
        "error rate": window(errors=50),
        "the champion's 4.0 ms": window(p99_ms=80.0),
        "online bid recall": window(recall=0.80),
    }
    for expected, metrics in cases.items():
        verdict = analyse(metrics, CFG)
        assert verdict.outcome == "rollback", expected
        assert any(expected in r for r in verdict.reasons), (expected, verdict.reasons)


def test_a_busy_machine_alerts_but_never_rolls_back_a_healthy_canary() -> None:
    busy = RoleMetrics(requests=5_000, errors=2, p99_ms=58.0, explored_bids=400, recall=0.96)
    verdict = analyse(WindowMetrics(busy, window(p99_ms=60.2).canary), CFG)  # both slow: the machine, not the canary
    assert verdict.outcome == "promote" and "above 50.0 ms" in verdict.alerts[0], verdict
    assert analyse(WindowMetrics(busy, window(p99_ms=95.0).canary), CFG).outcome == "rollback"  # 1.6x the champion


def test_sub_millisecond_differences_are_noise() -> None:
    assert analyse(window(p99_ms=1.2), CFG.model_copy(update={"max_p99_ratio": 1.1})).outcome == "promote"
    quick = RoleMetrics(requests=5_000, errors=2, p99_ms=0.5, explored_bids=400, recall=0.96)
    assert analyse(WindowMetrics(quick, window(p99_ms=1.5).canary), CFG).outcome == "promote"  # 3x, yet 1 ms


def test_a_kind_without_online_labels_is_promoted_on_requests_alone() -> None:
    unlabelled = window(explored_bids=0, recall=None)
    assert analyse(unlabelled, CFG).outcome == "continue"
    assert analyse(unlabelled, CFG, labelled=False).outcome == "promote"
    assert analyse(window(requests=100, explored_bids=0, recall=None), CFG, labelled=False).outcome == "continue"


def test_score_shift_rolls_back() -> None:
    shifted = WindowMetrics(HEALTHY, window().canary, score_psi=0.6)
    verdict = analyse(shifted, CFG)
    assert verdict.outcome == "rollback" and "PSI 0.600" in verdict.reasons[0]


def test_every_failing_rule_is_reported() -> None:
    verdict = analyse(WindowMetrics(HEALTHY, window(errors=90, p99_ms=99.0).canary, 0.9, ("os",)), CFG)
    assert len(verdict.reasons) == 4


def test_recall_is_not_judged_on_too_few_labels() -> None:
    assert analyse(window(recall=0.5, explored_bids=10), CFG).outcome == "continue"

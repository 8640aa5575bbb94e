"""The demo report shows the drift attribution the monitor records with an automatic rollback."""

from __future__ import annotations

from typing import Any

from bidflow.demo.report import SECTIONS, rollback_attribution


def _transition(action: str, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"action": action, "model": {"version": "3"}, "actor": "monitor", "reasons": [], "metrics": metrics or {}}


def test_a_rollback_with_an_attribution_shows_the_features_that_shifted_most() -> None:
    attribution = {
        "role": "canary",
        "version": "3",
        "rows": 64,
        "reference_rows": 2_000,
        "mean_margin_shift": 0.29,
        "features": [
            {"feature": "partner", "shift": 0.41, "reference": -0.1, "current": 0.31},
            {"feature": "country", "shift": -0.12, "reference": 0.02, "current": -0.1},
        ],
    }
    html = rollback_attribution([_transition("deploy"), _transition("rollback", {"attribution": attribution})])
    assert "Rollback of v3: features whose contributions shifted most" in html
    assert '<td class="l">partner</td>' in html and "+0.4100" in html and "-0.1200" in html
    assert "64 rows of the drifted traffic" in html and "2,000 reference rows" in html
    assert "the mean margin moved +0.2900 log-odds" in html
    assert html.index("partner") < html.index("country")  # the monitor's order: largest shift first


def test_a_rollback_without_an_attribution_says_so_and_no_rollback_shows_nothing() -> None:
    assert "No attribution was recorded" in rollback_attribution([_transition("rollback")])
    failed = {"attribution": {"role": "canary", "version": "3", "error": "the model server did not explain"}}
    assert "No attribution could be made: the model server did not explain" in rollback_attribution(
        [_transition("rollback", failed)]
    )
    assert rollback_attribution([_transition("deploy")]) == ""


def test_the_report_has_an_explanations_section() -> None:
    assert "Explanations" in SECTIONS

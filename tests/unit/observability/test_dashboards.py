"""The dashboards as Grafana reads them: one per release-loop view and per kind, valid layout, the alerts' lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bidflow.kinds import kind, kind_names
from bidflow.observability.dashboards import all_dashboards
from bidflow.observability.grafana import DATASOURCE_VARIABLE, dashboard_json
from bidflow.observability.rules import RuleSettings


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    kinds = [kind(None, name) for name in kind_names(None)]
    return {spec.file: dashboard_json(spec) for spec in all_dashboards(kinds)}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_serving_canary_and_one_economics_dashboard_per_kind(boards: dict[str, dict[str, Any]]) -> None:
    expected = {"bidflow-serving", "bidflow-canary-drift"} | {
        f"bidflow-economics-{name.replace('_', '-')}" for name in kind_names(None)
    }
    assert set(boards) == expected
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for board in boards.values():
        assert len(board["uid"]) <= 40 and board["title"].startswith("bidflow / ")


def test_every_query_uses_the_datasource_variable_and_panels_fit_the_grid(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables[DATASOURCE_VARIABLE]["type"] == "datasource"
        assert variables[DATASOURCE_VARIABLE]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            assert panel["targets"], (name, panel["title"])
            assert panel["description"], (name, panel["title"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
                assert target["expr"].strip()


def test_thresholds_drawn_are_the_alerts_thresholds(boards: dict[str, dict[str, Any]]) -> None:
    settings = RuleSettings()
    by_title = {p["title"]: p for p in panels(boards["bidflow-serving"])}
    expected = {
        "Latency p50 / p99": settings.p99_slo_seconds,
        "5xx share": settings.server_error_share,
        "Fail-open share": settings.fail_open_share,
    }
    for title, value in expected.items():
        steps = by_title[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1] == {"color": "red", "value": value}, title


def test_economics_follow_what_the_kind_is(boards: dict[str, dict[str, Any]]) -> None:
    for name in kind_names(None):
        spec = kind(None, name)
        board = boards[f"bidflow-economics-{name.replace('_', '-')}"]
        text = json.dumps(board)
        assert f'bidflow_kind=\\"{name}\\"' in text  # every query is held to the kind's scrape targets
        titles = {p["title"] for p in panels(board)}
        assert ("Partner calls saved" in titles) == spec.thresholded
        assert ("Bids kept (online recall)" in titles) == spec.thresholded
        if spec.drift is not None:
            assert all(column in text for column in spec.drift.columns)


def test_building_is_deterministic() -> None:
    kinds = [kind(None, name) for name in kind_names(None)]
    first = [json.dumps(dashboard_json(spec), sort_keys=True) for spec in all_dashboards(kinds)]
    assert first == [json.dumps(dashboard_json(spec), sort_keys=True) for spec in all_dashboards(kinds)]

"""Served payloads for the monitor tests: generated auctions scored by the real bid-filter app in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bidflow.data.simulate import simulate
from tests.conftest import small_config
from tests.unit.serving.conftest import bid_filter, bid_parquet, bid_rows, client, model_dir, split_rows, trained
from tests.unit.serving.support import logged_auctions

__all__ = ["bid_filter", "bid_parquet", "bid_rows", "client", "model_dir", "split_rows", "trained"]

Payloads = Callable[[str, str], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def scenario_logs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[dict[str, Any]]]:
    made: dict[str, list[dict[str, Any]]] = {}

    def logs(scenario: str) -> list[dict[str, Any]]:
        if scenario not in made:
            raw = tmp_path_factory.mktemp(f"monitor-{scenario}")
            simulate(small_config(hours=1, auctions_per_hour=1_200, scenario=scenario, seed=11), raw)
            made[scenario] = list(logged_auctions(Path(raw)))
        return made[scenario]

    return logs


@pytest.fixture
def payloads(client: Any, scenario_logs: Callable[[str], list[dict[str, Any]]]) -> Payloads:
    """``payloads(scenario, role)``: every auction of an hour of ``scenario`` as the router would log it."""

    def make(scenario: str, role: str) -> list[dict[str, Any]]:
        records = []
        for logged in scenario_logs(scenario):
            partners = [o["partner"] for o in logged["outcomes"]]
            body = {"instances": [{"request": logged["request"], "partners": partners, "ts_ms": logged["ts_ms"]}]}
            response = client.post("/v1/models/bid_filter:predict", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            served = str(answer["predictions"][0]["model_version"])  # what a CloudEvent would carry
            records.append({"role": role, "version": served if role == "champion" else "2", "ts": 0,
                            "request": body, "response": answer,
                            "bids": [o["partner"] for o in logged["outcomes"] if o["status"] == "bid"]})  # fmt: skip
        return records

    return make

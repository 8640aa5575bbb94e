"""Readiness and 5xx answers as metrics: what the model-not-ready and 5xx alerts read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from bidflow.config import Config
from bidflow.serving.base import ModelSource
from bidflow.serving.bid_filter import BidFilterModel


def ready(name: str) -> float | None:
    return REGISTRY.get_sample_value("bidflow_serving_model_ready", {"model": name})


def server_errors(status: str) -> float:
    return REGISTRY.get_sample_value("bidflow_serving_server_errors_total", {"status": status}) or 0.0


def test_ready_is_0_until_the_model_loads_and_stays_0_when_loading_fails(model_dir: Path, tmp_path: Path) -> None:
    model = BidFilterModel("bid_filter_ready", Config(), ModelSource.parse("bid_filter_ready", str(model_dir)))
    assert ready("bid_filter_ready") == 0  # constructed, not loaded: a scrape already says so
    assert model.load()
    assert ready("bid_filter_ready") == 1
    broken = BidFilterModel("bid_filter_broken", Config(), ModelSource.parse("bid_filter_broken", str(tmp_path)))
    assert not broken.load()
    assert ready("bid_filter_broken") == 0


def test_5xx_answers_are_counted_by_status_and_client_errors_are_not(client: Any) -> None:
    from kserve.errors import ModelNotReady

    from bidflow.serving.errors import error_json

    before_503, before_500, before_400 = server_errors("503"), server_errors("500"), server_errors("400")
    assert client.post("/v1/models/bid_filter:predict", content=b"{not json").status_code == 400
    assert error_json(ModelNotReady("bid_filter"), lambda name: "loading").status_code == 503
    assert error_json(RuntimeError("a bug"), lambda name: None).status_code == 500
    assert (server_errors("503"), server_errors("500")) == (before_503 + 1, before_500 + 1)
    assert server_errors("400") == before_400 == 0
    assert 'bidflow_serving_model_ready{model="bid_filter"} 1.0' in client.get("/metrics").text

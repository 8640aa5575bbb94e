"""The bidder's server in-process, with no Redis listening: bids of 0, notices 503, 400s, the notices route, loading."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bidflow.config import Config
from bidflow.serving.base import ModelSource
from bidflow.serving.bidder import BidderModel
from bidflow.serving.server import build_app
from tests.unit.serving.bidder_support import fit_test_bidder


@pytest.fixture(scope="module")
def folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_test_bidder(shared_data, tmp_path_factory.mktemp("bidder"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _config() -> Config:
    """A budget store nobody listens on (no service is needed: every call fails at once)."""
    return Config.model_validate({"bidder": {"budget_url": f"redis://127.0.0.1:{_closed_port()}/0"}})


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    model = BidderModel("bidder", _config(), ModelSource("bidder", uri=str(folder)))
    assert model.load(), model.not_ready_reason
    with TestClient(build_app([model])) as test_client:
        yield test_client
    model.stop()


def test_without_a_budget_store_every_bid_is_zero(client: TestClient) -> None:
    body = {"instances": [{"campaign": "2997", "pctr": 0.2, "auction": "a"}, {"campaign": "2997", "pctr": 0.01}]}
    response = client.post("/v1/models/bidder:predict", json=body)
    assert response.status_code == 200
    assert response.json()["predictions"] == [0, 0]
    metrics = client.get("/metrics").text
    assert 'bidflow_bidder_zero_bids_total{model="bidder",reason="budget_unavailable"} 2.0' in metrics


def test_without_a_budget_store_notices_are_503(client: TestClient) -> None:
    response = client.post("/v1/models/bidder/notices", json={"notices": [{"campaign": "2997", "auction": "a",
                                                                           "price": 3}]})  # fmt: skip
    assert response.status_code == 503
    assert "send the notices again" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/models/bidder:predict", {"instances": [{"campaign": "2997", "pctr": 3}]}, "$.instances[0].pctr"),
        ("/v1/models/bidder:predict", {"instances": [{"campaign": "x", "pctr": 0.1}]}, "$.instances[0].campaign"),
        ("/v1/models/bidder/notices", {"notices": [{"campaign": "2997", "auction": "a"}]}, "$.notices[0].price"),
        ("/v1/models/bidder/notices", b"\xff", "$"),
    ],
)
def test_bad_input_is_400_before_the_store_is_asked(client: TestClient, path: str, body: Any, field: str) -> None:
    response = client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    assert (response.status_code, response.json()["field"]) == (400, field)


def test_v2_answers_an_int64_bid_per_auction(client: TestClient) -> None:
    body = {"inputs": [{"name": "campaign", "shape": [1], "datatype": "BYTES", "data": ["2997"]},
                       {"name": "pctr", "shape": [1], "datatype": "FP64", "data": [0.1]}]}  # fmt: skip
    response = client.post("/v2/models/bidder/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [
        {"name": "bid", "shape": [1], "datatype": "INT64", "parameters": None, "data": [0]}
    ]


def test_only_models_with_a_notices_handler_get_the_route() -> None:
    from bidflow.serving.staged import StagedModel

    plain = StagedModel("plain")
    with TestClient(build_app([plain])) as test_client:
        assert test_client.post("/v1/models/plain/notices", json={}).status_code == 404


def test_a_folder_without_a_bidder_is_not_ready_with_the_reason(tmp_path: Path) -> None:
    model = BidderModel("bidder", _config(), ModelSource("bidder", uri=str(tmp_path)))
    assert not model.load()
    assert model.not_ready_reason is not None and "no fitted bidder" in model.not_ready_reason
    with TestClient(build_app([model])) as test_client:
        response = test_client.post("/v1/models/bidder/notices", json={"notices": []})
        assert response.status_code == 503 and "no fitted bidder" in response.json()["reason"]


def test_registry_sources_are_fetched_through_the_registry_adapter(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bidflow.bidding import registry

    asked: list[ModelSource] = []

    def fetch(config: Config, source: ModelSource) -> tuple[Path, str]:
        asked.append(source)
        return folder, "7"

    monkeypatch.setattr(registry, "fetch_bidder", fetch)
    model = BidderModel("bidder", _config(), ModelSource("bidder_2997", ref="champion"))
    assert model.load(), model.not_ready_reason
    assert asked == [ModelSource("bidder_2997", ref="champion")]
    assert model.served is not None and model.served.version == "7"
    model.stop()

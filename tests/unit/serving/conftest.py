"""Fixtures for the serving tests: the quick bid filter of the modeling tests, its logs, an in-process app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bidflow.config import Config
from bidflow.data.simulate import simulate
from bidflow.modeling.train import TrainedModel, save_model
from tests.conftest import small_config
from tests.unit.modeling.conftest import bid_parquet, bid_rows, split_rows, trained
from tests.unit.serving.support import FIXTURES, logged_auctions, read_jsonl

__all__ = ["bid_parquet", "bid_rows", "split_rows", "trained"]


@pytest.fixture(scope="session")
def bid_logs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The auction logs behind ``bid_parquet`` (same generator settings and seed: the same auctions)."""
    raw = tmp_path_factory.mktemp("serving-raw")
    simulate(small_config(hours=4, auctions_per_hour=1_200, publishers=60), raw)
    return list(logged_auctions(raw))


@pytest.fixture(scope="session")
def model_dir(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(trained, tmp_path_factory.mktemp("served-model"))


@pytest.fixture(scope="session")
def bid_filter(model_dir: Path) -> Any:
    """A loaded ``BidFilterModel`` on the quick request-feature model (no online store)."""
    from bidflow.serving.base import ModelSource
    from bidflow.serving.bid_filter import BidFilterModel

    model = BidFilterModel("bid_filter", Config(), ModelSource.parse("bid_filter", str(model_dir)))
    assert model.load(), model.not_ready_reason
    return model


@pytest.fixture
def client(bid_filter: Any) -> Iterator[Any]:
    """The real ASGI app (KServe's endpoints, bidflow's errors and limits) in-process."""
    from starlette.testclient import TestClient

    from bidflow.serving.server import ServerOptions, build_app

    with TestClient(build_app([bid_filter], ServerOptions(max_body_bytes=64 * 1024))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def bidder_exchanges(shared_data: Path) -> list[dict[str, Any]]:
    return read_jsonl(shared_data / FIXTURES / "bidder_exchanges.jsonl.gz")


@pytest.fixture(scope="session")
def auction_endpoint(shared_data: Path) -> list[dict[str, Any]]:
    return read_jsonl(shared_data / FIXTURES / "auction_endpoint_requests.jsonl.gz")

"""The modeling unit tests' small data and model, shared with the integration tests."""

from tests.unit.modeling.conftest import bid_parquet, bid_rows, split_rows, trained

__all__ = ["bid_parquet", "bid_rows", "split_rows", "trained"]

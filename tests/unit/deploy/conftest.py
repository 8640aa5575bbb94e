"""The deploy tests reuse the modeling tests' quick bid filter and throwaway registry."""

from tests.unit.modeling.conftest import bid_parquet, bid_rows, registry_cfg, split_rows, trained

__all__ = ["bid_parquet", "bid_rows", "registry_cfg", "split_rows", "trained"]

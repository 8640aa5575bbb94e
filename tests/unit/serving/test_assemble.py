"""The serving matrix equals training's ``TrainedModel.matrix(frame)`` on real generated rows."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.errors import ModelError
from bidflow.kinds.bid_filter import spec as bid_filter_spec
from bidflow.modeling.train import TrainedModel
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import FEATURE_NAMES, request_features
from bidflow.serving.assemble import BidFilterAssembler, RowAssembler


def _auctions(bid_logs: list[dict[str, Any]], rows: pd.DataFrame, n: int) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """``n`` logged auctions spread over the data, with their ingested rows (one per called partner)."""
    by_id = {record["request"]["id"]: record for record in bid_logs}
    ids = rows["auction_id"].drop_duplicates().iloc[:: max(1, rows["auction_id"].nunique() // n)][:n]
    assert len(ids) == n
    return [(by_id[i], rows[rows["auction_id"] == i]) for i in ids]


def test_request_features_and_partners_give_training_matrix(
    trained: TrainedModel, bid_rows: pd.DataFrame, bid_logs: list[dict[str, Any]]
) -> None:
    assembler = BidFilterAssembler(trained.spec, trained.encoder, FEATURE_NAMES, "partner")
    assert not assembler.uses_online
    compared = 0
    for record, frame in _auctions(bid_logs, bid_rows, 200):
        features = request_features(decode_request_obj(record["request"]), record["ts_ms"])
        served = assembler.matrix(features, list(frame["partner"]), None)
        np.testing.assert_array_equal(served, trained.matrix(frame), err_msg=record["request"]["id"])
        compared += len(frame)
    assert compared > 1_000


def test_online_block_lands_in_the_model_columns(trained: TrainedModel, bid_rows: pd.DataFrame) -> None:
    # A model with FeatureService columns (Feast column names, values with NaN) whose reader
    # returns them in another order: the gather path, not the contiguous slice.
    columns = ("partner_stats__bid_rate_1h", "partner_stats__calls_1h", "publisher_stats__fill_rate_24h")
    model = replace(trained, spec=bid_filter_spec(columns, "bid_filter"))
    auction = bid_rows[bid_rows["auction_id"] == bid_rows["auction_id"].iloc[0]].copy()
    rng = np.random.default_rng(3)
    for column in columns:
        values = rng.normal(size=len(auction))
        values[rng.random(len(auction)) < 0.3] = np.nan
        auction[column] = values
    reader_order = [columns[2], columns[0], columns[1]]
    block = auction[reader_order].to_numpy(np.float64)

    features = SimpleNamespace(**{name: auction[name].iloc[0] for name in FEATURE_NAMES})  # as RequestFeatures
    assembler = BidFilterAssembler(model.spec, model.encoder, FEATURE_NAMES, "partner", reader_order)
    assert assembler.uses_online
    served = assembler.matrix(features, list(auction["partner"]), block)
    np.testing.assert_array_equal(served, model.matrix(auction))


def test_a_column_nobody_provides_is_refused_at_load(trained: TrainedModel) -> None:
    model = replace(trained, spec=bid_filter_spec(("partner_stats__bid_rate_1h",), "bid_filter"))
    with pytest.raises(ModelError, match="cannot provide"):
        BidFilterAssembler(model.spec, model.encoder, FEATURE_NAMES, "partner", ())


def test_rows_of_raw_values_give_training_matrix(trained: TrainedModel, bid_rows: pd.DataFrame) -> None:
    # The CTR server's path: independent rows of raw fields (here the bid filter's own columns).
    frame = bid_rows.iloc[:300]
    assembler = RowAssembler(trained.spec, trained.encoder)
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
    rows[0]["partner"] = None  # missing values: unseen code, like training
    expected = trained.matrix(frame.assign(partner=[None, *frame["partner"].iloc[1:]]))
    np.testing.assert_array_equal(assembler.matrix(rows, None), expected)


def test_request_values_of_other_types_are_encoded_as_training_encodes_them(
    trained: TrainedModel, bid_rows: pd.DataFrame
) -> None:
    # Not what RequestFeatures holds, but what a caller's object might: text and None in numeric
    # columns, a number in a categorical one. Each must land as training's encoder reads it.
    assembler = BidFilterAssembler(trained.spec, trained.encoder, FEATURE_NAMES, "partner")
    row = bid_rows.iloc[:1].copy()
    values = {name: row[name].iloc[0] for name in FEATURE_NAMES}
    numeric = [name for name in FEATURE_NAMES if name not in trained.spec.categorical]
    categorical = [name for name in FEATURE_NAMES if name in trained.spec.categorical]
    odd = values | {numeric[0]: "not a number", numeric[1]: "2.5", numeric[2]: None, categorical[0]: 7}
    served = assembler.matrix(SimpleNamespace(**odd), [row["partner"].iloc[0]], None)
    expected_frame = row.assign(**{numeric[0]: np.nan, numeric[1]: 2.5, numeric[2]: np.nan, categorical[0]: "7"})
    np.testing.assert_array_equal(served, trained.matrix(expected_frame))
    # the plain path gives the same as the one-value-at-a-time path for ordinary values
    np.testing.assert_array_equal(assembler.matrix(SimpleNamespace(**values), list(row["partner"]), None),
                                  trained.matrix(row))  # fmt: skip

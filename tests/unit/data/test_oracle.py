"""The generator's oracle: each call's true P(bid) and expected bid value, beside the log and through ingest."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyarrow import feather

from bidflow.config import IngestConfig
from bidflow.data.batch import read_frame
from bidflow.data.ingest import ingest
from bidflow.data.oracle import ORACLE_BID_VALUE, ORACLE_P_BID, oracle_path
from bidflow.data.simulate import simulate
from bidflow.errors import IngestError
from tests.conftest import read_log, small_config


@pytest.fixture(scope="module")
def large_sample(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Two hours at 40,000 auctions an hour (about 1M partner calls), with floors and a drift scenario's neighbour."""
    raw = tmp_path_factory.mktemp("oracle-raw")
    simulate(small_config(hours=2, auctions_per_hour=40_000, publishers=400), raw)
    out = tmp_path_factory.mktemp("oracle-parquet")
    ingest(raw, out, IngestConfig(workers=1))
    return read_frame(out)


def test_every_log_has_its_oracle_beside_it(generated_logs: Path) -> None:
    for log in generated_logs.rglob("*.jsonl.gz"):
        oracle = feather.read_table(oracle_path(log))
        assert oracle.column_names == ["line", "partner", ORACLE_P_BID, ORACLE_BID_VALUE]
        p = oracle[ORACLE_P_BID].to_numpy()
        assert ((p >= 0) & (p <= 0.95)).all()


def test_p_bid_matches_observed_bid_frequencies(large_sample: pd.DataFrame) -> None:
    p = large_sample[ORACLE_P_BID].to_numpy(np.float64)
    bid = large_sample["bid"].to_numpy(np.float64)
    assert abs(p.mean() - bid.mean()) < 4 * np.sqrt(bid.mean() / len(bid))
    # Per decile of the oracle: the observed rate within four binomial standard errors of the predicted one.
    edges = np.quantile(p, np.linspace(0, 1, 11)[1:-1])
    bucket = np.digitize(p, edges)
    for b in np.unique(bucket):
        rows = bucket == b
        predicted, observed = p[rows].mean(), bid[rows].mean()
        se = np.sqrt(max(predicted * (1 - predicted), 1e-4) / rows.sum())
        assert abs(observed - predicted) < 4 * se + 1e-3, (b, predicted, observed)


@pytest.mark.parametrize("floored", [True, False])
def test_the_floor_is_part_of_the_probability(large_sample: pd.DataFrame, floored: bool) -> None:
    # The floor cuts the price draw: where a floor is set, the oracle must know how often it is cleared.
    rows = large_sample[(large_sample["bidfloor"] > 0) == floored]
    p, bid = rows[ORACLE_P_BID].to_numpy(np.float64), rows["bid"].to_numpy(np.float64)
    assert abs(p.mean() - bid.mean()) < 4 * np.sqrt(bid.mean() / len(bid))


def test_timeouts_and_errors_are_part_of_the_probability(large_sample: pd.DataFrame) -> None:
    # tmax scales the timeout rate: the calls under the tightest tmax bid less, and the oracle says how much less.
    tight = large_sample["tmax"] == large_sample["tmax"].min()
    for rows in (large_sample[tight], large_sample[~tight]):
        p, bid = rows[ORACLE_P_BID].to_numpy(np.float64), rows["bid"].to_numpy(np.float64)
        assert abs(p.mean() - bid.mean()) < 4 * np.sqrt(bid.mean() / len(bid))


def test_bid_value_is_the_expected_cpm_returned(large_sample: pd.DataFrame) -> None:
    value = large_sample[ORACLE_BID_VALUE].to_numpy(np.float64)
    paid = large_sample["price"].fillna(0.0).to_numpy(np.float64)
    se = paid.std() / np.sqrt(len(paid))
    assert abs(value.mean() - paid.mean()) < 4 * se
    assert (value <= large_sample[ORACLE_P_BID].to_numpy() * 1e3).all()


def test_ingest_keeps_the_oracle_in_its_own_columns(generated_logs: Path, tmp_path: Path) -> None:
    ingest(generated_logs, tmp_path / "out", IngestConfig(workers=1))
    frame = read_frame(tmp_path / "out")
    assert frame[ORACLE_P_BID].notna().all() and frame[ORACLE_BID_VALUE].notna().all()
    log = sorted(generated_logs.rglob("*.jsonl.gz"))[0]
    oracle = feather.read_table(oracle_path(log)).to_pandas()
    # The oracle's line is the auction's line in the log: key it by the auction id read from that line.
    ids = [record["request"]["id"] for record in read_log(log)]
    oracle["auction_id"] = [ids[line] for line in oracle["line"]]
    oracle["partner"] = oracle["partner"].astype(str)
    joined = frame.merge(oracle, on=["auction_id", "partner"], suffixes=("", "_file"))
    assert len(joined) == len(oracle)
    assert np.array_equal(joined[ORACLE_P_BID].to_numpy(), joined[f"{ORACLE_P_BID}_file"].to_numpy())


def test_quarantined_lines_leave_the_rest_of_the_oracle_in_place(generated_logs: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(generated_logs, raw)
    log = sorted(raw.rglob("*.jsonl.gz"))[0]
    lines = gzip.decompress(log.read_bytes()).splitlines(keepends=True)
    lines[3] = b'{"not": "an auction"}\n'  # quarantined: the calls after it must keep their own oracle rows
    log.write_bytes(gzip.compress(b"".join(lines)))
    ingest(raw, tmp_path / "out", IngestConfig(workers=1, max_bad_share=0.5))
    frame = read_frame(tmp_path / "out")
    reference = tmp_path / "reference"
    ingest(generated_logs, reference, IngestConfig(workers=1))
    expected = read_frame(reference)
    expected = expected[expected["auction_id"] != json.loads(lines[3].decode()).get("request", {}).get("id", "")]
    merged = frame.merge(expected, on=["auction_id", "partner"], suffixes=("", "_ref"))
    assert len(merged) == len(frame) and len(frame) < len(expected)
    assert np.array_equal(merged[ORACLE_P_BID].to_numpy(), merged[f"{ORACLE_P_BID}_ref"].to_numpy())


def test_a_log_without_an_oracle_ingests_with_null_columns(generated_logs: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(generated_logs, raw)
    for oracle in raw.rglob("*.oracle.arrow"):
        oracle.unlink()
    ingest(raw, tmp_path / "out", IngestConfig(workers=1))
    frame = read_frame(tmp_path / "out")
    assert len(frame) > 0
    assert frame[ORACLE_P_BID].isna().all() and frame[ORACLE_BID_VALUE].isna().all()


def test_an_oracle_that_does_not_cover_the_log_is_refused(generated_logs: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(generated_logs, raw)
    oracle = next(raw.rglob("*.oracle.arrow"))
    table = feather.read_table(oracle)
    feather.write_feather(table.slice(0, table.num_rows - 5), oracle)
    with pytest.raises(IngestError, match="does not match its partner calls") as caught:
        ingest(raw, tmp_path / "out", IngestConfig(workers=1))
    assert f"{table.num_rows - 5:,} rows" in str(caught.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))

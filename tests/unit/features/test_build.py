"""``bidflow features build`` / ``build-ctr``: window arithmetic, stamping, smoothing, schemas."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bidflow.errors import InputError
from bidflow.features import build, velocity
from bidflow.features.build import (
    PRIOR_BIDS,
    PRIOR_CALLS,
    PRIOR_IMPRESSIONS,
    build_bid_features,
    build_ctr_features,
    write_tables,
)
from bidflow.features.ipinyou import CTR_KEYS, ctr_entities, read_ipinyou
from tests.unit.features.support import T0, calls_table

IPINYOU = "ipinyou_2997_sample/train.csv.gz"
HOUR = timedelta(hours=1)


def random_calls(seed: int = 3, n: int = 3000, hours: int = 30) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        status = rng.choice(["bid", "nobid", "timeout", "error"], p=[0.2, 0.7, 0.07, 0.03])
        rows.append(
            {
                "ts": T0 + timedelta(seconds=int(rng.integers(0, hours * 3600))),
                "auction_id": f"a{i // 3}",  # three partners per auction
                "partner": f"p{rng.integers(0, 4)}",
                "status": status,
                "price": float(rng.lognormal(0, 0.4)) if status == "bid" else None,
                "latency_ms": int(rng.integers(20, 300)),
                "publisher_id": f"pub{rng.integers(0, 6)}",
                "country": str(rng.choice(["USA", "GBR"])),
                "format": str(rng.choice(["banner", "video"])),
                "device_type": int(rng.integers(1, 4)),
            }
        )
    return calls_table(sorted(rows, key=lambda r: r["ts"]))


@pytest.fixture(scope="module")
def calls() -> pa.Table:
    return random_calls()


@pytest.fixture(scope="module")
def tables(calls: pa.Table) -> dict[str, pd.DataFrame]:
    return build_bid_features(calls)


def shrink(total: float, n: float, prior: float, m: float) -> float:
    return (total + m * prior) / (n + m)


def test_partner_windows_match_a_direct_computation(calls: pa.Table, tables: dict[str, pd.DataFrame]) -> None:
    raw = calls.to_pandas()
    partner = tables["partner_stats"]
    for _, row in partner.sample(25, random_state=0).iterrows():
        end = row["event_timestamp"]
        overall = raw[(raw.ts >= end - 24 * HOUR) & (raw.ts < end)]
        prior_rate = overall.bid.mean()
        prior_price = overall.price.sum() / overall.bid.sum()
        for w in (1, 24):
            mine = raw[(raw.partner == row["partner"]) & (raw.ts >= end - w * HOUR) & (raw.ts < end)]
            assert row[f"calls_{w}h"] == len(mine)
            assert row[f"bid_rate_{w}h"] == pytest.approx(shrink(mine.bid.sum(), len(mine), prior_rate, PRIOR_CALLS))
            assert row[f"mean_price_{w}h"] == pytest.approx(
                shrink(mine.price.sum(), mine.bid.sum(), prior_price, PRIOR_BIDS)
            )
            timeouts = (mine.status == "timeout").sum()
            prior_timeout = (overall.status == "timeout").mean()
            assert row[f"timeout_rate_{w}h"] == pytest.approx(shrink(timeouts, len(mine), prior_timeout, PRIOR_CALLS))


def test_slices_shrink_towards_the_partners_own_rate(calls: pa.Table, tables: dict[str, pd.DataFrame]) -> None:
    raw = calls.to_pandas()
    partner = tables["partner_stats"].set_index(["partner", "event_timestamp"])
    sliced = tables["partner_publisher_stats"]
    for _, row in sliced.sample(25, random_state=1).iterrows():
        end = row["event_timestamp"]
        mine = raw[
            (raw.partner == row["partner"])
            & (raw.publisher_id == row["publisher_id"])
            & (raw.ts >= end - 24 * HOUR)
            & (raw.ts < end)
        ]
        prior = partner.loc[(row["partner"], end), "bid_rate_24h"]
        assert row["calls_24h"] == len(mine)
        assert row["bid_rate_24h"] == pytest.approx(shrink(mine.bid.sum(), len(mine), prior, PRIOR_CALLS))


def test_rows_are_stamped_at_the_end_of_their_window_and_never_after_the_data() -> None:
    # One partner, traffic in hour 10 only and again in hour 40 (a gap longer than a day).
    rows = [
        {"ts": T0 + timedelta(minutes=5), "auction_id": "x1", "status": "bid", "price": 2.0},
        {"ts": T0 + timedelta(minutes=50), "auction_id": "x2"},
        {"ts": T0 + 30 * HOUR + timedelta(minutes=1), "auction_id": "x3"},
    ]
    partner = build_bid_features(calls_table(rows))["partner_stats"]
    ends = list(partner["event_timestamp"])
    # first row at the end of the first hour; live for 24 h; a gap; again one hour after the last call
    expected = [T0 + k * HOUR for k in range(1, 25)] + [T0 + 31 * HOUR]
    assert ends == expected
    first = partner.iloc[0]
    assert (first["calls_1h"], first["calls_24h"]) == (2, 2)
    assert partner.iloc[1]["calls_1h"] == 0 and partner.iloc[1]["calls_24h"] == 2
    assert partner.iloc[-1]["calls_1h"] == 1 and partner.iloc[-1]["calls_24h"] == 1


def test_until_caps_the_stamps_and_a_quiet_hour_reads_as_the_prior() -> None:
    rows = [
        {
            "ts": T0 + timedelta(minutes=6 * i),
            "auction_id": f"x{i}",
            "status": "bid" if i % 2 else "nobid",
            "price": 1.0,
        }
        for i in range(10)
    ]
    until = T0 + 3 * HOUR
    partner = build_bid_features(calls_table(rows), until)["partner_stats"]
    assert partner["event_timestamp"].max() == until
    quiet = partner.iloc[-1]  # ends at 13:00: no call in [12:00, 13:00)
    assert quiet["calls_1h"] == 0
    assert quiet["bid_rate_1h"] == pytest.approx(0.5)  # the only partner: its prior is its own 24 h rate


def test_publisher_counts_each_auction_once() -> None:
    rows = [
        {"ts": T0, "auction_id": "x", "partner": p, "status": s, "price": 1.0, "bidfloor": 0.5}
        for p, s in [("a", "bid"), ("b", "nobid"), ("c", "nobid")]
    ] + [{"ts": T0 + timedelta(minutes=1), "auction_id": "y", "partner": "a", "bidfloor": 0.0}]
    publisher = build_bid_features(calls_table(rows))["publisher_stats"].iloc[0]
    assert publisher["auctions_1h"] == 2
    assert publisher["floor_mean_24h"] == pytest.approx(0.25)
    assert publisher["floor_std_24h"] == pytest.approx(0.25)
    assert publisher["floored_share_24h"] == pytest.approx(0.5)
    assert publisher["fill_rate_24h"] == pytest.approx(0.5)  # the only publisher shrinks towards itself


def test_empty_input_is_an_input_error() -> None:
    with pytest.raises(InputError):
        build_bid_features(calls_table([]))


def test_tables_match_the_feature_views(tables: dict[str, pd.DataFrame], definitions: dict[str, Any]) -> None:
    """What build writes is exactly what the views declare (names and types), no more, no less."""
    ctr = build_ctr_features(pd.DataFrame({"click": [0, 1], "hour": [3, 4], **{k: ["v", "v"] for k in CTR_KEYS}}), T0)
    clicks = pd.DataFrame({"event_id": ["a", "b"], "ip": [1, 1], "app": [2, 3], "device": [1, 1], "os": [4, 4],
                           "channel": [5, 5], "ts": [1_510_000_000, 1_510_000_060]})  # fmt: skip
    written = tables | ctr | velocity.offline_tables(clicks)
    views = {n: v for n, v in definitions.items() if type(v).__name__ == "FeatureView"}
    assert set(written) == set(views) == set(build.BID_TABLES) | set(build.CTR_TABLES) | set(velocity.VIEWS)
    kinds = {"Int64": "int64", "Float64": "float64", "String": "object"}
    for name, view in views.items():
        assert view.batch_source.path.endswith(f"/{name}.parquet")
        expected = {c.name: kinds[str(c.dtype)] for c in [*view.entity_columns, *view.features]}
        frame = written[name].drop(columns="event_timestamp")
        assert {c: str(t) for c, t in frame.dtypes.items()} == expected, name
        assert str(written[name]["event_timestamp"].dtype).startswith("datetime64") and "UTC" in str(
            written[name]["event_timestamp"].dtype
        )


def test_write_tables_round_trips(tmp_path: Path, tables: dict[str, pd.DataFrame]) -> None:
    summary = write_tables(tables, tmp_path / "offline")
    assert summary.rows == {name: len(frame) for name, frame in tables.items()}
    back = pd.read_parquet(tmp_path / "offline" / "partner_stats.parquet")
    pd.testing.assert_frame_equal(back, tables["partner_stats"], check_dtype=False)
    assert not list((tmp_path / "offline").glob(".*.tmp"))


# --- CTR ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impressions(shared_data: Path) -> pd.DataFrame:
    return read_ipinyou(shared_data / IPINYOU)


def test_ctr_features_from_the_real_sample(impressions: pd.DataFrame) -> None:
    day = T0.replace(hour=0)
    tables = build_ctr_features(impressions, day)
    domain = tables["ctr_domain_stats"]
    first, last = int(impressions.hour.min()), int(impressions.hour.max())
    assert domain["event_timestamp"].min() == day + (first + 1) * HOUR
    assert domain["event_timestamp"].max() == day + (last + 1) * HOUR
    end = day + (first + 2) * HOUR  # covers the first two hours of the sample
    seen = impressions[impressions.hour < first + 2]
    prior = seen.click.mean()
    top = seen.domain.value_counts().index[0]
    row = domain[(domain.domain == top) & (domain.event_timestamp == end)].iloc[0]
    mine = seen[seen.domain == top]
    assert row["impressions_24h"] == len(mine)
    assert row["clicks_24h"] == mine.click.sum()
    assert row["ctr_24h"] == pytest.approx(shrink(mine.click.sum(), len(mine), prior, PRIOR_IMPRESSIONS))
    hour = mine[mine.hour == first + 1]
    assert row["impressions_1h"] == len(hour)
    # 'null' is a value in this data (the campaign's exchange), not a missing one
    assert set(tables["ctr_adexchange_stats"]["adexchange"]) == set(impressions.adexchange) == {"null"}


def test_ctr_entities_sit_at_the_start_of_their_hour(impressions: pd.DataFrame) -> None:
    day = T0.replace(hour=0)
    entities = ctr_entities(impressions, day)
    assert len(entities) == len(impressions)
    assert (entities["event_timestamp"] == day + pd.to_timedelta(impressions["hour"], unit="h")).all()


def test_read_ipinyou_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_ipinyou(tmp_path / "absent.csv.gz")
    bad = tmp_path / "bad.csv"
    bad.write_text("click,hour\n0,1\n")
    with pytest.raises(InputError, match="expected columns"):
        read_ipinyou(bad)

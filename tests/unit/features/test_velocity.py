"""Velocity windows (``bidflow.features.velocity``): their semantics on small cases, and the offline path."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from bidflow.features.velocity import (
    CLICK_COLUMNS,
    FEATURES,
    IP_APP_VIEW,
    IP_DEVICE_OS_VIEW,
    IP_VIEW,
    KEYS,
    LONG_S,
    SHORT_S,
    Click,
    VelocityState,
    offline_tables,
    point_in_time,
)

T0 = 1_510_000_000


def click(n: int, ts: int, ip: int = 1, app: int = 1, device: int = 1, os: int = 1) -> Click:
    return Click(f"e{n}", ip, app, device, os, 0, ts)


def final_rows(state: VelocityState) -> dict[str, dict[tuple[int, ...], tuple[int, tuple[float, ...]]]]:
    return state.rows()


def frame(clicks: list[Click]) -> pd.DataFrame:
    return pd.DataFrame([c._asdict() for c in clicks], columns=list(CLICK_COLUMNS))


def random_clicks(n: int, seed: int, span_s: int = 2 * 86_400) -> list[Click]:
    rng = random.Random(seed)
    times = sorted(T0 + rng.randrange(span_s) for _ in range(n))
    return [
        click(i, ts, ip=rng.randrange(8), app=rng.randrange(4), device=rng.randrange(2), os=rng.randrange(2))
        for i, ts in enumerate(times)
    ]


def latest_offline(tables: dict[str, pd.DataFrame]) -> dict[str, dict[tuple[int, ...], tuple[int, tuple[float, ...]]]]:
    """Each key's last offline row, shaped as ``VelocityState.rows`` gives rows."""
    out: dict[str, dict[tuple[int, ...], tuple[int, tuple[float, ...]]]] = {}
    for view, table in tables.items():
        last = table.drop_duplicates(list(KEYS[view]), keep="last")
        out[view] = {
            tuple(int(row[k]) for k in KEYS[view]): (
                int(row["event_timestamp"].timestamp()),
                tuple(float(row[f]) for f in FEATURES[view]),
            )
            for _, row in last.iterrows()
        }
    return out


def same(a: dict, b: dict) -> bool:  # type: ignore[type-arg]
    """Rows equal, NaN equal to NaN."""
    if a.keys() != b.keys():
        return False
    for view in a:
        if a[view].keys() != b[view].keys():
            return False
        for key, (at, values) in a[view].items():
            other_at, other = b[view][key]
            if at != other_at or not np.array_equal(np.array(values, float), np.array(other, float), equal_nan=True):
                return False
    return True


def test_windows_count_the_trailing_interval_including_the_same_second() -> None:
    state = VelocityState(allowed_lateness_s=0)
    state.add_all([click(0, T0), click(1, T0 + 1), click(2, T0 + SHORT_S), click(3, T0 + SHORT_S)])
    rows = state.rows()
    assert rows[IP_VIEW] == {(1,): (T0 + SHORT_S, (3, 4, 1))}  # T0 is exactly 10 min before: outside (T - 600, T]
    assert rows[IP_DEVICE_OS_VIEW][(1, 1, 1)][1][2] == 0  # two clicks in the latest second
    assert not any(state.rows().values())  # nothing changed since: no rows


def test_seconds_since_previous_and_distinct_apps() -> None:
    state = VelocityState(allowed_lateness_s=0)
    state.add_all([click(0, T0, app=1), click(1, T0 + 30, app=2), click(2, T0 + 30, app=2, os=9)])
    rows = state.rows()
    assert rows[IP_VIEW][(1,)] == (T0 + 30, (3, 3, 2))
    assert rows[IP_APP_VIEW][(1, 2)] == (T0 + 30, (2, 2))
    assert rows[IP_DEVICE_OS_VIEW][(1, 1, 1)][1][2] == 30
    assert math.isnan(rows[IP_DEVICE_OS_VIEW][(1, 1, 9)][1][2])  # its first click
    state.add(click(3, T0 + 30 + LONG_S, app=3))
    rows = state.rows()
    assert rows[IP_VIEW][(1,)] == (T0 + 30 + LONG_S, (1, 1, 1))  # the day-old clicks left the 24 h window
    assert math.isnan(rows[IP_DEVICE_OS_VIEW][(1, 1, 1)][1][2])  # the previous one is 24 h back: none


def test_late_clicks_are_dropped_and_change_nothing() -> None:
    state = VelocityState(allowed_lateness_s=60)
    state.add_all([click(0, T0 + 100), click(1, T0 + 41)])  # 59 s behind: counted
    before = state.rows()
    assert before[IP_VIEW][(1,)] == (T0 + 100, (2, 2, 1))
    assert not state.add(click(2, T0 + 39))  # 61 s behind the latest: late
    assert state.counters.late == 1 and not state.changed


def test_duplicates_are_skipped_by_event_id() -> None:
    state = VelocityState(allowed_lateness_s=60)
    state.add_all([click(0, T0), click(1, T0 + 5), click(0, T0), click(1, T0 + 5)])
    assert state.counters.duplicates == 2 and state.counters.accepted == 2
    assert state.rows()[IP_VIEW][(1,)] == (T0 + 5, (2, 2, 1))


def test_out_of_order_within_lateness_ends_where_the_ordered_stream_ends() -> None:
    lateness = 120
    clicks = random_clicks(3_000, seed=1)
    rng = random.Random(2)
    arrival = sorted(clicks, key=lambda c: c.ts + rng.uniform(0, lateness))  # each at most `lateness` late
    shuffled = VelocityState(lateness)
    shuffled.add_all(arrival)
    assert shuffled.counters.late == 0
    assert same(final_rows(shuffled), latest_offline(offline_tables(frame(clicks))))


def in_batches(state: VelocityState, clicks: list[Click], size: int = 100) -> dict:  # type: ignore[type-arg]
    """Feed ``clicks`` as the processor does (rows taken after each batch); each key's last row."""
    last: dict = {view: {} for view in KEYS}  # type: ignore[type-arg]
    for start in range(0, len(clicks), size):
        state.add_all(clicks[start : start + size])
        for view, rows in state.rows().items():
            last[view].update(rows)
    return last


def test_pruning_and_a_snapshot_change_no_row() -> None:
    clicks = random_clicks(4_000, seed=3, span_s=4 * 86_400)
    whole = VelocityState(30)
    expected = in_batches(whole, clicks)
    assert len(whole._expiry) < len(clicks) / 2  # four days in: the first days were forgotten
    assert len(whole.seen) < len(clicks) / 10
    assert same(expected, latest_offline(offline_tables(frame(clicks))))
    half = VelocityState(30)
    first = in_batches(half, clicks[:2_000])
    resumed = VelocityState.restore(half.snapshot())
    for view, rows in in_batches(resumed, clicks[2_000:]).items():
        first[view].update(rows)
    assert same(first, expected)
    assert resumed.counters == whole.counters


def test_offline_rows_are_point_in_time() -> None:
    clicks = [click(0, T0), click(1, T0 + 10, app=2), click(2, T0 + 10, app=2), click(3, T0 + 700)]
    tables = offline_tables(frame(clicks))
    assert tables[IP_VIEW]["clicks_10m"].tolist() == [1, 3, 1]  # one row per second with clicks
    assert str(tables[IP_VIEW]["clicks_10m"].dtype) == "int64"
    features = point_in_time(frame(clicks), tables)
    assert features[f"{IP_VIEW}__clicks_24h"].tolist() == [1, 3, 3, 4]
    assert features[f"{IP_APP_VIEW}__clicks_10m"].tolist() == [1, 2, 2, 1]
    gaps = features[f"{IP_DEVICE_OS_VIEW}__seconds_since_previous"].tolist()
    assert math.isnan(gaps[0]) and gaps[1:] == [0.0, 0.0, 690.0]


@pytest.mark.parametrize("event_id", ["a,b"])
def test_event_ids_with_a_comma_do_not_reach_the_stream(event_id: str) -> None:
    from bidflow.errors import InputError
    from bidflow.features.streaming import decode, encode

    good = click(7, T0)
    assert decode(encode(good)) == good
    with pytest.raises(InputError):
        encode(Click(event_id, 1, 1, 1, 1, 1, T0))
    with pytest.raises(InputError, match="malformed click"):
        decode(b"x,1,2")


def test_stream_replies_in_both_protocols() -> None:
    from bidflow.features.redis_source import _entries

    entries = [[b"1-0", [b"c", b"x"]], [b"2-0", None], [b"3-0", [b"z", b"0", b"c", b"y"]]]
    assert _entries({b"s": entries}) == _entries([[b"s", entries]]) == [(b"1-0", b"x"), (b"3-0", b"y")]

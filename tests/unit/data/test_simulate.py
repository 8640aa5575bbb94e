"""The auction-log generator: determinism, realism, partner behaviour and drift scenarios."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bidflow.data.partners import PARTNER_IDS
from bidflow.data.world import FLOOD_PUBLISHER_ID
from tests.conftest import read_log, small_config


def records(folder: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(folder.rglob("*.jsonl.gz")) for r in read_log(path)]


def calls(folder: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(r["request"], o) for r in records(folder) for o in r["outcomes"]]


def bid_rate(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    return sum(o["status"] == "bid" for _, o in pairs) / max(1, len(pairs))


def test_one_gzip_file_per_hour_named_by_the_hour(generated_logs: Path) -> None:
    files = sorted(p.relative_to(generated_logs).as_posix() for p in generated_logs.rglob("*.jsonl.gz"))
    assert files == ["hour=2026-11-02T08/auctions.jsonl.gz", "hour=2026-11-02T09/auctions.jsonl.gz"]
    for path in generated_logs.rglob("*.jsonl.gz"):
        hour = path.parent.name.removeprefix("hour=")
        stamps = [r["ts_ms"] for r in read_log(path)]
        assert stamps == sorted(stamps)
        assert {np.datetime64(t, "ms").astype("datetime64[h]").item().strftime("%Y-%m-%dT%H") for t in stamps} == {hour}


def test_same_seed_same_bytes_other_seed_other_bytes(make_logs: Callable[..., Path]) -> None:
    first, second, other = make_logs(hours=1), make_logs(hours=1), make_logs(hours=1, seed=99)
    name = "hour=2026-11-02T08/auctions.jsonl.gz"
    assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / name).read_bytes() != (other / name).read_bytes()


def test_an_hour_is_the_same_whatever_range_it_is_generated_in(make_logs: Callable[..., Path]) -> None:
    both = make_logs(hours=2)
    alone = make_logs(hours=1, start="2026-11-02T09:00:00Z")
    name = "hour=2026-11-02T09/auctions.jsonl.gz"
    assert (both / name).read_bytes() == (alone / name).read_bytes()


def test_the_bytes_are_zlibs_deflate_under_a_constant_header(generated_logs: Path) -> None:
    # DVC versions the raw logs by their bytes: they must not depend on the machine that wrote
    # them, so the deflate stream must be exactly what zlib (the same code on every CPU) makes.
    data = (generated_logs / "hour=2026-11-02T08/auctions.jsonl.gz").read_bytes()
    content = gzip.decompress(data)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert data[:10] == bytes((0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 4, 255))  # no file name, no mtime
    assert data[10:-8] == deflate.compress(content) + deflate.flush()
    assert data[-8:] == struct.pack("<II", zlib.crc32(content), len(content))


def test_records_are_openrtb_shaped_with_one_outcome_per_configured_bidder(generated_logs: Path) -> None:
    ids = set()
    for record in records(generated_logs):
        request = record["request"]
        ids.add(request["id"])
        assert len(request["imp"]) == 1
        imp = request["imp"][0]
        assert sum(k in imp for k in ("banner", "video", "native", "audio")) == 1
        assert sum(k in request for k in ("site", "app", "dooh")) == 1
        bidders = list(imp["ext"]["prebid"]["bidder"])
        assert [o["partner"] for o in record["outcomes"]] == bidders
        for outcome in record["outcomes"]:
            assert outcome["status"] in {"bid", "nobid", "timeout", "error"}
            assert ("price" in outcome) == (outcome["status"] == "bid")
            assert 0 <= outcome["latency_ms"] <= request["tmax"]
    assert len(ids) == len(records(generated_logs)), "auction ids are unique"


def test_traffic_looks_like_an_exchange(generated_logs: Path) -> None:
    recs = records(generated_logs)
    pairs = calls(generated_logs)
    per_auction = [len(r["outcomes"]) for r in recs]
    assert min(per_auction) >= 6 and max(per_auction) <= len(PARTNER_IDS)
    assert 10 <= np.mean(per_auction) <= 16
    assert 0.03 <= bid_rate(pairs) <= 0.2, "most partner calls come back empty"
    formats = Counter(
        next(k for k in ("banner", "video", "native", "audio") if k in r["request"]["imp"][0]) for r in recs
    )
    assert formats.most_common(1)[0][0] == "banner" and formats["video"] > formats["audio"]
    channels = Counter(next(k for k in ("site", "app", "dooh") if k in r["request"]) for r in recs)
    assert channels["site"] > channels["app"] > channels["dooh"]
    publishers = Counter(r["request"]["imp"][0]["ext"]["prebid"]["bidder"].__len__() for r in recs)
    assert len(publishers) > 5


def test_partners_follow_their_documented_behaviour(generated_logs: Path) -> None:
    pairs = calls(generated_logs)

    def rate(partner: str, keep: Callable[[dict[str, Any]], bool]) -> float:
        return bid_rate([(q, o) for q, o in pairs if o["partner"] == partner and keep(q)])

    def country(q: dict[str, Any]) -> str:
        return str(q["device"]["geo"]["country"])

    assert rate("beacon", lambda q: country(q) == "USA") > 4 * rate(
        "beacon", lambda q: country(q) not in {"USA", "CAN"}
    )
    assert rate("cobalt", lambda q: "video" in q["imp"][0]) > 2 * rate("cobalt", lambda q: "banner" in q["imp"][0])
    assert rate("harbor", lambda q: "video" in q["imp"][0]) == 0.0, "harbor buys banners only"
    assert rate("delta", lambda q: "user" in q) > 2 * rate("delta", lambda q: "user" not in q)
    for request, outcome in pairs:
        if outcome["status"] == "bid":
            assert outcome["price"] >= request["imp"][0].get("bidfloor", 0.0), "no bid below the floor"
        if outcome["status"] == "timeout":
            assert outcome["latency_ms"] == request["tmax"]


@pytest.mark.parametrize(
    ("scenario", "measure", "direction"),
    [
        ("device_shift", lambda recs: np.mean([r["request"]["device"]["devicetype"] in (3, 5) for r in recs]), "up"),
        ("publisher_flood", lambda recs: np.mean([_publisher(r) == FLOOD_PUBLISHER_ID for r in recs]), "up"),
        ("floor_hike", lambda recs: np.mean([r["request"]["imp"][0].get("bidfloor", 0.0) for r in recs]), "up"),
        (
            "partner_retarget",
            lambda recs: bid_rate(
                [(r["request"], o) for r in recs for o in r["outcomes"]
                 if o["partner"] == "atlas" and r["request"]["device"]["devicetype"] == 4]
            ),
            "down",
        ),
    ],
)  # fmt: skip
def test_drift_scenarios_switch_on_at_their_hour(
    make_logs: Callable[..., Path], scenario: str, measure: Callable[[list[dict[str, Any]]], float], direction: str
) -> None:
    folder = make_logs(hours=2, scenario=scenario, scenario_start_hour=1, auctions_per_hour=4_000)
    before = measure(read_log(folder / "hour=2026-11-02T08/auctions.jsonl.gz"))
    after = measure(read_log(folder / "hour=2026-11-02T09/auctions.jsonl.gz"))
    if direction == "up":
        assert after > 1.5 * before + 1e-9
    else:
        assert after < 0.5 * before


def _publisher(record: dict[str, Any]) -> str:
    request = record["request"]
    inventory = request.get("site") or request.get("app") or request.get("dooh")
    return str(inventory["publisher"]["id"])


def test_baseline_never_shows_the_dormant_flood_publisher(generated_logs: Path) -> None:
    assert all(_publisher(r) != FLOOD_PUBLISHER_ID for r in records(generated_logs))


def test_config_rejects_unaligned_start() -> None:
    with pytest.raises(ValueError, match="whole hour"):
        small_config(start="2026-11-02T08:30:00Z")

"""Reading a campaign's statistics and logged auctions, and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bidflow.bidding.auctions import campaign_files, read_auctions, read_campaign
from bidflow.errors import InputError


def test_train_info_text_gives_the_totals(tmp_path: Path) -> None:
    path = tmp_path / "7.train-info.txt"
    path.write_text("CPC:\t100.0\nCPM:\t50000.0\navg ctr:\t0.01\ncounter:\t0_10_30_60_\n")
    c = read_campaign(path)
    assert (c.id, c.impressions, c.clicks) == ("7", 100, 1)
    assert c.cost == pytest.approx(5_000.0)
    assert c.cost_per_auction == pytest.approx(50.0)
    assert c.budget(1 / 2, 1000) == 25_000
    assert c.max_price == 3


def test_info_json_gives_the_totals(tmp_path: Path) -> None:
    path = tmp_path / "info_9.json"
    path.write_text(json.dumps({"imp_train": 10, "clk_train": 1, "cost_train": 640, "price_counter_train": [1, 9]}))
    c = read_campaign(path)
    assert (c.id, c.impressions, c.ctr, c.cost_per_auction) == ("9", 10, 0.1, 64.0)


def test_unreadable_statistics_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "info_1.json"
    path.write_text(json.dumps({"imp_train": 10}))
    with pytest.raises(InputError, match="not readable") as caught:
        read_campaign(path)
    assert str(path) in str(caught.value)
    with pytest.raises(InputError, match="not found"):
        read_campaign(tmp_path / "nope.json")


def test_auctions_drop_separator_rows_and_refuse_bad_values(tmp_path: Path) -> None:
    good = tmp_path / "a.csv"
    good.write_text("click,market_price,pctr\n1,,\n0,12,0.003\n1,40,0.01\n")
    log = read_auctions(good)
    assert len(log) == 2 and log.price.tolist() == [12, 40]
    bad = tmp_path / "b.csv"
    bad.write_text("click,market_price,pctr\n0,-3,0.003\n")
    with pytest.raises(InputError, match="negative price"):
        read_auctions(bad)
    missing = tmp_path / "c.csv"
    missing.write_text("click,price\n0,3\n")
    with pytest.raises(InputError, match="lacks a column"):
        read_auctions(missing)


def test_campaign_files_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="campaign 42 has no data") as caught:
        campaign_files(tmp_path, "42")
    assert caught.value.hint is not None and "bidder.data" in caught.value.hint

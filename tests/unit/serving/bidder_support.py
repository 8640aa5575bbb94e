"""A bidder fitted for the serving tests: campaign 2997's tuning log, one budget level, short episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Final

EPISODE: Final = 200  # auctions per episode: short, so a test sees several episodes


def fit_test_bidder(shared_data: Path, folder: Path) -> Path:
    """Fit the test bidder (about a second) and save it in ``folder``; returns the folder."""
    from bidflow.bidding.artifact import save_bidder
    from bidflow.bidding.auctions import read_auctions, read_campaign
    from bidflow.bidding.fit import BidderSettings, fit_bidder

    data = shared_data / "ipinyou_auction_outcomes"
    campaign = read_campaign(data / "info_2997.json")
    tuning = read_auctions(data / "validation_by_campaign" / "2997.csv.gz")
    bidder = fit_bidder(campaign, [tuning], BidderSettings(episode=EPISODE, levels=(1 / 32,), served_level=1 / 32))
    save_bidder(bidder, folder)
    return folder

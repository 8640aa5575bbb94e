"""A campaign's training statistics and its logged auctions.

The files are those of the public RLB experiments (``han-cai/rlb-dp``): per campaign an ``info``
JSON or a ``train-info`` text (training-period impressions, clicks, cost and the histogram of market
prices) and CSVs of auctions with ``click``, ``market_price`` and ``pctr`` columns. They are read in
place: their licence allows research use only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from bidflow.errors import InputError

AUCTION_COLUMNS: Final = ("click", "market_price", "pctr")


@dataclass(frozen=True)
class Campaign:
    """What the training period says about one campaign.

    Attributes:
        id: the campaign id (``2997``).
        impressions: training-period auctions won (impressions).
        clicks: clicks on them.
        cost: what they cost, in the log's price unit (fen per CPM for iPinYou).
        price_counts: histogram of training market prices, index = price.
    """

    id: str
    impressions: int
    clicks: int
    cost: float
    price_counts: npt.NDArray[np.float64]

    @property
    def cost_per_auction(self) -> float:
        """Average market price of a training auction: the unit the budget is a fraction of."""
        return self.cost / self.impressions

    @property
    def ctr(self) -> float:
        """Training click-through rate: the value of an average auction."""
        return self.clicks / self.impressions

    @property
    def max_price(self) -> int:
        """The highest price the histogram can hold: bids are capped there."""
        return len(self.price_counts) - 1

    def budget(self, c0: float, episode: int) -> int:
        """The budget of one episode of ``episode`` auctions at budget level ``c0`` (whole price units)."""
        return int(self.cost_per_auction * c0 * episode)


@dataclass(frozen=True)
class Auctions:
    """Logged auctions in their order: click label, market price and the CTR model's pCTR."""

    click: npt.NDArray[np.int8]
    price: npt.NDArray[np.int64]
    pctr: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.price)

    def head(self, n: int) -> Auctions:
        """The first ``n`` auctions."""
        return Auctions(self.click[:n], self.price[:n], self.pctr[:n])

    def tail(self, start: int) -> Auctions:
        """The auctions from index ``start`` on."""
        return Auctions(self.click[start:], self.price[start:], self.pctr[start:])


def read_campaign(path: Path, campaign_id: str | None = None) -> Campaign:
    """A campaign from an ``info*.json`` or a ``*.train-info.txt`` file.

    Raises:
        InputError: the file is missing, or lacks the totals or the price histogram.
    """
    if not path.is_file():
        raise InputError("campaign statistics file not found", where=str(path))
    name = campaign_id or path.name.split(".")[0].removeprefix("info_")
    try:
        if path.suffix == ".json":
            return _from_info(json.loads(path.read_text()), name)
        return _from_train_info(path.read_text(), name)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            "campaign statistics file is not readable",
            where=str(path),
            expected="info JSON (imp_train, clk_train, cost_train, price_counter_train) or train-info text",
            got=f"{type(exc).__name__}: {exc}",
        ) from exc


def _from_info(info: dict[str, object], name: str) -> Campaign:
    counts = np.asarray(info["price_counter_train"], dtype=np.float64)
    return Campaign(name, int(info["imp_train"]), int(info["clk_train"]), float(info["cost_train"]), counts)  # type: ignore[call-overload, arg-type]


def _from_train_info(text: str, name: str) -> Campaign:
    """``train-info`` text: ``CPC``, ``CPM`` and ``avg ctr`` lines and a ``counter:`` histogram.

    The totals are implied: impressions are the histogram's sum, cost = CPM x impressions / 1000,
    clicks = CTR x impressions.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    counts = np.asarray([float(v) for v in fields["counter"].split("_") if v], dtype=np.float64)
    impressions = int(counts.sum())
    if impressions == 0:
        raise ValueError("empty price histogram")
    cost = float(fields["cpm"]) * impressions / 1000
    clicks = round(float(fields["avg ctr"]) * impressions)
    return Campaign(name, impressions, clicks, cost, counts)


def read_auctions(path: Path) -> Auctions:
    """Logged auctions from a CSV (optionally gzipped) with ``click``, ``market_price`` and ``pctr``.

    Rows without a price or a pCTR (the separators some exported files carry) are dropped.

    Raises:
        InputError: the file is missing, lacks a column, or holds a negative price or a pCTR outside [0, 1].
    """
    import pandas as pd

    if not path.is_file():
        raise InputError("auction file not found", where=str(path))
    try:
        frame = pd.read_csv(path, usecols=list(AUCTION_COLUMNS))
    except ValueError as exc:
        raise InputError("auction file lacks a column", where=str(path), expected=", ".join(AUCTION_COLUMNS),
                        got=str(exc)) from exc  # fmt: skip
    frame = frame.dropna(subset=["market_price", "pctr"])
    if frame.empty:
        raise InputError("auction file holds no auctions", where=str(path))
    if (frame["market_price"] < 0).any() or not frame["pctr"].between(0, 1).all():
        raise InputError("auction file holds a negative price or a pCTR outside [0, 1]", where=str(path))
    return Auctions(
        frame["click"].to_numpy(np.int8),
        frame["market_price"].to_numpy(np.int64),
        frame["pctr"].to_numpy(np.float64),
    )


@dataclass(frozen=True)
class CampaignFiles:
    """Where one campaign's files are in a data folder laid out like the RLB experiments'.

    Attributes:
        statistics: ``info_<id>.json`` or ``train_info/<id>.train-info.txt``.
        tuning: the log policies are tuned on (``validation_by_campaign/<id>.csv.gz``: the RLB authors'
            validation episodes, 1,000 auctions each after a marker line).
        heldout: the log the gate replays (``test_theta_<id>.csv.gz``); None when the campaign has no
            test log, and then the tuning log is split in two: the first half tunes, the second is replayed.
    """

    statistics: Path
    tuning: Path
    heldout: Path | None


def campaign_files(data: Path, campaign: str) -> CampaignFiles:
    """The files of ``campaign`` under ``data``.

    Raises:
        InputError: the folder has no statistics or no tuning log for the campaign.
    """
    info = data / f"info_{campaign}.json"
    train_info = data / "train_info" / f"{campaign}.train-info.txt"
    statistics = info if info.is_file() else train_info
    tuning = data / "validation_by_campaign" / f"{campaign}.csv.gz"
    heldout = data / f"test_theta_{campaign}.csv.gz"
    missing = [str(p) for p in (statistics, tuning) if not p.is_file()]
    if missing:
        raise InputError(
            f"campaign {campaign} has no data here",
            where=str(data),
            expected="info_<id>.json or train_info/<id>.train-info.txt, and validation_by_campaign/<id>.csv.gz",
            got="missing: " + ", ".join(missing),
            hint="set bidder.data to the folder of the auction outcomes, bidder.campaign to one of its campaigns",
        )
    return CampaignFiles(statistics, tuning, heldout if heldout.is_file() else None)

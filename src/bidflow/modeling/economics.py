"""Bid-filter economics: which partner calls a filter saves, and which bids and bid value it keeps.

The bid filter scores each (auction, partner) pair with P(partner bids) and calls the partner
only when the score reaches that partner's threshold. Per partner, the threshold is the *highest*
score at which the filter still keeps the target share (on the data it is chosen on) of the
partner's bids (objective ``recall``) or of the partner's bid value, the sum of its bids' CPMs
(objective ``value``); ties are kept (``score >= threshold`` calls).

Why value can be the better target: an exchange earns on the bids that win, and a cheap bid
rarely wins, so a filter held to keep 95 % of the bid *value* may drop more of the cheap bids
and save more calls than one held to keep 95 % of the bids, at the same revenue kept. That only
pays when calls are also *ranked* by value: under the value objective a model that reads the
partners' mean bid prices (the Feast features in ``PRICE_BASE`` and ``PRICE_SLICES``) ranks by
its expected bid value, P(bid) x an estimated CPM (``price_estimate``), and its thresholds are on
that scale (``FilterPolicy.ranking``). Served, a threshold is divided by the call's estimated CPM,
so every consumer still reads a decision as ``score >= threshold``.

A fixed exploration share of auctions bypasses the filter: every partner is called, so filtered
traffic keeps producing labels for the next model. Which auctions explore is decided by hashing the
auction id (SHA-256 with a fixed salt), so the model server, replays and this evaluation agree on
the same auctions without sharing state. Exploration calls are never saved; their bids are kept.

This module is on the serving path (``FilterPolicy.should_call``, ``is_exploration``): numpy, the
standard library and the configuration's types only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from bidflow.config import FilterObjective as Objective

EXPLORATION_SALT: Final = b"bidflow/exploration/v1:"
_TWO_64: Final = float(2**64)

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
Ranking = Literal["p_bid", "expected_value"]

# A partner's mean bid CPM over 24 h, and the same within the request's country, format and publisher
# (each shrunk towards the partner's mean: ``bidflow.features.build``).
PRICE_BASE: Final = "partner_stats__mean_price_24h"
PRICE_SLICES: Final = (
    "partner_country_stats__mean_price_24h",
    "partner_format_stats__mean_price_24h",
    "partner_publisher_stats__mean_price_24h",
)
PRICE_COLUMNS: Final = (PRICE_BASE, *PRICE_SLICES)
MIN_PRICE: Final = 1e-6  # CPM: keeps a threshold divided by a price finite


def price_estimate(base: npt.ArrayLike, slices: Sequence[npt.ArrayLike]) -> FloatArray:
    """A call's expected bid CPM: the partner's mean price scaled by each slice's price relative to it.

    Prices multiply (partner x format x country x publisher tier), so the slices' ratios to the
    partner's mean multiply too. An unknown or non-positive price leaves a ratio at 1; an unknown
    partner mean leaves the estimate at 1 CPM.
    """
    mean = np.asarray(base, dtype=np.float64)
    known = np.isfinite(mean) & (mean > 0)
    estimate = np.where(known, mean, 1.0)
    for values in slices:
        ratio = np.asarray(values, dtype=np.float64) / np.where(known, mean, 1.0)
        estimate = estimate * np.where(known & np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    return np.maximum(estimate, MIN_PRICE)


def reads_prices(names: Sequence[str]) -> bool:
    """Whether a model with these feature columns can rank calls by expected bid value."""
    return set(PRICE_COLUMNS) <= set(names)


def estimate_from(columns: Any) -> FloatArray:
    """``price_estimate`` of rows given by column (a DataFrame, or a dict of arrays) holding ``PRICE_COLUMNS``."""
    return price_estimate(columns[PRICE_BASE], [columns[name] for name in PRICE_SLICES])


def exploration_bucket(auction_id: str) -> float:
    """A uniform number in [0, 1) fixed by the auction id: the first 8 bytes of its salted SHA-256."""
    digest = hashlib.sha256(EXPLORATION_SALT + auction_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def is_exploration(auction_id: str, share: float) -> bool:
    """Whether the auction bypasses the filter (all its partners are called)."""
    return share > 0.0 and exploration_bucket(auction_id) < share


def exploration_mask(auction_ids: Sequence[str] | npt.NDArray[Any], share: float) -> BoolArray:
    """``is_exploration`` for many rows (hashing each distinct auction id once)."""
    ids = np.asarray(auction_ids, dtype=object)
    if share <= 0.0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    unique, inverse = np.unique(ids.astype(str), return_inverse=True)
    buckets = np.fromiter((exploration_bucket(str(a)) for a in unique), dtype=np.float64, count=len(unique))
    mask: BoolArray = (buckets < share)[inverse.reshape(-1)]
    return mask


def recall_threshold(bid_scores: npt.ArrayLike, target_recall: float) -> float:
    """Highest threshold keeping at least ``target_recall`` of the bids whose scores are given.

    With n bids and k = ceil(target x n), it is the k-th highest score: raising it by any amount
    drops that bid (and every bid tied with it), leaving fewer than k. No bids: 0.0 (always call
    -- nothing is known that would justify filtering).
    """
    scores = np.sort(np.asarray(bid_scores, dtype=np.float64))[::-1]
    if len(scores) == 0:
        return 0.0
    # round() guards against 0.95 * 20 = 19.000000000000004 asking for 20 bids.
    k = max(1, math.ceil(round(target_recall * len(scores), 9)))
    return float(scores[min(k, len(scores)) - 1])


def value_threshold(bid_scores: npt.ArrayLike, bid_values: npt.ArrayLike, target_share: float) -> float:
    """Highest threshold keeping at least ``target_share`` of the value of the bids whose scores are given.

    Bids are taken from the highest score down until their values add up to the target; the
    threshold is the score of the last one taken. No bids or no value: 0.0 (always call).
    """
    scores = np.asarray(bid_scores, dtype=np.float64)
    values = np.nan_to_num(np.asarray(bid_values, dtype=np.float64), nan=0.0)
    total = float(values.sum())
    if len(scores) == 0 or total <= 0.0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    kept = np.cumsum(values[order])
    # The relative slack keeps a float sum that reaches the target by rounding from taking one bid more.
    k = int(np.searchsorted(kept, target_share * total * (1 - 1e-12), side="left"))
    return float(scores[order[min(k, len(scores) - 1)]])


@dataclass(frozen=True)
class FilterPolicy:
    """Per-partner thresholds plus the exploration share: what the model server applies.

    Attributes:
        thresholds: partner -> score threshold (call when ``score >= threshold``).
        exploration_share: share of auctions that bypass the filter.
        target_recall: the share of bids (objective ``recall``) or of bid value (``value``) the
            thresholds were chosen to keep.
        default_threshold: for partners without a threshold (new partners): 0.0 calls them always.
        objective: what ``target_recall`` is a share of.
        ranking: what the thresholds compare: the score, P(bid), or the expected bid value (the
            score x ``price_estimate``), which the value objective uses where the model reads prices.
    """

    thresholds: Mapping[str, float]
    exploration_share: float
    target_recall: float
    default_threshold: float = 0.0
    objective: Objective = "recall"
    ranking: Ranking = "p_bid"

    def threshold(self, partner: str) -> float:
        return self.thresholds.get(partner, self.default_threshold)

    def should_call(self, auction_id: str, partner: str, score: float, estimate: float = 1.0) -> bool:
        """The serving decision for one (auction, partner) pair (``estimate``: its CPM estimate, if ranked by value)."""
        ranked = score * estimate if self.ranking == "expected_value" else score
        return bool(ranked >= self.threshold(partner)) or is_exploration(auction_id, self.exploration_share)

    def call_mask(
        self,
        auction_ids: npt.NDArray[Any] | Sequence[str],
        partners: npt.NDArray[Any] | Sequence[str],
        scores: FloatArray,
        estimate: FloatArray | None = None,
    ) -> BoolArray:
        """``should_call`` for many rows."""
        return self.model_mask(partners, scores, estimate) | exploration_mask(auction_ids, self.exploration_share)

    def model_mask(
        self, partners: npt.NDArray[Any] | Sequence[str], scores: FloatArray, estimate: FloatArray | None = None
    ) -> BoolArray:
        """Calls the thresholds alone would make (exploration not applied).

        ``estimate`` (``price_estimate`` per row) is needed when the policy ranks by expected value.
        """
        names = np.asarray(partners, dtype=object).astype(str)
        unique, inverse = np.unique(names, return_inverse=True)
        per_row = np.array([self.threshold(str(p)) for p in unique], dtype=np.float64)[inverse.reshape(-1)]
        mask: BoolArray = self.ranked(scores, estimate) >= per_row
        return mask

    def ranked(self, scores: npt.ArrayLike, estimate: npt.ArrayLike | None) -> FloatArray:
        """What the thresholds compare for these rows: the scores, or the scores x the estimated CPM."""
        values = np.asarray(scores, dtype=np.float64)
        if self.ranking == "p_bid":
            return values
        if estimate is None:
            raise ValueError("a policy that ranks by expected bid value needs each row's price estimate")
        ranked: FloatArray = values * np.asarray(estimate, dtype=np.float64)
        return ranked

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": dict(sorted(self.thresholds.items())),
            "exploration_share": self.exploration_share,
            "target_recall": self.target_recall,
            "default_threshold": self.default_threshold,
            "objective": self.objective,
            "ranking": self.ranking,
            "exploration_hash": "sha256(salt + auction_id)[:8] big-endian / 2**64 < share",
            "exploration_salt": EXPLORATION_SALT.decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilterPolicy:
        return cls(
            thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
            exploration_share=float(data["exploration_share"]),
            target_recall=float(data["target_recall"]),
            default_threshold=float(data.get("default_threshold", 0.0)),
            objective="value" if data.get("objective") == "value" else "recall",
            ranking="expected_value" if data.get("ranking") == "expected_value" else "p_bid",
        )


def choose_policy(
    partners: npt.NDArray[Any] | Sequence[str],
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    target_recall: float,
    exploration_share: float,
    confidence_z: float = 0.0,
    objective: Objective = "recall",
    price: npt.ArrayLike | None = None,
    ranking: Ranking = "p_bid",
) -> FilterPolicy:
    """Per-partner thresholds: each the highest keeping ``target_recall`` of that partner's bids (or bid value).

    Exploration is not used to choose them (it only adds recall), so each partner's recall (or
    value kept) from the thresholds alone meets the target on these rows.

    A threshold chosen on few bids overfits them: on new traffic it keeps fewer than the target.
    With ``confidence_z`` > 0 each partner's threshold is chosen for a target raised by that many
    standard errors of a recall measured on its n bids, ``target + z * sqrt(target (1 - target) / n)``
    (capped at 1), so sparse partners are filtered cautiously and data-rich ones near the target.
    The objective ``value`` needs ``price`` (the bids' CPMs). ``ranking`` only labels the policy:
    ``scores`` are already what its thresholds compare (for ``expected_value``, P(bid) x the estimate).
    """
    names = np.asarray(partners, dtype=object).astype(str)
    labels = np.asarray(y, dtype=np.float64) > 0.5
    values = np.asarray(scores, dtype=np.float64)
    if objective == "value" and price is None:
        raise ValueError("the value objective needs the bids' prices")
    cpm = np.asarray(price, dtype=np.float64) if price is not None else None
    thresholds = {}
    for partner in np.unique(names):
        bids = (names == partner) & labels
        bid_scores = values[bids]
        margin = confidence_z * math.sqrt(target_recall * (1 - target_recall) / max(1, len(bid_scores)))
        target = min(1.0, target_recall + margin)
        if objective == "value" and cpm is not None:
            thresholds[str(partner)] = value_threshold(bid_scores, cpm[bids], target)
        else:
            thresholds[str(partner)] = recall_threshold(bid_scores, target)
    return FilterPolicy(
        thresholds,
        exploration_share=exploration_share,
        target_recall=target_recall,
        objective=objective,
        ranking=ranking,
    )


@dataclass(frozen=True)
class Economics:
    """What a filter does to a set of partner calls (rows: one auction x partner each)."""

    calls: int
    calls_made: int
    calls_saved: int
    calls_saved_share: float
    exploration_calls: int
    bids: int
    bids_kept: int
    bid_recall: float
    value: float
    value_kept: float
    value_kept_share: float

    def to_json(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def economics(called: npt.ArrayLike, y: npt.ArrayLike, price: npt.ArrayLike, explored: npt.ArrayLike) -> Economics:
    """Calls saved, bids kept and bid value kept by the call decisions ``called``.

    Args:
        called: per row, whether the partner is called (exploration already applied).
        y: per row, 1 when the partner bid.
        price: per row, the bid's price (CPM); ignored where ``y`` is 0 (NaN there is fine).
        explored: per row, whether its auction explores (counted, to report its cost).
    """
    call = np.asarray(called, dtype=bool)
    bid = np.asarray(y, dtype=np.float64) > 0.5
    value = np.where(bid, np.nan_to_num(np.asarray(price, dtype=np.float64), nan=0.0), 0.0)
    n, n_bids, total_value = len(call), int(bid.sum()), float(value.sum())
    made = int(call.sum())
    kept = int((call & bid).sum())
    value_kept = float(value[call].sum())
    return Economics(
        calls=n,
        calls_made=made,
        calls_saved=n - made,
        calls_saved_share=(n - made) / n if n else float("nan"),
        exploration_calls=int(np.asarray(explored, dtype=bool).sum()),
        bids=n_bids,
        bids_kept=kept,
        bid_recall=kept / n_bids if n_bids else float("nan"),
        value=total_value,
        value_kept=value_kept,
        value_kept_share=value_kept / total_value if total_value > 0 else float("nan"),
    )


def policy_economics(
    policy: FilterPolicy,
    auction_ids: npt.NDArray[Any] | Sequence[str],
    partners: npt.NDArray[Any] | Sequence[str],
    y: npt.ArrayLike,
    scores: FloatArray,
    price: npt.ArrayLike,
    estimate: FloatArray | None = None,
) -> Economics:
    """``economics`` of ``policy`` (thresholds + exploration) on these rows (``estimate``: see ``model_mask``)."""
    explored = exploration_mask(auction_ids, policy.exploration_share)
    called = policy.model_mask(partners, scores, estimate) | explored
    return economics(called, y, price, explored)


def economics_curve(
    auction_ids: npt.NDArray[Any] | Sequence[str],
    partners: npt.NDArray[Any] | Sequence[str],
    y: npt.ArrayLike,
    scores: FloatArray,
    price: npt.ArrayLike,
    *,
    exploration_share: float,
    targets: Iterable[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0),
    objective: Objective = "recall",
) -> list[tuple[float, Economics]]:
    """Economics when per-partner thresholds are chosen on these rows for each target share.

    This measures the *ranking* of a model in business terms (calls saved at a bid recall, or at a
    share of bid value kept), so two models can be compared on one window independently of
    thresholds chosen elsewhere.
    """
    explored = exploration_mask(auction_ids, exploration_share)
    out = []
    for target in targets:
        policy = choose_policy(
            partners, y, scores, target_recall=target, exploration_share=exploration_share,
            objective=objective, price=price,
        )  # fmt: skip
        called = policy.model_mask(partners, scores) | explored
        out.append((float(target), economics(called, y, price, explored)))
    return out

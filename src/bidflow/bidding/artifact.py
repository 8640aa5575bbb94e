"""The fitted bidder as a folder: ``bidder.json`` holds everything needed to rebuild every policy.

The planned policy's value function is not stored: it is a deterministic function of the stored
landscape, values, episode and budget, and is recomputed on first use (a few seconds at the largest
budgets) instead of shipping hundreds of megabytes per version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np

from bidflow.bidding.auctions import Campaign
from bidflow.bidding.fit import Bidder, BidderSettings
from bidflow.bidding.landscape import Landscape
from bidflow.bidding.names import PolicyName
from bidflow.bidding.policies import ConstantPolicy, LinearPolicy, OrtbPolicy, PlannedPolicy, Policy
from bidflow.errors import BiddingError

FILE: Final = "bidder.json"
FORMAT: Final = 1


def save_bidder(bidder: Bidder, folder: Path) -> Path:
    """Write ``bidder`` to ``folder/bidder.json``; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    c = bidder.campaign
    s = bidder.settings
    body: dict[str, Any] = {
        "format": FORMAT,
        "campaign": {
            "id": c.id,
            "impressions": c.impressions,
            "clicks": c.clicks,
            "cost": c.cost,
            "price_counts": c.price_counts.tolist(),
        },
        "landscape": bidder.landscape.pdf.tolist(),
        "settings": {
            "episode": s.episode,
            "levels": list(s.levels),
            "served_level": s.served_level,
            "policy": s.policy,
            "value_bins": s.value_bins,
            "max_bid": s.max_bid,
        },
        "policies": [
            {"level": level, "name": name, "params": policy.params()}
            for level, policies in bidder.policies.items()
            for name, policy in policies.items()
        ],
        "tuning": [{"level": level, "curves": curves} for level, curves in bidder.tuning.items()],
    }
    path = folder / FILE
    path.write_text(json.dumps(body, indent=1))
    return path


def load_bidder(folder: Path) -> Bidder:
    """The bidder saved in ``folder``.

    Raises:
        BiddingError: no ``bidder.json`` there, or one this version cannot read.
    """
    path = folder / FILE if folder.is_dir() else folder
    if not path.is_file():
        raise BiddingError("no fitted bidder here", where=str(folder), expected=f"a folder with {FILE}")
    try:
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT:
            raise BiddingError("unknown bidder format", where=str(path), expected=str(FORMAT),
                               got=str(body.get("format")))  # fmt: skip
        c = body["campaign"]
        campaign = Campaign(c["id"], int(c["impressions"]), int(c["clicks"]), float(c["cost"]),
                            np.asarray(c["price_counts"], dtype=np.float64))  # fmt: skip
        s = body["settings"]
        settings = BidderSettings(int(s["episode"]), tuple(float(v) for v in s["levels"]), float(s["served_level"]),
                                  s["policy"], int(s["value_bins"]), int(s["max_bid"]))  # fmt: skip
        landscape = Landscape(np.asarray(body["landscape"], dtype=np.float64))
        bidder = Bidder(campaign, landscape, settings)
        for entry in body["policies"]:
            level = float(entry["level"])
            bidder.policies.setdefault(level, {})[entry["name"]] = _policy(
                entry["name"], entry["params"], bidder, level
            )
        for entry in body["tuning"]:
            bidder.tuning[float(entry["level"])] = entry["curves"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BiddingError("the fitted bidder file is not readable", where=str(path),
                           got=f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    return bidder


def _policy(name: PolicyName, params: dict[str, Any], bidder: Bidder, level: float) -> Policy:
    common: dict[str, Any] = {
        "episode": bidder.settings.episode,
        "budget": bidder.budget(level),
        "max_bid": bidder.settings.max_bid,
        "average_ctr": bidder.campaign.ctr,
    }
    if name == "constant":
        return ConstantPolicy(**common, value=int(params["bid"]))
    if name == "linear":
        return LinearPolicy(**common, base=float(params["base_bid"]))
    if name == "ortb":
        return OrtbPolicy(**common, c=float(params["c"]), lam=float(params["lambda"]))
    if name == "planned":
        return PlannedPolicy(
            **common,
            pdf=bidder.landscape.pdf,
            thetas=np.asarray(params["values"], dtype=np.float64),
            weights=np.asarray(params["weights"], dtype=np.float64),
            normalize=bool(params["normalize"]),
            trust=float(params.get("trust", 1.0)),
        )
    raise BiddingError("unknown policy in a fitted bidder", got=name, expected="constant, linear, ortb, planned")

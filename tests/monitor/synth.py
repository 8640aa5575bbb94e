"""Synthetic served auctions for the drift tests, built through ``RequestFeatures`` -> ``drift_row``.

Plain numpy (``bidflow.data.simulate`` needs isal, which the monitor environment does not carry).
The mixes are loosely shaped like ``bidflow.data.world``'s; each scenario changes one thing.
Shared by ``tests/monitor`` (monitor environment) and ``tests/unit/test_drift_scipy.py`` (main).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from bidflow.monitoring.drift import drift_frame, drift_row
from bidflow.openrtb.features import RequestFeatures

Mix = Mapping[Any, float]

CHANNEL: Final[Mix] = {"site": 0.75, "app": 0.22, "dooh": 0.03}
CATEGORY: Final[Mix] = {f"IAB{i}": w for i, w in enumerate((30, 18, 12, 9, 7, 6, 5, 4, 3, 3, 2, 1), start=1)}
FORMAT: Final[Mix] = {"banner": 0.6, "video": 0.22, "native": 0.12, "audio": 0.06}
SIZES: Final[Mapping[str, Mix]] = {
    "banner": {"300x250": 0.5, "728x90": 0.25, "320x50": 0.25},
    "video": {"640x480": 0.6, "1280x720": 0.4},
    "native": {"native": 1.0},
    "audio": {"audio": 1.0},
}
OS: Final[Mix] = {"android": 0.45, "ios": 0.35, "windows": 0.12, "macos": 0.08}
COUNTRY: Final[Mix] = {"USA": 0.4, "GBR": 0.1, "DEU": 0.1, "FRA": 0.08, "JPN": 0.08, "IND": 0.12, "BRA": 0.12}
DEVICE_TYPE: Final[Mix] = {4: 0.55, 2: 0.3, 5: 0.1, 3: 0.05}  # phone, PC, tablet, CTV
CONNECTION: Final[Mix] = {2: 0.5, 6: 0.3, 1: 0.2}
TMAX: Final[Mix] = {100: 0.2, 200: 0.4, 300: 0.3, 500: 0.1}

# the scenarios
CTV_HEAVY: Final[Mix] = {4: 0.25, 2: 0.2, 5: 0.1, 3: 0.45}
VIDEO_HEAVY: Final[Mix] = {"banner": 0.3, "video": 0.55, "native": 0.1, "audio": 0.05}


def _draw(rng: np.random.Generator, mix: Mix, n: int) -> list[Any]:
    keys = list(mix)
    weights = np.asarray([mix[k] for k in keys], dtype=float)
    picks = rng.choice(len(keys), size=n, p=weights / weights.sum())
    return [keys[i] for i in picks]


def auctions(
    n: int,
    seed: int,
    *,
    device_type: Mix = DEVICE_TYPE,
    formats: Mix = FORMAT,
    flood_category: str | None = None,
    flood_share: float = 0.0,
    score_shift: float = 0.0,
    missing_scores: float = 0.02,
) -> pd.DataFrame:
    """``n`` auctions as a ``drift_frame``; the keyword arguments switch a drift scenario on."""
    rng = np.random.default_rng(seed)
    fmt = _draw(rng, formats, n)
    sizes = {name: iter(_draw(rng, mix, n)) for name, mix in SIZES.items()}
    category = _draw(rng, CATEGORY, n)
    if flood_category is not None:
        category = [flood_category if hit else c for c, hit in zip(category, rng.random(n) < flood_share, strict=True)]
    columns = {
        "channel": _draw(rng, CHANNEL, n),
        "os": _draw(rng, OS, n),
        "country": _draw(rng, COUNTRY, n),
        "device_type": _draw(rng, device_type, n),
        "connection_type": _draw(rng, CONNECTION, n),
        "tmax": _draw(rng, TMAX, n),
    }
    flags = rng.random((n, 4)) < np.asarray([0.1, 0.05, 0.6, 0.95])
    floors = np.round(rng.lognormal(mean=-0.5, sigma=0.8, size=n), 2)
    scores = np.clip(rng.beta(2.0, 5.0, size=n) + score_shift, 0.0, 1.0)
    no_score = rng.random(n) < missing_scores
    rows = []
    for i in range(n):
        features = RequestFeatures(
            channel=columns["channel"][i],
            publisher_id=f"pub-{rng.integers(400)}",
            category=category[i],
            format=fmt[i],
            ad_size=next(sizes[fmt[i]]),
            interstitial=int(flags[i, 0]),
            rewarded=int(flags[i, 1]),
            bidfloor=float(floors[i]),
            device_type=columns["device_type"][i],
            os=columns["os"][i],
            country=columns["country"][i],
            region="unknown",
            connection_type=columns["connection_type"][i],
            has_user_id=int(flags[i, 2]),
            gdpr=0,
            coppa=0,
            tmax=columns["tmax"][i],
            secure=int(flags[i, 3]),
            hour_of_day=int(rng.integers(24)),
            day_of_week=int(rng.integers(7)),
        )
        rows.append(drift_row(features, None if no_score[i] else float(scores[i])))
    return drift_frame(rows)

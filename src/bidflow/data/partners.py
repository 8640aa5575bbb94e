"""Demand partners of the simulated exchange and how each decides to bid.

A partner bids on a request with probability

    base_rate x format x country x device x publisher affinity x user-id x time of day x pacing

(capped at 0.95), then draws a CPM from a log-normal around its price level, scaled by
format and country price index; a bid below the request's floor is not returned (the
partner sees the floor and stays silent), so floors shape the labels. Independently a call
times out (more often under a tight ``tmax``) or errors. Overall, most calls come back
empty, as on real exchanges (single-digit to low-double-digit bid rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class PartnerProfile:
    """One demand partner's documented behaviour."""

    id: str
    base_rate: float  # bid probability on fully targeted traffic
    price_cpm: float  # median CPM (USD) for a US banner
    formats: dict[str, float]  # multiplier per format; a missing format means 0 (does not buy it)
    countries: dict[str, float] = field(default_factory=dict)  # overrides of `other_countries`
    other_countries: float = 1.0
    devices: dict[str, float] = field(default_factory=dict)  # desktop/phone/tablet/ctv, default 1
    needs_user_id: float = 1.0  # multiplier applied when the request has no user id
    active_hours: tuple[int, int] | None = None  # UTC [from, to); outside it the rate is x0.3
    even_pacing: bool = False  # throttles when traffic is above its daily mean
    timeout_rate: float = 0.02  # at tmax 500 ms; scales with 500/tmax
    error_rate: float = 0.005
    latency_ms: float = 80.0  # median response time
    price_sigma: float = 0.55


ALL_FORMATS: Final = {"banner": 1.0, "video": 1.0, "native": 1.0, "audio": 1.0}
DISPLAY: Final = {"banner": 1.0, "native": 0.8}
VIDEO_FIRST: Final = {"video": 1.0, "banner": 0.25}

PARTNERS: Final[tuple[PartnerProfile, ...]] = (
    PartnerProfile("atlas", 0.30, 1.6, ALL_FORMATS, latency_ms=70),
    PartnerProfile("beacon", 0.22, 1.2, DISPLAY, countries={"USA": 1.0, "CAN": 0.8}, other_countries=0.05),
    PartnerProfile("cobalt", 0.35, 4.5, VIDEO_FIRST, devices={"ctv": 1.6, "desktop": 0.8}, latency_ms=120),
    PartnerProfile("delta", 0.12, 0.6, ALL_FORMATS, needs_user_id=0.2),
    PartnerProfile(
        "ember",
        0.25,
        0.9,
        DISPLAY,
        devices={"desktop": 0.1, "ctv": 0.0},
        countries={"IND": 1.4, "IDN": 1.4, "BRA": 1.2},
    ),
    PartnerProfile(
        "fjord",
        0.18,
        1.4,
        DISPLAY,
        countries={"GBR": 1.2, "DEU": 1.2, "FRA": 1.0, "NLD": 1.0, "ESP": 0.9, "ITA": 0.9},
        other_countries=0.08,
    ),
    PartnerProfile("granite", 0.10, 2.2, ALL_FORMATS, even_pacing=True),
    PartnerProfile(
        "harbor", 0.28, 0.8, {"banner": 1.0}, devices={"phone": 1.3, "tablet": 1.0, "desktop": 0.3, "ctv": 0.0}
    ),
    PartnerProfile("iris", 0.08, 3.0, ALL_FORMATS, needs_user_id=0.1, latency_ms=150, timeout_rate=0.06),
    PartnerProfile("juniper", 0.20, 1.1, DISPLAY, active_hours=(12, 24)),
    PartnerProfile("kestrel", 0.15, 2.8, {"video": 1.0, "audio": 0.8}, devices={"ctv": 2.0}),
    PartnerProfile("lumen", 0.05, 1.0, ALL_FORMATS, timeout_rate=0.10, error_rate=0.03, latency_ms=220),
    PartnerProfile("meridian", 0.24, 1.3, DISPLAY, countries={"JPN": 1.5, "KOR": 1.5, "AUS": 1.0}, other_countries=0.1),
    PartnerProfile("nimbus", 0.16, 1.0, {"native": 1.0, "banner": 0.4}),
    PartnerProfile("onyx", 0.11, 1.9, ALL_FORMATS, even_pacing=True, active_hours=(6, 22)),
    PartnerProfile(
        "prism",
        0.21,
        0.7,
        {"banner": 1.0, "video": 0.5},
        devices={"phone": 1.2},
        countries={"BRA": 1.5, "MEX": 1.5},
        other_countries=0.3,
    ),
    PartnerProfile("quartz", 0.09, 2.5, {"video": 1.0}, needs_user_id=0.4),
    PartnerProfile("ridge", 0.19, 1.2, ALL_FORMATS, devices={"desktop": 1.4, "phone": 0.6}),
    PartnerProfile("summit", 0.14, 1.5, DISPLAY, even_pacing=True),
    PartnerProfile("tundra", 0.07, 0.5, {"banner": 1.0}, other_countries=1.0, error_rate=0.02),
    PartnerProfile("umbra", 0.26, 1.1, {"audio": 1.0, "video": 0.3}),
    PartnerProfile("vertex", 0.13, 1.7, ALL_FORMATS, countries={"USA": 1.3}, other_countries=0.7, latency_ms=60),
    PartnerProfile("willow", 0.17, 0.9, DISPLAY, active_hours=(0, 12)),
    PartnerProfile("zephyr", 0.04, 3.5, ALL_FORMATS, needs_user_id=0.3, timeout_rate=0.04),
)

PARTNER_IDS: Final = tuple(p.id for p in PARTNERS)

# Price multipliers by format: video and CTV inventory are worth far more than display.
FORMAT_PRICE: Final = {"banner": 1.0, "video": 3.5, "native": 1.3, "audio": 1.8}
TIER_PRICE: Final = (1.5, 1.0, 0.6)  # premium, mid, long tail

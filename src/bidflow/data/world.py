"""The simulated ad market: publishers, devices, geographies and ad slots.

The market is drawn once from the seed and is independent of which hours are generated,
so later hours (a drift scenario, the next day) see the same publishers and partners.

Mixes are shaped after real data in ``shared/data`` (documented here, never copied):
- channel: the Avazu sample is ~78 % site and ~22 % app traffic; DOOH (OpenRTB 2.6) is a
  small slice, as in the IAB 2.6 DOOH examples;
- formats: the Prebid adapter fixtures carry banner 56 %, video 21 %, native 9 %, audio 1 %
  of imps; banner sizes are dominated by 300x250, 728x90 and 320x50 (also iPinYou's and
  Avazu's most common slots);
- devices: Avazu's app/mobile traffic is ~93 % phones; desktop is common on site traffic;
- publishers: traffic per publisher is Zipf-like (a few large sites carry most volume).

Every entity that does not change per auction is rendered to JSON *once* here (with a
real encoder, so escaping is right); the renderer then assembles an auction by index.
That is what lets the generator write >100k auctions/s on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from bidflow.data.partners import PARTNERS

FLOOD_PUBLISHER_ID: Final = "pub-flood"
FORMATS: Final = ("banner", "video", "native", "audio")
CHANNELS: Final = ("site", "app", "dooh")
DEVICE_CLASSES: Final = ("desktop", "phone", "tablet", "ctv")
TIERS: Final = ("premium", "mid", "long_tail")

# OpenRTB 2.x device type codes (List: Device Type): 2 PC, 4 phone, 5 tablet, 3 connected TV.
DEVICE_TYPE_CODE: Final = {"desktop": 2, "phone": 4, "tablet": 5, "ctv": 3}

# ISO-3166-1 alpha-3 (as OpenRTB requires), share of worldwide programmatic volume,
# price index relative to the US, GDPR applies, and a few regions (ISO-3166-2 suffixes).
COUNTRIES: Final = (
    ("USA", 0.38, 1.00, False, ("CA", "TX", "FL", "NY", "IL", "WA")),
    ("GBR", 0.07, 0.80, True, ("ENG", "SCT")),
    ("DEU", 0.06, 0.75, True, ("BY", "BE", "NW")),
    ("FRA", 0.05, 0.65, True, ("IDF", "ARA")),
    ("JPN", 0.05, 0.70, False, ("13", "27")),
    ("CAN", 0.04, 0.80, False, ("ON", "QC", "BC")),
    ("BRA", 0.05, 0.25, False, ("SP", "RJ")),
    ("IND", 0.07, 0.12, False, ("MH", "KA", "DL")),
    ("AUS", 0.03, 0.75, False, ("NSW", "VIC")),
    ("MEX", 0.03, 0.25, False, ("CMX", "JAL")),
    ("ESP", 0.03, 0.50, True, ("MD", "CT")),
    ("ITA", 0.03, 0.50, True, ("LAZ", "LOM")),
    ("NLD", 0.02, 0.70, True, ("NH",)),
    ("IDN", 0.04, 0.10, False, ("JK",)),
    ("KOR", 0.06, 0.55, False, ("11",)),
)
COUNTRY_CODES: Final = tuple(c[0] for c in COUNTRIES)

# IAB content taxonomy 1.0 tier-1 codes with their traffic share.
CATEGORIES: Final = (
    ("IAB12", 0.20),  # news
    ("IAB17", 0.12),  # sports
    ("IAB1", 0.10),  # arts & entertainment
    ("IAB9", 0.10),  # hobbies & interests (incl. games)
    ("IAB19", 0.09),  # technology & computing
    ("IAB13", 0.07),  # personal finance
    ("IAB20", 0.07),  # travel
    ("IAB7", 0.06),  # health & fitness
    ("IAB18", 0.06),  # style & fashion
    ("IAB2", 0.05),  # automotive
    ("IAB8", 0.04),  # food & drink
    ("IAB3", 0.04),  # business
)
CATEGORY_CODES: Final = tuple(c[0] for c in CATEGORIES)

# Format mix per channel (site, app, dooh).
FORMAT_MIX: Final = np.array(
    [
        [0.70, 0.16, 0.12, 0.02],
        [0.58, 0.30, 0.11, 0.01],
        [0.60, 0.40, 0.00, 0.00],
    ]
)
# Device class mix per channel.
DEVICE_MIX: Final = np.array(
    [
        [0.46, 0.44, 0.10, 0.00],
        [0.00, 0.80, 0.14, 0.06],
        [0.00, 0.00, 0.00, 1.00],
    ]
)


@dataclass(frozen=True)
class DeviceProfile:
    device_class: str
    os: str
    osv: str
    make: str
    model: str
    ua: str
    weight: float  # share within its device class


DEVICE_PROFILES: Final = (
    DeviceProfile(
        "desktop", "Windows", "10", "Microsoft", "PC", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131", 0.62
    ),
    DeviceProfile(
        "desktop", "macOS", "14.6", "Apple", "Mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605", 0.30
    ),
    DeviceProfile("desktop", "Linux", "6.1", "Generic", "PC", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133", 0.08),
    DeviceProfile(
        "phone", "iOS", "18.1", "Apple", "iPhone", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)", 0.45
    ),
    DeviceProfile("phone", "Android", "14", "Samsung", "SM-S918B", "Mozilla/5.0 (Linux; Android 14; SM-S918B)", 0.30),
    DeviceProfile("phone", "Android", "15", "Google", "Pixel 9", "Mozilla/5.0 (Linux; Android 15; Pixel 9)", 0.25),
    DeviceProfile("tablet", "iOS", "18.1", "Apple", "iPad", "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X)", 0.65),
    DeviceProfile("tablet", "Android", "14", "Samsung", "SM-X710", "Mozilla/5.0 (Linux; Android 14; SM-X710)", 0.35),
    DeviceProfile("ctv", "tvOS", "18.1", "Apple", "Apple TV", "AppleTV14,1/18.1", 0.30),
    DeviceProfile("ctv", "Tizen", "8.0", "Samsung", "QN90D", "Mozilla/5.0 (SMART-TV; Linux; Tizen 8.0)", 0.40),
    DeviceProfile("ctv", "Roku OS", "13", "Roku", "Ultra", "Roku/DVP-13.0", 0.30),
)

# OpenRTB connection types: 2 wifi, 1 ethernet, 6 cellular 4G, 7 cellular 5G.
CONNECTION_TYPES: Final = (2, 1, 6, 7)
CONNECTION_MIX: Final = np.array(
    [
        [0.55, 0.45, 0.00, 0.00],  # desktop
        [0.45, 0.00, 0.35, 0.20],  # phone
        [0.85, 0.00, 0.10, 0.05],  # tablet
        [0.70, 0.30, 0.00, 0.00],  # ctv
    ]
)


@dataclass(frozen=True)
class AdSlot:
    format: str
    w: int
    h: int
    instl: int
    weights: tuple[float, float, float, float]  # share within the format, by device class


AD_SLOTS: Final = (
    AdSlot("banner", 300, 250, 0, (0.40, 0.35, 0.45, 0.0)),
    AdSlot("banner", 728, 90, 0, (0.28, 0.00, 0.25, 0.0)),
    AdSlot("banner", 160, 600, 0, (0.10, 0.00, 0.00, 0.0)),
    AdSlot("banner", 300, 600, 0, (0.12, 0.00, 0.10, 0.0)),
    AdSlot("banner", 970, 250, 0, (0.10, 0.00, 0.00, 0.0)),
    AdSlot("banner", 320, 50, 0, (0.00, 0.50, 0.05, 0.0)),
    AdSlot("banner", 320, 480, 1, (0.00, 0.15, 0.15, 0.0)),
    AdSlot("banner", 1920, 1080, 0, (0.00, 0.00, 0.00, 1.0)),
    AdSlot("video", 640, 480, 0, (0.70, 0.40, 0.40, 0.0)),
    AdSlot("video", 320, 480, 1, (0.00, 0.60, 0.30, 0.0)),
    AdSlot("video", 1280, 720, 0, (0.30, 0.00, 0.30, 0.0)),
    AdSlot("video", 1920, 1080, 0, (0.00, 0.00, 0.00, 1.0)),
    AdSlot("native", 1200, 627, 0, (1.00, 1.00, 1.00, 1.0)),
    AdSlot("audio", 0, 0, 0, (1.00, 1.00, 1.00, 1.0)),
)

TMAX_CHOICES: Final = np.array([250, 300, 500, 800, 1000])
TMAX_MIX: Final = np.array([0.10, 0.25, 0.40, 0.15, 0.10])

USER_ID_SHARE: Final = {"site": 0.62, "app": 0.86, "dooh": 0.0}
CHANNEL_MIX: Final = np.array([0.76, 0.22, 0.02])
TIER_MIX: Final = np.array([0.08, 0.27, 0.65])
TIER_FLOOR_CPM: Final = np.array([1.40, 0.55, 0.12])
TIER_PARTNERS: Final = ((14, 24), (10, 20), (6, 16))  # partners configured per publisher


@dataclass(frozen=True)
class Publishers:
    """Column-wise publisher attributes (index = publisher number)."""

    ids: list[str]
    channel: npt.NDArray[np.int64]
    tier: npt.NDArray[np.int64]
    category: npt.NDArray[np.int64]
    home_country: npt.NDArray[np.int64]
    floor_cpm: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]  # probability of an auction coming from this publisher
    partners: npt.NDArray[np.bool_]  # (publishers, partners): who the publisher calls
    affinity: npt.NDArray[np.float64]  # (publishers, partners): partner's appetite for it
    inventory_json: list[bytes]  # '"site":{...}' / '"app":{...}' / '"dooh":{...}'
    bidders_json: list[bytes]  # '"ext":{"prebid":{"bidder":{...}}}' for the imp

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class World:
    publishers: Publishers
    device_class_of_profile: npt.NDArray[np.int64]
    device_json: list[bytes]  # '{"ua":..,"devicetype":..,...' (unterminated: geo and connection follow)
    slot_format: npt.NDArray[np.int64]
    imp_json: list[bytes]  # '{"id":"1","banner":{...},"secure":1' (unterminated)
    geo_json: list[bytes]  # '"geo":{"country":"USA","region":"CA"}}' per (country, region)
    geo_country: npt.NDArray[np.int64]
    geo_offsets: npt.NDArray[np.int64]  # first geo index of each country
    geo_counts: npt.NDArray[np.int64]


_json = msgspec.json.Encoder()


def _member(key: str, value: object) -> bytes:
    return b'"' + key.encode() + b'":' + _json.encode(value)


def build_world(seed: int, n_publishers: int) -> World:
    """Draw the market for ``seed``: same seed, same publishers, partners and inventory.

    ``n_publishers`` regular publishers plus the dormant flood publisher (see scenarios).
    """
    rng = np.random.default_rng([seed, 0xB1D])
    publishers = _build_publishers(rng, n_publishers + 1)
    geo_json: list[bytes] = []
    geo_country: list[int] = []
    offsets, counts = [], []
    for ci, (code, _share, _price, _gdpr, regions) in enumerate(COUNTRIES):
        offsets.append(len(geo_json))
        counts.append(len(regions))
        for region in regions:
            geo_json.append(b'"geo":' + _json.encode({"country": code, "region": region, "type": 2}) + b"}")
            geo_country.append(ci)
    device_json = []
    for p in DEVICE_PROFILES:
        device = {"ua": p.ua, "devicetype": DEVICE_TYPE_CODE[p.device_class], "make": p.make, "model": p.model}
        device |= {"os": p.os, "osv": p.osv, "js": 1 if p.device_class != "ctv" else 0, "language": "en"}
        device_json.append(_json.encode(device)[:-1])
    return World(
        publishers=publishers,
        device_class_of_profile=np.array([DEVICE_CLASSES.index(p.device_class) for p in DEVICE_PROFILES]),
        device_json=device_json,
        slot_format=np.array([FORMATS.index(s.format) for s in AD_SLOTS]),
        imp_json=[_imp_json(slot) for slot in AD_SLOTS],
        geo_json=geo_json,
        geo_country=np.array(geo_country),
        geo_offsets=np.array(offsets),
        geo_counts=np.array(counts),
    )


def _imp_json(slot: AdSlot) -> bytes:
    imp: dict[str, object] = {"id": "1"}
    if slot.format == "banner":
        imp["banner"] = {"w": slot.w, "h": slot.h, "format": [{"w": slot.w, "h": slot.h}], "pos": 1}
    elif slot.format == "video":
        imp["video"] = {
            "mimes": ["video/mp4", "application/javascript"],
            "w": slot.w,
            "h": slot.h,
            "minduration": 5,
            "maxduration": 30,
            "protocols": [2, 3, 5, 6],
            "plcmt": 1 if slot.instl == 0 else 3,
            "linearity": 1,
        }
    elif slot.format == "native":
        native_request = {
            "ver": "1.2",
            "context": 2,
            "plcmttype": 1,
            "assets": [
                {"id": 1, "required": 1, "title": {"len": 90}},
                {"id": 2, "required": 1, "img": {"type": 3, "wmin": slot.w, "hmin": slot.h}},
                {"id": 3, "data": {"type": 2, "len": 140}},
            ],
        }
        imp["native"] = {"request": _json.encode(native_request).decode(), "ver": "1.2"}
    else:
        imp["audio"] = {"mimes": ["audio/mp4", "audio/mpeg"], "minduration": 5, "maxduration": 30, "protocols": [9, 10]}
    if slot.instl:
        imp["instl"] = 1
    imp["secure"] = 1
    return _json.encode(imp)[:-1]


def _build_publishers(rng: np.random.Generator, n: int) -> Publishers:
    k = len(PARTNERS)
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_MIX)
    tier = rng.choice(len(TIERS), size=n, p=TIER_MIX)
    category = rng.choice(len(CATEGORIES), size=n, p=[c[1] for c in CATEGORIES])
    home_country = rng.choice(len(COUNTRIES), size=n, p=_norm([c[1] for c in COUNTRIES]))
    floor_cpm = TIER_FLOOR_CPM[tier] * rng.lognormal(0.0, 0.35, size=n)
    # Zipf-like volume, premium publishers a little larger; a random order so that volume
    # and publisher number are unrelated.
    rank = rng.permutation(n) + 1
    volume = _norm((1.0 / rank**1.05) * np.where(tier == 0, 2.0, 1.0))
    partners = np.zeros((n, k), dtype=bool)
    for i in range(n):
        lo, hi = TIER_PARTNERS[tier[i]]
        chosen = rng.choice(k, size=int(rng.integers(lo, hi + 1)), replace=False)
        partners[i, chosen] = True
    affinity = rng.lognormal(0.0, 0.6, size=(n, k))
    # The last publisher is dormant (no volume) until the ``publisher_flood`` scenario wakes it:
    # a long-tail site with almost no floor that every partner is called for and few bid on.
    channel[-1], tier[-1], category[-1], home_country[-1], floor_cpm[-1] = 0, 2, 3, 0, 0.02
    volume[-1] = 0.0
    volume /= volume.sum()
    partners[-1, :] = True
    affinity[-1, :] = 0.15
    ids = [f"pub-{i:05d}" for i in range(n - 1)] + [FLOOD_PUBLISHER_ID]
    inventory_json = [_inventory_json(ids[i], int(channel[i]), int(category[i]), i) for i in range(n)]
    bidders_json = [
        b'"ext":' + _json.encode({"prebid": {"bidder": {PARTNERS[j].id: {} for j in np.flatnonzero(partners[i])}}})
        for i in range(n)
    ]
    return Publishers(
        ids, channel, tier, category, home_country, floor_cpm, volume, partners, affinity, inventory_json, bidders_json
    )


def _inventory_json(pub_id: str, channel: int, category: int, i: int) -> bytes:
    cat = CATEGORY_CODES[category]
    publisher = {"id": pub_id, "name": f"Publisher {i}"}
    if CHANNELS[channel] == "site":
        domain = f"site{i:05d}.example"
        obj = {"id": f"s-{i:05d}", "domain": domain, "page": f"https://{domain}/", "cat": [cat], "publisher": publisher}
    elif CHANNELS[channel] == "app":
        obj = {"id": f"a-{i:05d}", "bundle": f"com.example.app{i:05d}", "cat": [cat], "publisher": publisher}
    else:
        obj = {"id": f"d-{i:05d}", "venuetype": ["transit"], "publisher": publisher}
    return _member(CHANNELS[channel], obj)


def _norm(weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
    w = np.asarray(weights, dtype=np.float64)
    normalised: npt.NDArray[np.float64] = w / w.sum()
    return normalised

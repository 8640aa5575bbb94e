"""``bidflow simulate``: deterministic OpenRTB auction logs, one gzip JSON-lines file per hour.

Each line is one auction::

    {"ts_ms": 1762041600123, "request": {<OpenRTB 2.6 BidRequest>},
     "outcomes": [{"partner": "atlas", "status": "bid", "latency_ms": 74, "price": 1.82}, ...]}

``status`` is one of ``bid``, ``nobid``, ``timeout``, ``error``; ``price`` (CPM, USD) is present
only for bids. The partners called are the publisher's configured bidders, also listed in
``request.imp[0].ext.prebid.bidder`` as Prebid Server would send them.

Beside each hour's log lies its **oracle** (``auctions.oracle.arrow``, ``bidflow.data.oracle``):
for every partner call, the true probability that it came back with a bid and the expected value
of what came back, computed from the same parameters as the draw. No exchange log has this; it is
ground truth for evaluating filters against the best any model could do on this market.

All randomness is drawn column-wise with numpy from a generator keyed by (seed, hour), so a
given hour is identical whatever range of hours it is generated in.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from isal import isal_zlib

from bidflow.config import SimulateConfig
from bidflow.data.oracle import answer_oracle, oracle_path, write_oracle
from bidflow.data.partners import FORMAT_PRICE, TIER_PRICE, PartnerProfile
from bidflow.data.render import Vocabulary, render_auctions
from bidflow.data.scenarios import BASELINE, MarketConditions, conditions_for
from bidflow.data.world import (
    AD_SLOTS,
    CHANNELS,
    CONNECTION_MIX,
    COUNTRIES,
    COUNTRY_CODES,
    DEVICE_CLASSES,
    DEVICE_PROFILES,
    FORMATS,
    TMAX_CHOICES,
    TMAX_MIX,
    USER_ID_SHARE,
    World,
    build_world,
)

STATUSES: Final = ("bid", "nobid", "timeout", "error")
BID, NOBID, TIMEOUT, ERROR = range(4)

# Auctions per UTC hour relative to the daily mean: Europe's day plus the US evening.
_HOURLY_VOLUME: Final = np.array(
    [0.62, 0.50, 0.42, 0.38, 0.40, 0.50, 0.66, 0.84, 0.98, 1.06, 1.10, 1.12,
     1.14, 1.18, 1.22, 1.26, 1.30, 1.34, 1.36, 1.38, 1.40, 1.32, 1.10, 0.84]
)  # fmt: skip
DIURNAL: Final = _HOURLY_VOLUME / _HOURLY_VOLUME.mean()

HOME_COUNTRY_SHARE: Final = 0.6
NO_FLOOR_SHARE: Final = 0.2
USER_POOL: Final = 5_000_000


@dataclass(frozen=True)
class Auctions:
    """One hour of auctions, column-wise."""

    ts_ms: npt.NDArray[np.int64]
    publisher: npt.NDArray[np.int64]
    slot: npt.NDArray[np.int64]
    device_profile: npt.NDArray[np.int64]
    connection: npt.NDArray[np.int64]
    geo: npt.NDArray[np.int64]
    tmax: npt.NDArray[np.int64]
    floor: npt.NDArray[np.float64]
    user_id: npt.NDArray[np.int64]  # 0 = no user id

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True)
class Outcomes:
    """Partner calls of those auctions, flat and ordered by auction; ``offsets`` delimit them."""

    offsets: npt.NDArray[np.int64]  # len(auctions) + 1
    partner: npt.NDArray[np.int64]
    status: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]  # NaN unless status == BID
    latency_ms: npt.NDArray[np.int64]
    p_bid: npt.NDArray[np.float32]  # the oracle: P(the call returns a bid), floor, timeout and error included
    bid_value: npt.NDArray[np.float32]  # the oracle: E[price x 1{bid}], CPM


@dataclass(frozen=True)
class SimulationSummary:
    out_dir: Path
    files: list[Path]
    auctions: int
    calls: int
    bids: int
    bytes_written: int
    seconds: float

    @property
    def bid_rate(self) -> float:
        return self.bids / self.calls if self.calls else 0.0


def simulate(cfg: SimulateConfig, out_dir: Path, progress: Callable[[int], None] | None = None) -> SimulationSummary:
    """Write ``cfg.hours`` hourly files of auctions under ``out_dir`` and summarise them."""
    started = time.perf_counter()
    world = build_world(cfg.seed, cfg.publishers)
    vocab = Vocabulary(world)
    drifted = conditions_for(cfg.scenario)
    files: list[Path] = []
    auctions = calls = bids = written = 0
    for index in range(cfg.hours):
        hour = cfg.start + timedelta(hours=index)
        conditions = drifted if index >= cfg.scenario_start_hour else BASELINE
        path = out_dir / f"hour={hour:%Y-%m-%dT%H}" / "auctions.jsonl.gz"
        for part in _write_hour(world, vocab, conditions, cfg, hour, path, progress):
            auctions += part.auctions
            calls += part.calls
            bids += part.bids
        files.append(path)
        written += path.stat().st_size
    return SimulationSummary(out_dir, files, auctions, calls, bids, written, time.perf_counter() - started)


@dataclass(frozen=True)
class _Part:
    auctions: int
    calls: int
    bids: int


def _write_hour(
    world: World,
    vocab: Vocabulary,
    conditions: MarketConditions,
    cfg: SimulateConfig,
    hour: datetime,
    path: Path,
    progress: Callable[[int], None] | None,
) -> Iterator[_Part]:
    rng = np.random.default_rng([cfg.seed, int(hour.timestamp()) // 3600])
    n = int(rng.poisson(cfg.auctions_per_hour * DIURNAL[hour.hour]))
    auctions = draw_auctions(world, conditions, rng, n, hour)
    outcomes = draw_outcomes(world, conditions, rng, auctions, hour)
    id_prefix = f"{hour:%Y%m%dT%H}-"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as raw:
        gz = _GzipWriter(raw)
        for start in range(0, n, cfg.chunk_size):
            stop = min(n, start + cfg.chunk_size)
            gz.write(render_auctions(vocab, auctions, outcomes, start, stop, id_prefix))
            lo, hi = outcomes.offsets[start], outcomes.offsets[stop]
            if progress is not None:
                progress(stop - start)
            yield _Part(stop - start, int(hi - lo), int(np.count_nonzero(outcomes.status[lo:hi] == BID)))
        gz.close()
    write_oracle(oracle_path(path), outcomes)
    tmp.replace(path)  # the log last: a log on disk always has its oracle beside it


class _GzipWriter:
    """One gzip member (RFC 1952) whose bytes depend on nothing but the data written.

    Same seed, same bytes, on every machine, or DVC sees a new data version. So the deflate is
    zlib's, the same code on every CPU; ISA-L's, faster, picks its code by CPU features and
    wrote other bytes on another machine. The checksum is ISA-L's, 10x faster than zlib's and
    the same number. The header names no file and no time.
    """

    _HEADER: Final = bytes((0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 4, 255))  # deflate, no name, mtime 0, fastest, any OS

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        raw.write(self._HEADER)

    def write(self, data: pa.Buffer) -> None:
        self._raw.write(self._deflate.compress(data))
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += data.size

    def close(self) -> None:
        self._raw.write(self._deflate.flush())
        self._raw.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def draw_auctions(
    world: World, conditions: MarketConditions, rng: np.random.Generator, n: int, hour: datetime
) -> Auctions:
    """Draw ``n`` bid requests of one hour under ``conditions``."""
    pubs = world.publishers
    volume = pubs.volume * (1.0 - conditions.flood_share)
    volume[-1] += conditions.flood_share
    publisher = rng.choice(len(pubs), size=n, p=volume / volume.sum())
    channel = pubs.channel[publisher]

    device_class = _choice_rows(rng, conditions.device_mix[channel])
    within_class = np.array(
        [[p.weight if p.device_class == c else 0.0 for p in DEVICE_PROFILES] for c in DEVICE_CLASSES]
    )
    device_profile = _choice_rows(rng, within_class[device_class])
    connection = _choice_rows(rng, CONNECTION_MIX[device_class])

    fmt = _choice_rows(rng, conditions.format_mix[channel])
    slot_weights = np.array(
        [[[s.weights[d] if s.format == f else 0.0 for s in AD_SLOTS] for d in range(4)] for f in FORMATS]
    )
    slot = _choice_rows(rng, slot_weights[fmt, device_class])

    country_mix = np.array([c[1] for c in COUNTRIES])
    country = np.where(
        rng.random(n) < HOME_COUNTRY_SHARE,
        pubs.home_country[publisher],
        rng.choice(len(COUNTRIES), size=n, p=country_mix / country_mix.sum()),
    )
    geo = world.geo_offsets[country] + (rng.random(n) * world.geo_counts[country]).astype(np.int64)

    floor = (
        pubs.floor_cpm[publisher]
        * conditions.floor_multiplier
        * _FORMAT_PRICE[world.slot_format[slot]] ** 0.8
        * _PRICE_INDEX[country]
        * rng.lognormal(0.0, 0.25, size=n)
    )
    floor = np.where(rng.random(n) < NO_FLOOR_SHARE, 0.0, np.round(floor, 2))

    user_share = np.array([USER_ID_SHARE[c] for c in CHANNELS])
    user_id = np.where(rng.random(n) < user_share[channel], rng.integers(1, USER_POOL, size=n), 0)
    start_ms = int(hour.timestamp() * 1000)
    ts_ms = start_ms + np.sort(rng.integers(0, 3_600_000, size=n))
    tmax = rng.choice(TMAX_CHOICES, size=n, p=TMAX_MIX)
    return Auctions(ts_ms, publisher, slot, device_profile, connection, geo, tmax, floor, user_id)


def draw_outcomes(
    world: World, conditions: MarketConditions, rng: np.random.Generator, auctions: Auctions, hour: datetime
) -> Outcomes:
    """Each configured partner's answer to each auction, following its ``PartnerProfile``."""
    pubs = world.publishers
    auction, partner = np.nonzero(pubs.partners[auctions.publisher])
    m = len(auction)
    offsets = np.searchsorted(auction, np.arange(len(auctions) + 1))
    table = _PartnerTable.build(conditions.partners, hour.hour)
    # The hour's random numbers, in the order they were always drawn (the data stays the same).
    draws = _Draws(rng.random(m), rng.normal(0.0, 1.0, size=m), rng.random(m), rng.normal(0.0, 0.4, size=m))
    status = np.empty(m, dtype=np.int64)
    price = np.empty(m, dtype=np.float64)
    latency = np.empty(m, dtype=np.int64)
    p_bid = np.empty(m, dtype=np.float32)
    bid_value = np.empty(m, dtype=np.float32)
    # Blocks of calls small enough to stay in the CPU's cache and to reuse freed memory: over
    # the whole hour at once, half the time went to page faults on fresh temporaries.
    for lo in range(0, m, _BLOCK):
        block = slice(lo, min(m, lo + _BLOCK))
        _answer(world, table, auctions, auction[block], partner[block], draws, block,
                status[block], price[block], latency[block], p_bid[block], bid_value[block])  # fmt: skip
    return Outcomes(offsets.astype(np.int64), partner.astype(np.int64), status, price, latency, p_bid, bid_value)


_BLOCK: Final = 16_384  # partner calls per block of ``draw_outcomes``


@dataclass(frozen=True)
class _Draws:
    wants: npt.NDArray[np.float64]
    price: npt.NDArray[np.float64]
    failure: npt.NDArray[np.float64]
    latency: npt.NDArray[np.float64]


def _answer(
    world: World,
    table: _PartnerTable,
    auctions: Auctions,
    auction: npt.NDArray[np.intp],
    partner: npt.NDArray[np.intp],
    draws: _Draws,
    block: slice,
    status: npt.NDArray[np.int64],
    price: npt.NDArray[np.float64],
    latency: npt.NDArray[np.int64],
    p_true: npt.NDArray[np.float32],
    value_true: npt.NDArray[np.float32],
) -> None:
    """Fill ``status``, ``price``, ``latency`` and the oracle of one block of calls (``auction``, ``partner``).

    Tables are read with flat ``take``, much cheaper than 2-D fancy indexing; every product
    keeps the order it always had, so the numbers are bit-for-bit the same.
    """
    pubs = world.publishers
    pub = auctions.publisher.take(auction)
    fmt = world.slot_format.take(auctions.slot.take(auction))
    country = world.geo_country.take(auctions.geo.take(auction))
    device_class = world.device_class_of_profile.take(auctions.device_profile.take(auction))

    p_bid = table.rate_by_format.ravel().take(partner * len(FORMATS) + fmt)
    p_bid *= table.country.ravel().take(partner * len(COUNTRY_CODES) + country)
    p_bid *= table.device.ravel().take(partner * len(DEVICE_CLASSES) + device_class)
    p_bid *= pubs.affinity.ravel().take(pub * pubs.affinity.shape[1] + partner)
    p_bid *= np.where(auctions.user_id.take(auction) > 0, 1.0, table.needs_user_id.take(partner))
    p_bid *= table.time_of_day.take(partner)
    wants = draws.wants[block] < np.minimum(p_bid, 0.95)

    value = table.price_cpm.take(partner) * _FORMAT_PRICE.take(fmt)
    value *= _PRICE_INDEX.take(country)
    value *= _TIER_PRICE.take(pubs.tier.take(pub))
    median_value = value.copy()
    sigma = table.price_sigma.take(partner)
    noise = draws.price[block] * sigma
    value *= np.exp(noise, out=noise)
    floor = auctions.floor.take(auction)
    bids = wants & (value >= floor)

    tmax = auctions.tmax.take(auction)
    p_timeout = table.timeout_rate.take(partner) * 500.0 / tmax
    p_answers = np.clip(1.0 - p_timeout - table.error_rate.take(partner), 0.0, 1.0)
    answer_oracle(np.minimum(p_bid, 0.95) * p_answers, median_value, sigma, floor, p_true, value_true)
    u = draws.failure[block]
    status[:] = NOBID
    status[bids] = BID
    status[u < p_timeout + table.error_rate.take(partner)] = ERROR
    timed_out = u < p_timeout
    status[timed_out] = TIMEOUT

    ms = draws.latency[block] + table.log_latency_ms.take(partner)
    ms = np.minimum(np.exp(ms, out=ms), tmax - 1)
    ms[timed_out] = tmax[timed_out]
    latency[:] = ms
    price[:] = np.where(status == BID, np.round(value, 3), np.nan)


_PRICE_INDEX: Final = np.array([c[2] for c in COUNTRIES])
_FORMAT_PRICE: Final = np.array([FORMAT_PRICE[f] for f in FORMATS])
_TIER_PRICE: Final = np.asarray(TIER_PRICE)


@dataclass(frozen=True)
class _PartnerTable:
    """Partner profiles as arrays, so every multiplier is one gather."""

    rate_by_format: npt.NDArray[np.float64]  # base bid rate x the format's multiplier, (partner, format)
    country: npt.NDArray[np.float64]
    device: npt.NDArray[np.float64]
    needs_user_id: npt.NDArray[np.float64]
    time_of_day: npt.NDArray[np.float64]
    price_cpm: npt.NDArray[np.float64]
    price_sigma: npt.NDArray[np.float64]
    timeout_rate: npt.NDArray[np.float64]
    error_rate: npt.NDArray[np.float64]
    log_latency_ms: npt.NDArray[np.float64]

    @classmethod
    def build(cls, partners: tuple[PartnerProfile, ...], utc_hour: int) -> _PartnerTable:
        def column(get: Callable[[PartnerProfile], float]) -> npt.NDArray[np.float64]:
            return np.array([get(p) for p in partners], dtype=np.float64)

        def time_of_day(p: PartnerProfile) -> float:
            factor = 1.0
            if p.active_hours is not None and not p.active_hours[0] <= utc_hour < p.active_hours[1]:
                factor *= 0.3
            if p.even_pacing:  # spend evenly over the day: hold back when traffic peaks
                factor *= min(1.0, 1.0 / float(DIURNAL[utc_hour]))
            return factor

        return cls(
            rate_by_format=column(lambda p: p.base_rate)[:, None]
            * np.array([[p.formats.get(f, 0.0) for f in FORMATS] for p in partners]),
            country=np.array([[p.countries.get(c, p.other_countries) for c in COUNTRY_CODES] for p in partners]),
            device=np.array([[p.devices.get(d, 1.0) for d in DEVICE_CLASSES] for p in partners]),
            needs_user_id=column(lambda p: p.needs_user_id),
            time_of_day=column(time_of_day),
            price_cpm=column(lambda p: p.price_cpm),
            price_sigma=column(lambda p: p.price_sigma),
            timeout_rate=column(lambda p: p.timeout_rate),
            error_rate=column(lambda p: p.error_rate),
            log_latency_ms=np.log(column(lambda p: p.latency_ms)),
        )


def _choice_rows(rng: np.random.Generator, probs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """One draw per row of ``probs`` (rows need not be normalised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    drawn: npt.NDArray[np.int64] = (u[:, None] >= cdf).sum(axis=1).astype(np.int64)
    return drawn

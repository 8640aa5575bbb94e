"""Render drawn auctions to JSON lines, column-wise.

Fixed entities (a publisher's ``site`` object, a device profile, a geo, an ad slot, a
partner/status pair) were JSON-encoded once by ``world``; an auction is assembled from them
by index with Arrow's string kernels, and only per-auction numbers (ids, timestamps, floors,
prices, latencies) are formatted here. Optional members are null pieces that the join
replaces with nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bidflow.data.partners import PARTNER_IDS
from bidflow.data.world import CONNECTION_TYPES, COUNTRIES, World

if TYPE_CHECKING:
    from bidflow.data.simulate import Auctions, Outcomes

_STATUS_NAMES = ("bid", "nobid", "timeout", "error")
MAX_LATENCY_MS = 1001  # latencies are capped at tmax, at most 1000 ms


def render_auctions(
    vocab: Vocabulary, auctions: Auctions, outcomes: Outcomes, start: int, stop: int, id_prefix: str
) -> pa.Buffer:
    """JSON lines (each ending in a newline) for auctions ``[start, stop)``."""
    sl = slice(start, stop)
    n = stop - start
    pub = pa.array(auctions.publisher[sl])
    auction_id = pc.binary_join_element_wise(id_prefix, _str(np.arange(start, stop)), "")
    floor = auctions.floor[sl]
    floor_piece = _optional(floor > 0, ',"bidfloor":', _str(floor), ',"bidfloorcur":"USD"')
    user = auctions.user_id[sl]
    user_piece = _optional(user > 0, ',"user":{"id":"u', _str(user), '"}')
    country = vocab.geo_country[auctions.geo[sl]]

    lines = pc.binary_join_element_wise(
        '{"ts_ms":', _str(auctions.ts_ms[sl]),
        ',"request":{"id":"', auction_id, '","at":1,"tmax":', _str(auctions.tmax[sl]),
        ',"cur":["USD"],"imp":[', pc.take(vocab.imp, pa.array(auctions.slot[sl])), floor_piece,
        ",", pc.take(vocab.bidders, pub), "}],",
        pc.take(vocab.inventory, pub),
        ',"device":', pc.take(vocab.device, pa.array(auctions.device_profile[sl])),
        pc.take(vocab.connection, pa.array(auctions.connection[sl])),
        pc.take(vocab.geo, pa.array(auctions.geo[sl])),
        user_piece,
        pc.take(vocab.regs, pa.array(country)),
        ',"source":{"tid":"', auction_id, '"}},"outcomes":[',
        _outcomes(vocab, outcomes, start, stop),
        "]}\n",
        "",
        null_handling="replace",
        null_replacement="",
    )  # fmt: skip
    if n == 0:
        return pa.py_buffer(b"")
    # The lines already lie end to end in the string array's data buffer: hand out that slice.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + n + 1]
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _outcomes(vocab: Vocabulary, outcomes: Outcomes, start: int, stop: int) -> pa.Array:
    lo, hi = int(outcomes.offsets[start]), int(outcomes.offsets[stop])
    status = outcomes.status[lo:hi]
    key = (outcomes.partner[lo:hi] * len(_STATUS_NAMES) + status) * MAX_LATENCY_MS + outcomes.latency_ms[lo:hi]
    rendered = pc.take(vocab.outcome_closed, pa.array(key))
    bids = np.flatnonzero(status == 0)
    if len(bids):
        with_price = pc.binary_join_element_wise(
            pc.take(vocab.outcome_open, pa.array(key[bids])), _str(outcomes.price[lo:hi][bids]), "}", ""
        )
        mask = np.zeros(hi - lo, dtype=bool)
        mask[bids] = True
        rendered = pc.replace_with_mask(rendered, pa.array(mask), with_price)
    offsets = pa.array(outcomes.offsets[start : stop + 1] - lo, pa.int32())
    return pc.binary_join(pa.ListArray.from_arrays(offsets, rendered), ",")


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _optional(present: np.ndarray, prefix: str, value: pa.Array, suffix: str) -> pa.Array:
    """``prefix + value + suffix`` where ``present``, null (rendered as nothing) elsewhere."""
    piece = pc.binary_join_element_wise(prefix, value, suffix, "")
    return pc.if_else(pa.array(present), piece, pa.scalar(None, pa.string()))


class Vocabulary:
    """Arrow string arrays of the world's pre-rendered fragments; build once per run."""

    def __init__(self, world: World) -> None:
        self.geo_country = world.geo_country
        self.imp = pa.array([b.decode() for b in world.imp_json])
        self.bidders = pa.array([b.decode() for b in world.publishers.bidders_json])
        self.inventory = pa.array([b.decode() for b in world.publishers.inventory_json])
        self.device = pa.array([b.decode() for b in world.device_json])
        self.connection = pa.array([f',"connectiontype":{c},' for c in CONNECTION_TYPES])
        self.geo = pa.array([b.decode() for b in world.geo_json])
        regs = [',"regs":{"coppa":0,"gdpr":1}' if gdpr else ',"regs":{"coppa":0,"gdpr":0}' for *_, gdpr, _ in COUNTRIES]
        self.regs = pa.array(regs)
        # Every (partner, status, latency) call pre-rendered: a call is then one gather, and
        # only bids need their price appended. 24 x 4 x 1001 short strings, about 5 MB.
        prefixes = [f'{{"partner":"{p}","status":"{s}","latency_ms":' for p in PARTNER_IDS for s in _STATUS_NAMES]
        self.outcome_closed = pa.array([f"{pre}{ms}}}" for pre in prefixes for ms in range(MAX_LATENCY_MS)])
        self.outcome_open = pa.array([f'{pre}{ms},"price":' for pre in prefixes for ms in range(MAX_LATENCY_MS)])

"""Benchmark: decoding real OpenRTB bid requests with bidflow.openrtb vs stdlib json.

Decodes every outbound request of the Prebid fixtures that is valid OpenRTB (as bytes, as it
arrives over HTTP) many times, on one core, best of several rounds. Run by ``python -m bench``.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import Result, one_core
from bidflow.errors import OpenRTBError
from bidflow.openrtb import BidRequest, decode_request

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def load_corpus(data_dir: Path) -> list[bytes]:
    """The outbound bodies that are valid OpenRTB, re-serialised compactly as an exchange sends them."""
    path = data_dir / "openrtb_prebid_fixtures" / "bidder_exchanges.jsonl.gz"
    corpus = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)["outbound_request"]
            if request is None:
                continue
            body = json.dumps(request, separators=(",", ":")).encode()
            try:
                decode_request(body)
            except OpenRTBError:
                continue  # a proprietary or deliberately broken body: not what we measure
            corpus.append(body)
    return corpus


def time_per_request(fn: Callable[[bytes], Any], corpus: list[bytes], repeat: int, rounds: int) -> float:
    """Best-of-``rounds`` seconds per call of ``fn`` over ``corpus`` x ``repeat``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            for body in corpus:
                fn(body)
        best = min(best, (time.perf_counter() - start) / (repeat * len(corpus)))
    return best


def run(data_dir: Path = DEFAULT_DATA, repeat: int = 20, rounds: int = 5) -> list[Result]:
    """Microseconds per request on one core, best of ``rounds``."""
    with one_core():
        return _measure(data_dir, repeat, rounds)


def _measure(data_dir: Path, repeat: int, rounds: int) -> list[Result]:
    corpus = load_corpus(data_dir.resolve())
    if not corpus:
        raise SystemExit(f"no valid requests found under {data_dir}")
    typical = [b for b in corpus if 1000 <= len(b) <= 2000]
    typed_only = msgspec.json.Decoder(BidRequest)
    sizes = f"{len(corpus)} real Prebid requests, median {statistics.median(len(b) for b in corpus):.0f} B"
    rows = [
        ("openrtb: decode_request (typed + rules)", time_per_request(decode_request, corpus, repeat, rounds), sizes),
        ("openrtb: msgspec typed decode, no rules", time_per_request(typed_only.decode, corpus, repeat, rounds), sizes),
        ("openrtb: stdlib json.loads to dict (floor)", time_per_request(json.loads, corpus, repeat, rounds), sizes),
    ]
    if typical:
        seconds = time_per_request(decode_request, typical, repeat * 10, rounds)
        rows.append(("openrtb: decode_request, 1-2 KB requests", seconds, f"{len(typical)} requests"))
    return [
        Result(name, seconds * 1e6, "µs/request", f"{detail}; {1 / seconds:,.0f}/s") for name, seconds, detail in rows
    ]

"""Benchmark: decoding real OpenRTB bid requests with bidflow.openrtb vs stdlib json.

Decodes every outbound request of the Prebid fixtures that is valid OpenRTB (as bytes, as it
arrives over HTTP) many times and prints one markdown table row:

    | date | machine | python / msgspec | corpus | decode_request (typed + rules) | same, 1-2 KB requests
    | msgspec typed, no rules | json.loads to dict |

Each figure is microseconds per request and requests per second on one core, best of ``--rounds``
rounds. Nothing here asserts on time; this is for the README table.

Usage: python bench/bench_openrtb_decode.py [--data DIR] [--repeat N] [--rounds N] [--header]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bidflow.errors import OpenRTBError
from bidflow.openrtb import BidRequest, decode_request

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HEADER = (
    "| date | machine | python / msgspec | corpus | decode_request (typed + rules) | decode_request, 1-2 KB "
    "| msgspec typed, no rules | json.loads to dict |\n|---|---|---|---|---|---|---|---|"
)


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


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cell(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs ({1 / seconds:,.0f}/s)"


def run(data_dir: Path, repeat: int, rounds: int) -> str:
    corpus = load_corpus(data_dir)
    if not corpus:
        raise SystemExit(f"no valid requests found under {data_dir}")
    typical = [b for b in corpus if 1000 <= len(b) <= 2000]
    typed_only = msgspec.json.Decoder(BidRequest)
    full = time_per_request(decode_request, corpus, repeat, rounds)
    mid = time_per_request(decode_request, typical, repeat * 10, rounds) if typical else float("nan")
    typed = time_per_request(typed_only.decode, corpus, repeat, rounds)
    stdlib = time_per_request(json.loads, corpus, repeat, rounds)
    sizes = [len(b) for b in corpus]
    corpus_cell = f"{len(corpus)} requests, median {statistics.median(sizes):.0f} B ({len(typical)} of 1-2 KB)"
    versions = f"{platform.python_version()} / {msgspec.__version__}"
    today = dt.date.today().isoformat()
    cells = [today, machine(), versions, corpus_cell, cell(full), cell(mid), cell(typed), cell(stdlib)]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data directory")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the corpus per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best one is reported")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args(argv)
    if args.header:
        print(HEADER)
    print(run(args.data.resolve(), args.repeat, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

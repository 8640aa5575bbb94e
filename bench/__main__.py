"""Run the benchmarks and rewrite the results table in bench/README.md."""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Result, machine

BENCHMARKS = [
    "simulate",
    "ingest",
    "openrtb_decode",
    "online_features",
    "online_memory",
    "stream",
    "train",
    "economics",
    "ctr",
    "fraud",
    "pipeline",
    "serving",
    "replay",
    "bidder_serving",
    "fraud_serving",
    "explain",
    "monitor",
    "bidder",
    "soak",
    "crossover",
]
README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    args = parser.parse_args()
    rows: list[Result] = []
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        results = module.run()
        for result in results:
            print("  " + " | ".join(result.cells()), file=sys.stderr)
        rows.extend(results)
    _write(rows, " ".join(["python -m bench", *args.names]))


def _write(rows: list[Result], command: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    table = [
        f"Measured {stamp} on {machine()} with `{command}`.",
        "",
        "| benchmark | result | target | detail |",
        "|---|---|---|---|",
        *("| " + " | ".join(r.cells()) + " |" for r in rows),
    ]
    text = README.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    previous = rest.partition(END)[0].strip().splitlines()
    kept, stamps = _other_rows(previous, {r.benchmark for r in rows})
    if kept:
        where = stamps[0] if len(stamps) == 1 else "from several earlier runs; see git history"
        table += ["", f"Earlier results of benchmarks not rerun this time ({where}):", "", *kept]
    README.write_text(f"{head}{BEGIN}\n" + "\n".join(table) + f"\n{END}{tail}", encoding="utf-8")
    print(f"wrote {README}", file=sys.stderr)


_EARLIER = "Earlier results of benchmarks not rerun this time ("


def _other_rows(previous: list[str], rerun: set[str]) -> tuple[list[str], list[str]]:
    """Table rows (and their header) of an earlier table whose benchmarks were not rerun, and the
    distinct stamps ("<date> on <machine> with ...") of the runs those rows came from."""
    rows: list[str] = []
    stamps: dict[str, None] = {}
    stamp = "from several earlier runs; see git history"
    for line in previous:
        if line.startswith("Measured "):
            stamp = line.removeprefix("Measured ").rstrip(".")
        elif line.startswith(_EARLIER):
            stamp = line.removeprefix(_EARLIER).rstrip(":").removesuffix(")")
        elif _is_row(line) and line.split("|")[1].strip() not in rerun:
            rows.append(line)
            stamps[stamp] = None
    header = ["| benchmark | result | target | detail |", "|---|---|---|---|"]
    return ([*header, *rows] if rows else []), list(stamps)


def _is_row(line: str) -> bool:
    return line.startswith("| ") and not line.startswith("| benchmark") and not set(line) <= set("|- ")


if __name__ == "__main__":
    main()

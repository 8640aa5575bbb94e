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
    "train",
    "economics",
    "ctr",
    "pipeline",
    "serving",
    "monitor",
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
    kept = _other_rows(previous, {r.benchmark for r in rows})
    if kept:
        table += ["", f"Earlier results of benchmarks not rerun this time ({_stamp(previous)}):", "", *kept]
    README.write_text(f"{head}{BEGIN}\n" + "\n".join(table) + f"\n{END}{tail}", encoding="utf-8")
    print(f"wrote {README}", file=sys.stderr)


def _stamp(previous: list[str]) -> str:
    """Where and when the kept rows were measured: the earlier table's "Measured ..." line, when
    all its rows came from that one run."""
    stamps = [line for line in previous if line.startswith(("Measured ", "Earlier results"))]
    if len(stamps) == 1 and stamps[0].startswith("Measured "):
        return stamps[0].removeprefix("Measured ").rstrip(".")
    return "from several earlier runs; see git history"


def _other_rows(previous: list[str], rerun: set[str]) -> list[str]:
    """Table rows (and their header) of an earlier run whose benchmarks were not rerun."""
    rows = [line for line in previous if line.startswith("| ") and not line.startswith("| benchmark")]
    rows = [line for line in rows if line.split("|")[1].strip() not in rerun and not set(line) <= set("|- ")]
    return ["| benchmark | result | target | detail |", "|---|---|---|---|", *rows] if rows else []


if __name__ == "__main__":
    main()

"""What every benchmark shares: its result row, the machine description, one-core pinning."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    benchmark: str
    value: float
    unit: str
    detail: str = ""
    target: str = ""

    def cells(self) -> list[str]:
        value = f"{self.value:,.0f}" if abs(self.value) >= 100 else f"{self.value:,.3g}"
        return [self.benchmark, f"{value} {self.unit}", self.target, self.detail]


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 1024**2:.0f} GiB"
    return f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


@contextmanager
def one_core() -> Iterator[None]:
    """Run the block on a single core, so 'per core' numbers are honest on a multi-core machine.

    The benchmarks share one process: the previous affinity is restored afterwards.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(previous)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)

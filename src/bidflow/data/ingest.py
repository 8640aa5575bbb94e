"""``bidflow ingest``: auction logs (JSON lines, gzip or plain) to hourly parquet partitions.

Output: one row per (auction, partner called) with the request's features (the shared
transform in ``bidflow.openrtb.features``), the partner's answer and the label ``bid``,
under ``OUT/hour=YYYY-MM-DDTHH/part-<source>.parquet``. Where the generator left its oracle
beside a log (``bidflow.data.oracle``), its columns come along for evaluation; otherwise null.

A malformed line is never dropped silently: it goes to ``OUT/_quarantine/`` with its
file, line number, the JSON path of the problem and the reason, and is counted. If more
than ``max_bad_share`` of the lines are bad, the run fails and publishes nothing. Output
is written to a staging folder first and moved into place only when the run succeeds.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from isal import igzip

from bidflow.config import IngestConfig, SparkConfig
from bidflow.data.oracle import ORACLE_SCHEMA, attach_oracle
from bidflow.data.records import AuctionRecord, Outcome
from bidflow.errors import IngestError, InputError, OpenRTBError
from bidflow.openrtb.decode import error_from_validation
from bidflow.openrtb.features import FEATURE_NAMES, RequestFeatures, request_features
from bidflow.openrtb.rules import validate_request

QUARANTINE_DIR: Final = "_quarantine"
SUMMARY_FILE: Final = "_ingest_summary.json"
LOG_SUFFIXES: Final = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")
_PROGRESS_EVERY: Final = 4096

CALL_SCHEMA: Final = pa.schema(
    [
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("auction_id", pa.string()),
        ("partner", pa.string()),
        ("status", pa.string()),
        ("bid", pa.int8()),
        ("price", pa.float64()),
        ("latency_ms", pa.int32()),
    ]
)


def feature_schema() -> pa.Schema:
    """Arrow types of the request features, derived from ``RequestFeatures``."""
    kinds = {"str": pa.string(), "int": pa.int32(), "float": pa.float64()}
    return pa.schema([(name, kinds[RequestFeatures.__annotations__[name]]) for name in FEATURE_NAMES])


def parquet_schema() -> pa.Schema:
    """The schema of every ingested partition: calls, request features, then the oracle (null for real logs)."""
    return pa.schema(list(CALL_SCHEMA) + list(feature_schema()) + list(ORACLE_SCHEMA))


@dataclass
class IngestSummary:
    out_dir: Path
    files: int = 0
    lines: int = 0
    auctions: int = 0
    rows: int = 0
    bids: int = 0
    bad_lines: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    partitions: list[Path] = field(default_factory=list)
    quarantine: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0

    def merge(self, other: IngestSummary) -> None:
        """Add a file's counts to the run's."""
        self.files += other.files
        self.lines += other.lines
        self.auctions += other.auctions
        self.rows += other.rows
        self.bids += other.bids
        self.bad_lines += other.bad_lines
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count
        self.partitions += other.partitions
        self.quarantine += other.quarantine
        self.bytes_read += other.bytes_read

    @property
    def bad_share(self) -> float:
        return self.bad_lines / self.lines if self.lines else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "lines": self.lines,
            "auctions": self.auctions,
            "rows": self.rows,
            "bids": self.bids,
            "bad_lines": self.bad_lines,
            "bad_share": round(self.bad_share, 6),
            "reasons": self.reasons,
            "partitions": [str(p.relative_to(self.out_dir)) for p in self.partitions],
            "quarantine": [str(p.relative_to(self.out_dir)) for p in self.quarantine],
        }


def find_log_files(raw: Path) -> list[Path]:
    """Every auction-log file under ``raw`` (or ``raw`` itself), in a stable order."""
    if raw.is_file():
        return [raw]
    if not raw.is_dir():
        raise InputError(
            "auction-log input does not exist",
            where=raw,
            hint="run `bidflow simulate` first, or give the log file or folder as the argument",
        )
    files = sorted(p for p in raw.rglob("*") if p.is_file() and p.name.endswith(LOG_SUFFIXES))
    if not files:
        raise InputError(
            "no auction-log files found",
            where=raw,
            expected=f"files ending in {', '.join(LOG_SUFFIXES)}",
            got="none",
        )
    return files


def ingest(
    raw: Path,
    out: Path,
    cfg: IngestConfig,
    progress: Callable[[int], None] | None = None,
    spark: SparkConfig | None = None,
) -> IngestSummary:
    """Ingest every log file under ``raw`` into ``out``; raise ``IngestError`` past the bad-line limit.

    Files are independent (one per hour), so they are ingested in ``cfg.workers`` processes, or with
    ``cfg.engine: spark`` as one Spark task each on the session ``spark`` configures
    (``bidflow.engines.spark_ingest``): the same per-file code either way, so both engines write the
    same rows. ``progress`` is called with the number of compressed bytes done since its last call.
    """
    started = time.perf_counter()
    files = find_log_files(raw)
    base = raw if raw.is_dir() else raw.parent
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    summary = IngestSummary(out_dir=out)
    jobs: list[IngestJob] = [(path, path.relative_to(base).as_posix(), staging) for path in files]
    workers = min(len(jobs), cfg.workers or os.cpu_count() or 1)
    try:
        if cfg.engine == "spark":
            from bidflow.engines.spark_ingest import ingest_files

            for result in ingest_files(jobs, spark or SparkConfig()):
                summary.merge(result)
                if progress is not None:
                    progress(result.bytes_read)
        elif workers <= 1:
            for job in jobs:
                summary.merge(ingest_file(*job, progress))
        else:
            context = multiprocessing.get_context("forkserver")  # never fork a threaded parent
            # Workers fork from a server that imported this module (pyarrow, msgspec) once: 0.35 s less each.
            context.set_forkserver_preload([__name__])
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for result in pool.map(ingest_file, *zip(*jobs, strict=True)):
                    summary.merge(result)
                    if progress is not None:
                        progress(result.bytes_read)
        if summary.bad_share > cfg.max_bad_share:
            _publish(staging / QUARANTINE_DIR, out / QUARANTINE_DIR, summary)
            raise IngestError(
                f"{summary.bad_lines} of {summary.lines} lines are malformed ({summary.bad_share:.2%})",
                where=raw,
                expected=f"at most {cfg.max_bad_share:.2%} (ingest.max_bad_share)",
                got=", ".join(f"{reason}: {count}" for reason, count in _top(summary.reasons)),
                hint=f"nothing was published; read the quarantined lines under {out / QUARANTINE_DIR}",
            )
        _publish(staging, out, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    (out / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary


IngestJob = tuple[Path, str, Path]  # a log file, its name relative to the input, the staging folder


def ingest_file(path: Path, source: str, staging: Path, progress: Callable[[int], None] | None = None) -> IngestSummary:
    """Ingest one log file into ``staging``; returns its own counts (runs in a worker process)."""
    with _without_cycle_collection():
        return _ingest_one(path, source, staging, progress)


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    # A file's rows stay alive until its table is built, so the cycle collector keeps rescanning a
    # growing heap that cannot hold a cycle (decoded JSON and scalar structs): 10-40 % of the time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ingest_one(path: Path, source: str, staging: Path, progress: Callable[[int], None] | None = None) -> IngestSummary:
    summary = IngestSummary(out_dir=staging, files=1)
    decoder = msgspec.json.Decoder(AuctionRecord)
    batch = _Batch()
    quarantine = _Quarantine(staging / QUARANTINE_DIR / (_safe_name(source) + ".jsonl"), source)
    with path.open("rb") as raw_file:
        reported = 0
        for number, line in enumerate(_lines(raw_file), start=1):
            if not line.strip():
                continue
            summary.lines += 1
            try:
                record = decoder.decode(line)
                validate_request(record.request)
                batch.add(record, number - 1)
            except msgspec.ValidationError as exc:
                error = error_from_validation(exc)
                quarantine.add(number, error.path, error.what, line, summary)
            except msgspec.DecodeError as exc:  # not JSON at all
                quarantine.add(number, "$", f"invalid JSON: {exc}", line, summary)
            except OpenRTBError as exc:  # the rules speak of the request; in a record it is $.request
                quarantine.add(number, "$.request" + exc.path.removeprefix("$"), exc.what, line, summary)
            except _BadRecord as exc:
                quarantine.add(number, exc.path, exc.reason, line, summary)
            if progress is not None and number % _PROGRESS_EVERY == 0:
                position = raw_file.tell()
                progress(position - reported)
                reported = position
        summary.bytes_read = os.fstat(raw_file.fileno()).st_size
        if progress is not None:
            progress(summary.bytes_read - reported)
    quarantine.close(summary)
    summary.auctions = batch.auctions
    if batch.auctions:
        lines, per_line = np.asarray(batch.lines, np.int64), np.asarray(batch.calls_per_auction, np.int64)
        table = attach_oracle(batch.to_table(), path, lines, per_line)
        _write_partitions(table, staging, _safe_name(source), summary)
    return summary


def _lines(raw_file: IO[bytes]) -> Iterator[bytes]:
    magic = raw_file.read(2)
    raw_file.seek(0)
    if magic == b"\x1f\x8b":
        with igzip.IGzipFile(fileobj=raw_file, mode="rb") as gz:
            yield from gz
    else:
        yield from raw_file


class _BadRecord(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


class _Batch:
    """Column buffers for one input file."""

    def __init__(self) -> None:
        self.auctions = 0
        self.ts_ms: list[int] = []
        self.auction_id: list[str] = []
        self.features: list[RequestFeatures] = []
        self.calls_per_auction: list[int] = []
        self.calls: list[Outcome] = []
        self.lines: list[int] = []  # each auction's 0-based line in its file (the oracle's key)

    def add(self, record: AuctionRecord, line: int) -> None:
        # Types, ranges and required fields were enforced by the decoder; what is left are the
        # rules that span fields or calls.
        calls = record.outcomes
        for i, call in enumerate(calls):
            if (call.status == "bid") is (call.price is None):
                raise _BadRecord(f"$.outcomes[{i}].price", "a bid needs a price and only a bid has one")
        if len({call.partner for call in calls}) != len(calls):
            raise _BadRecord("$.outcomes", "a partner is called twice in one auction")
        self.features.append(request_features(record.request, record.ts_ms))
        self.auctions += 1
        self.ts_ms.append(record.ts_ms)
        self.auction_id.append(record.request.id)
        self.calls_per_auction.append(len(calls))
        self.calls.extend(calls)
        self.lines.append(line)

    def to_table(self) -> pa.Table:
        take = pa.array(np.repeat(np.arange(self.auctions), self.calls_per_auction))
        status = pa.array([c.status for c in self.calls], pa.string())
        columns = {
            "ts": pa.array(self.ts_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).take(take),
            "auction_id": pa.array(self.auction_id, pa.string()).take(take),
            "partner": pa.array([c.partner for c in self.calls], pa.string()),
            "status": status,
            "bid": pc.equal(status, "bid").cast(pa.int8()),
            "price": pa.array([c.price for c in self.calls], pa.float64()),
            "latency_ms": pa.array([c.latency_ms for c in self.calls], pa.int32()),
        }
        schema = feature_schema()
        rows = zip(*(msgspec.structs.astuple(f) for f in self.features), strict=True)
        for name, values in zip(FEATURE_NAMES, rows, strict=True):
            columns[name] = pa.array(values, schema.field(name).type).take(take)
        return pa.table(columns, schema=pa.schema(list(CALL_SCHEMA) + list(schema)))


class _Quarantine:
    """Bad lines of one input file, with why and where; opened on the first bad line."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self._handle: IO[str] | None = None

    def add(self, line: int, json_path: str, reason: str, raw: bytes, summary: IngestSummary) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8")
        entry = {"file": self.source, "line": line, "path": json_path, "reason": reason}
        entry["raw"] = raw.decode("utf-8", errors="replace").rstrip("\n")[:20_000]
        self._handle.write(json.dumps(entry) + "\n")
        summary.bad_lines += 1
        key = f"{json_path}: {reason}"[:160]
        summary.reasons[key] = summary.reasons.get(key, 0) + 1

    def close(self, summary: IngestSummary) -> None:
        if self._handle is not None:
            self._handle.close()
            summary.quarantine.append(self.path)


def _write_partitions(table: pa.Table, staging: Path, name: str, summary: IngestSummary) -> None:
    hours = (table["ts"].cast(pa.int64()).to_numpy() // 3_600_000).astype(np.int64)
    distinct = np.unique(hours)
    for hour in distinct:
        # An hourly log file is one hour: writing the table itself saves copying every column.
        rows = table if len(distinct) == 1 else table.filter(pa.array(hours == hour))
        label = np.datetime64(int(hour), "h").astype("datetime64[h]").item().strftime("%Y-%m-%dT%H")
        path = staging / f"hour={label}" / f"part-{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path, compression="zstd")
        summary.partitions.append(path)
        summary.rows += rows.num_rows
        summary.bids += int(pc.sum(rows["bid"]).as_py() or 0)


def _publish(staging: Path, out: Path, summary: IngestSummary) -> None:
    """Move staged files into ``out``, replacing files of the same name."""
    if not staging.exists():
        return
    moved = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = out / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        moved[path] = target
    summary.partitions = [moved.get(p, p) for p in summary.partitions]
    summary.quarantine = [moved.get(p, p) for p in summary.quarantine]


def _safe_name(source: str) -> str:
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    stem = source.replace("/", "__").replace("=", "-")
    for suffix in LOG_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return f"{stem[-60:]}-{digest}"


def _top(reasons: dict[str, int], n: int = 3) -> list[tuple[str, int]]:
    return sorted(reasons.items(), key=lambda item: -item[1])[:n]

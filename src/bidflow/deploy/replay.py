"""Replay logged traffic through a served endpoint, as clients would send it.

Each logged auction becomes one v1 request (the logged bid request, the partners that were called,
the time it was seen); a kind served as named-field instances has its rows sent as v1 instance
batches (``read_instances``: a few rows per request). The replay keeps ``concurrency`` requests in
flight, measures latency, counts failures (anything but HTTP 200, or no answer), and notes which
model answered (the router's ``x-bidflow-role`` header) second by second, so a report can draw the
traffic split over time.

For auctions the filter explored (every partner called), the log says which partners bid: those
outcomes go to the drift monitor (``POST /v1/outcomes``), which turns them into online bid recall,
as an exchange reporting auction results would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bidflow.data.records import Outcome
from bidflow.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

_OUTCOME_BATCH: Final = 200
_PROGRESS_EVERY: Final = 200


class _Line(msgspec.Struct):
    ts_ms: int
    request: msgspec.Raw
    outcomes: list[Outcome]


class _Id(msgspec.Struct):
    id: str


class _Prediction(msgspec.Struct):
    explored: bool = False


class _Response(msgspec.Struct):
    predictions: list[_Prediction] = msgspec.field(default_factory=list)


_LINE: Final = msgspec.json.Decoder(_Line)
_ID: Final = msgspec.json.Decoder(_Id)
_RESPONSE: Final = msgspec.json.Decoder(_Response)


@dataclass(frozen=True)
class Auction:
    """One request ready to send: a logged auction, or a batch of a kind's instances.

    Attributes:
        id: the auction id (a batch: its number in the replay).
        body: the v1 request body.
        bids: the partners that bid (reported to the monitor when the auction was explored).
        outcomes: whether the answer can say the auction was explored (OpenRTB auctions; an
            instance batch has no partners and no outcomes).
    """

    id: str
    body: bytes
    bids: tuple[str, ...]
    outcomes: bool = True


@dataclass
class ReplayReport:
    """What a replay saw.

    Attributes:
        sent: requests sent.
        ok: HTTP 200 answers.
        failed: everything else (status or connection errors), with the first few reasons.
        roles: answers per serving role (``champion`` / ``canary``).
        latencies_ms: every request's latency.
        timeline: per second since the start: answers per role and failures.
        seconds: wall time.
        outcomes_sent: explored auctions whose outcomes went to the monitor.
        by_auction: auction id -> the role that answered it.
        started_at: when the replay started (epoch seconds).
    """

    sent: int = 0
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    roles: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    timeline: dict[int, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0
    outcomes_sent: int = 0
    by_auction: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0

    def percentile(self, q: float) -> float | None:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "failures": self.failures[:5],
            "roles": dict(self.roles),
            "auctions_per_s": round(self.sent / self.seconds, 1) if self.seconds else None,
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "seconds": round(self.seconds, 2),
            "outcomes_sent": self.outcomes_sent,
        }


def read_auctions(paths: Sequence[Path], limit: int | None = None) -> Iterator[Auction]:
    """Auctions from auction-log files (gzip or plain JSON lines), in file order."""
    count = 0
    for path in paths:
        if not path.is_file():
            raise InputError("auction log not found", where=path, hint="pass files written by `bidflow simulate`")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = _LINE.decode(line)
                    auction_id = _ID.decode(record.request).id
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise InputError(f"line {number} is not an auction-log record", where=path, got=str(exc)) from exc
                partners = [o.partner for o in record.outcomes]
                body = b"".join(
                    (
                        b'{"instances":[{"request":', bytes(record.request),
                        b',"partners":', msgspec.json.encode(partners),
                        b',"ts_ms":', str(record.ts_ms).encode(), b"}]}",
                    )
                )  # fmt: skip
                yield Auction(auction_id, body, tuple(o.partner for o in record.outcomes if o.status == "bid"))
                count += 1
                if limit is not None and count >= limit:
                    return


def read_instances(
    rows: pd.DataFrame, fields: Sequence[str], *, per_request: int = 4, limit: int | None = None
) -> Iterator[Auction]:
    """A kind's rows as v1 instance batches: ``per_request`` rows per request, each instance holding ``fields``.

    Each body also carries its batch number (``id``, which the model servers ignore), so bodies differ:
    without an auction id, the router's canary split hashes the body. A missing value is sent as null.

    Raises:
        InputError: ``per_request`` is below 1, or the rows lack one of ``fields``.
    """
    if per_request < 1:
        raise InputError("rows per request must be at least 1", got=str(per_request))
    missing = [name for name in fields if name not in rows.columns]
    if missing:
        raise InputError("the rows lack fields the model reads", expected=", ".join(fields), got=", ".join(missing))
    records = rows[list(fields)].to_dict("records")
    stop = len(records) if limit is None else min(len(records), limit * per_request)
    for number, start in enumerate(range(0, stop, per_request)):
        instances = [_plain(record) for record in records[start : start + per_request]]
        body = msgspec.json.encode({"id": f"replay-{number}", "instances": instances})
        yield Auction(f"replay-{number}", body, (), outcomes=False)


def select_rows(rows: pd.DataFrame, only: Sequence[str]) -> pd.DataFrame:
    """The rows whose columns hold the given values (``COLUMN=VALUE`` each, compared as text).

    Raises:
        InputError: a condition is not ``COLUMN=VALUE``, names no column of the rows, or leaves no row.
    """
    keep = rows
    for condition in only:
        column, sep, value = condition.partition("=")
        if not sep or column not in keep.columns:
            expected = ", ".join(map(str, rows.columns))
            raise InputError("not a COLUMN=VALUE condition on the rows", expected=expected, got=condition)
        keep = keep[keep[column].astype(str) == value]
    if keep.empty:
        raise InputError("no row meets the conditions", got=" and ".join(only))
    return keep


def _plain(record: Mapping[Any, Any]) -> dict[str, Any]:
    """JSON-ready values: numpy scalars as Python ones, NaN as null."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if hasattr(value, "item") and not isinstance(value, str):
            value = value.item()
        out[str(name)] = None if isinstance(value, float) and value != value else value
    return out


async def replay(
    auctions: Sequence[Auction],
    url: str,
    *,
    concurrency: int = 8,
    monitor_url: str | None = None,
    monitor_token: str | None = None,
    on_answer: Callable[[ReplayReport], None] | None = None,
    timeout_s: float = 10.0,
) -> ReplayReport:
    """Send ``auctions`` to ``url`` (a v1 predict URL) with ``concurrency`` requests in flight.

    Args:
        auctions: what to send.
        url: e.g. ``http://127.0.0.1:8080/v1/models/bid_filter:predict``.
        concurrency: requests in flight.
        monitor_url: where outcomes of explored auctions go (None: nowhere).
        monitor_token: the monitor's intake token (``bidflow.monitoring.auth``).
        on_answer: called after every answer (progress display).
        timeout_s: per request.
    """
    import httpx

    report = ReplayReport(started_at=time.time())
    queue: asyncio.Queue[Auction | None] = asyncio.Queue()
    for auction in auctions:
        queue.put_nowait(auction)
    for _ in range(concurrency):
        queue.put_nowait(None)
    outcomes: list[bytes] = []
    started = time.perf_counter()
    headers = {"content-type": "application/json"}
    monitor_headers = headers | ({"authorization": f"Bearer {monitor_token}"} if monitor_token else {})

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:

        async def flush() -> None:
            if not outcomes or monitor_url is None:
                outcomes.clear()
                return
            body = b'{"records":[' + b",".join(outcomes) + b"]}"
            outcomes.clear()
            with contextlib.suppress(httpx.HTTPError):  # best effort, like an exchange's reporting
                await client.post(monitor_url.rstrip("/") + "/v1/outcomes", content=body, headers=monitor_headers)

        async def worker() -> None:
            while (auction := await queue.get()) is not None:
                sent = time.perf_counter()
                report.sent += 1
                second = int(sent - started)
                try:
                    response = await client.post(url, content=auction.body, headers=headers)
                    status, reason = response.status_code, response.text[:200]
                except httpx.HTTPError as exc:
                    status, reason, response = 0, repr(exc), None
                report.latencies_ms.append((time.perf_counter() - sent) * 1000)
                slot = report.timeline.setdefault(second, Counter())
                if status == 200 and response is not None:
                    report.ok += 1
                    role = response.headers.get("x-bidflow-role", "champion")
                    report.roles[role] += 1
                    report.by_auction[auction.id] = role
                    slot[role] += 1
                    explored = (
                        auction.outcomes
                        and monitor_url is not None
                        and any(p.explored for p in _RESPONSE.decode(response.content).predictions)
                    )
                    if explored and monitor_url is not None:
                        outcomes.append(msgspec.json.encode({"id": auction.id, "bids": list(auction.bids)}))
                        report.outcomes_sent += 1
                        if len(outcomes) >= _OUTCOME_BATCH:
                            await flush()
                else:
                    report.failed += 1
                    slot["failed"] += 1
                    if len(report.failures) < 20:
                        report.failures.append(f"HTTP {status}: {reason}")
                if on_answer is not None:
                    on_answer(report)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await flush()
    report.seconds = time.perf_counter() - started
    return report


async def replay_with_progress(
    auctions: Sequence[Auction],
    url: str,
    console: Console,
    *,
    concurrency: int = 8,
    monitor_url: str | None = None,
    monitor_token: str | None = None,
) -> ReplayReport:
    """``replay`` with a progress bar on ``console``: answers, decisions/s, recent p99 and failures, live."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[live]}"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("replay", total=len(auctions), live="")
        started = time.perf_counter()

        def tick(report: ReplayReport) -> None:
            if report.sent % _PROGRESS_EVERY and report.sent != len(auctions):
                return
            recent = sorted(report.latencies_ms[-2_000:])
            p99 = recent[int(0.99 * (len(recent) - 1))] if recent else 0.0
            rate = report.sent / max(time.perf_counter() - started, 1e-9)
            progress.update(
                task, completed=report.sent, live=f"{rate:,.0f}/s  p99 {p99:.1f} ms  failed {report.failed}"
            )

        return await replay(
            auctions, url, concurrency=concurrency, monitor_url=monitor_url, monitor_token=monitor_token, on_answer=tick
        )

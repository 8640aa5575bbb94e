"""Replay logged traffic through a served endpoint, as clients would send it.

Each logged auction becomes one v1 request (the logged bid request, the partners that were called,
the time it was seen); a kind served as named-field instances has its rows sent as v1 instance
batches (``read_instances``: a few rows per request). The replay keeps ``concurrency`` requests in
flight, measures latency, counts failures (anything but HTTP 200, or no answer), and notes which
model answered (the router's ``x-bidflow-role`` header) second by second, so a report can draw the
traffic split over time.

What it measures is the server's latency only if the client costs little beside it: the requests go
out on keep-alive HTTP/1.1 connections (one per request in flight) with bodies encoded when the logs
are read, and answers are parsed straight from the socket's bytes (``_Http1``), without an HTTP
library's per-request objects (bench/README.md, ``replay``, has the comparison with wrk and with the
httpx client this replaced).

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
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit

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
        due_s: seconds after the replay's start before which it is not sent (None: as soon as a
            worker is free); a replay paced by event time (``bidflow.deploy.click_replay``) sets it.
    """

    id: str
    body: bytes
    bids: tuple[str, ...]
    outcomes: bool = True
    due_s: float | None = None


@dataclass
class ReplayReport:
    """What a replay saw.

    Attributes:
        sent: requests sent.
        ok: HTTP 200 answers.
        failed: everything else (status or connection errors), with the first few reasons.
        errors: failures per kind (``HTTP 502``, ``TimeoutError``, ...), all of them counted.
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
    errors: Counter[str] = field(default_factory=Counter)
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
            "errors": dict(self.errors),
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


class _Answer(NamedTuple):
    status: int
    role: str | None  # the router's ``x-bidflow-role`` header, if any
    body: bytes


class _Http1(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    The replay times its requests, so the client must cost little beside the server it measures: the
    answer is parsed from the bytes as they arrive (status, length, the role header, the body), with
    no header objects, no pool and no task per request.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[_Answer] | None = None
        self.open = False
        self._head: tuple[int, str | None, int, bool] | None = None  # status, role, body start, chunked
        self._length = -1  # content-length; -1: chunked or until the connection closes
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.open = transport, True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if self._head is not None and self._length < 0 and not self._head[3]:  # a body delimited by the close
            status, role, start, _ = self._head
            waiter.set_result(_Answer(status, role, bytes(self.buffer[start:])))
        else:
            waiter.set_exception(ConnectionError(f"connection closed before the answer ended ({exc!r})"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            try:
                self._parse()
            except ValueError as exc:  # a length or chunk size that is not a number
                self._fail(f"unreadable HTTP answer: {exc}")

    def send(self, parts: Sequence[bytes]) -> asyncio.Future[_Answer]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self._head, self._length, self._close_after = None, -1, False
        self.buffer.clear()
        self.transport.writelines(parts)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.open = False

    def _parse(self) -> None:
        buffer = self.buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            role: str | None = None
            chunked = False
            status = int(lines[0][9:12])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self._length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"x-bidflow-role":
                    role = value.strip().decode("ascii", "replace")
                elif name == b"connection":
                    self._close_after = b"close" in value.lower()
            if chunked:
                self._length = -1
            self._head = (status, role, end + 4, chunked)
        status, role, start, chunked = self._head
        if chunked:
            body = _dechunk(buffer, start)
            if body is None:
                return
        elif self._length >= 0:
            if len(buffer) < start + self._length:
                return
            body = bytes(buffer[start : start + self._length])
        else:
            return  # the body ends when the server closes the connection
        waiter, self.waiter = self.waiter, None
        if self._close_after:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(_Answer(status, role, body))

    def _fail(self, why: str) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(why))


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """A chunked body from ``buffer[start:]``, or None while it is incomplete."""
    out = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            return bytes(out) if buffer.find(b"\r\n", at) >= 0 else None  # (trailers are ignored)
        if len(buffer) < at + size + 2:
            return None
        out += buffer[at : at + size]
        at += size + 2


class _Endpoint:
    """Where requests go: the connection details and the request head, encoded once."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError("not an http(s) URL", got=url)
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = {"host": parts.netloc, "content-type": "application/json"} | dict(headers or {})
        lines = [f"POST {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
        self.head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")

    async def connect(self) -> _Http1:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Http1, self.host, self.port, ssl=self.ssl or None)
        return protocol

    def request(self, body: bytes) -> tuple[bytes, bytes, bytes]:
        return self.head, b"%d\r\n\r\n" % len(body), body


class _Caller:
    """One keep-alive connection to an endpoint, opened on first use and again after any failure."""

    def __init__(self, endpoint: _Endpoint, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.connection: _Http1 | None = None

    async def post(self, body: bytes) -> _Answer:
        """The answer to one POST; raises OSError (ConnectionError, TimeoutError) when there is none."""
        connection = self.connection
        if connection is None or not connection.open:
            connection = self.connection = await asyncio.wait_for(self.endpoint.connect(), self.timeout_s)
        answer = connection.send(self.endpoint.request(body))
        timer = asyncio.get_running_loop().call_later(self.timeout_s, _expire, answer, self.timeout_s)
        try:
            return await answer
        except BaseException:
            connection.close()  # a late answer must not be read as the next request's
            self.connection = None
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _expire(answer: asyncio.Future[_Answer], timeout_s: float) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError(f"no answer within {timeout_s:g} s"))


async def replay(
    auctions: Sequence[Auction],
    url: str,
    *,
    concurrency: int = 8,
    monitor_url: str | None = None,
    monitor_token: str | None = None,
    on_answer: Callable[[ReplayReport], None] | None = None,
    timeout_s: float = 10.0,
    rate: float | None = None,
) -> ReplayReport:
    """Send ``auctions`` to ``url`` (a v1 predict URL) with ``concurrency`` requests in flight.

    Without ``rate`` the replay is a closed loop: each worker sends its next request when the last
    one is answered, as fast as the server allows. With ``rate`` it is an open loop: requests leave
    on one fixed schedule of ``rate`` per second (at most ``concurrency`` in flight), so the server
    sees a set load rather than all it can take; a replay that cannot keep to the schedule (too few
    workers for the latency) shows as ``sent / seconds`` below ``rate``.

    Each of the ``concurrency`` workers keeps one connection open (HTTP/1.1 keep-alive) and sends
    the bodies as they were read; a connection that fails or times out is dropped and the next
    request opens a new one.

    Args:
        auctions: what to send.
        url: e.g. ``http://127.0.0.1:8080/v1/models/bid_filter:predict``.
        concurrency: requests in flight.
        monitor_url: where outcomes of explored auctions go (None: nowhere).
        monitor_token: the monitor's intake token (``bidflow.monitoring.auth``).
        on_answer: called after every answer (progress display).
        timeout_s: per request.
        rate: requests per second on a fixed schedule (None: closed loop). Latency is timed from
            the moment a request is sent, not from its slot on the schedule.

    Raises:
        InputError: ``url`` or ``monitor_url`` is not an http(s) URL, or ``rate`` is not positive.
    """
    if rate is not None and rate <= 0:
        raise InputError("the replay rate must be positive", got=str(rate))
    endpoint = _Endpoint(url)
    monitor = None
    if monitor_url is not None:
        auth = {"authorization": f"Bearer {monitor_token}"} if monitor_token else {}
        monitor = _Caller(_Endpoint(monitor_url.rstrip("/") + "/v1/outcomes", auth), timeout_s)
    monitor_lock = asyncio.Lock()
    report = ReplayReport(started_at=time.time())
    pending = iter(auctions)  # shared by the workers: each takes the next auction when it is free
    outcomes: list[bytes] = []
    started = time.perf_counter()
    clock = time.perf_counter
    interval = 1.0 / rate if rate else 0.0
    schedule = [started]  # the next request's slot (open loop)

    async def flush() -> None:
        if not outcomes or monitor is None:
            outcomes.clear()
            return
        body = b'{"records":[' + b",".join(outcomes) + b"]}"
        outcomes.clear()
        async with monitor_lock:
            for _ in range(2):  # a second try on a new connection: the monitor may have closed an idle one
                with contextlib.suppress(OSError):  # best effort, like an exchange's reporting
                    await monitor.post(body)
                    return

    async def worker() -> None:
        caller = _Caller(endpoint, timeout_s)
        timeline, latencies, by_auction, roles = report.timeline, report.latencies_ms, report.by_auction, report.roles
        try:
            for auction in pending:
                if interval:
                    due = schedule[0]
                    schedule[0] = due + interval
                    if (wait := due - clock()) > 0:
                        await asyncio.sleep(wait)
                if auction.due_s is not None and (wait := started + auction.due_s - clock()) > 0:
                    await asyncio.sleep(wait)
                sent = clock()
                report.sent += 1
                try:
                    answer: _Answer | None = await caller.post(auction.body)
                except OSError as exc:
                    answer, reason = None, repr(exc)
                latencies.append((clock() - sent) * 1000)
                second = int(sent - started)
                slot = timeline.get(second)
                if slot is None:
                    slot = timeline[second] = Counter()
                if answer is not None and answer.status == 200:
                    report.ok += 1
                    role = answer.role or "champion"
                    roles[role] += 1
                    by_auction[auction.id] = role
                    slot[role] += 1
                    if (
                        monitor is not None
                        and auction.outcomes
                        and any(p.explored for p in _RESPONSE.decode(answer.body).predictions)
                    ):
                        outcomes.append(msgspec.json.encode({"id": auction.id, "bids": list(auction.bids)}))
                        report.outcomes_sent += 1
                        if len(outcomes) >= _OUTCOME_BATCH:
                            await flush()
                else:
                    report.failed += 1
                    slot["failed"] += 1
                    if answer is not None:
                        status, reason = answer.status, answer.body[:200].decode("utf-8", "replace")
                        report.errors[f"HTTP {status}"] += 1
                    else:
                        status = 0
                        report.errors[reason.partition("(")[0]] += 1
                    if len(report.failures) < 20:
                        report.failures.append(f"HTTP {status}: {reason}")
                if on_answer is not None:
                    on_answer(report)
        finally:
            caller.close()

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await flush()
    finally:
        if monitor is not None:
            monitor.close()
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
    label: str = "replay",
) -> ReplayReport:
    """``replay`` with a progress bar on ``console``: answers, decisions/s, recent p99 and failures, live."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[live]}"))
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

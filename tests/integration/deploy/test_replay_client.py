"""The replay's HTTP client against scripted servers on 127.0.0.1: how it reads answers and survives failures.

Each server here answers from a script (content-length, chunked, closed connections, errors, silence),
so every way an answer can end is read the way the replay counts it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from bidflow.deploy.replay import Auction, ReplayReport, replay
from bidflow.errors import InputError

pytestmark = pytest.mark.integration

Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (request head, body) -> raw answer; None: stay silent


def _auctions(n: int) -> list[Auction]:
    return [Auction(f"a{i}", json.dumps({"instances": [{"request": {"id": f"a{i}"}}]}).encode(), ("p1",)) for i in
            range(n)]  # fmt: skip


def _answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def _serve(handler: Handler, seen: list[bytes]) -> tuple[asyncio.Server, str]:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if
                              line.lower().startswith(b"content-length:"))  # fmt: skip
                body = await reader.readexactly(length)
                seen.append(head + body)
                out = await handler(head, body)
                if out is None:
                    await asyncio.sleep(30)
                    return
                writer.write(out)
                await writer.drain()
                if b"connection: close" in out.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def _run(handler: Handler, auctions: list[Auction], **kwargs: object) -> tuple[ReplayReport, list[bytes]]:
    seen: list[bytes] = []

    async def main() -> ReplayReport:
        server, url = await _serve(handler, seen)
        async with server:
            monitor = kwargs.pop("monitor", False)
            extra = {"monitor_url": url} if monitor else {}
            return await replay(auctions, f"{url}/v1/models/m:predict", **extra, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(main()), seen


def test_keep_alive_answers_roles_and_one_connection_per_worker() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        role = "canary" if json.loads(body)["instances"][0]["request"]["id"].endswith("7") else "champion"
        return _answer(b'{"predictions":[]}', extra=f"x-bidflow-role: {role}\r\n")

    report, seen = _run(handler, _auctions(50), concurrency=3)
    assert (report.sent, report.ok, report.failed) == (50, 50, 0)
    assert report.roles == {"canary": 5, "champion": 45}
    assert report.by_auction["a17"] == "canary" and report.by_auction["a3"] == "champion"
    assert len(report.latencies_ms) == 50 and sum(report.timeline[0].values()) == 50
    head = seen[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /v1/models/m:predict http/1.1") and b"content-type: application/json" in head


def test_chunked_answers_and_closed_connections_are_read_and_reopened() -> None:
    count = 0

    async def handler(head: bytes, body: bytes) -> bytes:
        nonlocal count
        count += 1
        if count % 2:  # chunked, then the server closes the connection
            chunks = b'5\r\n{"pre\r\n10\r\ndictions":[]}   \r\n0\r\n\r\n'
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n" + chunks
        return _answer(b'{"predictions":[]}')

    report, _ = _run(handler, _auctions(20), concurrency=1)
    assert (report.ok, report.failed) == (20, 0)


def test_errors_silence_and_refusals_are_failures_with_their_reason() -> None:
    async def handler(head: bytes, body: bytes) -> bytes | None:
        auction = json.loads(body)["instances"][0]["request"]["id"]
        if auction == "a1":
            return _answer(b'{"error":"bad field"}', "400 Bad Request")
        if auction == "a2":
            return None  # never answers: the request times out and the next one gets a new connection
        return _answer(b'{"predictions":[]}')

    report, _ = _run(handler, _auctions(6), concurrency=1, timeout_s=0.5)
    assert (report.sent, report.ok, report.failed) == (6, 4, 2)
    assert report.failures[0] == 'HTTP 400: {"error":"bad field"}'
    assert report.failures[1].startswith("HTTP 0: TimeoutError")
    assert report.errors == {"HTTP 400": 1, "TimeoutError": 1}

    async def refused() -> ReplayReport:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await replay(_auctions(3), f"http://127.0.0.1:{port}/v1/models/m:predict", concurrency=2)

    gone = asyncio.run(refused())
    assert (gone.failed, gone.ok) == (3, 0) and "ConnectionRefusedError" in gone.failures[0]


def test_explored_outcomes_go_to_the_monitor_with_the_token() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"POST /v1/outcomes"):
            return _answer(b"{}")
        return _answer(b'{"predictions":[{"explored":true}]}')

    report, seen = _run(handler, _auctions(5), concurrency=2, monitor=True, monitor_token="s3cret")
    assert report.outcomes_sent == 5
    posted = [r for r in seen if r.startswith(b"POST /v1/outcomes")]
    assert len(posted) == 1 and b"authorization: Bearer s3cret" in posted[0]
    records = json.loads(posted[0].split(b"\r\n\r\n", 1)[1])["records"]
    assert sorted(r["id"] for r in records) == [f"a{i}" for i in range(5)] and records[0]["bids"] == ["p1"]


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(InputError):
        asyncio.run(replay(_auctions(1), "ftp://127.0.0.1/x"))


def test_a_rate_holds_requests_to_a_schedule() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        return _answer(b'{"predictions":[]}')

    report, _ = _run(handler, _auctions(30), concurrency=4, rate=100.0)
    assert (report.ok, report.failed) == (30, 0)
    assert 0.28 <= report.seconds < 1.5  # 30 slots 10 ms apart: the last leaves at 0.29 s
    with pytest.raises(InputError):
        asyncio.run(replay(_auctions(1), "http://127.0.0.1:9/x", rate=0))


def test_the_progress_bar_follows_the_replay() -> None:
    import io

    from rich.console import Console

    from bidflow.deploy.replay import replay_with_progress

    async def main() -> ReplayReport:
        async def handler(head: bytes, body: bytes) -> bytes:
            return _answer(b'{"predictions":[]}')

        server, url = await _serve(handler, [])
        async with server:
            console = Console(file=io.StringIO(), width=120)
            report = await replay_with_progress(_auctions(450), f"{url}/v1/models/m:predict", console, concurrency=4)
            assert "450/450" in console.file.getvalue()  # type: ignore[attr-defined]
            return report

    assert asyncio.run(main()).ok == 450

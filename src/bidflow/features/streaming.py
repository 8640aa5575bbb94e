"""The streaming feature pipeline: click events on a Redis Stream -> velocity windows -> the online store.

Producer: ``ClickStream.publish`` appends clicks (one compact field per entry) with pipelined XADDs.

Processor: ``StreamProcessor`` reads the stream through a consumer group, applies each batch to a
``VelocityState`` (event-time windows, allowed lateness, duplicates skipped by event id), writes the
rows of the keys the batch changed to the online store (``bidflow.features.online_writer``), then
acknowledges the batch. Delivery is at least once and every write is the key's whole current row, so
a redelivered batch rewrites the same values.

Restart: every ``checkpoint_every_s`` the state is saved to Redis with the id of the last entry it
includes (msgpack). A starting processor restores that checkpoint and replays, in stream order, every
entry after it up to the group's last delivered id (acknowledged or not): the state depends only on
the sequence of entries it saw, so the replay rebuilds exactly the state that was lost, and the keys
it touched are written once at its end. The stream must therefore keep the entries since the last
checkpoint (trimming it is left to whoever sizes its retention).

One processor per stream: a consumer group with several consumers would split one IP's clicks
between states. Scaling out means one stream per shard of IPs.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from bidflow.errors import FeatureStoreError, InputError
from bidflow.features.online_writer import Sink
from bidflow.features.velocity import Click, VelocityState

if TYPE_CHECKING:
    import redis

    from bidflow.config import StreamConfig

log = logging.getLogger(__name__)

FIELD: Final = b"c"  # the one field of an entry: the click as comma-separated values
_XADD: Final = b"*5\r\n$4\r\nXADD\r\n"


def encode(click: Click) -> bytes:
    """A click as one stream field value: ``event_id,ip,app,device,os,channel,ts``."""
    if "," in click.event_id:
        raise InputError("a click's event id may not contain a comma", got=click.event_id)
    return b"%s,%d,%d,%d,%d,%d,%d" % (
        click.event_id.encode(), click.ip, click.app, click.device, click.os, click.channel, click.ts
    )  # fmt: skip


def decode(raw: bytes) -> Click:
    """The click ``encode`` wrote.

    Raises:
        InputError: not seven comma-separated values with integers after the id.
    """
    try:
        event_id, ip, app, device, os, channel, ts = raw.split(b",")
        return Click(event_id.decode(), int(ip), int(app), int(device), int(os), int(channel), int(ts))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("malformed click event", expected="id,ip,app,device,os,channel,ts",
                         got=raw[:80].decode(errors="replace")) from exc  # fmt: skip


def _bulk(item: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(item), item)


def connect(url: str, timeout_s: float | None = 5.0) -> redis.Redis:
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class ClickStream:
    """Appends clicks to a Redis Stream.

    Args:
        client: the Redis connection.
        stream: the stream's key.
    """

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self._client = client
        self._head = _XADD + _bulk(stream.encode()) + _bulk(b"*") + _bulk(FIELD)

    def publish(self, clicks: Iterable[Click], *, chunk: int = 2_000) -> list[bytes]:
        """Append ``clicks`` in order, ``chunk`` XADDs per round trip; the entry ids Redis gave them."""
        ids: list[bytes] = []
        parts: list[bytes] = []
        for click in clicks:
            parts += [self._head, _bulk(encode(click))]
            if len(parts) >= 2 * chunk:
                ids += self._send(parts)
                parts = []
        if parts:
            ids += self._send(parts)
        return ids

    def _send(self, parts: list[bytes]) -> list[bytes]:
        from redis.exceptions import RedisError

        pool = self._client.connection_pool
        try:
            connection = pool.get_connection()
            try:
                connection.send_packed_command([b"".join(parts)])  # type: ignore[no-untyped-call]
                return [connection.read_response() for _ in range(len(parts) // 2)]
            except Exception:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(connection)
        except RedisError as exc:
            raise FeatureStoreError("could not append clicks to the stream", got=str(exc), hint="is Redis up?") from exc


@dataclass
class Batch:
    """What one ``StreamProcessor.step`` did."""

    entries: int = 0
    rows: int = 0
    latencies_ms: list[int] = field(default_factory=list)  # per entry: added to the stream -> row written


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class StreamProcessor:
    """Keeps the velocity windows of one click stream and writes them to the online store.

    Args:
        client: the Redis connection of the stream (and of the checkpoint).
        sink: where rows go (``RedisSink`` or ``FeastPushSink``).
        settings: stream, group, consumer, lateness, batch size, checkpoint cadence.
        now_ms: the clock latencies are measured with (Redis stamps entry ids with its own clock in ms).
        freeze_gc: after each batch, move every object the process holds out of the cyclic garbage
            collector's view (``gc.freeze``). The state is a day of clicks in millions of small
            containers without cycles, which every full collection would walk again; freezing keeps
            collections to what the last batch allocated (bench/README.md has the effect). The cost:
            a reference cycle that outlives its batch is never collected, which the processor's own
            path does not create. A whole-process setting: for the processor's own process (the
            ``bidflow stream process`` command), not for a library caller's.
    """

    def __init__(
        self,
        client: redis.Redis,
        sink: Sink,
        settings: StreamConfig,
        *,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        freeze_gc: bool = False,
    ) -> None:
        self._client = client
        self._sink = sink
        self.settings = settings
        self._now_ms = now_ms
        self._freeze_gc = freeze_gc
        self._checkpoint_key = f"{settings.stream}:{settings.group}:checkpoint"
        self.state = VelocityState(settings.allowed_lateness_s)
        self._last_id = b"0-0"  # the last entry the state includes
        self._saved_at = time.monotonic()
        self._clean = True  # no batch is between being read and being acknowledged
        self._read = [
            b"XREADGROUP", b"GROUP", settings.group.encode(), settings.consumer.encode(),
            b"COUNT", b"%d" % settings.batch, b"BLOCK", b"%d" % settings.block_ms,
            b"STREAMS", settings.stream.encode(), b">",
        ]  # fmt: skip

    # --- start-up ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Join (or create) the consumer group, restore the checkpoint and replay what came after it.

        Returns:
            the number of entries replayed.
        """
        from redis.exceptions import RedisError, ResponseError

        stream, group = self.settings.stream, self.settings.group
        try:
            try:
                self._client.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._restore()
            delivered = self._last_delivered()
            return self._replay(delivered)
        except RedisError as exc:
            raise FeatureStoreError("stream processor could not start", where=stream, got=str(exc)) from exc

    def _restore(self) -> None:
        import msgspec

        raw = self._client.get(self._checkpoint_key)
        if raw is None:
            return
        try:
            with _no_gc():
                saved = msgspec.msgpack.decode(raw)  # type: ignore[arg-type]
                self.state = VelocityState.restore(saved["state"])
            self._last_id = saved["id"].encode()
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            raise FeatureStoreError("unreadable stream processor checkpoint", where=self._checkpoint_key,
                                    got=f"{type(exc).__name__}: {exc}", hint="delete the key to start from the "
                                    "stream's beginning") from exc  # fmt: skip
        if self.state.allowed_lateness_s != self.settings.allowed_lateness_s:
            raise FeatureStoreError(
                "the checkpoint was taken with another allowed lateness",
                where=self._checkpoint_key,
                expected=str(self.settings.allowed_lateness_s),
                got=str(self.state.allowed_lateness_s),
                hint="changing the lateness changes which clicks count: rebuild (delete the checkpoint and the group)",
            )

    def _last_delivered(self) -> bytes:
        for info in self._client.xinfo_groups(self.settings.stream):
            name = info["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.settings.group:
                found = info["last-delivered-id"]
                return found if isinstance(found, bytes) else str(found).encode()
        raise FeatureStoreError("consumer group vanished", where=f"{self.settings.stream} {self.settings.group}")

    def _replay(self, until: bytes) -> int:
        """Apply the entries after the checkpoint up to ``until`` (delivered before a stop), write, acknowledge."""
        replayed = 0
        start = b"(" + self._last_id
        while _id_key(self._last_id) < _id_key(until):
            entries: Any = self._client.xrange(self.settings.stream, start, until, count=self.settings.batch)
            if not entries:
                break
            ids = [entry_id for entry_id, _ in entries]
            self._apply(ids, [fields[FIELD] for _, fields in entries])
            self._client.xack(self.settings.stream, self.settings.group, *ids)
            replayed += len(ids)
            start = b"(" + self._last_id
        if replayed:
            self._sink.write(self.state.rows())
            log.info("replayed %d stream entries after the checkpoint", replayed)
        return replayed

    # --- the loop ---------------------------------------------------------------------------------

    def _apply(self, ids: Sequence[bytes], values: Sequence[bytes]) -> None:
        self.state.add_all([decode(raw) for raw in values])
        self._last_id = ids[-1]

    def step(self, *, measure: bool = False) -> Batch:
        """Read one batch (waiting up to ``block_ms``), apply it, write the changed rows, acknowledge it."""
        from redis.exceptions import RedisError

        try:
            reply = self._read_raw()
        except RedisError as exc:
            raise FeatureStoreError("stream read failed", where=self.settings.stream, got=str(exc)) from exc
        if not reply:
            self._maybe_checkpoint()
            return Batch()
        entries = _entries(reply)
        ids = [entry_id for entry_id, _ in entries]
        self._clean = False
        self._apply(ids, [value for _, value in entries])
        rows = self._sink.write(self.state.rows())
        batch = Batch(entries=len(ids), rows=rows)
        if measure:
            now = self._now_ms()
            batch.latencies_ms = [now - _entry_ms(entry_id) for entry_id in ids]
        try:
            self._client.xack(self.settings.stream, self.settings.group, *ids)
        except RedisError as exc:
            raise FeatureStoreError("stream acknowledgement failed", where=self.settings.stream, got=str(exc)) from exc
        self._clean = True
        self._maybe_checkpoint()
        if self._freeze_gc:
            gc.freeze()
        return batch

    def _read_raw(self) -> Any:
        """XREADGROUP's reply as Redis sent it (nested lists of bytes): redis-py's reply callback
        would build a dict per entry, which costs more than the rest of the processing."""
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(*self._read)  # type: ignore[no-untyped-call]
            return connection.read_response()
        except Exception:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)

    def run_until_idle(self, idle_steps: int = 1) -> int:
        """Process until ``idle_steps`` reads in a row find nothing; the entries processed."""
        total, idle = 0, 0
        while idle < idle_steps:
            batch = self.step()
            total += batch.entries
            idle = idle + 1 if batch.entries == 0 else 0
        return total

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._saved_at >= self.settings.checkpoint_every_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Save the state with the id of the last entry it includes (every entry up to it is written).

        Nothing is saved while a batch is half done (a step that failed between reading and
        acknowledging): the next start replays it from the previous checkpoint instead.
        """
        import msgspec

        if not self._clean:
            return
        with _no_gc():  # a snapshot allocates a list per key: collections would walk the whole state meanwhile
            payload = msgspec.msgpack.encode({"id": self._last_id.decode(), "state": self.state.snapshot()})
        self._client.set(self._checkpoint_key, payload)
        self._saved_at = time.monotonic()

    def close(self) -> None:
        self._sink.close()


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was before, after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _entries(reply: Any) -> list[tuple[bytes, bytes]]:
    """(entry id, click field) of a raw XREADGROUP reply: per stream (a RESP3 map or RESP2 pairs), its
    entries as [id, [field, value, ...]]."""
    out = []
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    for stream_entries in streams:
        for entry_id, fields in stream_entries:
            if fields is None:  # an entry deleted while pending
                continue
            if fields[0] == FIELD:
                out.append((entry_id, fields[1]))
                continue
            found = dict(zip(fields[::2], fields[1::2], strict=True)).get(FIELD)
            if found is None:
                raise InputError("a stream entry without a click", where=entry_id.decode(), expected="field c")
            out.append((entry_id, found))
    return out

"""The streaming feature pipeline: click events on a stream -> velocity windows -> the online store.

Producer: ``ClickStream.publish`` appends clicks to a Redis Stream (one compact field per entry) with
pipelined XADDs; ``bidflow.features.kinesis_source.KinesisClickStream`` puts the same bytes on Kinesis.

Processor: ``StreamProcessor`` reads batches from a click source (``bidflow.features.stream_source``:
a Redis Stream through a consumer group, or a Kinesis shard), applies each to a ``VelocityState``
(event-time windows, allowed lateness, duplicates skipped by event id), writes the rows of the keys
the batch changed to the online store (``bidflow.features.online_writer``), then acknowledges the
batch. Delivery is at least once and every write is the key's whole current row, so a redelivered
batch rewrites the same values.

Restart: every ``checkpoint_every_s`` the state is saved to Redis with the source's position of the
last entry it includes (msgpack: a stream entry id, or a sequence number per Kinesis shard). A starting
processor restores that checkpoint and replays, in stream order, the entries after it that a stopped
processor may have handed out (Redis: up to the group's last delivered id; Kinesis, which keeps no
such record: up to the shard's tip). The state depends only on the sequence of entries it saw, so the
replay rebuilds exactly the state that was lost, and the keys it touched are written once at its end.
The stream must therefore keep the entries since the last checkpoint (sizing its retention is left
to whoever runs it).

One processor per stream: a consumer group with several consumers (or several Kinesis shards read in
whatever interleaving) would split one IP's clicks between states or reorder the clicks the lateness
is judged on. Scaling out means one stream per shard of IPs.
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
    from bidflow.features.stream_source import ClickSource

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


class StreamProcessor:
    """Keeps the velocity windows of one click stream and writes them to the online store.

    Args:
        client: the Redis connection of the checkpoint (and of the stream, for the default source).
        sink: where rows go (``RedisSink`` or ``FeastPushSink``).
        settings: stream, group, consumer, lateness, batch size, checkpoint cadence.
        source: where clicks come from (``bidflow.features.stream_source``); None: the Redis Stream
            ``settings.stream`` on ``client``.
        now_ms: the clock latencies are measured with (the stream stamps arrivals with its own clock in ms).
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
        source: ClickSource | None = None,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        freeze_gc: bool = False,
    ) -> None:
        if source is None:
            from bidflow.features.redis_source import RedisStreamSource

            source = RedisStreamSource(client, settings)
        self._client = client
        self._sink = sink
        self._source = source
        self.settings = settings
        self._now_ms = now_ms
        self._freeze_gc = freeze_gc
        self._checkpoint_key = source.checkpoint_key
        self.state = VelocityState(settings.allowed_lateness_s)
        self._saved_at = time.monotonic()
        self._clean = True  # no batch is between being read and being acknowledged

    # --- start-up ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Restore the checkpoint, join the stream after it and replay what a stopped processor handed out.

        Returns:
            the number of entries replayed.
        """
        from redis.exceptions import RedisError

        try:
            saved = self._restore()
        except RedisError as exc:
            raise FeatureStoreError("stream processor could not read its checkpoint", where=self._checkpoint_key,
                                    got=str(exc)) from exc  # fmt: skip
        self._source.open(saved)
        return self._replay()

    def _restore(self) -> dict[str, Any] | None:
        """The checkpoint's state into ``self.state``; the source's position saved with it (None: no checkpoint)."""
        import msgspec

        raw = self._client.get(self._checkpoint_key)
        if raw is None:
            return None
        try:
            with _no_gc():
                saved = msgspec.msgpack.decode(raw)  # type: ignore[arg-type]
                self.state = VelocityState.restore(saved.pop("state"))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
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
        position: dict[str, Any] = saved
        return position

    def _replay(self) -> int:
        """Apply what the source says a stopped processor handed out, acknowledge it, write the touched keys once."""
        replayed = 0
        for delivery in self._source.catch_up():
            self._apply(delivery.values)
            self._source.ack(delivery)
            replayed += len(delivery.values)
        if replayed:
            self._sink.write(self.state.rows())
            log.info("replayed %d stream entries after the checkpoint", replayed)
        return replayed

    # --- the loop ---------------------------------------------------------------------------------

    def _apply(self, values: Sequence[bytes]) -> None:
        self.state.add_all([decode(raw) for raw in values])

    def step(self, *, measure: bool = False) -> Batch:
        """Read one batch (waiting a little for one), apply it, write the changed rows, acknowledge it."""
        delivery = self._source.read()
        if delivery is None:
            self._maybe_checkpoint()
            return Batch()
        self._clean = False
        self._apply(delivery.values)
        rows = self._sink.write(self.state.rows())
        batch = Batch(entries=len(delivery.values), rows=rows)
        if measure:
            now = self._now_ms()
            batch.latencies_ms = [now - arrival for arrival in delivery.arrivals_ms()]
        self._source.ack(delivery)
        self._clean = True
        self._maybe_checkpoint()
        if self._freeze_gc:
            gc.freeze()
        return batch

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
        """Save the state with the source's position of the last entry it includes (every entry up to it is written).

        Nothing is saved while a batch is half done (a step that failed between reading and
        acknowledging): the next start replays it from the previous checkpoint instead.
        """
        import msgspec
        from redis.exceptions import RedisError

        if not self._clean:
            return
        with _no_gc():  # a snapshot allocates a list per key: collections would walk the whole state meanwhile
            payload = msgspec.msgpack.encode(self._source.position() | {"state": self.state.snapshot()})
        try:
            self._client.set(self._checkpoint_key, payload)
        except RedisError as exc:
            raise FeatureStoreError("could not save the stream processor checkpoint", where=self._checkpoint_key,
                                    got=str(exc)) from exc  # fmt: skip
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

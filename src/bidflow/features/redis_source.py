"""The Redis Streams click source: one stream read through a consumer group (the local default).

The group's last-delivered id says how far a processor got before it stopped, acknowledged or not:
``catch_up`` replays the entries from the checkpoint's id up to it, so a restart rebuilds exactly the
state that was lost. The stream must keep the entries since the last checkpoint (trimming it is left
to whoever sizes its retention).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bidflow.errors import FeatureStoreError, InputError
from bidflow.features.stream_source import Delivery
from bidflow.features.streaming import FIELD

if TYPE_CHECKING:
    import redis

    from bidflow.config import StreamConfig


class RedisStreamSource:
    """Click events from the Redis Stream ``settings.stream``, read as ``settings.group``/``settings.consumer``.

    Args:
        client: the Redis connection of the stream.
        settings: stream, group, consumer, batch size, longest wait per read.
    """

    def __init__(self, client: redis.Redis, settings: StreamConfig) -> None:
        self._client = client
        self.settings = settings
        self._last_id = b"0-0"  # the last entry handed out
        self._read = [
            b"XREADGROUP", b"GROUP", settings.group.encode(), settings.consumer.encode(),
            b"COUNT", b"%d" % settings.batch, b"BLOCK", b"%d" % settings.block_ms,
            b"STREAMS", settings.stream.encode(), b">",
        ]  # fmt: skip

    @property
    def checkpoint_key(self) -> str:
        return f"{self.settings.stream}:{self.settings.group}:checkpoint"

    @property
    def where(self) -> str:
        return self.settings.stream

    def open(self, saved: Mapping[str, Any] | None) -> None:
        from redis.exceptions import RedisError, ResponseError

        if saved is not None:
            if not isinstance(saved.get("id"), str):
                raise FeatureStoreError("the checkpoint holds no Redis stream entry id", where=self.checkpoint_key,
                                        got=str(sorted(saved)), hint="it was taken with another stream.source: "
                                        "delete the key to start from the stream's beginning")  # fmt: skip
            self._last_id = saved["id"].encode()
        try:
            self._client.xgroup_create(self.settings.stream, self.settings.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise FeatureStoreError("could not create the consumer group", where=self.where, got=str(exc)) from exc
        except RedisError as exc:
            raise FeatureStoreError("stream processor could not start", where=self.where, got=str(exc)) from exc

    def _last_delivered(self) -> bytes:
        for info in self._client.xinfo_groups(self.settings.stream):
            name = info["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.settings.group:
                found = info["last-delivered-id"]
                return found if isinstance(found, bytes) else str(found).encode()
        raise FeatureStoreError("consumer group vanished", where=f"{self.settings.stream} {self.settings.group}")

    def catch_up(self) -> Iterator[Delivery]:
        """The entries after the checkpoint's id up to the group's last delivered one (acknowledged or not)."""
        from redis.exceptions import RedisError

        try:
            until = self._last_delivered()
            while _id_key(self._last_id) < _id_key(until):
                entries: Any = self._client.xrange(
                    self.settings.stream, b"(" + self._last_id, until, count=self.settings.batch
                )
                if not entries:
                    return
                ids = [entry_id for entry_id, _ in entries]
                self._last_id = ids[-1]
                yield Delivery([fields[FIELD] for _, fields in entries], _arrivals(ids), ids)
        except RedisError as exc:
            raise FeatureStoreError("stream replay failed", where=self.where, got=str(exc)) from exc

    def read(self) -> Delivery | None:
        from redis.exceptions import RedisError

        try:
            reply = self._read_raw()
        except RedisError as exc:
            raise FeatureStoreError("stream read failed", where=self.where, got=str(exc)) from exc
        if not reply:
            return None
        entries = _entries(reply)
        if not entries:
            return None
        ids = [entry_id for entry_id, _ in entries]
        self._last_id = ids[-1]
        return Delivery([value for _, value in entries], _arrivals(ids), ids)

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

    def ack(self, delivery: Delivery) -> None:
        from redis.exceptions import RedisError

        try:
            self._client.xack(self.settings.stream, self.settings.group, *delivery.token)
        except RedisError as exc:
            raise FeatureStoreError("stream acknowledgement failed", where=self.where, got=str(exc)) from exc

    def position(self) -> dict[str, Any]:
        return {"id": self._last_id.decode()}


def _arrivals(ids: list[bytes]) -> Any:
    """Redis stamps entry ids with its own clock in ms: an entry's arrival is its id's first half."""
    return lambda: [int(entry_id.split(b"-", 1)[0]) for entry_id in ids]


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

"""Where the stream processor's clicks come from: the seam between ``StreamProcessor`` and a stream.

A source hands out click events (``streaming.encode``'s bytes) in stream order and remembers the
position of the last one it handed out, which the processor saves with its velocity state. Two exist:

* ``redis`` (``bidflow.features.redis_source``): a Redis Stream read through a consumer group, the
  local default;
* ``kinesis`` (``bidflow.features.kinesis_source``): one Amazon Kinesis Data Streams shard, the EKS
  variant (credentials from the pod's IRSA role).

Both give the processor the same contract: ``open`` resumes right after a checkpoint's position,
``catch_up`` yields what a stopped processor may already have applied and written (so the restart
writes each touched key once, at its end, instead of winding rows back while it replays), ``read``
returns the next batch, ``ack`` confirms a batch once its rows are written. Delivery is at least
once; the velocity state skips a redelivered event id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis

    from bidflow.config import StreamConfig
    from bidflow.features.velocity import Click


@dataclass
class Delivery:
    """One batch of click events from a source.

    Attributes:
        values: the events' bytes (``streaming.encode``), in stream order.
        arrivals_ms: when the stream took each event (epoch ms), computed only when latencies are measured.
        token: what the source's ``ack`` needs to confirm the batch (entry ids for Redis).
    """

    values: list[bytes]
    arrivals_ms: Callable[[], list[int]]
    token: Any = None


class ClickSource(Protocol):
    """What ``StreamProcessor`` reads click events through."""

    @property
    def checkpoint_key(self) -> str:
        """The Redis key the processor saves its state and this source's position under."""
        ...

    @property
    def where(self) -> str:
        """The stream, for messages."""
        ...

    def open(self, saved: Mapping[str, Any] | None) -> None:
        """Join the stream and resume after ``saved`` (a ``position()`` from a checkpoint; None: the beginning)."""
        ...

    def catch_up(self) -> Iterator[Delivery]:
        """The events after the resumed position that a stopped processor may have handed out already."""
        ...

    def read(self) -> Delivery | None:
        """The next batch (waiting a little for one); None when there is nothing new."""
        ...

    def ack(self, delivery: Delivery) -> None:
        """Confirm a batch whose rows are written."""
        ...

    def position(self) -> dict[str, Any]:
        """The position of the last event handed out, as the checkpoint stores it (msgpack-able)."""
        ...


class ClickPublisher(Protocol):
    """What ``bidflow stream publish`` appends clicks with."""

    def publish(self, clicks: Iterable[Click]) -> list[Any]:
        """Append ``clicks`` in order; the ids (entry ids, sequence numbers) the stream gave them."""
        ...


def open_source(settings: StreamConfig, client: redis.Redis) -> ClickSource:
    """The source ``stream.source`` names; ``client`` is the Redis of the stream (redis) and of the checkpoint."""
    if settings.source == "kinesis":
        from bidflow.features.kinesis_source import KinesisSource, kinesis_client

        return KinesisSource(kinesis_client(settings.kinesis), settings)
    from bidflow.features.redis_source import RedisStreamSource

    return RedisStreamSource(client, settings)


def open_publisher(settings: StreamConfig) -> ClickPublisher:
    """The publisher of the stream ``stream.source`` names."""
    if settings.source == "kinesis":
        from bidflow.features.kinesis_source import KinesisClickStream, kinesis_client

        return KinesisClickStream(kinesis_client(settings.kinesis), settings.kinesis.stream_name)
    from bidflow.features.streaming import ClickStream, connect

    return ClickStream(connect(settings.redis_url), settings.stream)

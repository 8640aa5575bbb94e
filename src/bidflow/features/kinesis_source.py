"""The Amazon Kinesis Data Streams click source and publisher (``stream.source: kinesis``, the EKS variant).

Records carry the same bytes as the Redis Stream's entries (``streaming.encode``), partition key the
click's IP. The processor reads **one shard**: Kinesis orders records only within a shard, and the
velocity windows judge lateness and duplicates over one ordered sequence of clicks, so reading several
shards in whatever interleaving would make the counts depend on timing. One shard takes 1 MB/s or
1,000 records/s of writes (the whole TalkingData competition set, 185 M clicks over four days,
averages about 540/s); beyond that, scale out as with Redis: a stream per partition of IPs, each with
its own processor. A stream with more than one open shard is refused at start, and a shard that
resharding closes stops the processor with an error naming its children.

Positions: the checkpoint holds the sequence number of the last record the state includes, per
shard (``{"shards": {shard id: sequence number}}``). A restart asks for an iterator
``AFTER_SEQUENCE_NUMBER`` of it and replays up to the shard's tip before writing (Kinesis keeps no
record of what a consumer was handed, so the tip is the only bound that covers it); records the
stopped processor had already applied are rewritten with the same values, and a record delivered
twice is skipped by its event id. A shard iterator expires after five minutes unused: a fresh one is
taken after the last record handed out. Retention (24 h by default) must cover the time since the
last checkpoint.

Credentials: the AWS SDK's default chain; on EKS the pod's ServiceAccount carries an IRSA role
(``eks.amazonaws.com/role-arn``). The processor needs ``kinesis:ListShards``, ``GetShardIterator``
and ``GetRecords`` (``DescribeStreamSummary`` only to inspect it by hand); the publisher ``PutRecords``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from bidflow.errors import ConfigError, FeatureStoreError
from bidflow.features.stream_source import Delivery
from bidflow.features.streaming import encode

if TYPE_CHECKING:
    from bidflow.config import KinesisConfig, StreamConfig
    from bidflow.features.velocity import Click

PUT_LIMIT: Final = 500  # records per PutRecords call (the service's limit)
GET_LIMIT: Final = 10_000  # records per GetRecords call (the service's limit)
PUT_ATTEMPTS: Final = 8  # PutRecords rounds for records the service refused (throttling) before giving up


def kinesis_client(settings: KinesisConfig) -> Any:
    """A boto3 Kinesis client: standard retries (throttling backs off inside the SDK), bounded timeouts.

    Raises:
        ConfigError: no region configured anywhere the SDK looks.
    """
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]
    from botocore.exceptions import NoRegionError  # type: ignore[import-untyped]

    config = Config(retries={"mode": "standard", "max_attempts": 10}, connect_timeout=5, read_timeout=30)
    try:
        return boto3.session.Session().client(
            "kinesis", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
        )
    except NoRegionError as exc:
        raise ConfigError("no AWS region for the Kinesis stream", where="stream.kinesis.region",
                          hint="set it, or AWS_REGION in the environment") from exc  # fmt: skip


def _failure(what: str, where: str, exc: Exception) -> FeatureStoreError:
    from botocore.exceptions import ClientError

    hint = None
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            hint = "create the stream (one shard), or set stream.kinesis.stream_name"
        elif code in ("AccessDeniedException", "UnrecognizedClientException"):
            hint = "the pod's IAM role (IRSA) needs the Kinesis actions listed in the chart's README"
    return FeatureStoreError(what, where=where, got=f"{type(exc).__name__}: {exc}", hint=hint)


class KinesisClickStream:
    """Puts clicks on a Kinesis data stream with PutRecords, partition key the click's IP.

    PutRecords does not promise the order of the records of one call; in practice a shard takes them
    in order, and a reordering within one call is absorbed by the allowed lateness as long as a call
    spans less event time than it. Records the service refuses (throttling) are sent again, in their
    order, before the next call.

    Args:
        client: a boto3 Kinesis client (``kinesis_client``).
        stream_name: the data stream.
    """

    def __init__(self, client: Any, stream_name: str) -> None:
        self._client = client
        self._stream = stream_name

    def publish(self, clicks: Iterable[Click], *, chunk: int = PUT_LIMIT) -> list[str]:
        """Append ``clicks`` in order, ``chunk`` (at most 500) per call; the sequence numbers they got."""
        size = max(1, min(chunk, PUT_LIMIT))
        out: list[str] = []
        records: list[dict[str, Any]] = []
        for click in clicks:
            records.append({"Data": encode(click), "PartitionKey": str(click.ip)})
            if len(records) == size:
                out += self._put(records)
                records = []
        if records:
            out += self._put(records)
        return out

    def _put(self, records: list[dict[str, Any]]) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        numbers: list[str | None] = [None] * len(records)
        pending = list(range(len(records)))
        for attempt in range(PUT_ATTEMPTS):
            try:
                answer = self._client.put_records(StreamName=self._stream, Records=[records[i] for i in pending])
            except (BotoCoreError, ClientError) as exc:
                raise _failure("could not put clicks on the Kinesis stream", self._stream, exc) from exc
            refused = []
            for index, result in zip(pending, answer["Records"], strict=True):
                if "SequenceNumber" in result:
                    numbers[index] = result["SequenceNumber"]
                else:
                    refused.append((index, result.get("ErrorCode", "?")))
            if not refused:
                return [n for n in numbers if n is not None]
            pending = [index for index, _ in refused]
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise FeatureStoreError(f"Kinesis refused {len(pending)} clicks {PUT_ATTEMPTS} times", where=self._stream,
                                got=", ".join(sorted({code for _, code in refused})),
                                hint="the stream's write capacity is exceeded: slow the publisher down")  # fmt: skip


class KinesisSource:
    """Click events from the one open shard of a Kinesis data stream.

    Args:
        client: a boto3 Kinesis client (``kinesis_client``).
        settings: ``stream.kinesis`` (stream, poll interval), the batch size, and the group that names
            this processor's checkpoint.
    """

    def __init__(self, client: Any, settings: StreamConfig) -> None:
        self._client = client
        self.settings = settings
        self._stream = settings.kinesis.stream_name
        self._limit = min(settings.batch, GET_LIMIT)
        self._shard: str | None = None
        self._sequence: str | None = None  # the last record handed out (None: none yet, from the trim horizon)
        self._iterator: str | None = None
        self._children: list[str] = []  # of the shard, once resharding closed it
        self._closed = False  # the shard is closed and read to its end

    @property
    def checkpoint_key(self) -> str:
        return f"kinesis:{self._stream}:{self.settings.group}:checkpoint"

    @property
    def where(self) -> str:
        return f"kinesis:{self._stream}"

    # --- start-up ---------------------------------------------------------------------------------

    def _shards(self) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        shards: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {"StreamName": self._stream}
        try:
            while True:
                answer = self._client.list_shards(**arguments)
                shards += answer["Shards"]
                if not answer.get("NextToken"):
                    return shards
                arguments = {"NextToken": answer["NextToken"]}
        except (BotoCoreError, ClientError) as exc:
            raise _failure("could not list the Kinesis stream's shards", self.where, exc) from exc

    def open(self, saved: Mapping[str, Any] | None) -> None:
        """Find the shard to read (the stream's one open shard) and resume after ``saved``'s sequence number.

        Raises:
            FeatureStoreError: the stream has several open shards, the checkpoint names another shard,
                or the checkpoint is not a Kinesis one.
        """
        shards = self._shards()
        open_shards = [s["ShardId"] for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        closed = [s["ShardId"] for s in shards if s["ShardId"] not in open_shards]
        if len(open_shards) != 1 or closed:
            raise FeatureStoreError(
                "the stream processor reads a Kinesis stream of one shard",
                where=self.where,
                got=f"{len(open_shards)} open shard(s) {open_shards}, {len(closed)} closed {closed}",
                hint="the velocity windows need one ordered sequence of clicks, which Kinesis keeps only within "
                "a shard: keep the stream at one shard and scale out with a stream per partition of IPs",
            )
        (shard,) = open_shards
        if saved is not None:
            positions = saved.get("shards")
            if not isinstance(positions, dict) or not all(isinstance(v, str) for v in positions.values()):
                raise FeatureStoreError("the checkpoint holds no Kinesis sequence numbers", where=self.checkpoint_key,
                                        got=str(sorted(saved)), hint="it was taken with another stream.source: "
                                        "delete the key to start from the stream's beginning")  # fmt: skip
            if positions and set(positions) != {shard}:
                raise FeatureStoreError(
                    "the checkpoint was taken on another shard",
                    where=self.checkpoint_key,
                    expected=shard,
                    got=", ".join(sorted(positions)),
                    hint="the stream was re-created or resharded: delete the checkpoint key to rebuild the windows "
                    "from the stream's beginning",
                )
            self._sequence = positions.get(shard)
        self._shard = shard
        self._iterator = self._new_iterator()

    def _new_iterator(self) -> str:
        """An iterator right after the last record handed out (from the trim horizon when there is none)."""
        from botocore.exceptions import BotoCoreError, ClientError

        arguments: dict[str, Any] = {"StreamName": self._stream, "ShardId": self._shard}
        if self._sequence is None:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            arguments |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": self._sequence}
        try:
            iterator: str = self._client.get_shard_iterator(**arguments)["ShardIterator"]
            return iterator
        except (BotoCoreError, ClientError) as exc:
            raise _failure("could not get a Kinesis shard iterator", f"{self.where} {self._shard}", exc) from exc

    # --- reading ----------------------------------------------------------------------------------

    def _get(self) -> tuple[Delivery | None, int]:
        """One GetRecords call: the batch (None: no records) and how far behind the tip it leaves us (ms)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._closed:
            raise FeatureStoreError(
                "the Kinesis shard was closed by resharding",
                where=f"{self.where} {self._shard}",
                got=f"child shards {self._children or 'unknown'}",
                hint="the processor reads one shard in order: bring the stream back to one shard, delete the "
                "checkpoint and rebuild, or run a processor per stream",
            )
        for attempt in range(2):
            try:
                answer = self._client.get_records(ShardIterator=self._iterator, Limit=self._limit)
                break
            except ClientError as exc:
                # Iterators expire five minutes after they were issued: take a new one after the last record.
                if exc.response.get("Error", {}).get("Code") == "ExpiredIteratorException" and attempt == 0:
                    self._iterator = self._new_iterator()
                    continue
                raise _failure("Kinesis read failed", f"{self.where} {self._shard}", exc) from exc
            except BotoCoreError as exc:
                raise _failure("Kinesis read failed", f"{self.where} {self._shard}", exc) from exc
        self._iterator = answer.get("NextShardIterator")
        if self._iterator is None:  # a closed shard read to its end
            self._closed = True
            self._children = [child["ShardId"] for child in answer.get("ChildShards", [])]
        behind = int(answer.get("MillisBehindLatest", 0))
        records = answer["Records"]
        if not records:
            return None, behind
        self._sequence = records[-1]["SequenceNumber"]
        stamps = [record["ApproximateArrivalTimestamp"] for record in records]
        arrivals = lambda: [int(stamp.timestamp() * 1000) for stamp in stamps]  # noqa: E731
        return Delivery([record["Data"] for record in records], arrivals), behind

    def catch_up(self) -> Iterator[Delivery]:
        """Every record after the resumed position up to the shard's tip (or its end, if resharding closed it)."""
        while not self._closed:
            delivery, behind = self._get()
            if delivery is not None:
                yield delivery
            if behind == 0 and delivery is None:
                return

    def read(self) -> Delivery | None:
        delivery, behind = self._get()
        while delivery is None and behind > 0 and not self._closed:
            # An empty answer short of the tip (a stretch of the shard without records): each call moves on.
            delivery, behind = self._get()
        if delivery is None and behind == 0:
            # At the tip: a shard serves five reads a second, and asking again at once would only spend them.
            time.sleep(self.settings.kinesis.poll_interval_s)
        return delivery

    def ack(self, delivery: Delivery) -> None:
        """Nothing to confirm: Kinesis keeps no consumer position; the checkpoint holds it."""

    def position(self) -> dict[str, Any]:
        if self._shard is None or self._sequence is None:
            return {"shards": {}}
        return {"shards": {self._shard: self._sequence}}

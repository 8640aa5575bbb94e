"""``bidflow stream ...``: put clicks on the stream, and run the velocity processor over it.

The stream is the one ``stream.source`` names: the Redis Stream ``stream.stream`` (local), or the
Kinesis data stream ``stream.kinesis.stream_name`` (EKS). Redis, boto3, Feast and pandas are imported
inside the commands, so ``bidflow --help`` does not pay for them.
"""

from __future__ import annotations

import gc
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.features.online_writer import Sink

stream_cli = typer.Typer(
    help="Streaming velocity features: click events on Redis Streams or Kinesis.", no_args_is_help=True
)
out = Console()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


def open_sink(config: Config) -> Sink:
    """The sink ``stream.sink`` names, on the online store ``stream.online_store`` (or the environment's)."""
    from bidflow.features import store as feature_store
    from bidflow.features.online_writer import FeastPushSink, RedisSink

    settings = config.stream
    overrides = None
    if settings.online_store is not None:
        online = {"type": "redis", "connection_string": settings.online_store}
        overrides = {"online_store": online | ({"skip_dedup": True} if settings.sink == "feast" else {})}
    store = feature_store.open_store(config.features, overrides)
    if settings.sink == "feast":
        return FeastPushSink(store)
    return RedisSink(store, key_ttl_s=settings.key_ttl_s)


@stream_cli.command()
def publish(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Argument(help="TalkingData clicks (default: fraud.source).")] = None,
    day: Annotated[str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD).")] = None,
    speedup: Annotated[
        float, typer.Option(help="Event time per wall-clock second (0: as fast as the stream takes them).", min=0)
    ] = 0.0,
) -> None:
    """Append clicks to the stream in event-time order, optionally paced at SPEEDUP x real time."""
    from bidflow.features.stream_source import open_publisher
    from bidflow.features.talkingdata import read_clicks
    from bidflow.features.velocity import clicks_from_frame

    config = _config(ctx)
    frame = read_clicks(source or config.fraud.source)
    if day is not None:
        frame = frame[frame["day"] == day]
    clicks = list(clicks_from_frame(frame))
    stream = open_publisher(config.stream)
    name = config.stream.kinesis.stream_name if config.stream.source == "kinesis" else config.stream.stream
    started, first = time.monotonic(), clicks[0].ts if clicks else 0
    sent, reported = 0, started
    step = 1_000 if speedup == 0 else max(1, int(speedup))  # clicks per send (about a second of events paced)
    for start in range(0, len(clicks), step):
        chunk = clicks[start : start + step]
        if speedup > 0:
            due = started + (chunk[0].ts - first) / speedup
            time.sleep(max(0.0, due - time.monotonic()))
        sent += len(stream.publish(chunk))
        if time.monotonic() - reported >= 10:
            reported = time.monotonic()
            out.print(f"{sent:,} of {len(clicks):,} clicks published, event time {chunk[-1].ts - first:,} s in")
    rate = sent / max(time.monotonic() - started, 1e-9)
    out.print(f"[green]published[/] {sent:,} clicks to [bold]{name}[/] ({rate:,.0f}/s)")


@stream_cli.command()
def process(
    ctx: typer.Context,
    idle_exit: Annotated[bool, typer.Option(help="Stop once the stream has nothing new (tests, backfills).")] = False,
) -> None:
    """Run the velocity processor: read the stream, keep the windows, write the online store."""
    from bidflow.features.stream_source import open_source
    from bidflow.features.streaming import StreamProcessor, connect

    config = _config(ctx)
    client = connect(config.stream.redis_url)
    source = open_source(config.stream, client)
    processor = StreamProcessor(client, open_sink(config), config.stream, source=source, freeze_gc=True)
    replayed = processor.start()
    out.print(f"processing [bold]{source.where}[/] as {config.stream.group}/{config.stream.consumer} "
              f"(replayed {replayed:,} entries after the checkpoint)")  # fmt: skip
    total, last_report = 0, time.monotonic()
    # Kubernetes stops a pod with SIGTERM: end the loop as Ctrl-C does, so the last checkpoint is saved.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            batch = processor.step()
            total += batch.entries
            if idle_exit and batch.entries == 0:
                break
            if time.monotonic() - last_report >= 10:
                counters = processor.state.counters
                out.print(f"{total:,} entries: {counters.accepted:,} accepted, {counters.duplicates:,} duplicates, "
                          f"{counters.late:,} late")  # fmt: skip
                last_report = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        processor.checkpoint()
        processor.close()
        gc.unfreeze()  # the processor froze the collector's view of its state (``freeze_gc``); hand it back
    counters = processor.state.counters
    out.print(f"[green]processed[/] {total:,} entries: {counters.accepted:,} accepted, "
              f"{counters.duplicates:,} duplicates, {counters.late:,} late")  # fmt: skip

"""A day of clicks through the click stream and the served fraud model, paced by their event time.

Each click goes onto the stream at its own time (event time divided by the speed-up, from the first
click) and is scored ``delay_s`` later, through the router like any client, as a v1 instance batch of
the fraud kind's request fields. The delay stands for the time the stream processor needs to fold
the click into its velocity rows: scored sooner, a click would see its keys' rows as of the click
before it, which is not what the model was trained on (``bidflow.features.velocity``: a scored click
is its keys' latest click). The router forwards every answered batch to the drift monitor, so the
monitor sees the day's traffic as it would see live clicks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from bidflow.deploy.replay import Auction, ReplayReport, read_instances, replay_with_progress
from bidflow.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from bidflow.features.stream_source import ClickPublisher

CLICK_TIME: Final = "click_time"
PUBLISHES_PER_S: Final = 10  # wall-clock rounds of stream appends: a tenth of a second of paced clicks each


def click_batches(rows: pd.DataFrame, fields: Sequence[str], *, speedup: float, delay_s: float,
                  per_request: int, limit: int | None = None) -> list[Auction]:  # fmt: skip
    """The rows (in click-time order) as v1 instance batches, each due ``delay_s`` after its last click.

    Raises:
        InputError: ``speedup`` is not positive, or the rows have no ``click_time``.
    """
    if speedup <= 0:
        raise InputError("the speed-up must be positive", got=str(speedup))
    if CLICK_TIME not in rows.columns:
        raise InputError("the rows have no click time", expected=CLICK_TIME, got=", ".join(map(str, rows.columns)))
    ordered = rows.sort_values(CLICK_TIME, kind="stable").reset_index(drop=True)
    batches = list(read_instances(ordered, fields, per_request=per_request, limit=limit))
    times = ordered[CLICK_TIME].to_numpy()
    first = int(times[0]) if len(times) else 0
    return [
        replace(batch, due_s=(int(times[min(len(times), (n + 1) * per_request) - 1]) - first) / speedup + delay_s)
        for n, batch in enumerate(batches)
    ]


async def publish_paced(publisher: ClickPublisher, rows: pd.DataFrame, speedup: float) -> int:
    """Append the rows' clicks to the stream, each no sooner than its event time / ``speedup`` from the first."""
    from bidflow.features.velocity import clicks_from_frame

    clicks = list(clicks_from_frame(rows.assign(ts=rows[CLICK_TIME]).sort_values("ts", kind="stable")))
    if not clicks:
        return 0
    started, first = time.perf_counter(), clicks[0].ts
    window = max(1.0, speedup / PUBLISHES_PER_S)  # event seconds per append round
    sent, start = 0, 0
    while start < len(clicks):
        end = start
        horizon = clicks[start].ts + window
        while end < len(clicks) and clicks[end].ts < horizon:
            end += 1
        if (wait := started + (clicks[start].ts - first) / speedup - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent += len(await asyncio.to_thread(publisher.publish, clicks[start:end]))
        start = end
    return sent


async def replay_clicks(
    rows: pd.DataFrame,
    fields: Sequence[str],
    publisher: ClickPublisher,
    url: str,
    console: Console,
    *,
    speedup: float,
    delay_s: float = 1.0,
    per_request: int = 1,
    concurrency: int = 8,
    limit: int | None = None,
    monitor_url: str | None = None,
    monitor_token: str | None = None,
) -> tuple[ReplayReport, int]:
    """Publish the clicks paced by event time and score each ``delay_s`` after it; the replay and the clicks published.

    With ``limit`` only the clicks of the first ``limit`` batches go onto the stream, as are scored.
    """
    batches = click_batches(rows, fields, speedup=speedup, delay_s=delay_s, per_request=per_request, limit=limit)
    ordered = rows.sort_values(CLICK_TIME, kind="stable").head(len(batches) * per_request)
    scored, published = await asyncio.gather(
        replay_with_progress(
            batches,
            url,
            console,
            concurrency=concurrency,
            monitor_url=monitor_url,
            monitor_token=monitor_token,
            label="clicks",
        ),
        publish_paced(publisher, ordered, speedup),
    )
    return scored, published

"""The auction-log record: one bid request and what each demand partner called answered."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from bidflow.openrtb.model import BidRequest

Status = Literal["bid", "nobid", "timeout", "error"]
STATUSES: Final[tuple[Status, ...]] = ("bid", "nobid", "timeout", "error")


# gc=False: a file's outcomes (~750k per hour) stay alive until its table is built; holding only
# scalars they cannot form cycles, and tracking them made the cycle collector a quarter of ingest.
class Outcome(msgspec.Struct, frozen=True, gc=False):
    """One partner call: its answer, how long it took, and the CPM (USD) if it bid."""

    partner: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    status: Status
    latency_ms: Annotated[int, msgspec.Meta(ge=0)]
    price: Annotated[float, msgspec.Meta(gt=0)] | None = None


class AuctionRecord(msgspec.Struct, frozen=True, gc=False):
    """One line of an auction log."""

    ts_ms: int  # epoch milliseconds, UTC, when the exchange received the request
    request: BidRequest
    outcomes: list[Outcome]

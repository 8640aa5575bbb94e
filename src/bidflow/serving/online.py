"""Online features for the model server, failing open: a store that is down or slow never fails a request.

``GuardedReader`` wraps ``bidflow.features.online.OnlineFeatureReader`` (the feature logic, shared
with training) with the serving policy:

* Bounded waits. On Redis, every socket operation gets the reader's ``timeout_s``
  (``OnlineFeatureReader(timeout_s=...)``, ``--feature-timeout-ms``) and a failed connection is not
  retried: redis-py's default retries, with a backoff, would stall the event loop for seconds on
  every request while Redis is down. SQLite is a local file: no network wait to bound.
* A circuit breaker. After a failure the store is not asked again for ``cooldown_s``; requests in
  between fail open at once instead of each paying a timeout. The first request after the
  cooldown tries again (and closes the breaker when it succeeds).
* A short cache (``OnlineFeatureReader(cache_s=...)``, ``--feature-cache-s``: the oldest an answer
  may be): what the store answered is reused for a few seconds, and rows that are due are read
  again in a background thread while the cached ones are served (``refresh=True``); while Redis is
  down, cached auctions keep their features and the others fail open.
* Fail open. Any failure returns ``None`` and the reason; the caller calls every partner and
  counts it in ``bidflow_serving_fail_open_total{reason}``. The reason is logged once per
  breaker opening (never once per request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy.typing as npt

if TYPE_CHECKING:
    from bidflow.features.online import OnlineFeatureReader

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 0.02
DEFAULT_COOLDOWN_S: Final = 1.0
# Features change once per materialization (hourly): a minute of lag costs nothing and spares the
# store (and the auction) a round trip for nearly every request. The cache serves a row up to 30 s
# and renews it from 15 s on (``bidflow.features.cache``: no answer is older than this). Each
# renewal costs a context's next auctions a read through the row cache (300-360 µs each, timed in
# a loaded server): at 20 s, with the serving benchmark's 600 contexts, that was 10-20 µs of every
# auction's CPU at 4,000 auctions/s, and p99 was 8-39 ms against 8-9 ms at 60 s (side by side).
DEFAULT_CACHE_S: Final = 60.0


@dataclass(frozen=True)
class Lookup:
    """One auction's online features, or why there are none.

    ``values``: the reader's rows (float64, one per entity), or what its shape made of them
    (``OnlineFeatureReader.set_shape``: the bid filter's float32 matrix rows).
    """

    values: npt.NDArray[Any] | None
    fail_reason: str | None = None


class GuardedReader:
    """Reads a FeatureService for one auction at a time, failing open.

    Args:
        reader: the feature reader (one per process), made with the network timeout to wait at most
            (``OnlineFeatureReader(timeout_s=...)``).
        cooldown_s: how long the store is left alone after a failure.
    """

    def __init__(self, reader: OnlineFeatureReader, *, cooldown_s: float = DEFAULT_COOLDOWN_S) -> None:
        self.reader = reader
        self.cooldown_s = cooldown_s
        self._open_until = 0.0
        self._last_reason: str | None = None

    @property
    def backend(self) -> str:
        """``redis``, ``sqlite`` or ``feast`` (see ``OnlineFeatureReader.backend``)."""
        return self.reader.backend

    def bid_filter(
        self, partners: Sequence[str], publisher_id: str, country: str, format: str, device_type: int, at_s: float
    ) -> Lookup:
        """``OnlineFeatureReader.features`` for one auction, or a fail-open ``Lookup``.

        The reader must have the bid filter's layout (``bidflow.serving.bid_filter_features.LAYOUT``):
        the partners are its rows, the other arguments the auction's context, in that order.
        """
        if self._open_until and time.monotonic() < self._open_until:
            return Lookup(None, "breaker_open")
        try:
            values = self.reader.features(partners, publisher_id, country, format, device_type, at=at_s)
        except Exception as exc:  # fail open on anything the store throws: a 5xx would be worse
            return self._failed(exc)
        if self._open_until:
            log.warning("online feature store answers again; serving with features")
            self._open_until = 0.0
            self._last_reason = None
        return Lookup(values)

    def rows(self, entities: dict[str, Any], at_s: float) -> Lookup:
        """``OnlineFeatureReader.read`` for many rows (the CTR model), or a fail-open ``Lookup``."""
        if self._open_until and time.monotonic() < self._open_until:
            return Lookup(None, "breaker_open")
        try:
            values = self.reader.read(entities, at=at_s)
        except Exception as exc:  # same policy as bid_filter
            return self._failed(exc)
        self._open_until = 0.0
        return Lookup(values)

    def close(self) -> None:
        """Close the reader's connections."""
        self.reader.close()

    def _failed(self, exc: Exception) -> Lookup:
        reason = _reason(exc)
        self._open_until = time.monotonic() + self.cooldown_s
        if reason != self._last_reason:
            log.warning("online feature store failed (%s): failing open for %.1f s at a time: %s", reason,
                        self.cooldown_s, exc)  # fmt: skip
            self._last_reason = reason
        return Lookup(None, reason)


def _reason(exc: BaseException) -> str:
    """A short, bounded label for the failure (a Prometheus label value), from the exception chain."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, TimeoutError) or name == "TimeoutError":  # builtin, socket, or redis-py's
            return "timeout"
        if isinstance(seen, ConnectionError | OSError) or name == "ConnectionError":
            return "unreachable"
        seen = seen.__cause__ or seen.__context__
    return "error"

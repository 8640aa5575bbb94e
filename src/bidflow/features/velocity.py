"""Click velocity features: windowed counts per IP, IP x app and IP x device x os, one state machine.

The same ``VelocityState`` computes them online (``bidflow.features.streaming`` feeds it from a Redis
Stream) and offline (``offline_tables`` feeds it a day of clicks in time order), so training sets and
the online store cannot disagree by construction: the consistency test only has to check the plumbing.

Semantics (all times are event times, whole seconds):

* A view's row for key K is stamped T = the latest click of K, and holds the window counts over the
  accepted clicks of K with ``T - w < t <= T`` (``w`` = 10 min or 24 h). Clicks in the same second as T
  all count. ``distinct_apps_24h`` counts the apps of the IP with a click in the 24 h window;
  ``seconds_since_previous`` is T minus the second-latest click of the IP x device x os (0 for two clicks
  in one second; NaN when there is none within 24 h).
* A scored click is its keys' latest click, so its features are exact; a row read later describes the
  window as of the key's latest click (the views' ttl of 24 h turns rows with no click in the window into
  defaults, which are then the exact values).
* Late and out-of-order clicks: the watermark is the latest event time seen minus ``allowed_lateness_s``.
  A click at or after the watermark is counted wherever it falls in time (its keys' rows are recomputed);
  one before it is dropped and counted in ``late``, never applied, so it cannot reopen a window that was
  already pruned.
* Duplicates (at-least-once delivery): a click whose event id was already accepted is skipped. Ids are
  remembered until their event time falls behind the watermark; a redelivery after that is late anyway.
* The state depends only on the sequence of clicks it was given, so replaying the same sequence after a
  restart (``bidflow.features.streaming``) rebuilds it exactly.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

SHORT_S: Final = 600  # 10 minutes
LONG_S: Final = 86_400  # 24 hours: also the longest a click is kept in the state
PRUNE_EVERY_S: Final = 60  # event time between two sweeps of expired clicks and ids (they only free memory)

IP_VIEW: Final = "fraud_ip_velocity"
IP_APP_VIEW: Final = "fraud_ip_app_velocity"
IP_DEVICE_OS_VIEW: Final = "fraud_ip_device_os_velocity"
# Join keys and features of each view, in the order rows carry them. The Feast definitions in
# feature_repo/ declare the same (a test holds them equal; the processor checks at start-up).
KEYS: Final[dict[str, tuple[str, ...]]] = {
    IP_VIEW: ("ip",),
    IP_APP_VIEW: ("ip", "app"),
    IP_DEVICE_OS_VIEW: ("ip", "device", "os"),
}
FEATURES: Final[dict[str, tuple[str, ...]]] = {
    IP_VIEW: ("clicks_10m", "clicks_24h", "distinct_apps_24h"),
    IP_APP_VIEW: ("clicks_10m", "clicks_24h"),
    IP_DEVICE_OS_VIEW: ("clicks_10m", "clicks_24h", "seconds_since_previous"),
}
VIEWS: Final = tuple(KEYS)
CLICK_COLUMNS: Final = ("event_id", "ip", "app", "device", "os", "channel", "ts")

Row = tuple[int, tuple[float, ...]]  # (event second the row is stamped with, feature values)


class Click(NamedTuple):
    """One click event. ``ts`` is its event time in whole UTC seconds.

    A named tuple rather than a dataclass: the processor builds one per event, and a tuple is built
    several times faster.
    """

    event_id: str
    ip: int
    app: int
    device: int
    os: int
    channel: int
    ts: int


@dataclass
class Counters:
    """What happened to the clicks a state was given."""

    accepted: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass
class Changed:
    """The keys whose rows changed since the last ``VelocityState.rows`` call, per view."""

    ip: set[int] = field(default_factory=set)
    ip_app: set[tuple[int, int]] = field(default_factory=set)
    ip_device_os: set[tuple[int, int, int]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ip or self.ip_app or self.ip_device_os)


class VelocityState:
    """The clicks of the last 24 h (plus the allowed lateness) per key, and the rows they give.

    Args:
        allowed_lateness_s: how far behind the latest event time a click may be and still count.
    """

    def __init__(self, allowed_lateness_s: int) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.latest: int | None = None  # the latest event time accepted
        self.ip: dict[int, list[int]] = {}
        self.ip_app: dict[tuple[int, int], list[int]] = {}
        self.ip_device_os: dict[tuple[int, int, int], list[int]] = {}
        self.apps: dict[int, dict[int, list[int]]] = {}  # ip -> app -> the list in ``ip_app``
        self.seen: dict[str, int] = {}  # accepted event id -> its event time, until behind the watermark
        self.counters = Counters()
        self.changed = Changed()
        # Accepted clicks in arrival order, for forgetting them: arrival order is event order give or
        # take the allowed lateness, so popping from the left while the oldest is expired frees
        # everything expired up to that lateness later, at a constant cost per click.
        self._expiry: deque[tuple[int, int, int, int, int]] = deque()  # (ts, ip, app, device, os)
        self._recent: deque[tuple[int, str]] = deque()  # (ts, event id)
        self._next_prune = 0  # event time of the next sweep

    @property
    def watermark(self) -> int | None:
        """Clicks before this event time are late (None: nothing accepted yet)."""
        return None if self.latest is None else self.latest - self.allowed_lateness_s

    def add(self, click: Click) -> bool:
        """Apply one click; False when it was a duplicate or late (and changed nothing)."""
        return self.add_all((click,)) == 1

    def add_all(self, clicks: Iterable[Click]) -> int:
        """Apply clicks in order (``add`` for each); the number accepted.

        One loop with everything it touches bound to locals: it is the processor's hot path.
        """
        seen, recent, expiry = self.seen, self._recent.append, self._expiry.append
        ip_table, app_table, device_table, apps = self.ip, self.ip_app, self.ip_device_os, self.apps
        changed = self.changed
        changed_ip, changed_app, changed_device = changed.ip.add, changed.ip_app.add, changed.ip_device_os.add
        lateness = self.allowed_lateness_s
        latest = self.latest
        floor = None if latest is None else latest - lateness  # the watermark
        accepted = duplicates = late = 0
        for event_id, ip, app, device, os, _, ts in clicks:
            if event_id in seen:
                duplicates += 1
                continue
            if floor is not None and ts < floor:
                late += 1
                continue
            seen[event_id] = ts
            recent((ts, event_id))
            expiry((ts, ip, app, device, os))
            accepted += 1
            times = ip_table.get(ip)
            if times is None:
                ip_table[ip] = [ts]
                apps[ip] = {}
            elif ts >= times[-1]:
                times.append(ts)
            else:
                insort(times, ts)
            app_key = (ip, app)
            times = app_table.get(app_key)
            if times is None:
                app_table[app_key] = apps[ip][app] = [ts]
            elif ts >= times[-1]:
                times.append(ts)
            else:
                insort(times, ts)
            device_key = (ip, device, os)
            times = device_table.get(device_key)
            if times is None:
                device_table[device_key] = [ts]
            elif ts >= times[-1]:
                times.append(ts)
            else:
                insort(times, ts)
            changed_ip(ip)
            changed_app(app_key)
            changed_device(device_key)
            if latest is None or ts > latest:
                latest = ts
                floor = ts - lateness
        self.latest = latest
        counters = self.counters
        counters.accepted += accepted
        counters.duplicates += duplicates
        counters.late += late
        return accepted

    def rows(self) -> dict[str, dict[tuple[int, ...], Row]]:
        """The current row of every key changed since the last call, per view (and forget the changes)."""
        changed, self.changed = self.changed, Changed()
        out: dict[str, dict[tuple[int, ...], Row]] = {view: {} for view in VIEWS}
        ip_rows, app_rows, device_rows = out[IP_VIEW], out[IP_APP_VIEW], out[IP_DEVICE_OS_VIEW]
        # A window's count is len(times) - bisect_right(times, at - window): the clicks in (at - window, at].
        ip_table, apps, short, long = self.ip, self.apps, SHORT_S, LONG_S
        for ip in changed.ip:
            times = ip_table[ip]
            n, at = len(times), times[-1]
            horizon = at - long
            distinct = sum(1 for app_times in apps[ip].values() if app_times[-1] > horizon)
            ip_rows[(ip,)] = (at, (n - bisect_right(times, at - short), n - bisect_right(times, horizon), distinct))
        app_table = self.ip_app
        for key in changed.ip_app:
            times = app_table[key]
            n, at = len(times), times[-1]
            app_rows[key] = (at, (n - bisect_right(times, at - short), n - bisect_right(times, at - long)))
        device_table = self.ip_device_os
        for key3 in changed.ip_device_os:
            times = device_table[key3]
            n, at = len(times), times[-1]
            previous = at - times[-2] if n > 1 and times[-2] > at - long else math.nan
            device_rows[key3] = (
                at,
                (n - bisect_right(times, at - short), n - bisect_right(times, at - long), previous),
            )
        if self.latest is not None and self.latest >= self._next_prune:
            self.prune()
        return out

    def prune(self) -> None:
        """Forget what no future row can count: clicks at or before watermark - 24 h, ids behind the watermark.

        Called when no change is pending (``rows`` ends with it): every row computed after it is of a
        key with a new click, stamped at or after the watermark (a click before it is dropped), so a
        click that old is outside every window that will be computed again, and a redelivered id that
        old is dropped as late before it is looked up.
        """
        watermark = self.watermark
        if watermark is None:
            return
        self._next_prune = watermark + self.allowed_lateness_s + PRUNE_EVERY_S
        recent, seen = self._recent, self.seen
        while recent and recent[0][0] < watermark:
            del seen[recent.popleft()[1]]
        horizon = watermark - LONG_S
        expiry = self._expiry
        while expiry and expiry[0][0] <= horizon:
            _, ip, app, device, os = expiry.popleft()
            if _drop(self.ip, ip, horizon):
                del self.apps[ip]
            if _drop(self.ip_app, (ip, app), horizon) and ip in self.apps:
                self.apps[ip].pop(app, None)
            _drop(self.ip_device_os, (ip, device, os), horizon)

    # --- persistence (``bidflow.features.streaming`` checkpoints) ---------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the state depends on, as plain lists (msgpack-able); ``restore`` inverts it."""
        return {
            "allowed_lateness_s": self.allowed_lateness_s,
            "latest": self.latest,
            "next_prune": self._next_prune,
            "ip": [[key, times] for key, times in self.ip.items()],
            "ip_app": [[*key, times] for key, times in self.ip_app.items()],
            "ip_device_os": [[*key, times] for key, times in self.ip_device_os.items()],
            "expiry": list(self._expiry),
            "recent": list(self._recent),
            "counters": [self.counters.accepted, self.counters.duplicates, self.counters.late],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> VelocityState:
        state = cls(int(snapshot["allowed_lateness_s"]))
        state.latest = snapshot["latest"]
        state._next_prune = snapshot["next_prune"]
        state.ip = {int(ip): list(times) for ip, times in snapshot["ip"]}
        state.apps = {ip: {} for ip in state.ip}
        for ip, app, times in snapshot["ip_app"]:
            state.ip_app[(ip, app)] = kept = list(times)
            state.apps.setdefault(ip, {})[app] = kept
        state.ip_device_os = {(ip, device, os): list(times) for ip, device, os, times in snapshot["ip_device_os"]}
        state._expiry = deque((ts, ip, app, device, os) for ts, ip, app, device, os in snapshot["expiry"])
        state._recent = deque((int(ts), str(event_id)) for ts, event_id in snapshot["recent"])
        state.seen = {event_id: ts for ts, event_id in state._recent}
        state.counters = Counters(*snapshot["counters"])
        return state


def _drop(table: dict[Any, list[int]], key: Any, horizon: int) -> bool:
    """Remove the times at or before ``horizon`` from ``key``'s list; True when that emptied (and removed) it."""
    times = table.get(key)
    if times is None or times[0] > horizon:
        return False
    del times[: bisect_right(times, horizon)]
    if times:
        return False
    del table[key]
    return True


# --- offline: the same state machine over a time-ordered frame ---------------------------------------


def clicks_from_frame(frame: pd.DataFrame) -> Iterator[Click]:
    """Clicks from a frame with ``CLICK_COLUMNS`` (``ts``: whole UTC seconds since the epoch)."""
    columns = [frame[name].tolist() for name in CLICK_COLUMNS]
    for event_id, ip, app, device, os, channel, ts in zip(*columns, strict=True):
        yield Click(str(event_id), int(ip), int(app), int(device), int(os), int(channel), int(ts))


def offline_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every row the views take over ``frame``'s clicks, point in time: one per key and second with clicks.

    The clicks are applied in event-time order, a second at a time, and after each second the rows of
    the keys it touched are taken: the row of (K, T) is what the online store holds for K once the
    processor has seen every click up to T. A point-in-time join at a click's own time finds its row.

    Returns:
        view name -> frame with the view's join keys, ``event_timestamp`` (UTC) and its features.
    """
    import numpy as np
    import pandas as pd

    ordered = frame.sort_values("ts", kind="stable")
    state = VelocityState(allowed_lateness_s=0)
    collected: dict[str, list[tuple[tuple[int, ...], Row]]] = {view: [] for view in VIEWS}

    def take() -> None:
        for view, rows in state.rows().items():
            collected[view].extend(rows.items())

    current: int | None = None
    for click in clicks_from_frame(ordered):
        if current is not None and click.ts != current:
            take()
        current = click.ts
        state.add(click)
    take()
    out = {}
    for view in VIEWS:
        rows = collected[view]
        keys = np.array([key for key, _ in rows], dtype=np.int64).reshape(len(rows), len(KEYS[view]))
        table = pd.DataFrame({name: keys[:, i] for i, name in enumerate(KEYS[view])})
        table["event_timestamp"] = pd.to_datetime(
            np.array([at for _, (at, _) in rows], dtype=np.int64), unit="s", utc=True
        )
        values = np.array([v for _, (_, v) in rows], dtype=np.float64).reshape(len(rows), len(FEATURES[view]))
        for i, name in enumerate(FEATURES[view]):
            table[name] = values[:, i] if name == "seconds_since_previous" else values[:, i].astype(np.int64)
        out[view] = table.sort_values(["event_timestamp", *KEYS[view]], kind="stable").reset_index(drop=True)
    return out


def point_in_time(clicks: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each click's velocity features: the row of each of its keys at the click's own second.

    A click's keys always have a row at its second (``offline_tables`` writes one for every key and
    second with clicks), so this is the point-in-time join without its search. Columns are Feast's
    full names, ``<view>__<feature>``.
    """
    import pandas as pd

    out = clicks.copy()
    out["event_timestamp"] = pd.to_datetime(out["ts"], unit="s", utc=True)
    for view in VIEWS:
        table = tables[view].rename(columns={f: f"{view}__{f}" for f in FEATURES[view]})
        out = out.merge(table, on=[*KEYS[view], "event_timestamp"], how="left", validate="many_to_one")
    return out

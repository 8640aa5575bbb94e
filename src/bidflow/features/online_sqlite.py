"""The online reader's SQLite backend: Feast's SQLite layout read with one query per request.

Feast keeps a table ``<project>_<view>`` with one row per (entity key, feature). One UNION ALL
statement per request shape reads every view, and SQL computes where each row lands in the flat
value and timestamp arrays; the values are decoded as fixed-width records (``online_records``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from bidflow.errors import FeatureStoreError
from bidflow.features.online_backend import FetchShape, Lookups, fetch_shape
from bidflow.features.online_records import PAYLOAD, KeyEncoder, decode_values, pack
from bidflow.features.spec import ServiceSpec, ViewSpec

if TYPE_CHECKING:
    from feast import FeatureStore


class SqliteBackend:
    """Feast's SQLite layout: table ``<project>_<view>``, one row per (entity key, feature)."""

    name = "sqlite"

    def __init__(self, store: FeatureStore, spec: ServiceSpec) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self._path = SqliteOnlineStore._get_db_path(store.config)
        # No type detection: event_ts comes back as Feast's adapter stored it, converted below.
        self._conn = sqlite3.connect(self._path, check_same_thread=False)
        self._keys = KeyEncoder(spec, b"")
        self._tables = {view.name: _quote(f"{store.project}_{view.view}") for view in spec.views}
        self._seconds: dict[Any, float] = {}
        self._sql: dict[FetchShape, str] = {}

    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        counts = tuple(len(lookup.keys) for lookup in lookups)
        sql = self._sql.get(fetch_shape(views, counts)) or self._query(views, counts)
        keys = [self._keys(view.name, key) for view, lookup in zip(views, lookups, strict=True) for key in lookup.keys]
        try:
            rows = self._conn.execute(sql, keys).fetchall()
        except sqlite3.OperationalError as exc:
            raise FeatureStoreError(
                "SQLite online store cannot be read",
                where=self._path,
                got=str(exc),
                hint="run `bidflow features apply`",
            ) from exc
        widths = [len(view.features) for view in views]
        stamp_base = np.concatenate(([0], np.cumsum(counts))).astype(np.intp)
        value_base = np.concatenate(([0], np.cumsum([c * w for c, w in zip(counts, widths, strict=True)])))
        seconds = np.zeros(int(stamp_base[-1]))
        values = np.full(int(value_base[-1]), np.nan)
        if rows and any(row[0] is None for row in rows):
            rows = [row for row in rows if row[0] is not None]
        if rows:
            cells, stamps, blobs, raw_ts = zip(*rows, strict=True)
            lengths = [len(b) for b in blobs]
            if max(lengths) > PAYLOAD:
                raise FeatureStoreError("online feature value too long to be numeric", got=f"{max(lengths)} bytes")
            records = pack(np.array(lengths, dtype=np.uint8), np.frombuffer(b"".join(blobs), dtype=np.uint8))
            values[np.array(cells, dtype=np.intp)] = decode_values(records)
            converted = {raw: self._event_seconds(raw) for raw in set(raw_ts)}
            seconds[np.array(stamps, dtype=np.intp)] = [converted[raw] for raw in raw_ts]
        return [
            (
                seconds[stamp_base[v] : stamp_base[v + 1]],
                values[value_base[v] : value_base[v + 1]].reshape(counts[v], widths[v]),
            )
            for v in range(len(views))
        ]

    def _query(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> str:
        """One statement for every view; SQL computes where each row lands in the flat arrays.

        A row of view ``v`` for its ``pos``-th key and feature ``f`` goes to value cell
        ``value_base[v] + pos * F + f`` and to timestamp slot ``stamp_base[v] + pos``; a stored
        feature the service does not request gets a NULL cell. (Filtering on ``feature_name`` in
        SQL would turn one index range per key into one probe per key and feature: slower.)
        """
        parts = []
        stamp_base = value_base = 0
        for view, count in zip(views, counts, strict=True):
            if count == 0:
                continue
            width = len(view.features)
            keys = ",".join(f"(?,{i})" for i in range(count))
            column = " ".join(f"WHEN {_literal(f)} THEN {i}" for i, f in enumerate(view.features))
            parts.append(
                f"SELECT {value_base} + k.column2 * {width} + CASE t.feature_name {column} END, "
                f"{stamp_base} + k.column2, t.value, t.event_ts "
                f"FROM (VALUES {keys}) AS k JOIN {self._tables[view.name]} AS t ON t.entity_key = k.column1"
            )
            stamp_base += count
            value_base += count * width
        sql = " UNION ALL ".join(parts)
        self._sql[fetch_shape(views, counts)] = sql
        return sql

    def _event_seconds(self, raw: Any) -> float:
        """Seconds as Feast's SQLite reader sees them.

        Feast stores ``int(naive_utc.timestamp())`` (a naive datetime read as local time) and reads
        it back with ``datetime.fromtimestamp`` (local) labelled UTC: the same round trip here keeps
        both paths equal whatever the server's time zone.
        """
        cached = self._seconds.get(raw)
        if cached is None:
            if isinstance(raw, int | float) or (isinstance(raw, str | bytes) and str(raw).isdigit()):
                moment = datetime.fromtimestamp(int(raw))  # local time: mirrors Feast's converter
            else:
                moment = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
            cached = float(int(moment.replace(tzinfo=UTC).timestamp()))
            self._seconds[raw] = cached
        return cached

    def close(self) -> None:
        self._conn.close()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

"""The online reader's cache on its own: which keys it reads from the store, and when again."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from bidflow.features import cache as cache_module
from bidflow.features.cache import ContextMemo, Key, RowCache
from bidflow.features.spec import ViewSpec

PARTNER = ViewSpec("partner_stats", "partner_stats", ("partner",), ("String",), ("bids",), (0.0,), None)
PUBLISHER = ViewSpec("publisher_stats", "publisher_stats", ("publisher_id",), ("String",), ("fill",), (-1.0,), None)


class Store:
    """Answers every key with a value that says which read it came from; counts the keys read."""

    def __init__(self) -> None:
        self.reads = 0
        self.keys_read: list[Key] = []

    def fetch(self, views: Sequence[ViewSpec], keys: Sequence[list[Key]]) -> list[tuple[np.ndarray, np.ndarray]]:
        self.reads += 1
        out = []
        for view, view_keys in zip(views, keys, strict=True):
            self.keys_read += [(view.name, *key) for key in view_keys]
            values = np.full((len(view_keys), 1), float(self.reads))
            if view is PUBLISHER:
                values[:] = np.nan  # a null: served as the view's default
            out.append((np.full(len(view_keys), 1_000.0), values))
        return out


def test_rows_are_assembled_from_each_views_keys_and_read_once() -> None:
    store, cache = Store(), RowCache([PARTNER, PUBLISHER], ("partner", "publisher_id"), [np.zeros(1), -np.ones(1)], 60)
    values, seconds = cache.rows(store.fetch, [("a", "p1"), ("b", "p1")])
    np.testing.assert_array_equal(values, [[1.0, -1.0], [1.0, -1.0]])
    np.testing.assert_array_equal(seconds, [[1_000.0, 1_000.0]] * 2)
    # A new publisher reads only its own view: the partners' rows come from the key cache.
    values, _ = cache.rows(store.fetch, [("b", "p2"), ("a", "p1")])
    np.testing.assert_array_equal(values, [[1.0, -1.0], [1.0, -1.0]])
    assert store.keys_read == [("partner_stats", "a"), ("partner_stats", "b"), ("publisher_stats", "p1"),
                               ("publisher_stats", "p2")]  # fmt: skip
    values[:] = 7.0  # the caller's copy: the cache is untouched
    np.testing.assert_array_equal(cache.rows(store.fetch, [("a", "p1")])[0], [[1.0, -1.0]])
    # rows: hit, missed; keys (of missed rows only): hit, read
    assert cache.stats == (2, 2 + 1, 1, 4, 0)


def test_rows_filled_together_expire_together_and_other_fills_at_other_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(cache_module, "monotonic", lambda: clock[0])
    ttl_s = 0.4  # keys live 0.2 s; each fill's rows 0.1 to 0.2 s
    store, cache = Store(), RowCache([PARTNER], ("partner",), [np.zeros(1)], ttl_s, seed=3)
    auctions = [[(f"{k}-a",), (f"{k}-b",)] for k in range(20)]
    for keys in auctions:
        cache.rows(store.fetch, keys)
    clock[0] += 0.15
    missed = cache.stats.rows_missed
    refilled = 0
    for keys in auctions:
        cache.rows(store.fetch, keys)
        refilled += (cache.stats.rows_missed - missed) // 2
        missed = cache.stats.rows_missed
    assert cache.stats.rows_missed % 2 == 0  # both rows of one fill: both cached, or both read again
    assert 0 < refilled < len(auctions)
    clock[0] += 0.25  # past every row's and key's expiry: nothing older than ttl_s is served
    before = store.reads
    for keys in auctions:
        cache.rows(store.fetch, keys)
    assert store.reads - before == len(auctions)


def test_a_full_cache_starts_again_and_still_answers_right() -> None:
    store = Store()
    cache = RowCache([PARTNER, PUBLISHER], ("partner", "publisher_id"), [np.zeros(1), -np.ones(1)], 60, limit=4)
    first = [("a", "p1"), ("b", "p1")]
    cache.rows(store.fetch, first)
    cache.rows(store.fetch, [("c", "p1"), ("d", "p1")])
    values, _ = cache.rows(store.fetch, [("e", "p1"), *first])  # 5 rows > 4: the row cache starts again
    np.testing.assert_array_equal(values[:, 1], [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(values[:, 0], [3.0, 1.0, 1.0])  # old rows rebuilt from the key cache
    assert len(store.keys_read) == len(set(store.keys_read)) == 5 + 1  # no key read twice


class ThreadedStore(Store):
    """A ``Store`` that notes which thread read, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []
        self.failing = False

    def fetch(self, views: Sequence[ViewSpec], keys: Sequence[list[Key]]) -> list[tuple[np.ndarray, np.ndarray]]:
        self.threads.append(threading.get_ident())
        if self.failing:
            raise ConnectionError("store down")
        return super().fetch(views, keys)


def test_due_rows_are_served_and_read_again_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(cache_module, "monotonic", lambda: clock[0])
    ttl_s = 0.4  # rows served 0.2 s after a read; due from 0.1 to 0.15 s
    store = ThreadedStore()
    cache = RowCache([PARTNER], ("partner",), [np.zeros(1)], ttl_s, seed=3, refresh=True)
    keys = [("a",), ("b",)]
    try:
        cache.rows(store.fetch, keys)
        clock[0] += 0.16  # due, not expired
        values, _ = cache.rows(store.fetch, keys)
        np.testing.assert_array_equal(values, [[1.0], [1.0]])  # answered from the cache at once
        cache.rows(store.fetch, keys)  # already handed over: not asked for twice
        cache.settle()
        assert store.reads == 2
        assert store.threads[0] == threading.get_ident() != store.threads[1]  # the second read: not this thread
        np.testing.assert_array_equal(cache.rows(store.fetch, keys)[0], [[2.0], [2.0]])
        assert cache.stats.rows_refreshed == 2
        assert cache.stats.rows_missed == 2  # only the first read was on the request path

        store.failing = True
        clock[0] += 0.16  # due again; the background read fails
        np.testing.assert_array_equal(cache.rows(store.fetch, keys)[0], [[2.0], [2.0]])
        cache.settle()
        assert len(store.threads) == 3 and store.threads[2] != threading.get_ident()  # tried, in the background
        clock[0] += 0.05  # past the last read's 0.2 s: never served older, read on the request path
        with pytest.raises(ConnectionError):
            cache.rows(store.fetch, keys)
        assert store.threads[-1] == threading.get_ident()
    finally:
        cache.close()


def test_a_background_read_asks_only_for_what_the_key_cache_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(cache_module, "monotonic", lambda: clock[0])
    store = ThreadedStore()
    defaults = [np.zeros(1), -np.ones(1)]
    cache = RowCache([PARTNER, PUBLISHER], ("partner", "publisher_id"), defaults, 0.4, seed=3, refresh=True)
    try:
        cache.rows(store.fetch, [("a", "p1")])  # keys a, p1 kept until 1000.2
        clock[0] = 1_000.19
        cache.rows(store.fetch, [("b", "p2")])  # b, p2 until 1000.39
        clock[0] = 1_000.21
        cache.rows(store.fetch, [("a", "p2")])  # a read again (until 1000.41); p2 from the key cache
        # Row (a, p2) lives until 1000.41 and is due from 1000.350 (seed 3). The read asks for the keys
        # that lapse within ttl/8 (0.05 s): p2 (at 1000.39), not a (at 1000.41).
        clock[0] = 1_000.355
        read = len(store.keys_read)
        cache.rows(store.fetch, [("a", "p2")])
        cache.settle()
        assert store.keys_read[read:] == [("publisher_stats", "p2")]  # a is fresh enough: not asked for
        assert cache.stats.rows_refreshed == 1
    finally:
        cache.close()


def test_the_context_memo_serves_the_row_caches_rows_until_one_may_change(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(cache_module, "monotonic", lambda: clock[0])
    store = Store()
    cache = RowCache([PARTNER, PUBLISHER], ("partner", "publisher_id"), [np.zeros(1), -np.ones(1)], 0.4, seed=3)
    memo = ContextMemo(np.array([np.inf, np.inf]), np.array([0, 1]), np.array([0.0, -1.0]))
    keys = [("a", "p1"), ("b", "p1")]
    values, seconds = cache.rows(store.fetch, keys)
    memo.put(("p1",), ["a", "b"], values, seconds, cache.until(keys))
    assert memo.get(("p1",), ["a"], 5_000.0) is None  # a context read once is not kept
    memo.put(("p1",), ["a", "b"], values, seconds, cache.until(keys))
    values[:] = 9.0  # the memo keeps its own copy
    np.testing.assert_array_equal(memo.get(("p1",), ["b", "a", "b"], 5_000.0), [[1.0, -1.0]] * 3)
    assert memo.get(("p1",), ["a", "c"], 5_000.0) is None  # a partner it does not hold
    assert memo.get(("p2",), ["a"], 5_000.0) is None  # a context it does not hold
    # A later read adds its new partners to the context (rows of another fill: the sooner expiry holds).
    more = [("c", "p1"), ("a", "p1")]
    clock[0] += 0.05
    memo.put(("p1",), ["c", "a"], *cache.rows(store.fetch, more), cache.until(more))
    np.testing.assert_array_equal(memo.get(("p1",), ["c", "b"], 5_000.0), [[2.0, -1.0], [1.0, -1.0]])
    # Once one of its rows may have changed in the row cache, the memo no longer answers.
    clock[0] = cache.until(keys + more)
    assert memo.get(("p1",), ["a"], 5_000.0) is None


def test_the_context_memo_applies_the_ttl_at_each_request_time() -> None:
    memo = ContextMemo(np.array([100.0, 50.0]), np.array([0, 0, 1]), np.array([0.0, 0.0, -1.0]))
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    seconds = np.array([[1_000.0, 1_000.0], [1_020.0, 1_000.0]])  # per row and view
    for _ in range(2):  # kept from the second read on
        memo.put(("ctx",), ["a", "b"], values, seconds, until=np.inf)
    np.testing.assert_array_equal(memo.get(("ctx",), ["a", "b"], 1_050.0), values)  # nothing past its ttl
    np.testing.assert_array_equal(memo.get(("ctx",), ["a", "b"], 1_050.5), [[1.0, 2.0, -1.0], [4.0, 5.0, -1.0]])
    np.testing.assert_array_equal(memo.get(("ctx",), ["a", "b"], 1_100.5), [[0.0, 0.0, -1.0], [4.0, 5.0, -1.0]])
    np.testing.assert_array_equal(memo.get(("ctx",), ["b"], 1_120.0), [[4.0, 5.0, -1.0]])  # exactly at b's bound
    np.testing.assert_array_equal(memo.get(("ctx",), ["b"], 1_120.5), [[0.0, 0.0, -1.0]])
    np.testing.assert_array_equal(memo.get(("ctx",), ["a", "b"], 1_000.0), values)  # times may go back too

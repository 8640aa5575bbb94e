"""The budget store's hot path on the wire: one held Redis connection, commands packed as RESP bytes.

A bid makes two Redis calls (read the state, run the reserve script). Through redis-py's command
methods each costs about three times the round trip itself in Python work: taking a connection
from the pool and giving it back, packing the arguments one by one, the script object's own
checks. Here the commands' constant parts (keys, field names, the script's SHA and the plan) are
packed once, the few variable arguments per call, and the bytes go out on one connection the
store holds; redis-py still connects, bounds every wait and parses the reply (as
``bidflow.features.online_redis`` does for the feature store).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    """A whole RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


class Script:
    """``EVALSHA`` of one script over fixed keys, its arguments split into a per-call head and a fixed tail.

    Args:
        source: the Lua source.
        keys: the script's keys.
        head: how many arguments each call gives (they come first).
        tail: the fixed arguments after them.
    """

    def __init__(self, source: str, keys: Sequence[str], head: int, tail: Sequence[bytes] = ()) -> None:
        self.source = source
        sha = hashlib.sha1(source.encode()).hexdigest().encode()
        self._start = b"*%d\r\n" % (3 + len(keys) + head + len(tail)) + bulk(b"EVALSHA") + bulk(sha)
        self._start += bulk(b"%d" % len(keys)) + b"".join(bulk(k.encode()) for k in keys)
        self._end = b"".join(bulk(a) for a in tail)
        self._head = head

    def packed(self, *args: bytes) -> list[bytes]:
        """The command for one call (``args``: the per-call arguments, in order), as one buffer: redis-py
        sends each item of the list with its own ``sendall``, a system call and a TCP segment each."""
        assert len(args) == self._head
        return [b"".join((self._start, *(bulk(a) for a in args), self._end))]


class Wire:
    """One connection of ``client`` held for packed commands; safe to share between threads (a lock).

    A reply that does not come in time leaves the connection out of step with the server, so any
    failure drops it and the next call connects again.
    """

    def __init__(self, client: redis.Redis, scripts: Sequence[Script]) -> None:
        self._client = client
        self._scripts = scripts
        self._connection: Any = client.connection_pool.make_connection()
        self._lock = threading.Lock()

    def call(self, packed: list[bytes]) -> Any:
        """Send ``packed``, return the reply; a script Redis forgot (a restart, ``SCRIPT FLUSH``) is loaded again."""
        from redis.exceptions import NoScriptError

        with self._lock:
            try:
                return self._send(packed)
            except NoScriptError:
                for script in self._scripts:
                    self._client.script_load(script.source)
                return self._send(packed)

    def _send(self, packed: list[bytes]) -> Any:
        from redis.exceptions import ResponseError

        connection = self._connection
        try:
            connection.send_packed_command(packed, check_health=False)
            return connection.read_response()
        except ResponseError:
            raise  # an error reply was read whole: the connection is still in step
        except BaseException:
            connection.disconnect()
            raise

    def close(self) -> None:
        with self._lock:
            self._connection.disconnect()

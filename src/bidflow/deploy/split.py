"""Which requests the canary gets: KServe's ``canaryTrafficPercent``, made deterministic.

KServe (Knative) splits by chance per request. Locally the split hashes the request id instead, so
a replay of the same traffic sends the same auctions to the canary: a drift found in a replay can
be found again. The salt differs from the exploration share's (``bidflow.modeling.economics``), so
the canary's slice of traffic explores at the same rate as the champion's.
"""

from __future__ import annotations

import hashlib
from typing import Final

from bidflow.deploy.backend import Role

SPLIT_SALT: Final = b"bidflow/canary-split/v1:"


def split_bucket(request_id: str) -> int:
    """0-99, fixed by the request id (salted SHA-256)."""
    digest = hashlib.sha256(SPLIT_SALT + request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def route(request_id: str, canary_percent: int) -> Role:
    """``canary`` for ``canary_percent`` % of request ids, else ``champion``."""
    if canary_percent <= 0:
        return "champion"
    if canary_percent >= 100:
        return "canary"
    return "canary" if split_bucket(request_id) < canary_percent else "champion"

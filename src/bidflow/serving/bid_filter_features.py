"""How the bid filter's model server reads its FeatureService: one row per candidate partner, one auction context.

An auction asks the store about every demand partner it could call, and every other join key of the
bid filter's views (publisher, country, format, device type) is the auction's own, shared by all
those rows. Telling the generic reader so (``LAYOUT``) lets it answer an auction through
``OnlineFeatureReader.features(partners, publisher_id, country, format, device_type, at=...)`` and,
with a cache, keep each context's final rows, so a repeated context costs one probe per partner.
"""

from __future__ import annotations

from typing import Final

from bidflow.features.online import RowLayout
from bidflow.kinds.bid_filter import PARTNER

CONTEXT: Final = ("publisher_id", "country", "format", "device_type")
"""The auction's join keys, in the order ``GuardedReader.bid_filter`` passes their values."""

LAYOUT: Final = RowLayout(row_key=PARTNER, context=CONTEXT)

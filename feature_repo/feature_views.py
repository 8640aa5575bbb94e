"""Feature views: explicit schemas over the offline sources, with the ttl of their rows.

Every feature row is stamped at the end of the window it summarises, once per hour while the
entity had any traffic in its longest window. A row is therefore superseded after one hour;
``ttl`` is two hours so that one late hourly build does not blank every feature, while a row
older than that (the entity went quiet for a day, or the pipeline stopped) is treated as missing.
Point-in-time joins honour ttl offline; ``bidflow.features.online`` applies the same rule online.

Each feature carries a ``default`` tag: the value training sets and the online reader both use
when an entity has no (live) row. Counts default to 0 (nothing was seen); rates and means to NaN
(undefined; XGBoost learns which way missing values go). Changing a default here changes it for
training and serving at once: neither side has its own list.
"""

from datetime import timedelta

from entities import (
    ad_format,
    adexchange,
    click_app,
    click_device,
    click_ip,
    click_os,
    country,
    ctr_region,
    device_type,
    domain,
    partner,
    publisher,
    slot,
)
from feast import FeatureView, Field
from feast.types import Float64, Int64, String
from sources import (
    ctr_adexchange_stats_source,
    ctr_domain_stats_source,
    ctr_region_stats_source,
    ctr_slot_stats_source,
    fraud_ip_app_velocity_push,
    fraud_ip_device_os_velocity_push,
    fraud_ip_velocity_push,
    partner_country_stats_source,
    partner_device_stats_source,
    partner_format_stats_source,
    partner_publisher_stats_source,
    partner_stats_source,
    publisher_stats_source,
)

HOURLY_TTL = timedelta(hours=2)
DEFAULT_TAG = "default"


def _count(name: str, description: str) -> Field:
    return Field(name=name, dtype=Int64, description=description, tags={DEFAULT_TAG: "0"})


def _ratio(name: str, description: str) -> Field:
    return Field(name=name, dtype=Float64, description=description, tags={DEFAULT_TAG: "nan"})


def _call_window(window: str) -> list[Field]:
    """Outcomes of the calls to a partner within a slice, over one trailing window."""
    return [
        _count(f"calls_{window}", f"partner calls in the trailing {window}"),
        _ratio(f"bid_rate_{window}", f"bids / calls over {window}, shrunk towards the partner's 24 h rate"),
        _ratio(f"mean_price_{window}", f"mean bid CPM over {window}, shrunk towards the partner's 24 h mean"),
    ]


def _partner_window(window: str) -> list[Field]:
    return [
        *_call_window(window),
        _ratio(f"timeout_rate_{window}", f"timeouts / calls over {window}, shrunk towards all partners"),
        _ratio(f"error_rate_{window}", f"errors / calls over {window}, shrunk towards all partners"),
        _ratio(f"mean_latency_ms_{window}", f"mean response time over {window}, shrunk towards all partners"),
    ]


def _ctr_window(window: str) -> list[Field]:
    return [
        _count(f"impressions_{window}", f"impressions in the trailing {window}"),
        _count(f"clicks_{window}", f"clicks in the trailing {window}"),
        _ratio(f"ctr_{window}", f"clicks / impressions over {window}, shrunk towards the global CTR"),
    ]


PARTNER = Field(name="partner", dtype=String)
PUBLISHER = Field(name="publisher_id", dtype=String)

# --- bid filter -------------------------------------------------------------------------------
partner_stats = FeatureView(
    name="partner_stats",
    entities=[partner],
    ttl=HOURLY_TTL,
    schema=[PARTNER, *_partner_window("1h"), *_partner_window("24h")],
    source=partner_stats_source,
    description="How each partner answers overall: bid, timeout and error rates, price, latency.",
)
partner_publisher_stats = FeatureView(
    name="partner_publisher_stats",
    entities=[partner, publisher],
    ttl=HOURLY_TTL,
    schema=[PARTNER, PUBLISHER, *_call_window("1h"), *_call_window("24h")],
    source=partner_publisher_stats_source,
    description="Publisher affinity and floors as seen by each partner.",
)
partner_country_stats = FeatureView(
    name="partner_country_stats",
    entities=[partner, country],
    ttl=HOURLY_TTL,
    schema=[PARTNER, Field(name="country", dtype=String), *_call_window("1h"), *_call_window("24h")],
    source=partner_country_stats_source,
    description="Geo targeting of each partner.",
)
partner_format_stats = FeatureView(
    name="partner_format_stats",
    entities=[partner, ad_format],
    ttl=HOURLY_TTL,
    schema=[PARTNER, Field(name="format", dtype=String), *_call_window("1h"), *_call_window("24h")],
    source=partner_format_stats_source,
    description="Which formats each partner buys.",
)
partner_device_stats = FeatureView(
    name="partner_device_stats",
    entities=[partner, device_type],
    ttl=HOURLY_TTL,
    schema=[PARTNER, Field(name="device_type", dtype=Int64), *_call_window("1h"), *_call_window("24h")],
    source=partner_device_stats_source,
    description="Device targeting of each partner.",
)
publisher_stats = FeatureView(
    name="publisher_stats",
    entities=[publisher],
    ttl=HOURLY_TTL,
    schema=[
        PUBLISHER,
        _count("auctions_1h", "auctions of the publisher in the trailing 1 h"),
        _count("auctions_24h", "auctions of the publisher in the trailing 24 h"),
        _ratio("fill_rate_24h", "share of auctions with at least one bid, shrunk towards all publishers"),
        _ratio("floor_mean_24h", "mean bid floor (CPM, 0 when absent) over 24 h"),
        _ratio("floor_std_24h", "standard deviation of the bid floor over 24 h"),
        _ratio("floored_share_24h", "share of auctions with a floor above 0 over 24 h"),
    ],
    source=publisher_stats_source,
    description="Publisher-level traffic, fill and floor statistics (partner independent).",
)

# --- CTR (iPinYou campaign 2997) --------------------------------------------------------------
ctr_domain_stats = FeatureView(
    name="ctr_domain_stats",
    entities=[domain],
    ttl=HOURLY_TTL,
    schema=[Field(name="domain", dtype=String), *_ctr_window("1h"), *_ctr_window("24h")],
    source=ctr_domain_stats_source,
    description="Historical CTR per domain.",
)
ctr_slot_stats = FeatureView(
    name="ctr_slot_stats",
    entities=[slot],
    ttl=HOURLY_TTL,
    schema=[Field(name="slotid", dtype=String), *_ctr_window("1h"), *_ctr_window("24h")],
    source=ctr_slot_stats_source,
    description="Historical CTR per ad slot.",
)
ctr_region_stats = FeatureView(
    name="ctr_region_stats",
    entities=[ctr_region],
    ttl=HOURLY_TTL,
    schema=[Field(name="region", dtype=String), *_ctr_window("1h"), *_ctr_window("24h")],
    source=ctr_region_stats_source,
    description="Historical CTR per region.",
)
ctr_adexchange_stats = FeatureView(
    name="ctr_adexchange_stats",
    entities=[adexchange],
    ttl=HOURLY_TTL,
    schema=[Field(name="adexchange", dtype=String), *_ctr_window("1h"), *_ctr_window("24h")],
    source=ctr_adexchange_stats_source,
    description="Historical CTR per ad exchange.",
)

# --- fraud: streaming click velocity (TalkingData) --------------------------------------------
# Written by the stream processor within seconds of each click; a row is the key's windows as of its
# latest click (bidflow.features.velocity). After 24 h without a click every window is empty, so the
# ttl's defaults are then the exact values (seconds_since_previous: NaN, no click within 24 h).
VELOCITY_TTL = timedelta(days=1)
IP = Field(name="ip", dtype=Int64)

fraud_ip_velocity = FeatureView(
    name="fraud_ip_velocity",
    entities=[click_ip],
    ttl=VELOCITY_TTL,
    schema=[
        IP,
        _count("clicks_10m", "clicks of the IP in the 10 min up to its latest click"),
        _count("clicks_24h", "clicks of the IP in the 24 h up to its latest click"),
        _count("distinct_apps_24h", "apps the IP clicked on in those 24 h"),
    ],
    source=fraud_ip_velocity_push,
    description="Click velocity per IP.",
)
fraud_ip_app_velocity = FeatureView(
    name="fraud_ip_app_velocity",
    entities=[click_ip, click_app],
    ttl=VELOCITY_TTL,
    schema=[
        IP,
        Field(name="app", dtype=Int64),
        _count("clicks_10m", "clicks of the IP on the app in the 10 min up to its latest one"),
        _count("clicks_24h", "clicks of the IP on the app in the 24 h up to its latest one"),
    ],
    source=fraud_ip_app_velocity_push,
    description="Click velocity per IP x app.",
)
fraud_ip_device_os_velocity = FeatureView(
    name="fraud_ip_device_os_velocity",
    entities=[click_ip, click_device, click_os],
    ttl=VELOCITY_TTL,
    schema=[
        IP,
        Field(name="device", dtype=Int64),
        Field(name="os", dtype=Int64),
        _count("clicks_10m", "clicks of the IP x device x os in the 10 min up to its latest one"),
        _count("clicks_24h", "clicks of the IP x device x os in the 24 h up to its latest one"),
        _ratio("seconds_since_previous", "seconds between its latest two clicks (NaN: none within 24 h)"),
    ],
    source=fraud_ip_device_os_velocity_push,
    description="Click velocity per IP x device x os (one user behind a NAT, roughly).",
)

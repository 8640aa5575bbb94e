"""Feast entities: the keys features are looked up by.

Join keys are the column names of the ingested auction rows (``bidflow.data.ingest``), so an
entity frame for training is just those rows, and the model server passes the fields it already
has. ``device_type`` is an OpenRTB integer code: it is declared INT64 because Feast turns a
Python ``int`` given to ``get_online_features`` into an INT64 key, and a key type that differed
from the materialized one would silently find nothing.
"""

from feast import Entity, ValueType

# --- bid filter: will partner D bid on request R? -------------------------------------------
partner = Entity(
    name="partner",
    join_keys=["partner"],
    value_type=ValueType.STRING,
    description="Demand partner (bidder) the exchange may call.",
)
publisher = Entity(
    name="publisher",
    join_keys=["publisher_id"],
    value_type=ValueType.STRING,
    description="Publisher of the site/app/screen the request comes from.",
)
country = Entity(
    name="country",
    join_keys=["country"],
    value_type=ValueType.STRING,
    description="ISO-3166-1 alpha-3 country of the device ('unknown' when absent).",
)
ad_format = Entity(
    name="ad_format",
    join_keys=["format"],
    value_type=ValueType.STRING,
    description="Impression format: banner | video | native | audio | unknown.",
)
device_type = Entity(
    name="device_type",
    join_keys=["device_type"],
    value_type=ValueType.INT64,
    description="OpenRTB device type code (0 when absent).",
)

# --- CTR (iPinYou campaign 2997) --------------------------------------------------------------
# Values are the CSV's strings (hashed domains, slot ids, numeric region codes, 'null', 'other').
domain = Entity(name="domain", join_keys=["domain"], value_type=ValueType.STRING, description="Site domain (hashed).")
slot = Entity(name="slot", join_keys=["slotid"], value_type=ValueType.STRING, description="Ad slot id.")
ctr_region = Entity(
    name="ctr_region",
    join_keys=["region"],
    value_type=ValueType.STRING,
    description="iPinYou region code of the user's IP.",
)
adexchange = Entity(
    name="adexchange", join_keys=["adexchange"], value_type=ValueType.STRING, description="Ad exchange id."
)

# --- fraud (TalkingData clicks) ----------------------------------------------------------------
# TalkingData encodes every id as an integer; the stream processor writes them as INT64 keys.
click_ip = Entity(name="click_ip", join_keys=["ip"], value_type=ValueType.INT64, description="IP of a click.")
click_app = Entity(name="click_app", join_keys=["app"], value_type=ValueType.INT64, description="App advertised.")
click_device = Entity(
    name="click_device", join_keys=["device"], value_type=ValueType.INT64, description="Device type of a click."
)
click_os = Entity(name="click_os", join_keys=["os"], value_type=ValueType.INT64, description="OS version of a click.")

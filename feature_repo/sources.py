"""Offline sources: one parquet file per feature table, written by ``bidflow features build``.

Where the files live is deployment configuration, not a definition, so the base location comes
from the environment variable ``BIDFLOW_FEATURES_OFFLINE_URI``:

* unset: ``data/offline/<table>.parquet``, a relative path that Feast resolves against the
  folder of the ``feature_store.yaml`` in use (``FileSource.get_uri_for_file_path``);
* a local folder (``bidflow features apply`` sets it from the ``features.offline`` setting, made
  absolute, so tests point it at a temporary folder);
* ``s3://bucket/prefix`` in production (remote URIs are kept as they are by Feast).

The path is captured when the definitions are applied: the registry stores it, and every later
``get_historical_features`` / ``materialize`` reads from there, whatever the environment says then.
The table names are the file names ``bidflow.features.build`` writes (a unit test checks both sides).
"""

import os

from feast import FileSource, PushSource

OFFLINE_URI_ENV = "BIDFLOW_FEATURES_OFFLINE_URI"
DEFAULT_OFFLINE_DIR = "data/offline"
TIMESTAMP_FIELD = "event_timestamp"


def offline_uri(table: str) -> str:
    """Location of ``table``'s parquet file under the configured base."""
    base = os.environ.get(OFFLINE_URI_ENV, "").strip().rstrip("/")
    return f"{base or DEFAULT_OFFLINE_DIR}/{table}.parquet"


def _source(table: str, description: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=offline_uri(table),
        timestamp_field=TIMESTAMP_FIELD,
        description=description,
    )


# Rows are stamped at the END of the window they summarise (hour H covers [H-w, H)).
partner_stats_source = _source("partner_stats", "Per partner, trailing 1 h / 24 h call outcomes.")
partner_publisher_stats_source = _source("partner_publisher_stats", "Per partner x publisher, trailing windows.")
partner_country_stats_source = _source("partner_country_stats", "Per partner x country, trailing windows.")
partner_format_stats_source = _source("partner_format_stats", "Per partner x format, trailing windows.")
partner_device_stats_source = _source("partner_device_stats", "Per partner x device type, trailing windows.")
publisher_stats_source = _source("publisher_stats", "Per publisher auctions, fill and floor statistics.")

ctr_domain_stats_source = _source("ctr_domain_stats", "iPinYou 2997: impressions and CTR per domain.")
ctr_slot_stats_source = _source("ctr_slot_stats", "iPinYou 2997: impressions and CTR per ad slot.")
ctr_region_stats_source = _source("ctr_region_stats", "iPinYou 2997: impressions and CTR per region.")
ctr_adexchange_stats_source = _source("ctr_adexchange_stats", "iPinYou 2997: impressions and CTR per exchange.")


# Streaming velocity features (bidflow.features.streaming): the processor writes the online store;
# the same rows, computed offline (bidflow.features.velocity), are the push sources' batch sources.
# Rows are stamped at the key's latest click, not at a window end.
def _push(table: str, description: str) -> PushSource:
    return PushSource(name=f"{table}_push", batch_source=_source(table, description))


fraud_ip_velocity_push = _push("fraud_ip_velocity", "Per IP: clicks over 10 min / 24 h, distinct apps.")
fraud_ip_app_velocity_push = _push("fraud_ip_app_velocity", "Per IP x app: clicks over 10 min / 24 h.")
fraud_ip_device_os_velocity_push = _push(
    "fraud_ip_device_os_velocity", "Per IP x device x os: clicks over 10 min / 24 h, gap to the previous click."
)

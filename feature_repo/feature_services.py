"""One FeatureService per model: training sets and online reads both go through these."""

from feast import FeatureService
from feature_views import (
    ctr_adexchange_stats,
    ctr_domain_stats,
    ctr_region_stats,
    ctr_slot_stats,
    fraud_ip_app_velocity,
    fraud_ip_device_os_velocity,
    fraud_ip_velocity,
    partner_country_stats,
    partner_device_stats,
    partner_format_stats,
    partner_publisher_stats,
    partner_stats,
    publisher_stats,
)

bid_filter = FeatureService(
    name="bid_filter",
    features=[
        partner_stats,
        partner_publisher_stats,
        partner_country_stats,
        partner_format_stats,
        partner_device_stats,
        publisher_stats,
    ],
    description="Will partner D bid on request R: keys partner, publisher_id, country, format, device_type.",
)

ctr = FeatureService(
    name="ctr",
    features=[ctr_domain_stats, ctr_slot_stats, ctr_region_stats, ctr_adexchange_stats],
    description="CTR model on iPinYou campaign 2997: keys domain, slotid, region, adexchange.",
)

fraud = FeatureService(
    name="fraud",
    features=[fraud_ip_velocity, fraud_ip_app_velocity, fraud_ip_device_os_velocity],
    description="Fraud (invalid click) model on TalkingData: keys ip, app, device, os; streaming velocity.",
)

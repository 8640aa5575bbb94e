"""The one transform from an OpenRTB bid request to model features.

Training (``bidflow ingest`` writes these columns to parquet) and serving (the model server
scores a live request) both call ``request_features``; nothing else derives request
features, so the two can never disagree. Partner-level and aggregated features (bid
rates per partner x publisher, ...) come from the feature store, keyed by
``publisher_id``, ``country``, ``format`` and the partner.

Missing values get fixed defaults (``UNKNOWN`` for text, 0 for codes and the floor),
because training must see exactly what serving will send for an incomplete request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from bidflow.openrtb.model import BidRequest, Imp, Publisher

UNKNOWN: Final = "unknown"
_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000


class RequestFeatures(msgspec.Struct, frozen=True, kw_only=True, gc=False):  # scalars only: no cycles
    """Features of one bid request (its first impression), independent of the partner."""

    channel: str  # site | app | dooh | unknown
    publisher_id: str
    category: str  # first IAB content category of the site/app
    format: str  # video | audio | native | banner | unknown (in that priority for multi-format imps)
    ad_size: str  # "300x250"; "native"/"audio" where a size does not apply
    interstitial: int
    rewarded: int
    bidfloor: float  # CPM in the request's currency; 0 when absent
    device_type: int  # OpenRTB device type code; 0 when absent
    os: str
    country: str  # ISO-3166-1 alpha-3
    region: str
    connection_type: int
    has_user_id: int
    gdpr: int
    coppa: int
    tmax: int
    secure: int
    hour_of_day: int  # UTC
    day_of_week: int  # 0 = Monday


FEATURE_NAMES: Final = RequestFeatures.__struct_fields__
CATEGORICAL_FEATURES: Final = tuple(name for name, kind in RequestFeatures.__annotations__.items() if kind == "str")
NUMERIC_FEATURES: Final = tuple(name for name in FEATURE_NAMES if name not in CATEGORICAL_FEATURES)


def request_features(req: BidRequest, ts_ms: int) -> RequestFeatures:
    """Features of ``req`` seen at ``ts_ms`` (epoch milliseconds, UTC)."""
    imp = req.imp[0]
    fmt, size = _format_and_size(imp)
    channel, inventory_id, publisher, categories = _inventory(req)
    device = req.device
    geo = device.geo if device is not None and device.geo is not None else None
    if geo is None and req.user is not None:
        geo = req.user.geo
    return RequestFeatures(
        channel=channel,
        publisher_id=(publisher.id if publisher is not None and publisher.id else None) or inventory_id or UNKNOWN,
        category=categories[0] if categories else UNKNOWN,
        format=fmt,
        ad_size=size,
        interstitial=imp.instl or 0,
        rewarded=imp.rwdd or 0,
        bidfloor=float(imp.bidfloor or 0.0),
        device_type=(device.devicetype or 0) if device is not None else 0,
        os=(device.os or UNKNOWN) if device is not None else UNKNOWN,
        country=(geo.country or UNKNOWN) if geo is not None else UNKNOWN,
        region=(geo.region or UNKNOWN) if geo is not None else UNKNOWN,
        connection_type=(device.connectiontype or 0) if device is not None else 0,
        has_user_id=1 if req.user is not None and (req.user.id or req.user.buyeruid) else 0,
        gdpr=_gdpr(req),
        coppa=(req.regs.coppa or 0) if req.regs is not None else 0,
        tmax=req.tmax or 0,
        secure=imp.secure or 0,
        hour_of_day=(ts_ms // _MS_PER_HOUR) % 24,
        day_of_week=(ts_ms // _MS_PER_DAY + 3) % 7,  # 1970-01-01 was a Thursday
    )


def _format_and_size(imp: Imp) -> tuple[str, str]:
    if imp.video is not None:
        return "video", _size(imp.video.w, imp.video.h)
    if imp.audio is not None:
        return "audio", "audio"
    if imp.native is not None:
        return "native", "native"
    if imp.banner is not None:
        banner = imp.banner
        if banner.w and banner.h:
            return "banner", _size(banner.w, banner.h)
        if banner.format:
            return "banner", _size(banner.format[0].w, banner.format[0].h)
        return "banner", UNKNOWN
    return UNKNOWN, UNKNOWN


def _size(w: int | None, h: int | None) -> str:
    return f"{w}x{h}" if w and h else UNKNOWN


def _inventory(req: BidRequest) -> tuple[str, str | None, Publisher | None, list[str] | None]:
    """Channel, inventory id, publisher and content categories of the site, app or DOOH screen."""
    if req.site is not None:
        return "site", req.site.id, req.site.publisher, req.site.cat
    if req.app is not None:
        return "app", req.app.id, req.app.publisher, req.app.cat
    if req.dooh is not None:
        return "dooh", req.dooh.id, req.dooh.publisher, None
    return UNKNOWN, None, None, None


def _gdpr(req: BidRequest) -> int:
    regs = req.regs
    if regs is None:
        return 0
    if regs.gdpr is not None:
        return regs.gdpr
    if regs.ext is not None and isinstance(regs.ext.get("gdpr"), int):
        return int(regs.ext["gdpr"])  # OpenRTB 2.5 carried it in regs.ext
    return 0

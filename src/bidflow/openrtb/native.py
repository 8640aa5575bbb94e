"""The Native Ads request (1.0-1.2) carried as a JSON string in ``imp.native.request``.

OpenRTB 2.x does not define this object; the IAB "OpenRTB Dynamic Native Ads API" 1.x does.
Only what the rules check is typed here; everything else is tolerated and ignored.

The checks follow Native 1.2 section 4 and the stricter conventions Prebid Server enforces at
its auction endpoint (the ``invalid-native`` fixtures): non-empty ``assets``, exactly one of
``title``/``img``/``video``/``data`` per asset, asset ids all present and unique or all absent,
context/subtype/placement/event/method codes from the spec's lists or the exchange-specific range
(500 and above).
"""

from __future__ import annotations

from typing import Any

import msgspec

from bidflow.errors import OpenRTBError
from bidflow.openrtb._common import fail

# Codes from 500 up are "exchange-specific" in every Native 1.2 list.
EXCHANGE_SPECIFIC = 500

# Native 1.2 context subtype ranges by context type (table 7.2): 1x content, 2x social, 3x product.
_SUBTYPE_RANGES = {1: range(10, 20), 2: range(20, 30), 3: range(30, 40)}
# Subtypes actually defined by the spec (10-15, 20-22, 30-32); anything else below 500 is invalid.
_DEFINED_SUBTYPES = frozenset((*range(10, 16), 20, 21, 22, 30, 31, 32))


class _Struct(msgspec.Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    ext: dict[str, Any] | None = None


class NativeTitle(_Struct):
    len: int | None = None


class NativeImage(_Struct):
    type: int | None = None
    w: int | None = None
    wmin: int | None = None
    h: int | None = None
    hmin: int | None = None
    mimes: list[str] | None = None


class NativeVideo(_Struct):
    mimes: list[str] | None = None
    minduration: int | None = None
    maxduration: int | None = None
    protocols: list[int] | None = None


class NativeData(_Struct):
    type: int | None = None
    len: int | None = None


class NativeAsset(_Struct):
    id: int | None = None
    required: int | None = None
    title: NativeTitle | None = None
    img: NativeImage | None = None
    video: NativeVideo | None = None
    data: NativeData | None = None


class EventTracker(_Struct):
    event: int | None = None
    methods: list[int] | None = None


class NativeRequest(_Struct):
    """Native 1.x request. ``native`` holds the body when 1.0's ``{"native": {...}}`` wrapper is used."""

    native: NativeRequest | None = None
    ver: str | None = None
    context: int | None = None
    contextsubtype: int | None = None
    plcmttype: int | None = None
    plcmtcnt: int | None = None
    seq: int | None = None
    assets: list[NativeAsset] | None = None
    aurlsupport: int | None = None
    durlsupport: int | None = None
    eventtrackers: list[EventTracker] | None = None
    privacy: int | None = None


_DECODER = msgspec.json.Decoder(NativeRequest)


def check_native_request(raw: str, path: str) -> None:
    """Raise ``OpenRTBError`` at ``path`` (the ``native.request`` string) if ``raw`` is not valid.

    The error ``path`` stays on the string itself, the last real JSON location in the bid
    request; the message names the location inside the native document.
    """
    if not raw:
        fail(path, "native.request is empty", expected="a JSON-encoded Native 1.x request object")
    try:
        doc = _DECODER.decode(raw)
    except msgspec.ValidationError as e:
        raise OpenRTBError(
            f"native.request does not match Native 1.x: {e}", path=path, expected="a Native 1.x request object"
        ) from e
    except (msgspec.DecodeError, UnicodeError, RecursionError) as e:
        raise OpenRTBError(
            f"native.request is not valid JSON: {e}", path=path, expected="a JSON-encoded Native 1.x request"
        ) from e
    if doc.native is not None and doc.assets is None:  # Native 1.0 wraps the body in {"native": ...}
        doc = doc.native
    _check_codes(doc, path)
    _check_assets(doc.assets, path)
    if doc.eventtrackers is not None:
        _check_eventtrackers(doc.eventtrackers, path)


def _check_codes(doc: NativeRequest, path: str) -> None:
    context = doc.context or 0  # context is only recommended: absent or 0 means "not given"
    if context and not (1 <= context <= 3 or context >= EXCHANGE_SPECIFIC):
        fail(
            path, "native.request.context is not a Native 1.2 context type", expected="1-3 or >= 500", got=str(context)
        )
    sub = doc.contextsubtype
    if sub is not None and sub != 0:
        if sub < 0 or (sub < EXCHANGE_SPECIFIC and sub not in _DEFINED_SUBTYPES):
            fail(
                path,
                "native.request.contextsubtype is not a Native 1.2 context subtype",
                expected="10-15, 20-22, 30-32 or >= 500",
                got=str(sub),
            )
        allowed = _SUBTYPE_RANGES.get(context)
        if allowed is not None and sub < EXCHANGE_SPECIFIC and sub not in allowed:
            fail(
                path,
                "native.request.contextsubtype does not belong to its context type",
                expected=f"a subtype in {allowed.start}-{allowed.stop - 1} for context {context}",
                got=str(sub),
            )
    plcmt = doc.plcmttype
    if plcmt and not (1 <= plcmt <= 4 or plcmt >= EXCHANGE_SPECIFIC):
        fail(
            path,
            "native.request.plcmttype is not a Native 1.2 placement type",
            expected="1-4 or >= 500",
            got=str(plcmt),
        )


def _check_assets(assets: list[NativeAsset] | None, path: str) -> None:
    if not assets:
        fail(path, "native.request.assets must contain at least one asset", got=repr(assets))
    with_id = sum(1 for a in assets if a.id is not None)
    if 0 < with_id < len(assets):
        fail(
            path,
            "native.request.assets: either every asset has an id or none has",
            got=f"{with_id} of {len(assets)} have one",
        )
    seen: set[int] = set()
    for k, asset in enumerate(assets):
        where = f"native.request.assets[{k}]"
        if asset.id is not None:
            if asset.id in seen:
                fail(path, f"{where}.id repeats an earlier asset id", expected="unique asset ids", got=str(asset.id))
            seen.add(asset.id)
        kinds = (
            (asset.title is not None) + (asset.img is not None) + (asset.video is not None) + (asset.data is not None)
        )
        if kinds != 1:
            fail(path, f"{where} must hold exactly one of title, img, video, data", got=f"{kinds} of them")
        if asset.title is not None:
            if asset.title.len is None or asset.title.len <= 0:
                fail(path, f"{where}.title.len must be a positive number", got=repr(asset.title.len))
        elif asset.img is not None:
            _check_image(asset.img, path, where)
        elif asset.video is not None:
            _check_video(asset.video, path, where)
        elif asset.data is not None:
            kind = asset.data.type
            if kind is None or not (1 <= kind <= 12 or kind >= EXCHANGE_SPECIFIC):
                fail(
                    path,
                    f"{where}.data.type is not a Native 1.2 data asset type",
                    expected="1-12 or >= 500",
                    got=repr(kind),
                )


def _check_image(img: NativeImage, path: str, where: str) -> None:
    for name in ("w", "h", "wmin", "hmin"):
        value = getattr(img, name)
        if value is not None and value < 0:
            fail(path, f"{where}.img.{name} must not be negative", got=str(value))


def _check_video(video: NativeVideo, path: str, where: str) -> None:
    if not video.mimes:
        fail(path, f"{where}.video.mimes must list at least one MIME type", got=repr(video.mimes))
    for name in ("minduration", "maxduration"):
        value = getattr(video, name)
        if value is None or value < 0:
            fail(path, f"{where}.video.{name} is required and must not be negative", got=repr(value))
    if not video.protocols:
        fail(path, f"{where}.video.protocols must list at least one protocol", got=repr(video.protocols))
    for p in video.protocols:
        # AdCOM "Creative Subtypes - Audio/Video": 1-10 (VAST 1.0 to DAAST 1.0 wrapper), 11-14 (VAST 4.1/4.2).
        if not (1 <= p <= 14 or p >= EXCHANGE_SPECIFIC):
            fail(path, f"{where}.video.protocols has an unknown protocol", expected="1-14 or >= 500", got=str(p))


def _check_eventtrackers(trackers: list[EventTracker], path: str) -> None:
    for k, tracker in enumerate(trackers):
        where = f"native.request.eventtrackers[{k}]"
        event = tracker.event
        if event is None or not (1 <= event <= 4 or event >= EXCHANGE_SPECIFIC):
            fail(path, f"{where}.event is not a Native 1.2 event type", expected="1-4 or >= 500", got=repr(event))
        if not tracker.methods:
            fail(path, f"{where}.methods must list at least one method", got=repr(tracker.methods))
        for m in tracker.methods:
            if not (1 <= m <= 2 or m >= EXCHANGE_SPECIFIC):
                fail(path, f"{where}.methods has an unknown tracking method", expected="1-2 or >= 500", got=str(m))

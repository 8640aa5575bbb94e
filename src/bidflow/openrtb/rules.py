"""Semantic rules of OpenRTB 2.6 that the types cannot say, plus Prebid Server's conventions.

``validate_request`` runs after decoding and raises ``OpenRTBError`` at the first broken rule,
with the JSON path of the offending value. The rules and where they come from:

* spec (2.5/2.6 section 3.2): at least one impression, unique impression ids, each impression offers
  at least one of banner/video/audio/native, video and audio list their MIME types, a deal has an
  id, at most one of site/app/dooh, 0/1 flags are 0 or 1, sizes/durations/bitrates/floors/tmax are
  not negative, ``regs.gdpr`` (and 2.5's ``regs.ext.gdpr``) is 0 or 1, ``native.request`` holds a
  valid Native 1.x request (see ``native.py``).
* Prebid Server (its auction-endpoint fixtures are our reference): a banner has a size (``w`` and
  ``h``, or a ``format`` entry) unless it is an interstitial; each ``format`` entry is either
  ``{w, h}`` or ``{wmin, wratio, hratio}``; ``geo.accuracy`` and device ``w``/``h``/``ppi`` are
  not negative; the ``ext.prebid`` conventions in ``prebid.py``.
* Only with a ``ValidationContext`` that says so (``auction_entry``): a site has an ``id`` or a
  ``page`` and a DOOH object an ``id`` or a ``venuetype`` (the spec only recommends these, and
  a fifth of the requests Prebid adapters send carry neither), one of site/app/dooh is present,
  every impression names a bidder, and banner ``wmin/wmax/hmin/hmax`` are refused. Also bidder
  names (``known_bidders``), stored requests (the stores) and bidder params.

The model server runs this for every auction, so the common path is a handful of attribute
reads per object and one path prefix per impression; the full JSON path and the message are only
built when a rule fails (about 3 µs per typical request, see bench/bench_openrtb_decode.py).
"""

from __future__ import annotations

from bidflow.openrtb import prebid
from bidflow.openrtb._common import fail
from bidflow.openrtb.context import DEFAULT_CONTEXT, ValidationContext
from bidflow.openrtb.model import Audio, Banner, BidRequest, Device, Format, Geo, Imp, Video
from bidflow.openrtb.native import check_native_request

_FLAG = (0, 1)
_BANNER_DEPRECATED = ("wmin", "wmax", "hmin", "hmax")


def validate_request(req: BidRequest, context: ValidationContext | None = None) -> None:
    """Raise ``OpenRTBError`` if ``req`` breaks a rule; ``context`` turns on the rules that need it."""
    ctx = DEFAULT_CONTEXT if context is None else context
    imps = req.imp
    if not imps:
        fail("$.imp", "request.imp must contain at least one impression", got="[]")
    _check_channel(req, ctx)
    if req.tmax is not None and req.tmax < 0:
        fail("$.tmax", "tmax must not be negative", got=str(req.tmax))
    _flags(req, "$", ("test", "allimps"))

    aliases = prebid.request_ext(req, ctx)
    screen = prebid.interstitial(req.device)
    if len(imps) > 1:
        _unique_imp_ids(imps)
    for i, imp in enumerate(imps):
        path = f"$.imp[{i}]"
        if ctx.auction_entry and imp.banner is not None:
            _refuse_deprecated_banner_sizes(imp.banner, f"{path}.banner")
        _check_imp(imp, path, screen, req.device)
        prebid.imp_ext(imp, path, ctx, aliases)

    if req.device is not None:
        _check_device(req.device)
    if req.user is not None:
        if req.user.geo is not None:
            _check_geo(req.user.geo, "$.user.geo")
        prebid.user_ext(req.user, ctx, aliases)
    regs = req.regs
    if regs is not None:
        _flags(regs, "$.regs", ("coppa", "gdpr"))
        if regs.ext:
            prebid.regs_ext_gdpr(regs.ext)
    if req.source is not None:
        _flags(req.source, "$.source", ("fd",))


def _check_channel(req: BidRequest, ctx: ValidationContext) -> None:
    site, app, dooh = req.site, req.app, req.dooh
    count = (site is not None) + (app is not None) + (dooh is not None)
    if count > 1:
        present = [name for name, obj in (("site", site), ("app", app), ("dooh", dooh)) if obj is not None]
        fail("$", "a request may carry only one of site, app, dooh", got=" and ".join(present))
    if count == 0 and ctx.auction_entry:
        fail("$", "the request names no distribution channel", expected="one of site, app, dooh")
    if site is not None:
        if ctx.auction_entry and not site.id and not site.page:
            fail("$.site", "site needs an id or a page", got="neither")
        _flags(site, "$.site", ("mobile", "privacypolicy"))
        if site.ext:
            prebid.site_ext(site.ext)
    elif app is not None:
        _flags(app, "$.app", ("paid", "privacypolicy"))
        if app.ext:
            prebid.app_ext(app.ext)
    elif dooh is not None and ctx.auction_entry and not dooh.id and not dooh.venuetype:
        fail("$.dooh", "dooh needs an id or a venuetype", got="neither")


def _unique_imp_ids(imps: list[Imp]) -> None:
    first: dict[str, int] = {}
    for i, imp in enumerate(imps):
        j = first.setdefault(imp.id, i)
        if j != i:
            fail(
                f"$.imp[{i}].id",
                f"impression id repeats $.imp[{j}].id; impression ids must be unique",
                got=repr(imp.id),
            )


def _check_imp(imp: Imp, path: str, screen: tuple[float, float] | None, device: Device | None) -> None:
    banner, video, audio, native = imp.banner, imp.video, imp.audio, imp.native
    if banner is None and video is None and audio is None and native is None:
        fail(path, "an impression must offer at least one of banner, video, audio, native", got="none of them")
    if imp.bidfloor is not None and imp.bidfloor < 0:
        fail(f"{path}.bidfloor", "bidfloor must not be negative", got=str(imp.bidfloor))
    if imp.exp is not None and imp.exp < 0:
        fail(f"{path}.exp", "exp must not be negative", got=str(imp.exp))
    _flags(imp, path, ("instl", "secure", "rwdd", "clickbrowser"))
    if banner is not None:
        _check_banner(banner, f"{path}.banner", interstitial=imp.instl == 1)
        if screen is not None and imp.instl == 1:
            _check_interstitial_sizes(banner, f"{path}.banner", device)
    if video is not None:
        _check_video(video, f"{path}.video")
    if audio is not None:
        _check_audio(audio, f"{path}.audio")
    if native is not None:
        check_native_request(native.request, f"{path}.native.request")
    if imp.pmp is not None:
        _flags(imp.pmp, f"{path}.pmp", ("private_auction",))
        for k, deal in enumerate(imp.pmp.deals or ()):
            if not deal.id:
                fail(f"{path}.pmp.deals[{k}].id", "a deal needs a non-empty id", got=repr(deal.id))
            if deal.bidfloor is not None and deal.bidfloor < 0:
                fail(f"{path}.pmp.deals[{k}].bidfloor", "bidfloor must not be negative", got=str(deal.bidfloor))


def _refuse_deprecated_banner_sizes(banner: Banner, path: str) -> None:
    # Prebid refuses these at its entry point rather than guess how to map a range onto formats.
    for name in _BANNER_DEPRECATED:
        if getattr(banner, name):
            fail(
                f"{path}.{name}",
                f"banner.{name} is not supported (deprecated in favour of format)",
                hint='use the "format" array instead',
            )


def _check_banner(banner: Banner, path: str, *, interstitial: bool) -> None:
    w, h = banner.w, banner.h
    if w is not None and w < 0:
        fail(f"{path}.w", "banner.w must not be negative", got=str(w))
    if h is not None and h < 0:
        fail(f"{path}.h", "banner.h must not be negative", got=str(h))
    formats = banner.format
    if not formats and not (w and h) and not interstitial:
        fail(
            path,
            "banner has no size",
            expected='"w" and "h", or at least one "format" entry',
            hint="interstitials (imp.instl = 1) may leave the size to the device",
        )
    if formats:
        for k, fmt in enumerate(formats):
            _check_format(fmt, f"{path}.format[{k}]")
    _flags(banner, path, ("topframe", "vcm"))


def _check_format(fmt: Format, path: str) -> None:
    # Prebid's reading of the 2.5 spec: a format is a fixed size or a flexible ratio, never both,
    # and whichever it is must be complete (non-zero).
    for name in ("w", "h", "wratio", "hratio", "wmin"):
        value = getattr(fmt, name)
        if value is not None and value < 0:
            fail(f"{path}.{name}", f"format.{name} must not be negative", got=str(value))
    fixed = bool(fmt.w or fmt.h)
    ratio = bool(fmt.wmin or fmt.wratio or fmt.hratio)
    if fixed and ratio:
        fail(path, "a format is either {w, h} or {wmin, wratio, hratio}, not both", hint="send two format objects")
    if not fixed and not ratio:
        fail(path, "a format needs non-zero {w, h} or non-zero {wmin, wratio, hratio}", got="all zero or absent")
    if fixed and not (fmt.w and fmt.h):
        fail(path, "a fixed-size format needs non-zero w and h", got=f"w={fmt.w!r}, h={fmt.h!r}")
    if ratio and not (fmt.wmin and fmt.wratio and fmt.hratio):
        fail(
            path,
            "a flexible format needs non-zero wmin, wratio and hratio",
            got=f"wmin={fmt.wmin!r}, wratio={fmt.wratio!r}, hratio={fmt.hratio!r}",
        )


def _check_interstitial_sizes(banner: Banner, path: str, device: Device | None) -> None:
    # Prebid derives the interstitial size list from the one given size, or else from the screen
    # (device.w/h); with neither there is nothing to derive it from. More than one format means
    # the sizes are already listed.
    if banner.format and len(banner.format) > 1:
        return
    if banner.format:
        w, h = banner.format[0].w or 0, banner.format[0].h or 0
    else:
        w, h = banner.w or 0, banner.h or 0
    if (w < 2 or h < 2) and device is not None:
        w, h = device.w or 0, device.h or 0
    if w < 2 or h < 2:
        fail(
            path,
            "cannot derive interstitial sizes: no banner size and no device.w/device.h",
            hint="give the banner a size, or the device its screen size",
        )


def _check_video(video: Video, path: str) -> None:
    if not video.mimes:
        fail(f"{path}.mimes", "video.mimes must list at least one MIME type", got=repr(video.mimes))
    _non_negative(
        video,
        path,
        ("w", "h", "minduration", "maxduration", "minbitrate", "maxbitrate", "poddur", "maxseq", "sequence"),
    )
    _durations(video.minduration, video.maxduration, path)
    _flags(video, path, ("boxingallowed", "skip"))


def _check_audio(audio: Audio, path: str) -> None:
    if not audio.mimes:
        fail(f"{path}.mimes", "audio.mimes must list at least one MIME type", got=repr(audio.mimes))
    _non_negative(
        audio, path, ("minduration", "maxduration", "minbitrate", "maxbitrate", "poddur", "maxseq", "sequence")
    )
    _durations(audio.minduration, audio.maxduration, path)
    _flags(audio, path, ("stitched",))


def _durations(lo: int | None, hi: int | None, path: str) -> None:
    if lo is not None and hi is not None and hi > 0 and lo > hi:
        fail(f"{path}.minduration", "minduration is larger than maxduration", got=f"{lo} > {hi}")


def _check_device(device: Device) -> None:
    _non_negative(device, "$.device", ("w", "h", "ppi"))
    if device.pxratio is not None and device.pxratio < 0:
        fail("$.device.pxratio", "device.pxratio must not be negative", got=str(device.pxratio))
    _flags(device, "$.device", ("dnt", "lmt", "js", "geofetch"))
    if device.geo is not None:
        _check_geo(device.geo, "$.device.geo")


def _check_geo(geo: Geo, path: str) -> None:
    # Note: lat/lon ranges are deliberately not checked: Prebid accepts lat 123.456 in its own
    # valid fixtures, and a bad coordinate is a data-quality issue, not a malformed request.
    if geo.accuracy is not None and geo.accuracy < 0:
        fail(f"{path}.accuracy", "geo.accuracy must not be negative", got=str(geo.accuracy))


def _non_negative(obj: object, path: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 0:
            fail(f"{path}.{name}", f"{name} must not be negative", got=str(value))


def _flags(obj: object, path: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value not in _FLAG:
            fail(f"{path}.{name}", f"{name} is a flag: 0 or 1", got=str(value))

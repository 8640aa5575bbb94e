"""Rules for the ``ext`` conventions of Prebid Server (the reference for our fixtures).

OpenRTB leaves ``ext`` free-form; Prebid Server, the most widely deployed open-source exchange,
gives some of it a meaning and rejects requests that break it (its ``invalid-whole`` fixtures).
These rules apply whenever such an extension is present, because a request that carries
``ext.prebid.cache: {}`` or ``user.ext.consent: 1`` is malformed wherever it goes. Rules that need
to know the server (its bidders, its stores) only run when the ``ValidationContext`` provides it.

All values under ``ext`` are plain decoded JSON (``Any``), so every access checks the type first.
A JSON ``null`` counts as absent, as it does for the typed fields (Go exchanges write ``null`` for
unset pointers: ``"prebid": null`` is common in the fixtures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from bidflow.errors import OpenRTBError
from bidflow.openrtb._common import fail, key_path
from bidflow.openrtb.context import ValidationContext
from bidflow.openrtb.model import BidRequest, Device, Imp, User

# Keys of imp.ext that are not bidder names (Prebid's reserved names).
RESERVED_IMP_EXT_KEYS = frozenset(
    ("prebid", "context", "data", "gpid", "skadn", "tid", "ae", "all", "general", "igs", "paapi")
)


def _is_flag(value: Any) -> bool:
    # type() rather than isinstance: bool is an int subclass, and 1.0 is not an integer flag either.
    return type(value) is int and value in (0, 1)


def _obj(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, f"{what} must be an object", got=type(value).__name__)
    return value


def request_ext(req: BidRequest, ctx: ValidationContext) -> dict[str, str]:
    """Check ``ext.prebid``; return the request's bidder aliases (lower-case alias -> core bidder)."""
    ext = req.ext
    if not ext or ext.get("prebid") is None:
        return {}
    prebid = _obj(ext["prebid"], "$.ext.prebid", "ext.prebid")
    if prebid.get("storedrequest") is not None:
        stored_id = _stored_request_id(prebid["storedrequest"], "$.ext.prebid.storedrequest")
        if ctx.stored_requests is not None:
            _check_stored(ctx.stored_requests, stored_id, "$.ext.prebid.storedrequest.id", "stored request")
    if prebid.get("cache") is not None:
        cache = _obj(prebid["cache"], "$.ext.prebid.cache", "ext.prebid.cache")
        if cache.get("bids") is None and cache.get("vastxml") is None:
            fail("$.ext.prebid.cache", 'ext.prebid.cache needs a "bids" or a "vastxml" property', got=repr(cache))
    if prebid.get("channel") is not None:
        channel = _obj(prebid["channel"], "$.ext.prebid.channel", "ext.prebid.channel")
        if not isinstance(channel.get("name"), str) or not channel["name"]:
            fail(
                "$.ext.prebid.channel.name",
                "ext.prebid.channel.name must be a non-empty string",
                got=repr(channel.get("name")),
            )
    aliases = _aliases(prebid, ctx)
    if prebid.get("bidadjustmentfactors") is not None:
        _bid_adjustment_factors(prebid["bidadjustmentfactors"], aliases, ctx)
    return aliases


def _aliases(prebid: dict[str, Any], ctx: ValidationContext) -> dict[str, str]:
    if prebid.get("aliases") is None:
        return {}
    raw = _obj(prebid["aliases"], "$.ext.prebid.aliases", "ext.prebid.aliases")
    aliases: dict[str, str] = {}
    for alias, core in raw.items():
        path = key_path("$.ext.prebid.aliases", alias)
        if not isinstance(core, str) or not core:
            fail(path, "an alias must name a bidder", expected="a bidder name (string)", got=repr(core))
        if alias.lower() == core.lower():
            fail(path, "alias names itself (a no-op alias)", hint="choose a different alias, or remove this entry")
        if ctx.known_bidders is not None and core.lower() not in ctx.known_bidders:
            fail(path, "alias refers to an unknown bidder", got=repr(core))
        aliases[alias.lower()] = core.lower()
    return aliases


def _bid_adjustment_factors(value: Any, aliases: dict[str, str], ctx: ValidationContext) -> None:
    base = "$.ext.prebid.bidadjustmentfactors"
    factors = _obj(value, base, "ext.prebid.bidadjustmentfactors")
    seen: dict[str, str] = {}
    for bidder, factor in factors.items():
        path = key_path(base, bidder)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            fail(path, "a bid adjustment factor must be a positive number", got=repr(factor))
        folded = bidder.lower()
        if folded in seen:
            fail(
                path,
                "bidders that differ only in letter case cannot both have a factor",
                got=f"{seen[folded]!r} and {bidder!r}",
            )
        seen[folded] = bidder
        if ctx.known_bidders is not None and folded not in ctx.known_bidders and folded not in aliases:
            fail(path, "bid adjustment factor for a name that is neither a known bidder nor an alias")


def _stored_request_id(value: Any, base: str) -> str:
    stored = _obj(value, base, base[2:])
    stored_id = stored.get("id")
    if not isinstance(stored_id, str) or not stored_id:
        fail(f"{base}.id", "a stored request id must be a non-empty string", got=repr(stored_id))
    return stored_id


def _check_stored(store: Mapping[str, bytes | str], stored_id: str, path: str, kind: str) -> None:
    if stored_id not in store:
        fail(path, f"no {kind} with this id", got=repr(stored_id))
    try:
        doc = msgspec.json.decode(store[stored_id])
    except (msgspec.DecodeError, UnicodeError, RecursionError) as e:
        raise OpenRTBError(
            f"the {kind} {stored_id!r} is not valid JSON: {e}", path=path, expected="a JSON object"
        ) from e
    if not isinstance(doc, dict):
        fail(path, f"the {kind} {stored_id!r} is not a JSON object", got=type(doc).__name__)


def imp_ext(imp: Imp, path: str, ctx: ValidationContext, aliases: dict[str, str]) -> None:
    """Check ``imp.ext.prebid`` and, at an auction entry point, that the imp names its bidders."""
    ext = imp.ext
    prebid: dict[str, Any] | None = None
    stored = False
    if ext and ext.get("prebid") is not None:
        prebid = _obj(ext["prebid"], f"{path}.ext.prebid", "imp.ext.prebid")
        if prebid.get("bidder") is not None:
            bidders = _obj(prebid["bidder"], f"{path}.ext.prebid.bidder", "imp.ext.prebid.bidder")
            if not bidders:
                fail(f"{path}.ext.prebid.bidder", "imp.ext.prebid.bidder must name at least one bidder", got="{}")
        if prebid.get("storedrequest") is not None:
            stored = True
            stored_id = _stored_request_id(prebid["storedrequest"], f"{path}.ext.prebid.storedrequest")
            if ctx.stored_imps is not None:
                _check_stored(ctx.stored_imps, stored_id, f"{path}.ext.prebid.storedrequest.id", "stored imp")
    if ctx.auction_entry:
        _imp_bidders(ext, prebid, path, ctx, aliases, stored)
    elif prebid is not None and prebid.get("bidder") is not None:
        _named_bidders(prebid["bidder"], f"{path}.ext.prebid.bidder", ctx, aliases, promoted=False)


def _imp_bidders(
    ext: dict[str, Any] | None,
    prebid: dict[str, Any] | None,
    path: str,
    ctx: ValidationContext,
    aliases: dict[str, str],
    stored: bool,
) -> None:
    if ext is None:
        if stored:
            return
        fail(f"{path}.ext", "imp.ext is required: it names the bidders to call", hint='add {"<bidder>": {<params>}}')
    if prebid is not None and prebid.get("bidder") is not None:
        count = _named_bidders(prebid["bidder"], f"{path}.ext.prebid.bidder", ctx, aliases, promoted=False)
    else:
        # Prebid's older layout: bidders as direct keys of imp.ext ("promoted" to ext.prebid.bidder).
        promoted = {k: v for k, v in ext.items() if k not in RESERVED_IMP_EXT_KEYS}
        count = _named_bidders(promoted, f"{path}.ext", ctx, aliases, promoted=True)
    # A stored imp may supply the bidders; without merging it we cannot count them.
    if count == 0 and not stored:
        fail(
            f"{path}.ext",
            "the impression names no known bidder",
            expected="at least one bidder in imp.ext.prebid.bidder",
        )


def _named_bidders(
    bidders: dict[str, Any], base: str, ctx: ValidationContext, aliases: dict[str, str], *, promoted: bool
) -> int:
    """Check each named bidder's params; return how many known bidders are named."""
    count = 0
    known = ctx.known_bidders
    for name, params in bidders.items():
        # Hot path (every logged or served auction): paths and alias look-ups only when needed.
        if known is None:
            if type(params) is not dict:
                fail(key_path(base, name), "bidder params must be an object", got=type(params).__name__)
            count += 1
            continue
        core = aliases.get(name.lower(), name.lower())
        if core not in known:
            if promoted:
                continue  # Prebid ignores (with a warning) unknown keys of imp.ext
            fail(
                key_path(base, name), "unknown bidder", hint="check the name, or define an alias in ext.prebid.aliases"
            )
        if not isinstance(params, dict):
            fail(key_path(base, name), "bidder params must be an object", got=type(params).__name__)
        if ctx.bidder_params is not None:
            problem = ctx.bidder_params(core, params)
            if problem is not None:
                fail(key_path(base, name), f"params of bidder {core!r} are invalid: {problem}")
        count += 1
    return count


def user_ext(user: User, ctx: ValidationContext, aliases: dict[str, str]) -> None:
    """``user.ext.consent`` is the TCF string (2.5 location); ``user.ext.prebid.buyeruids`` maps bidders to ids."""
    ext = user.ext
    if not ext:
        return
    consent = ext.get("consent")
    if consent is not None and not isinstance(consent, str):
        fail("$.user.ext.consent", "user.ext.consent must be a string (the GDPR consent string)", got=repr(consent))
    if ext.get("prebid") is not None:
        prebid = _obj(ext["prebid"], "$.user.ext.prebid", "user.ext.prebid")
        uids = prebid.get("buyeruids")
        if not isinstance(uids, dict) or not uids:
            fail(
                "$.user.ext.prebid.buyeruids",
                "user.ext.prebid needs a buyeruids object with at least one id",
                got=repr(uids),
                hint="remove user.ext.prebid when there are no buyer ids",
            )
        for bidder, uid in uids.items():
            path = key_path("$.user.ext.prebid.buyeruids", bidder)
            if not isinstance(uid, str):
                fail(path, "a buyer uid must be a string", got=repr(uid))
            folded = bidder.lower()
            if ctx.known_bidders is not None and folded not in ctx.known_bidders and folded not in aliases:
                fail(path, "buyer uid for a name that is neither a known bidder nor an alias")


def regs_ext_gdpr(ext: dict[str, Any]) -> None:
    """OpenRTB 2.5 carried GDPR applicability as ``regs.ext.gdpr`` (0 or 1), 2.6 as ``regs.gdpr``."""
    gdpr = ext.get("gdpr")
    if gdpr is not None and not _is_flag(gdpr):
        fail("$.regs.ext.gdpr", "regs.ext.gdpr must be 0 or 1", got=repr(gdpr))
    us_privacy = ext.get("us_privacy")
    if us_privacy is not None and not isinstance(us_privacy, str):
        fail("$.regs.ext.us_privacy", "regs.ext.us_privacy must be a string", got=repr(us_privacy))


def site_ext(ext: dict[str, Any]) -> None:
    amp = ext.get("amp")
    if amp is not None and not _is_flag(amp):
        fail("$.site.ext.amp", "site.ext.amp must be 0 or 1", got=repr(amp))


def app_ext(ext: dict[str, Any]) -> None:
    if ext.get("prebid") is not None:
        prebid = _obj(ext["prebid"], "$.app.ext.prebid", "app.ext.prebid")
        for name in ("source", "version"):
            if prebid.get(name) is not None and not isinstance(prebid[name], str):
                fail(f"$.app.ext.prebid.{name}", f"app.ext.prebid.{name} must be a string", got=repr(prebid[name]))


def interstitial(device: Device | None) -> tuple[float, float] | None:
    """``device.ext.prebid.interstitial``: the minimum share (%) of the screen an interstitial may take.

    Returns ``(minwidthperc, minheightperc)`` when present, after checking both are in 0-100.
    """
    if device is None or not device.ext or device.ext.get("prebid") is None:
        return None
    prebid = _obj(device.ext["prebid"], "$.device.ext.prebid", "device.ext.prebid")
    if prebid.get("interstitial") is None:
        return None
    settings = _obj(prebid["interstitial"], "$.device.ext.prebid.interstitial", "device.ext.prebid.interstitial")
    out: list[float] = []
    for name in ("minwidthperc", "minheightperc"):
        value = settings.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            fail(
                f"$.device.ext.prebid.interstitial.{name}",
                f"{name} must be a number between 0 and 100",
                got=repr(value),
            )
        out.append(float(value))
    return out[0], out[1]

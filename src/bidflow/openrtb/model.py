"""Typed OpenRTB 2.5/2.6 BidRequest objects (msgspec structs).

Field names are the OpenRTB names (``req.imp[0].banner.w``, ``req.device.geo.country``) so that a
reader of the spec can find every field here, and so that the shared feature transform reads the
same attribute paths in training and serving.

Spec versions
-------------
* Every object and field of OpenRTB 2.5 section 3.2 is here, including deprecated ones
  (``banner.wmax/hmax/wmin/hmin``, ``video.protocol``, ``content.videoquality``, and the hashed
  device ids that 2.6 deprecates), because exchanges still send them.
* Fields new in 2.6 (including its 2022-2023 updates) are marked ``# 2.6`` where they are declared:
  ``BidRequest.dooh/wlangb/cattax``, ``Imp.rwdd/ssai/qty/dt/refresh``, ``Video/Audio`` pod fields
  (``poddur``, ``podid``, ``podseq``, ``rqddurs``, ``slotinpod``, ``mincpmpersec``, ``durfloors``,
  ``maxseq``, ``plcmt``, ``poddedupe``), ``Device.sua/langb``, ``User.consent/eids/kwarray``,
  ``Regs.gdpr/us_privacy/gpp/gpp_sid``, ``Source.schain``, ``Site/App.cattax/kwarray/
  inventorypartnerdomain``, and the ``Dooh``, ``Qty``, ``Refresh``, ``DurFloors``, ``EID``/``UID``,
  ``UserAgent``/``BrandVersion``, ``SupplyChain`` objects. In 2.5 several of these lived under
  ``ext`` (``regs.ext.gdpr``, ``user.ext.eids``, ``source.ext.schain``); both places decode, and
  the rules read both.

Typing policy: integers are ``int`` (a JSON ``1.0`` or ``true`` is rejected where the spec says
integer), floats are ``float`` (a JSON integer is accepted, as the spec allows). Optional fields
default to ``None`` rather than the spec's default value, so that "absent" and "sent the default"
stay distinguishable and a decoded request re-encodes to what was sent. Explicit JSON ``null`` for
an optional field decodes as absent (Go and Java exchanges emit it for unset pointers).

Unknown fields are tolerated and dropped; everything under ``ext`` is kept verbatim, which is where
the spec puts extensions, so extensions survive a decode/encode round trip.
"""

from __future__ import annotations

from typing import Any

import msgspec


class OpenRTBObject(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    forbid_unknown_fields=False,
    # Decoded requests never hold reference cycles (they come from JSON), so the objects need not
    # be tracked by the cycle collector; msgspec documents this as a large win when decoding.
    gc=False,
):
    """Base of every OpenRTB object: carries the ``ext`` extension object of the spec."""

    ext: dict[str, Any] | None = None


# --- Impression and its media objects -------------------------------------------------------


class Format(OpenRTBObject):
    """Allowed banner size: either fixed ``w``x``h`` or flexible ``wmin`` with a ratio."""

    w: int | None = None
    h: int | None = None
    wratio: int | None = None
    hratio: int | None = None
    wmin: int | None = None


class Banner(OpenRTBObject):
    """Display placement (also used for ``Video.companionad``)."""

    format: list[Format] | None = None
    w: int | None = None
    h: int | None = None
    wmax: int | None = None  # deprecated (use format)
    hmax: int | None = None  # deprecated
    wmin: int | None = None  # deprecated
    hmin: int | None = None  # deprecated
    btype: list[int] | None = None
    battr: list[int] | None = None
    pos: int | None = None
    mimes: list[str] | None = None
    topframe: int | None = None
    expdir: list[int] | None = None
    api: list[int] | None = None
    id: str | None = None
    vcm: int | None = None


class DurFloors(OpenRTBObject):  # 2.6
    """Floor price for a range of creative durations."""

    mindur: int | None = None
    maxdur: int | None = None
    bidfloor: float | None = None


class Video(OpenRTBObject):
    """In-stream or out-stream video placement."""

    mimes: list[str] | None = None  # required by the spec; enforced by the rules, not the type
    minduration: int | None = None
    maxduration: int | None = None
    startdelay: int | None = None
    maxseq: int | None = None  # 2.6
    poddur: int | None = None  # 2.6
    protocols: list[int] | None = None
    protocol: int | None = None  # deprecated in 2.5 (use protocols)
    w: int | None = None
    h: int | None = None
    podid: str | None = None  # 2.6
    podseq: int | None = None  # 2.6
    rqddurs: list[int] | None = None  # 2.6
    placement: int | None = None  # deprecated in 2.6 (use plcmt)
    plcmt: int | None = None  # 2.6
    linearity: int | None = None
    skip: int | None = None
    skipmin: int | None = None
    skipafter: int | None = None
    sequence: int | None = None  # deprecated in 2.6
    slotinpod: int | None = None  # 2.6
    mincpmpersec: float | None = None  # 2.6
    battr: list[int] | None = None
    maxextended: int | None = None
    minbitrate: int | None = None
    maxbitrate: int | None = None
    boxingallowed: int | None = None
    playbackmethod: list[int] | None = None
    playbackend: int | None = None
    delivery: list[int] | None = None
    pos: int | None = None
    companionad: list[Banner] | None = None
    api: list[int] | None = None
    companiontype: list[int] | None = None
    poddedupe: list[int] | None = None  # 2.6
    durfloors: list[DurFloors] | None = None  # 2.6


class Audio(OpenRTBObject):
    """Audio placement."""

    mimes: list[str] | None = None  # required by the spec; enforced by the rules
    minduration: int | None = None
    maxduration: int | None = None
    poddur: int | None = None  # 2.6
    protocols: list[int] | None = None
    startdelay: int | None = None
    rqddurs: list[int] | None = None  # 2.6
    podid: str | None = None  # 2.6
    podseq: int | None = None  # 2.6
    sequence: int | None = None  # deprecated in 2.6
    slotinpod: int | None = None  # 2.6
    mincpmpersec: float | None = None  # 2.6
    battr: list[int] | None = None
    maxextended: int | None = None
    minbitrate: int | None = None
    maxbitrate: int | None = None
    delivery: list[int] | None = None
    companionad: list[Banner] | None = None
    api: list[int] | None = None
    companiontype: list[int] | None = None
    maxseq: int | None = None
    feed: int | None = None
    stitched: int | None = None
    nvol: int | None = None
    durfloors: list[DurFloors] | None = None  # 2.6


class Native(OpenRTBObject):
    """Native placement. ``request`` is the Native Ads request (1.x) as a JSON *string*."""

    request: str
    ver: str | None = None
    api: list[int] | None = None
    battr: list[int] | None = None


class Deal(OpenRTBObject):
    """A private-marketplace deal."""

    id: str
    bidfloor: float | None = None
    bidfloorcur: str | None = None
    at: int | None = None
    wseat: list[str] | None = None
    wadomain: list[str] | None = None
    guar: int | None = None  # 2.6
    mincpmpersec: float | None = None  # 2.6
    durfloors: list[DurFloors] | None = None  # 2.6


class Pmp(OpenRTBObject):
    """Private marketplace container."""

    private_auction: int | None = None
    deals: list[Deal] | None = None


class Metric(OpenRTBObject):
    """A metric the exchange reports for the impression (viewability, click-through ...)."""

    type: str
    value: float
    vendor: str | None = None


class Qty(OpenRTBObject):  # 2.6 (DOOH)
    """Impression multiplier, e.g. audience size of a DOOH screen."""

    multiplier: float | None = None
    sourcetype: int | None = None
    vendor: str | None = None


class RefSettings(OpenRTBObject):  # 2.6 (2023 update)
    """How and how often a placement refreshes."""

    reftype: int | None = None
    minint: int | None = None


class Refresh(OpenRTBObject):  # 2.6 (2023 update)
    """Refresh history of the placement."""

    refsettings: list[RefSettings] | None = None
    count: int | None = None


class Imp(OpenRTBObject):
    """One impression (ad slot) offered in the auction."""

    id: str
    metric: list[Metric] | None = None
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    displaymanager: str | None = None
    displaymanagerver: str | None = None
    instl: int | None = None
    tagid: str | None = None
    bidfloor: float | None = None
    bidfloorcur: str | None = None
    clickbrowser: int | None = None
    secure: int | None = None
    iframebuster: list[str] | None = None
    rwdd: int | None = None  # 2.6
    ssai: int | None = None  # 2.6
    exp: int | None = None
    qty: Qty | None = None  # 2.6
    dt: float | None = None  # 2.6
    refresh: Refresh | None = None  # 2.6 (2023 update)


# --- Distribution channel: site, app, DOOH ---------------------------------------------------


class Publisher(OpenRTBObject):
    """Publisher of the site, app or DOOH inventory."""

    id: str | None = None
    name: str | None = None
    cattax: int | None = None  # 2.6
    cat: list[str] | None = None
    domain: str | None = None


class Producer(OpenRTBObject):
    """Producer of the content (may differ from the publisher)."""

    id: str | None = None
    name: str | None = None
    cattax: int | None = None  # 2.6
    cat: list[str] | None = None
    domain: str | None = None


class Segment(OpenRTBObject):
    """One data segment of a ``Data`` provider."""

    id: str | None = None
    name: str | None = None
    value: str | None = None


class Data(OpenRTBObject):
    """A data provider's segments about the user or the content."""

    id: str | None = None
    name: str | None = None
    segment: list[Segment] | None = None


class Network(OpenRTBObject):  # 2.6
    """Network the content is on (e.g. a TV network)."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None


class Channel(OpenRTBObject):  # 2.6
    """Channel the content is on (e.g. a local station)."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None


class Content(OpenRTBObject):
    """The content in which the impression appears."""

    id: str | None = None
    episode: int | None = None
    title: str | None = None
    series: str | None = None
    season: str | None = None
    artist: str | None = None
    genre: str | None = None
    album: str | None = None
    isrc: str | None = None
    producer: Producer | None = None
    url: str | None = None
    cattax: int | None = None  # 2.6
    cat: list[str] | None = None
    prodq: int | None = None
    videoquality: int | None = None  # deprecated in 2.5 (use prodq)
    context: int | None = None
    contentrating: str | None = None
    userrating: str | None = None
    qagmediarating: int | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None  # 2.6
    livestream: int | None = None
    sourcerelationship: int | None = None
    len: int | None = None
    language: str | None = None
    langb: str | None = None  # 2.6
    embeddable: int | None = None
    data: list[Data] | None = None
    network: Network | None = None  # 2.6
    channel: Channel | None = None  # 2.6


class Site(OpenRTBObject):
    """A website carrying the impression."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None
    cattax: int | None = None  # 2.6
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    page: str | None = None
    ref: str | None = None
    search: str | None = None
    mobile: int | None = None
    privacypolicy: int | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None  # 2.6
    inventorypartnerdomain: str | None = None  # 2.6


class App(OpenRTBObject):
    """A mobile or CTV application carrying the impression."""

    id: str | None = None
    name: str | None = None
    bundle: str | None = None
    domain: str | None = None
    storeurl: str | None = None
    cattax: int | None = None  # 2.6
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    ver: str | None = None
    privacypolicy: int | None = None
    paid: int | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None  # 2.6
    inventorypartnerdomain: str | None = None  # 2.6


class Dooh(OpenRTBObject):  # 2.6
    """Digital out-of-home inventory (screens in public venues)."""

    id: str | None = None
    name: str | None = None
    venuetype: list[str] | None = None
    venuetypetax: int | None = None
    publisher: Publisher | None = None
    domain: str | None = None
    keywords: str | None = None
    content: Content | None = None


# --- Device, user, regulations, source ------------------------------------------------------


class Geo(OpenRTBObject):
    """Location of the device or the user's home base."""

    lat: float | None = None
    lon: float | None = None
    type: int | None = None
    accuracy: int | None = None
    lastfix: int | None = None
    ipservice: int | None = None
    country: str | None = None
    region: str | None = None
    regionfips104: str | None = None
    metro: str | None = None
    city: str | None = None
    zip: str | None = None
    utcoffset: int | None = None


class BrandVersion(OpenRTBObject):  # 2.6
    """A browser or platform brand and its version components (User-Agent Client Hints)."""

    brand: str | None = None
    version: list[str] | None = None


class UserAgent(OpenRTBObject):  # 2.6
    """Structured user agent (``device.sua``), from User-Agent Client Hints."""

    browsers: list[BrandVersion] | None = None
    platform: BrandVersion | None = None
    mobile: int | None = None
    architecture: str | None = None
    bitness: str | None = None
    model: str | None = None
    source: int | None = None


class Device(OpenRTBObject):
    """The device the impression will be shown on."""

    geo: Geo | None = None
    dnt: int | None = None
    lmt: int | None = None
    ua: str | None = None
    sua: UserAgent | None = None  # 2.6
    ip: str | None = None
    ipv6: str | None = None
    devicetype: int | None = None
    make: str | None = None
    model: str | None = None
    os: str | None = None
    osv: str | None = None
    hwv: str | None = None
    h: int | None = None
    w: int | None = None
    ppi: int | None = None
    pxratio: float | None = None
    js: int | None = None
    geofetch: int | None = None
    flashver: str | None = None
    language: str | None = None
    langb: str | None = None  # 2.6
    carrier: str | None = None
    mccmnc: str | None = None
    connectiontype: int | None = None
    ifa: str | None = None
    didsha1: str | None = None  # deprecated in 2.6
    didmd5: str | None = None  # deprecated in 2.6
    dpidsha1: str | None = None  # deprecated in 2.6
    dpidmd5: str | None = None  # deprecated in 2.6
    macsha1: str | None = None  # deprecated in 2.6
    macmd5: str | None = None  # deprecated in 2.6


class UID(OpenRTBObject):  # 2.6
    """One user identifier within an ``EID``."""

    id: str | None = None
    atype: int | None = None


class EID(OpenRTBObject):  # 2.6 (2.5: user.ext.eids)
    """Extended identifiers from one source (an ID vendor)."""

    inserter: str | None = None
    source: str | None = None
    matcher: str | None = None
    mm: int | None = None
    uids: list[UID] | None = None


class User(OpenRTBObject):
    """The human user of the device (the advertising audience)."""

    id: str | None = None
    buyeruid: str | None = None
    yob: int | None = None  # deprecated in 2.6
    gender: str | None = None  # deprecated in 2.6
    keywords: str | None = None
    kwarray: list[str] | None = None  # 2.6
    customdata: str | None = None
    geo: Geo | None = None
    data: list[Data] | None = None
    consent: str | None = None  # 2.6 (2.5: user.ext.consent)
    eids: list[EID] | None = None  # 2.6 (2.5: user.ext.eids)


class Regs(OpenRTBObject):
    """Regulations in force for this request (COPPA, GDPR, US privacy, GPP)."""

    coppa: int | None = None
    gdpr: int | None = None  # 2.6 (2.5: regs.ext.gdpr)
    us_privacy: str | None = None  # 2.6 (2.5: regs.ext.us_privacy)
    gpp: str | None = None  # 2.6-202211
    gpp_sid: list[int] | None = None  # 2.6-202211


class SupplyChainNode(OpenRTBObject):  # 2.6 (SupplyChain object 1.0)
    """One hop of the supply chain."""

    asi: str | None = None
    sid: str | None = None
    rid: str | None = None
    name: str | None = None
    domain: str | None = None
    hp: int | None = None


class SupplyChain(OpenRTBObject):  # 2.6 (2.5: source.ext.schain)
    """All parties that resold or passed on the request."""

    complete: int | None = None
    nodes: list[SupplyChainNode] | None = None
    ver: str | None = None


class Source(OpenRTBObject):
    """Where the request came from and who decides the sale (header bidding, supply chain)."""

    fd: int | None = None
    tid: str | None = None
    pchain: str | None = None
    schain: SupplyChain | None = None  # 2.6


# --- The request ------------------------------------------------------------------------------


class BidRequest(OpenRTBObject):
    """Top-level OpenRTB bid request."""

    id: str
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    dooh: Dooh | None = None  # 2.6
    device: Device | None = None
    user: User | None = None
    test: int | None = None
    at: int | None = None
    tmax: int | None = None
    wseat: list[str] | None = None
    bseat: list[str] | None = None
    allimps: int | None = None
    cur: list[str] | None = None
    wlang: list[str] | None = None
    wlangb: list[str] | None = None  # 2.6
    acat: list[str] | None = None  # 2.6 (2023 update)
    cattax: int | None = None  # 2.6
    bcat: list[str] | None = None
    badv: list[str] | None = None
    bapp: list[str] | None = None
    source: Source | None = None
    regs: Regs | None = None

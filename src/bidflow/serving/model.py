"""The bid-filter model server: a ``kserve.Model`` mapping OpenRTB auctions to call/skip decisions.

Request (v1, ``POST /v1/models/<name>:predict``): one or more auctions::

    {"instances": [{"request": {<OpenRTB 2.5/2.6 BidRequest>},
                    "partners": ["atlas", "beacon"],      # optional: else imp[].ext.prebid.bidder
                    "ts_ms": 1793606414072}]}             # optional: when it was seen (default now)

Response::

    {"predictions": [{"id": "<request id>", "model_version": "7", "explored": false,
                      "fail_open": false,
                      "decisions": [{"partner": "atlas", "score": 0.41, "threshold": 0.12,
                                     "decision": "call"}, ...]}]}

v2 (Open Inference Protocol, ``POST /v2/models/<name>/infer``): one auction; inputs ``request``
(BYTES [1], the BidRequest JSON) and optionally ``partners`` (BYTES [k]); optional request parameter
``ts_ms``. Outputs ``partner`` (BYTES), ``score`` and ``threshold`` (FP64), ``decision`` (BYTES
``call``/``skip``), all [k], plus ``explored`` and ``fail_open`` (BOOL [1]); parameters carry the
auction id and, when failing open, the reason.

Per auction: decode + validate (``bidflow.openrtb``), the request transform shared with training
(``request_features``), one online-store call for all partners (``GuardedReader``), one matrix
(``BidFilterAssembler``), one batched predict (``TreePredictor``), then the decision: call when
``score >= threshold(partner)`` or when the auction is in the exploration share
(``bidflow.modeling.economics.is_exploration``, the function evaluation uses). When the store is
down or slow the auction fails open: every partner is called and ``score`` is null.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from kserve import Model
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from bidflow.errors import BidflowError, ModelError, OpenRTBError
from bidflow.modeling.economics import is_exploration
from bidflow.openrtb import ValidationContext, decode_request, decode_request_obj
from bidflow.openrtb.features import FEATURE_NAMES, request_features
from bidflow.openrtb.model import BidRequest
from bidflow.openrtb.rules import validate_request
from bidflow.serving.assemble import BidFilterAssembler
from bidflow.serving.bid_filter_features import LAYOUT as BID_FILTER_LAYOUT
from bidflow.serving.errors import RequestError
from bidflow.serving.metrics import BufferedHistogram, ModelCounts, serving_metrics
from bidflow.serving.online import DEFAULT_CACHE_S, DEFAULT_COOLDOWN_S, DEFAULT_TIMEOUT_S, GuardedReader, Lookup
from bidflow.serving.predictor import NAME as PREDICTOR_NAME
from bidflow.serving.predictor import TreePredictor, probe_rows

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.features.online import RowLayout
    from bidflow.modeling.train import TrainedModel

log = logging.getLogger(__name__)

PARTNER_COLUMN: Final = "partner"  # the bid filter's per-row key (bidflow.modeling.inputs.PARTNER)
CALL: Final = "call"
SKIP: Final = "skip"
_INSTANCE_KEYS: Final = frozenset({"request", "partners", "ts_ms"})
_JSON: Final = msgspec.json.Encoder()
_ANY_JSON: Final = msgspec.json.Decoder()


class _V1Instance(msgspec.Struct, forbid_unknown_fields=True):
    """A v1 instance as the typed decoder reads it; the checks that name a bad field run on the generic form."""

    request: BidRequest
    partners: list[str] | None = None
    ts_ms: int | None = None


class _V1Body(msgspec.Struct):
    instances: list[_V1Instance]


# One pass from bytes to typed auctions, instead of JSON -> dicts -> structs.
_V1_DECODER: Final = msgspec.json.Decoder(_V1Body)


# --- what to serve ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a registry alias or version, or a URI / local folder.

    Attributes:
        name: the registered model name (also the default endpoint name).
        ref: alias (``champion``, ``candidate``) or version number; used when ``uri`` is None.
        uri: ``models:/...`` or ``runs:/...`` (MLflow), or a folder written by ``save_model``.
    """

    name: str
    ref: str = "champion"
    uri: str | None = None

    @classmethod
    def parse(cls, name: str, value: str) -> ModelSource:
        """``champion`` / ``7`` -> registry reference; ``models:/..``, ``runs:/..``, a path -> URI."""
        if "/" in value or ":" in value or value.startswith(".") or Path(value).exists():
            return cls(name=name, uri=value)
        return cls(name=name, ref=value)

    @property
    def local(self) -> Path | None:
        """The model folder when ``uri`` is a local path (or ``file://`` URI), else None."""
        if self.uri is None:
            return None
        if self.uri.startswith("file://"):
            return Path(self.uri.removeprefix("file://"))
        return None if ":/" in self.uri else Path(self.uri)

    def describe(self) -> str:
        """The source as one string (for logs, metrics and 503 reasons)."""
        return self.uri if self.uri is not None else f"models:/{self.name}@{self.ref}"


@dataclass(frozen=True)
class ServeOptions:
    """How the server treats requests (limits, validation, the online store).

    Attributes:
        validation: extra OpenRTB rules (``auction_entry`` for requests straight from a client).
        max_partners: most candidate partners in one auction.
        max_auctions: most auctions in one v1 request.
        feature_timeout_s: longest wait on the online store (Redis) before failing open.
        breaker_cooldown_s: how long the store is left alone after a failure.
        feature_cache_s: how long the store's answers are reused (0: ask it for every auction).
    """

    validation: ValidationContext = field(default_factory=ValidationContext)
    max_partners: int = 256
    max_auctions: int = 64
    feature_timeout_s: float = DEFAULT_TIMEOUT_S
    breaker_cooldown_s: float = DEFAULT_COOLDOWN_S
    feature_cache_s: float = DEFAULT_CACHE_S


@dataclass(frozen=True)
class Loaded:
    """Everything a ready model scores with (swapped in whole on load, so a reload is atomic)."""

    model: TrainedModel
    version: str
    source: str
    predictor: TreePredictor
    online: GuardedReader | None
    counts: ModelCounts
    mapping: Any  # the kind's request -> matrix mapping (see ``ServedModel._prepare``)


def load_trained(config: Config, source: ModelSource) -> tuple[TrainedModel, str]:
    """The ``TrainedModel`` and its version label (registry version, or the URI/folder)."""
    from bidflow.modeling import registry
    from bidflow.modeling.train import load_model

    if source.uri is None:
        ref, model = registry.load(config.registry, source.name, source.ref)
        return model, ref.version
    if source.local is not None:
        return load_model(source.local), str(source.local)
    return registry.load_uri(config.registry, source.uri), source.uri


def compile_predictor(model: TrainedModel) -> TreePredictor:
    """The model's compiled predictor, checked against xgboost on probe rows (see ``predictor``)."""
    spec = model.spec
    predictor = TreePredictor(model.booster, len(spec.names))
    positions = [i for i, name in enumerate(spec.names) if name in set(spec.categorical)]
    predictor.verify(model.booster, probe_rows(len(spec.names), positions))
    return predictor


def open_reader(config: Config, service: str, options: ServeOptions, layout: RowLayout | None = None) -> GuardedReader:
    """The online reader of ``service``, guarded for serving (``layout``: how the kind's reads are laid out)."""
    from bidflow.features.online import OnlineFeatureReader
    from bidflow.features.store import open_store

    store = open_store(config.features)
    reader = OnlineFeatureReader(store, service, layout=layout, cache_s=options.feature_cache_s, refresh=True)
    return GuardedReader(reader, timeout_s=options.feature_timeout_s, cooldown_s=options.breaker_cooldown_s)


class ServedModel(Model):  # type: ignore[misc]  # kserve ships no type information
    """What both model servers share: loading, readiness with a reason, the metrics hook.

    Args:
        name: the endpoint name (``/v1/models/<name>:predict``).
        config: bidflow's configuration (registry and feature store sections).
        source: which model to load.
        options: request limits, validation, online-store policy.
    """

    # How the kind's online reads are laid out (``OnlineFeatureReader``'s ``layout``; None: by rows only).
    reader_layout: RowLayout | None = None

    def __init__(self, name: str, config: Config, source: ModelSource, options: ServeOptions | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.source = source
        self.options = options or ServeOptions()
        self.validation = self.options.validation
        self.state: Loaded | None = None
        self.not_ready_reason: str | None = "not loaded yet"

    def load(self) -> bool:
        """Load (or reload) the model, its compiled predictor and its online reader.

        Never raises: a failure leaves the previous model serving (or none, answering 503) and
        records why in ``not_ready_reason``.
        """
        started = time.perf_counter()
        try:
            loaded = self._load()
        except Exception as exc:  # registry, download, conversion, feature store: all make the model unready
            what = exc.what if isinstance(exc, BidflowError) else f"{type(exc).__name__}: {exc}"
            got = f" ({exc.got})" if isinstance(exc, BidflowError) and exc.got else ""
            reason = f"loading {self.source.describe()} failed: {what}{got}"[:500]
            log.error("%s", reason, exc_info=not isinstance(exc, BidflowError))
            if self.state is None:
                self.not_ready_reason = reason
            return self.state is not None  # a failed reload keeps the previous model serving
        previous, self.state = self.state, loaded
        self.not_ready_reason = None
        self.ready = True
        if previous is not None and previous.online is not None and previous.online is not loaded.online:
            previous.online.close()
        log.info(
            "serving %s version %s from %s (%d trees, online features: %s) after %.1f s",
            self.name,
            loaded.version,
            loaded.source,
            loaded.model.best_iteration,
            loaded.online.backend if loaded.online else "none",
            time.perf_counter() - started,
        )
        return True

    def validate(self, payload: Any) -> Any:
        # preprocess already checked the request; KServe's own check would misread our objects.
        return payload

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        """KServe's ``Model.__call__`` (preprocess -> predict -> postprocess) for synchronous handlers.

        The same stages and the same histograms (``request_preprocess_seconds``,
        ``request_predict_seconds``, ``request_postprocess_seconds``; observed in batches,
        ``BufferedHistogram``), without what KServe's version pays per request for handlers that
        might be coroutines or take other arguments: an ``inspect`` check per stage, a label dict
        and three histogram lookups, wall-clock reads rounded for a log line that is off here:
        10-15 µs of an auction's CPU in-process.
        A stage that raises is not observed. Explain requests go to KServe's version.
        """
        if verb is not InferenceVerb.PREDICT:
            return await super().__call__(body, headers, verb)  # type: ignore[no-any-return]
        pre, scored, post = self._stage_timers
        response_headers: dict[str, str] = {}
        started = time.perf_counter()
        payload = self.preprocess(body, headers)
        preprocessed = time.perf_counter()
        pre.observe(preprocessed - started, preprocessed)
        if self.required_response_headers:
            response = self.predict(payload, headers, response_headers)
            predicted = time.perf_counter()
            scored.observe(predicted - preprocessed, predicted)
            response = self.postprocess(response, headers, response_headers)
        else:
            response = self.predict(payload, headers)
            predicted = time.perf_counter()
            scored.observe(predicted - preprocessed, predicted)
            response = self.postprocess(response, headers)
        done = time.perf_counter()
        post.observe(done - predicted, done)
        return response, response_headers

    @functools.cached_property
    def _stage_timers(self) -> tuple[BufferedHistogram, BufferedHistogram, BufferedHistogram]:
        """KServe's stage histograms for this model (its children, looked up once, observed in batches)."""
        from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels

        labels = get_labels(self.name)
        return (
            BufferedHistogram(PRE_HIST_TIME.labels(**labels)),
            BufferedHistogram(PREDICT_HIST_TIME.labels(**labels)),
            BufferedHistogram(POST_HIST_TIME.labels(**labels)),
        )

    def stop(self) -> None:
        """Close the online reader (KServe calls this on shutdown)."""
        if self.state is not None and self.state.online is not None:
            self.state.online.close()
        super().stop()

    def _load(self) -> Loaded:
        model, version = load_trained(self.config, self.source)
        self._check(model)
        predictor = compile_predictor(model)
        service = model.spec.feature_service
        online = open_reader(self.config, service, self.options, self.reader_layout) if service else None
        mapping = self._prepare(model, online)
        counts = serving_metrics().model(
            self.name, self._partners(model), version=version, source=self.source.describe(), predictor=PREDICTOR_NAME
        )
        return Loaded(model, version, self.source.describe(), predictor, online, counts, mapping)

    def _check(self, model: TrainedModel) -> None:
        """Refuse a model this server cannot serve (overridden per kind)."""

    def _prepare(self, model: TrainedModel, online: GuardedReader | None) -> Any:
        """The request -> matrix mapping for ``model`` (overridden per kind; kept in ``Loaded``)."""
        return None

    def _partners(self, model: TrainedModel) -> list[str]:
        return []

    def _loaded(self) -> Loaded:
        state = self.state
        if state is None:  # the endpoints check readiness first; this is a guard
            from kserve.errors import ModelNotReady

            raise ModelNotReady(self.name, self.not_ready_reason)
        return state


# --- the bid filter --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Auction:
    """One auction to decide on."""

    request: BidRequest
    partners: tuple[str, ...]
    ts_ms: int


@dataclass(frozen=True)
class Decision:
    """The decisions for one auction (arrays in ``partners`` order)."""

    auction_id: str
    partners: tuple[str, ...]
    scores: npt.NDArray[np.float64] | None  # None when failing open
    thresholds: npt.NDArray[np.float64]
    calls: npt.NDArray[np.bool_]
    explored: bool
    fail_reason: str | None


@dataclass(frozen=True)
class Policy:
    """A loaded bid filter's mapping and thresholds (part of ``Loaded``)."""

    assembler: BidFilterAssembler
    thresholds: dict[str, float]
    default_threshold: float
    exploration_share: float


@dataclass(frozen=True)
class Batch:
    """What preprocess hands to predict and predict to postprocess."""

    v2: bool
    auctions: Sequence[Auction] = ()
    decisions: Sequence[Decision] = ()
    request_id: str | None = None


class BidFilterModel(ServedModel):
    """Call/skip decisions per demand partner for OpenRTB auctions (see the module docstring)."""

    reader_layout = BID_FILTER_LAYOUT  # one row per partner in the auction's context (``GuardedReader.bid_filter``)

    def __init__(self, name: str, config: Config, source: ModelSource, options: ServeOptions | None = None) -> None:
        super().__init__(name, config, source, options)
        self.required_response_headers = True  # KServe then lets postprocess set the content type

    def _check(self, model: TrainedModel) -> None:
        if model.policy is None:
            raise ModelError(
                "the model has no filter policy (per-partner thresholds)",
                where=self.source.describe(),
                hint="serve a bid_filter model trained with thresholds (bidflow train -m bid_filter)",
            )
        if PARTNER_COLUMN not in model.spec.names:
            raise ModelError("a bid filter must read the partner column", got=", ".join(model.spec.names[:8]))

    def _prepare(self, model: TrainedModel, online: GuardedReader | None) -> Policy:
        assert model.policy is not None  # _check ran first
        columns = online.reader.feature_names if online is not None else ()
        assembler = BidFilterAssembler(model.spec, model.encoder, FEATURE_NAMES, PARTNER_COLUMN, columns)
        if online is not None and assembler.uses_online:
            online.reader.set_shape(assembler.rows)  # lookups answer the partners' rows of the matrix
        return Policy(
            assembler,
            dict(model.policy.thresholds),
            model.policy.default_threshold,
            model.policy.exploration_share,
        )

    def _partners(self, model: TrainedModel) -> list[str]:
        return list(model.policy.thresholds) if model.policy is not None else []

    # -- KServe handlers --

    def preprocess(
        self, payload: bytes | dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Batch:
        """v1 body (bytes or dict) or v2 ``InferRequest`` -> validated auctions; ``RequestError`` names the field."""
        if isinstance(payload, InferRequest):
            return Batch(v2=True, auctions=[self._v2_auction(payload)], request_id=payload.id)
        return Batch(v2=False, auctions=self._v1_auctions(payload))

    def predict(
        self, batch: Batch, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> Batch:
        """Score every auction: one online read and one predict call per auction."""
        state = self._loaded()
        decisions = [self._decide(state, auction) for auction in batch.auctions]
        return Batch(v2=batch.v2, decisions=decisions, request_id=batch.request_id)

    def postprocess(
        self, batch: Batch, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> bytes | dict[str, Any] | InferResponse:
        """Decisions -> the v1 JSON body or a v2 ``InferResponse``.

        The v1 body leaves as JSON bytes, which KServe sends as they are (also as the data of a
        binary CloudEvent): for a dict it would build FastAPI's deprecated ``ORJSONResponse``, a
        deprecation check per response, and encode it there.
        """
        version = self.state.version if self.state is not None else None
        if batch.v2:
            return self._v2_response(batch, version)
        body = {"predictions": [_v1_decision(d, version) for d in batch.decisions]}
        if response_headers is None:  # called directly, not by KServe
            return msgspec.to_builtins(body)
        response_headers["content-type"] = "application/json"
        return _JSON.encode(body)

    # -- scoring --

    def _decide(self, state: Loaded, auction: Auction) -> Decision:
        policy: Policy = state.mapping
        assembler = policy.assembler
        req, partners = auction.request, auction.partners
        features = request_features(req, auction.ts_ms)
        explored = is_exploration(req.id, policy.exploration_share)
        thresholds = np.fromiter(
            map(policy.thresholds.get, partners, repeat(policy.default_threshold)),
            dtype=np.float64,
            count=len(partners),
        )
        lookup = Lookup(None)
        if assembler.uses_online and state.online is not None:
            lookup = state.online.bid_filter(
                partners, features.publisher_id, features.country, features.format, features.device_type,
                auction.ts_ms / 1000.0,
            )  # fmt: skip
        if lookup.fail_reason is not None:
            serving_metrics().fail_open.labels(self.name, lookup.fail_reason).inc()
            calls = np.ones(len(partners), dtype=bool)
            state.counts.record(partners, calls.tolist(), explored, True)
            return Decision(req.id, partners, None, thresholds, calls, explored, lookup.fail_reason)
        if lookup.values is None:  # a model without online features
            x = assembler.matrix(features, partners, None)
        else:  # the partners' rows, shaped by the assembler (``_prepare``)
            x = assembler.complete(lookup.values, features)
        scores = state.predictor.predict(x)
        calls = scores >= thresholds
        if explored:
            calls[:] = True
        state.counts.record(partners, calls.tolist(), explored, False)
        return Decision(req.id, partners, scores, thresholds, calls, explored, None)

    # -- request mapping --

    def _v1_auctions(self, payload: Any) -> list[Auction]:
        now_ms = int(time.time() * 1000)
        if isinstance(payload, bytes | bytearray):  # the body as it arrived (``RawV1DataPlane``)
            try:
                body = _V1_DECODER.decode(payload)
            except (msgspec.DecodeError, RecursionError, UnicodeError):
                payload = _json_body(payload)  # not a well-typed body: the checks below name the field
            else:
                return self._typed_auctions(body.instances, now_ms)
        if not isinstance(payload, dict):
            raise RequestError("the body must be a JSON object", field="$", got=type(payload).__name__)
        instances = self._check_instances(payload.get("instances"))
        return [self._v1_auction(instance, f"$.instances[{i}]", now_ms) for i, instance in enumerate(instances)]

    def _check_instances(self, instances: Any) -> list[Any]:
        """``instances`` when it is a list of an allowed length; a ``RequestError`` otherwise."""
        if not isinstance(instances, list) or not instances:
            raise RequestError(
                "the body needs a non-empty 'instances' list (one object per auction)",
                field="$.instances",
                got=_kind(instances),
            )
        if len(instances) > self.options.max_auctions:
            raise RequestError(
                "too many auctions in one request",
                field="$.instances",
                expected=f"at most {self.options.max_auctions}",
                got=str(len(instances)),
            )
        return instances

    def _typed_auctions(self, instances: list[_V1Instance], now_ms: int) -> list[Auction]:
        """Auctions from a body the typed decoder read: the rules and limits are still checked here."""
        self._check_instances(instances)
        auctions = []
        for i, instance in enumerate(instances):
            req = instance.request
            try:
                validate_request(req, self.validation)
            except OpenRTBError as exc:
                raise RequestError.from_openrtb(exc, f"$.instances[{i}].request") from exc
            partners = self._partner_list(instance.partners, req, f"$.instances[{i}].partners", strings=True)
            auctions.append(Auction(req, partners, _ts_ms(instance.ts_ms, f"$.instances[{i}].ts_ms", now_ms)))
        return auctions

    def _v1_auction(self, instance: Any, where: str, now_ms: int) -> Auction:
        if not isinstance(instance, dict):
            raise RequestError("an instance must be an object", field=where, got=_kind(instance))
        unknown = [k for k in instance if k not in _INSTANCE_KEYS]
        if unknown:
            raise RequestError(
                f"unknown field {unknown[0]!r} in an instance",
                field=f"{where}.{unknown[0]}",
                expected=", ".join(sorted(_INSTANCE_KEYS)),
            )
        raw = instance.get("request")
        if raw is None:
            raise RequestError("required field 'request' is missing", field=f"{where}.request")
        try:
            req = decode_request_obj(raw, self.validation)
        except OpenRTBError as exc:
            raise RequestError.from_openrtb(exc, f"{where}.request") from exc
        partners = self._partner_list(instance.get("partners"), req, f"{where}.partners")
        return Auction(req, partners, _ts_ms(instance.get("ts_ms"), f"{where}.ts_ms", now_ms))

    def _v2_auction(self, request: InferRequest) -> Auction:
        inputs = {tensor.name: (i, tensor) for i, tensor in enumerate(request.inputs)}
        unknown = [name for name in inputs if name not in ("request", "partners")]
        if unknown:
            i, _ = inputs[unknown[0]]
            raise RequestError(
                f"unknown input {unknown[0]!r}", field=f"$.inputs[{i}].name", expected="request, partners"
            )
        if "request" not in inputs:
            raise RequestError("input 'request' (BYTES [1], the OpenRTB BidRequest JSON) is missing", field="$.inputs")
        i, tensor = inputs["request"]
        values = _bytes_tensor(tensor, f"$.inputs[{i}]")
        if len(values) != 1:
            raise RequestError(
                "input 'request' holds one bid request", field=f"$.inputs[{i}].data", got=f"{len(values)} elements"
            )
        try:
            req = decode_request(values[0], self.validation)
        except OpenRTBError as exc:
            raise RequestError.from_openrtb(exc, f"$.inputs[{i}].data[0]") from exc
        given: list[str] | None = None
        where = "$.inputs"
        if "partners" in inputs:
            j, partners_tensor = inputs["partners"]
            where = f"$.inputs[{j}].data"
            given = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in _bytes_tensor(
                partners_tensor, f"$.inputs[{j}]")]  # fmt: skip
        partners = self._partner_list(given, req, where)
        parameters = request.parameters or {}
        now_ms = int(time.time() * 1000)
        return Auction(req, partners, _ts_ms(_parameter(parameters.get("ts_ms")), "$.parameters.ts_ms", now_ms))

    def _partner_list(self, given: Any, req: BidRequest, where: str, *, strings: bool = False) -> tuple[str, ...]:
        """The candidate partners: ``given`` (checked), or the request's Prebid bidders.

        ``strings``: ``given`` is known to hold only strings (the typed decoder read it).
        """
        if given is None:
            names = bidders(req)
            if not names:
                raise RequestError(
                    "no candidate partners: give 'partners' or name bidders in imp[].ext.prebid.bidder",
                    field=where,
                )
            return tuple(names[: self.options.max_partners])
        if not isinstance(given, list) or not given:
            raise RequestError("'partners' must be a non-empty list of names", field=where, got=_kind(given))
        if len(given) > self.options.max_partners:
            raise RequestError(
                "too many partners", field=where, expected=f"at most {self.options.max_partners}", got=str(len(given))
            )
        try:  # the common case in one pass of C: distinct, non-empty strings
            distinct = len(set(given)) == len(given) and "" not in given
        except TypeError:  # an unhashable element: the loop below names it
            distinct = False
        if distinct and (strings or all(type(name) is str for name in given)):
            return tuple(given)
        seen: set[str] = set()
        for k, name in enumerate(given):
            if not isinstance(name, str) or not name:
                raise RequestError("a partner is a non-empty string", field=f"{where}[{k}]", got=_kind(name))
            if name in seen:
                raise RequestError("a partner is listed twice", field=f"{where}[{k}]", got=repr(name))
            seen.add(name)
        return tuple(given)

    # -- responses --

    def _v2_response(self, batch: Batch, version: str | None) -> InferResponse:
        (decision,) = batch.decisions
        n = len(decision.partners)
        scores = decision.scores if decision.scores is not None else np.full(n, np.nan)
        outputs = [
            InferOutput("partner", [n], "BYTES", np.array(decision.partners, dtype=object)),
            InferOutput("score", [n], "FP64", scores),
            InferOutput("threshold", [n], "FP64", decision.thresholds),
            InferOutput("decision", [n], "BYTES", np.where(decision.calls, CALL, SKIP).astype(object)),
            InferOutput("explored", [1], "BOOL", np.array([decision.explored])),
            InferOutput("fail_open", [1], "BOOL", np.array([decision.fail_reason is not None])),
        ]
        parameters: dict[str, Any] = {"auction_id": decision.auction_id}
        if decision.fail_reason is not None:
            parameters["fail_open_reason"] = decision.fail_reason
        return InferResponse(
            response_id=batch.request_id or decision.auction_id,
            model_name=self.name,
            model_version=version,
            infer_outputs=outputs,
            parameters=parameters,
        )


def bidders(req: BidRequest) -> list[str]:
    """The bidders named in ``imp[].ext.prebid.bidder`` across impressions, first mention first."""
    names: dict[str, None] = {}
    for imp in req.imp:
        ext = imp.ext
        if not ext:
            continue
        prebid = ext.get("prebid")
        bidder = prebid.get("bidder") if isinstance(prebid, dict) else None
        if isinstance(bidder, dict):
            names.update(dict.fromkeys(bidder))
    return list(names)


class _PartnerDecision(msgspec.Struct):
    partner: str
    score: float | None
    threshold: float
    decision: str


class _Prediction(msgspec.Struct, omit_defaults=True):
    """One auction's v1 answer; structs encode faster than dicts and are cheaper to build."""

    id: str
    model_version: str | None
    explored: bool
    fail_open: bool
    decisions: list[_PartnerDecision]
    fail_open_reason: str | None = None  # left out of the JSON unless failing open


def _v1_decision(decision: Decision, version: str | None) -> _Prediction:
    thresholds = decision.thresholds.tolist()
    scores: list[Any] = decision.scores.tolist() if decision.scores is not None else [None] * len(thresholds)
    return _Prediction(
        decision.auction_id,
        version,
        decision.explored,
        decision.fail_reason is not None,
        [
            _PartnerDecision(p, s, t, CALL if c else SKIP)
            for p, s, t, c in zip(decision.partners, scores, thresholds, decision.calls.tolist(), strict=True)
        ],
        decision.fail_reason,
    )


def _bytes_tensor(tensor: Any, where: str) -> list[Any]:
    if tensor.datatype != "BYTES":
        raise RequestError(f"input '{tensor.name}' must be BYTES", field=f"{where}.datatype", got=str(tensor.datatype))
    data = tensor.data
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    if not isinstance(data, list) or not all(isinstance(v, str | bytes) for v in data):
        raise RequestError(f"input '{tensor.name}' must hold strings", field=f"{where}.data")
    return data


def _parameter(value: Any) -> Any:
    # gRPC parameters arrive as InferParameter messages; REST ones as plain JSON values.
    for kind in ("int64_param", "string_param"):
        if hasattr(value, kind) and value.HasField(kind):
            return getattr(value, kind)
    return value


def _ts_ms(value: Any, where: str, now_ms: int) -> int:
    if value is None:
        return now_ms
    if type(value) is not int or value < 0:
        raise RequestError(
            "ts_ms is the request time in epoch milliseconds", field=where, expected="a non-negative integer",
            got=repr(value)[:40],
        )  # fmt: skip
    return value


def _json_body(body: bytes | bytearray) -> Any:
    """The body as generic JSON values (400 when it is not JSON)."""
    try:
        return _ANY_JSON.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestError("request body is not valid JSON", field="$", got=str(exc)[:200]) from exc
    except RecursionError as exc:
        raise RequestError("request body is nested too deeply to decode", field="$") from exc


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__

"""The bid filter's model server: a ``kserve.Model`` mapping OpenRTB auctions to call/skip decisions.

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

A policy that ranks by expected bid value (objective ``value``) holds its thresholds in CPM; each is
answered divided by the call's CPM estimate from the same online features, so ``threshold`` is
always what ``score`` had to reach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from bidflow.errors import ModelError, OpenRTBError
from bidflow.modeling.economics import PRICE_COLUMNS, is_exploration, reads_prices
from bidflow.openrtb import decode_request, decode_request_obj
from bidflow.openrtb.features import FEATURE_NAMES, request_features
from bidflow.openrtb.model import BidRequest
from bidflow.openrtb.rules import validate_request
from bidflow.serving.assemble import BidFilterAssembler
from bidflow.serving.base import Loaded, ModelSource, ServedModel, ServeOptions
from bidflow.serving.bid_filter_features import LAYOUT as BID_FILTER_LAYOUT
from bidflow.serving.bodies import bytes_tensor, json_body, parameter, ts_ms, type_name, unique_inputs
from bidflow.serving.errors import RequestError
from bidflow.serving.explanations import explain_rows, top_of
from bidflow.serving.metrics import serving_metrics
from bidflow.serving.online import GuardedReader, Lookup
from bidflow.serving.value_scale import scale_thresholds

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.modeling.train import TrainedModel

log = logging.getLogger(__name__)

PARTNER_COLUMN: Final = "partner"  # the bid filter's per-row key (bidflow.modeling.inputs.PARTNER)
CALL: Final = "call"
SKIP: Final = "skip"
_INSTANCE_KEYS: Final = frozenset({"request", "partners", "ts_ms"})
_JSON: Final = msgspec.json.Encoder()


class _V1Instance(msgspec.Struct, forbid_unknown_fields=True):
    """A v1 instance as the typed decoder reads it; the checks that name a bad field run on the generic form."""

    request: BidRequest
    partners: list[str] | None = None
    ts_ms: int | None = None


class _V1Body(msgspec.Struct):
    instances: list[_V1Instance]


# One pass from bytes to typed auctions, instead of JSON -> dicts -> structs.
_V1_DECODER: Final = msgspec.json.Decoder(_V1Body)


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
    price_columns: tuple[int, ...] | None = None  # where the CPM estimate's columns are, if ranked by value

    def on_score_scale(self, thresholds: npt.NDArray[np.float64], x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """The rows' thresholds as scores must reach them: a value threshold over each row's CPM estimate."""
        if self.price_columns is None:
            return thresholds
        return scale_thresholds(thresholds, x, self.price_columns)


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
        if model.policy.ranking == "expected_value" and not reads_prices(model.spec.names):
            raise ModelError(
                "the filter policy ranks by expected bid value but the model reads no partner prices",
                where=self.source.describe(),
                expected=", ".join(PRICE_COLUMNS),
            )

    def _prepare(self, model: TrainedModel, online: GuardedReader | None) -> Policy:
        assert model.policy is not None  # _check ran first
        columns = online.reader.feature_names if online is not None else ()
        assembler = BidFilterAssembler(model.spec, model.encoder, FEATURE_NAMES, PARTNER_COLUMN, columns)
        if online is not None and assembler.uses_online:
            online.reader.set_shape(assembler.rows)  # lookups answer the partners' rows of the matrix
        price_columns = None
        if model.policy.ranking == "expected_value":
            price_columns = tuple(model.spec.names.index(name) for name in PRICE_COLUMNS)
            warm = np.ones((1, len(model.spec.names)), dtype=np.float32)  # the matrices served are float32
            scale_thresholds(np.zeros(1), warm, price_columns)  # compiled at load, not on the first auction
        return Policy(
            assembler,
            dict(model.policy.thresholds),
            model.policy.default_threshold,
            model.policy.exploration_share,
            price_columns,
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
        req, partners = auction.request, auction.partners
        explored = is_exploration(req.id, policy.exploration_share)
        thresholds = np.fromiter(
            map(policy.thresholds.get, partners, repeat(policy.default_threshold)),
            dtype=np.float64,
            count=len(partners),
        )
        x, fail_reason = self._matrix(state, auction)
        if x is None:
            serving_metrics().fail_open.labels(self.name, fail_reason).inc()
            calls = np.ones(len(partners), dtype=bool)
            state.counts.record(partners, calls.tolist(), explored, True)
            return Decision(req.id, partners, None, thresholds, calls, explored, fail_reason)
        scores = state.predictor.predict(x)
        thresholds = policy.on_score_scale(thresholds, x)
        calls = scores >= thresholds
        if explored:
            calls[:] = True
        state.counts.record(partners, calls.tolist(), explored, False)
        return Decision(req.id, partners, scores, thresholds, calls, explored, None)

    def _matrix(self, state: Loaded, auction: Auction) -> tuple[npt.NDArray[np.float32] | None, str | None]:
        """The auction's matrix (one row per partner), or None and why the online store gave no features."""
        assembler = state.mapping.assembler
        features = request_features(auction.request, auction.ts_ms)
        lookup = Lookup(None)
        if assembler.uses_online and state.online is not None:
            lookup = state.online.bid_filter(
                auction.partners, features.publisher_id, features.country, features.format, features.device_type,
                auction.ts_ms / 1000.0,
            )  # fmt: skip
        if lookup.fail_reason is not None:
            return None, lookup.fail_reason
        if lookup.values is None:  # a model without online features
            return assembler.matrix(features, auction.partners, None), None
        return assembler.complete(lookup.values, features), None  # the partners' rows, shaped in ``_prepare``

    # -- explanations --

    def explain_plan(self, batch: Batch, headers: dict[str, str] | None = None) -> Callable[[], dict[str, Any]]:
        """Per auction and partner: the decision predict would make, and the contributions behind its score.

        The decision is computed as predict computes it, but not counted (explaining is not serving).
        An auction whose online features cannot be read is answered as predict answers it (every
        partner called, no score) with nothing to explain.
        """
        state = self._loaded()
        top = top_of(headers, self.options.explain_top)
        policy: Policy = state.mapping
        # Per auction: its answer so far, partners, thresholds, and (matrix, scores) when it has features.
        read: list[tuple[dict[str, Any], tuple[str, ...], list[float], tuple[Any, Any] | None]] = []
        for auction in batch.auctions:
            req, partners = auction.request, auction.partners
            explored = is_exploration(req.id, policy.exploration_share)
            thresholds = [policy.thresholds.get(p, policy.default_threshold) for p in partners]
            x, fail_reason = self._matrix(state, auction)
            if x is not None:
                thresholds = policy.on_score_scale(np.asarray(thresholds, dtype=np.float64), x).tolist()
            answer: dict[str, Any] = {"id": req.id, "model_version": state.version, "explored": explored,
                                      "fail_open": fail_reason is not None}  # fmt: skip
            if x is None:
                answer["fail_open_reason"] = fail_reason
                answer["partners"] = [
                    {"partner": p, "score": None, "threshold": t, "decision": CALL, "contributions": []}
                    for p, t in zip(partners, thresholds, strict=True)
                ]
                read.append((answer, partners, thresholds, None))
            else:
                x = x.copy()  # the assembler's rows may be reused by the next request
                read.append((answer, partners, thresholds, (x, state.predictor.predict(x))))

        def work() -> dict[str, Any]:
            rows = 0
            for answer, partners, thresholds, scored in read:
                if scored is None:
                    continue
                explained = explain_rows(state.model, scored[0], scored[1], top)
                answer["partners"] = [
                    {"partner": p, "threshold": t,
                     "decision": CALL if answer["explored"] or e["score"] >= t else SKIP, **e}
                    for p, t, e in zip(partners, thresholds, explained, strict=True)
                ]  # fmt: skip
                rows += len(partners)
            serving_metrics().explained.labels(self.name).inc(rows)
            return {"explanations": [answer for answer, *_ in read]}

        return work

    # -- request mapping --

    def _v1_auctions(self, payload: Any) -> list[Auction]:
        now_ms = int(time.time() * 1000)
        if isinstance(payload, bytes | bytearray):  # the body as it arrived (``RawV1DataPlane``)
            try:
                body = _V1_DECODER.decode(payload)
            except (msgspec.DecodeError, RecursionError, UnicodeError):
                payload = json_body(payload)  # not a well-typed body: the checks below name the field
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
                got=type_name(instances),
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
            auctions.append(Auction(req, partners, ts_ms(instance.ts_ms, f"$.instances[{i}].ts_ms", now_ms)))
        return auctions

    def _v1_auction(self, instance: Any, where: str, now_ms: int) -> Auction:
        if not isinstance(instance, dict):
            raise RequestError("an instance must be an object", field=where, got=type_name(instance))
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
        return Auction(req, partners, ts_ms(instance.get("ts_ms"), f"{where}.ts_ms", now_ms))

    def _v2_auction(self, request: InferRequest) -> Auction:
        inputs = unique_inputs(request.inputs)
        unknown = [name for name in inputs if name not in ("request", "partners")]
        if unknown:
            i, _ = inputs[unknown[0]]
            raise RequestError(
                f"unknown input {unknown[0]!r}", field=f"$.inputs[{i}].name", expected="request, partners"
            )
        if "request" not in inputs:
            raise RequestError("input 'request' (BYTES [1], the OpenRTB BidRequest JSON) is missing", field="$.inputs")
        i, tensor = inputs["request"]
        values = bytes_tensor(tensor, f"$.inputs[{i}]")
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
            given = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in bytes_tensor(
                partners_tensor, f"$.inputs[{j}]")]  # fmt: skip
        partners = self._partner_list(given, req, where)
        parameters = request.parameters or {}
        now_ms = int(time.time() * 1000)
        return Auction(req, partners, ts_ms(parameter(parameters.get("ts_ms")), "$.parameters.ts_ms", now_ms))

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
            raise RequestError("'partners' must be a non-empty list of names", field=where, got=type_name(given))
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
                raise RequestError("a partner is a non-empty string", field=f"{where}[{k}]", got=type_name(name))
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

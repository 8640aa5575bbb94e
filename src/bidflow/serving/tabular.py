"""The tabular model server: a score per row for any kind whose requests are rows of named fields.

Same loading, compiled predictor, errors and metrics as the bid filter (``ServedModel``); only the
request mapping differs. The input fields are the model's own non-Feast columns (its
``FeatureSpec``), and its FeatureService, if it has one, is looked up online by the rows' join keys.
The CTR kind (``bidflow.serving.ctr``) and kinds users add without a server of their own use it.

v1 (``POST /v1/models/<name>:predict``), e.g. for the CTR kind::

    {"instances": [{"useragent": "windows_chrome", "IP": "...", "region": "216", "city": "217",
                    "adexchange": "1", "domain": "...", "slotid": "...", "slotvisibility": "0",
                    "slotformat": "0", "creative": "...", "slotprice": "0",
                    "slotwidth": 300, "slotheight": 250}],
     "ts_ms": 1382486400000}                                       # optional: default now
    -> {"predictions": [0.00071], "model_version": "3", "fail_open": false}

v2: one input per field, each shape [n] (BYTES for categorical fields, numbers for the numeric
ones); one output (FP64 [n]) named after the server's ``output`` (``score``; ``ctr`` for CTR).

A field that is absent codes as *unseen* (categorical) or missing (numeric), as in training; the
FeatureService's join keys are required. When the online store fails, rows are scored with the
service's defaults (what training used for entities without history) and the response says
``fail_open: true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from bidflow.errors import ModelError
from bidflow.serving.assemble import RowAssembler
from bidflow.serving.base import Loaded, ServedModel
from bidflow.serving.bodies import check_shape, json_body, parameter, ts_ms, unique_inputs
from bidflow.serving.errors import RequestError
from bidflow.serving.explanations import explain_rows, top_of
from bidflow.serving.metrics import serving_metrics

if TYPE_CHECKING:
    from bidflow.modeling.train import TrainedModel
    from bidflow.serving.online import GuardedReader


@dataclass(frozen=True)
class Rows:
    """Checked rows of one request, with the loaded model that will score them."""

    v2: bool
    rows: list[dict[str, Any]]
    ts_ms: int
    request_id: str | None
    state: Loaded


@dataclass(frozen=True)
class Scored:
    """Scores of ``rows`` (and why the online features were missing, if they were)."""

    rows: Rows
    scores: npt.NDArray[np.float64]
    fail_reason: str | None


class TabularModel(ServedModel):
    """A score per row of named fields (see the module docstring)."""

    output = "score"  # the v2 output's name

    def _check(self, model: TrainedModel) -> None:
        if model.policy is not None:
            raise ModelError(
                "this model decides per partner (it has thresholds): serve it with its kind's own server",
                where=self.source.describe(),
            )

    def _prepare(self, model: TrainedModel, online: GuardedReader | None) -> tuple[RowAssembler, tuple[str, ...]]:
        columns = online.reader.feature_names if online is not None else ()
        assembler = RowAssembler(model.spec, model.encoder, columns)
        # The service's join keys (domain, slotid, ...) must be fields a request row carries.
        keys = online.reader.spec.join_keys if online is not None else ()
        missing = [k for k in keys if k not in assembler.inputs]
        if missing:
            raise ModelError(
                "the model's feature service is keyed by fields the model does not read", got=", ".join(missing)
            )
        return assembler, tuple(keys)

    def preprocess(self, payload: bytes | dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Rows:
        """v1 body or v2 ``InferRequest`` -> checked rows (scored by the model loaded now)."""
        state = self._loaded()
        assembler, keys = state.mapping
        now_ms = int(time.time() * 1000)
        if isinstance(payload, bytes | bytearray):  # the body as it arrived (``RawV1DataPlane``)
            payload = json_body(payload)
        if isinstance(payload, InferRequest):
            rows = self._v2_rows(payload)
            for k, row in enumerate(rows):
                _check_row(row, f"$.inputs[*].data[{k}]", assembler.inputs, keys)
            ts = parameter((payload.parameters or {}).get("ts_ms"))
            return Rows(True, rows, ts_ms(ts, "$.parameters.ts_ms", now_ms), payload.id, state)
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list) or not payload["instances"]:
            raise RequestError("the body needs a non-empty 'instances' list (one object per impression)", field="$")
        rows = payload["instances"]
        if len(rows) > self.options.max_partners:
            raise RequestError("too many rows", field="$.instances", expected=f"at most {self.options.max_partners}")
        for i, row in enumerate(rows):
            _check_row(row, f"$.instances[{i}]", assembler.inputs, keys)
        return Rows(False, rows, ts_ms(payload.get("ts_ms"), "$.ts_ms", now_ms), None, state)

    def predict(self, batch: Rows, headers: dict[str, str] | None = None) -> Scored:
        """Scores for the rows: one online read, one predict call."""
        x, failed = self._matrix(batch)
        if failed is not None:
            serving_metrics().fail_open.labels(self.name, failed).inc()
        return Scored(batch, batch.state.predictor.predict(x), failed)

    def explain_plan(self, batch: Rows, headers: dict[str, str] | None = None) -> Callable[[], dict[str, Any]]:
        """Per row: the score predict would give, and the contributions behind it (v1 JSON only).

        Rows whose online features cannot be read are explained as predict scores them, with the
        service's defaults, and the answer says ``fail_open: true``.
        """
        state = batch.state
        top = top_of(headers, self.options.explain_top)
        x, failed = self._matrix(batch)
        scores = state.predictor.predict(x)

        def work() -> dict[str, Any]:
            explained = explain_rows(state.model, x, scores, top)
            serving_metrics().explained.labels(self.name).inc(len(explained))
            body: dict[str, Any] = {"explanations": explained, "model_version": state.version}
            body["fail_open"] = failed is not None
            if failed is not None:
                body["fail_open_reason"] = failed
            return body

        return work

    def _matrix(self, batch: Rows) -> tuple[npt.NDArray[np.float32], str | None]:
        """The rows' matrix, and why the online features were replaced by the service's defaults (if they were)."""
        state = batch.state
        assembler, keys = state.mapping
        online = None
        failed: str | None = None
        if state.online is not None:
            entities: dict[str, Any] = {key: [str(row[key]) for row in batch.rows] for key in keys}
            lookup = state.online.rows(entities, batch.ts_ms / 1000.0)
            if lookup.fail_reason is not None:
                failed = lookup.fail_reason
                online = np.tile(state.online.reader.defaults, (len(batch.rows), 1))
            else:
                online = lookup.values
        return assembler.matrix(batch.rows, online), failed

    def postprocess(
        self, result: Scored, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        """Scores -> the v1 body or a v2 ``InferResponse``."""
        v2, scores, reason = result.rows.v2, result.scores, result.fail_reason
        fail_open, request_id, version = reason is not None, result.rows.request_id, result.rows.state.version
        if v2:
            parameters: dict[str, Any] = {"fail_open": fail_open}
            if reason is not None:
                parameters["fail_open_reason"] = reason
            return InferResponse(
                response_id=request_id or "",
                model_name=self.name,
                model_version=version,
                infer_outputs=[InferOutput(self.output, [len(scores)], "FP64", scores)],
                parameters=parameters,
            )
        body: dict[str, Any] = {"predictions": scores.tolist(), "model_version": version, "fail_open": fail_open}
        if reason is not None:
            body["fail_open_reason"] = reason
        return body

    def _v2_rows(self, request: InferRequest) -> list[dict[str, Any]]:
        columns: dict[str, list[Any]] = {}
        n: int | None = None
        for i, tensor in unique_inputs(request.inputs).values():
            data = tensor.data.ravel().tolist() if isinstance(tensor.data, np.ndarray) else tensor.data
            if not isinstance(data, list):
                raise RequestError(f"input '{tensor.name}' holds no data", field=f"$.inputs[{i}].data")
            check_shape(tensor, len(data), f"$.inputs[{i}]")
            if n is not None and len(data) != n:
                raise RequestError(
                    "inputs differ in length", field=f"$.inputs[{i}].data", expected=str(n), got=str(len(data))
                )
            n = len(data)
            columns[tensor.name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
        if not n:
            raise RequestError("the request has no rows", field="$.inputs")
        return [_row(columns, k) for k in range(n)]


def _check_row(row: Any, where: str, allowed: tuple[str, ...], keys: tuple[str, ...]) -> None:
    if not isinstance(row, dict):
        raise RequestError("an instance must be an object", field=where, got=type(row).__name__)
    for key, value in row.items():
        if key not in allowed:
            raise RequestError(f"unknown field {key!r}", field=f"{where}.{key}", expected=", ".join(allowed))
        if isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
            raise RequestError("a field holds a string or a number", field=f"{where}.{key}", got=type(value).__name__)
    for key in keys:
        if row.get(key) is None:
            raise RequestError(f"required field {key!r} is missing (a feature-store key)", field=f"{where}.{key}")


def _row(columns: Mapping[str, list[Any]], k: int) -> dict[str, Any]:
    return {name: values[k] for name, values in columns.items()}

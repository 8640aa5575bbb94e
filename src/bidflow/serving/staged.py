"""The stage sequence every bidflow model server runs: KServe's preprocess -> predict -> postprocess, synchronously.

``StagedModel`` is the ``kserve.Model`` the kinds' servers share whatever they serve: the XGBoost kinds
through ``bidflow.serving.base.ServedModel``, the bidder (``bidflow.serving.bidder``) directly. It
keeps KServe's stages and stage histograms and drops what KServe pays per request to support
handlers that might be coroutines (see ``__call__``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from kserve import Model
from kserve.model import InferenceVerb

from bidflow.serving.metrics import BufferedHistogram


class StagedModel(Model):  # type: ignore[misc]  # kserve ships no type information
    """A ``kserve.Model`` whose ``preprocess``, ``predict`` and ``postprocess`` are plain functions."""

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
        A stage that raises is not observed.

        Explain requests (``bidflow.serving.explanations``) take the same preprocess, then the kind's
        ``explain``, whose answer is the response: they are timed apart (``bidflow_serving_explain_seconds``)
        and never reach the predict stages or their histograms.
        """
        if verb is InferenceVerb.EXPLAIN:
            work = self.explain_plan(self.preprocess(body, headers), headers)
            return await asyncio.to_thread(work), {}
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

    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``:explain`` answer for a preprocessed request, computed here and now."""
        return self.explain_plan(payload, headers)()

    def explain_plan(self, payload: Any, headers: dict[str, str] | None = None) -> Callable[[], dict[str, Any]]:
        """Read what the explanation needs (here, on the caller's thread); the returned call computes it
        and may run on another thread (overridden per kind)."""
        from kserve.errors import InvalidInput

        raise InvalidInput(f"model {self.name} has no explanations")

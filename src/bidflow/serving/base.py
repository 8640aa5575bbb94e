"""What every bidflow model server shares: where its model comes from, loading, readiness, stage timers.

A kind's server (``bidflow.serving.bid_filter.BidFilterModel``, ``bidflow.serving.tabular.TabularModel``)
subclasses ``ServedModel`` and adds only its request mapping: ``_check`` refuses a model it cannot
serve, ``_prepare`` builds the request -> matrix mapping kept in ``Loaded``, and KServe's
``preprocess`` / ``predict`` / ``postprocess`` do the rest (run in sequence by ``StagedModel``, which
the bidder's server shares).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bidflow.errors import BidflowError
from bidflow.openrtb import ValidationContext
from bidflow.serving.metrics import ModelCounts, serving_metrics
from bidflow.serving.online import DEFAULT_CACHE_S, DEFAULT_COOLDOWN_S, DEFAULT_TIMEOUT_S, GuardedReader
from bidflow.serving.predictor import NAME as PREDICTOR_NAME
from bidflow.serving.predictor import TreePredictor, probe_rows
from bidflow.serving.staged import StagedModel

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.features.online import RowLayout
    from bidflow.modeling.train import TrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a registry alias or version, or a URI / local folder.

    Attributes:
        name: the registered model name (also the default endpoint name).
        ref: alias (``champion``, ``candidate``) or version number; used when ``uri`` is None.
        uri: ``models:/...`` or ``runs:/...`` (MLflow), or a folder written by ``save_model``.
        version: the version label the server reports, when the source cannot tell it (a folder the
            storage initializer filled on KServe); the drift monitor finds the serving role by it.
    """

    name: str
    ref: str = "champion"
    uri: str | None = None
    version: str | None = None

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
        explain_top: contributions per row on the ``:explain`` route (0: all; ``bidflow.serving.explanations``).
    """

    validation: ValidationContext = field(default_factory=ValidationContext)
    max_partners: int = 256
    max_auctions: int = 64
    feature_timeout_s: float = DEFAULT_TIMEOUT_S
    breaker_cooldown_s: float = DEFAULT_COOLDOWN_S
    feature_cache_s: float = DEFAULT_CACHE_S
    explain_top: int = 8


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
        return model, source.version or ref.version
    if source.local is not None:
        return load_model(source.local), source.version or str(source.local)
    return registry.load_uri(config.registry, source.uri), source.version or source.uri


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
    timeout_s = options.feature_timeout_s
    reader = OnlineFeatureReader(
        store, service, layout=layout, cache_s=options.feature_cache_s, refresh=True, timeout_s=timeout_s
    )
    return GuardedReader(reader, cooldown_s=options.breaker_cooldown_s)


class ServedModel(StagedModel):
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
        serving_metrics().model_ready.labels(name).set(0)

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
        serving_metrics().model_ready.labels(self.name).set(1)
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

    def stop(self) -> None:
        """Close the online reader (KServe calls this on shutdown)."""
        if self.state is not None and self.state.online is not None:
            self.state.online.close()
        super().stop()

    def _load(self) -> Loaded:
        model, version = load_trained(self.config, self.source)
        self._check(model)
        # XGBoost computes only explanations here (scores come from the compiled predictor): one thread,
        # so that an explain request never takes the cores the predict path runs on.
        model.booster.set_param({"nthread": 1})
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

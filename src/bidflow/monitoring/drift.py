"""Drift detection over served traffic: alibi-detect behind one small protocol.

A detector is fitted on a **reference** (rows of the monitored columns, written at training
time) and compares each **window** of served rows with it. Which columns are monitored is the
kind's (``Columns``, from its ``DriftShape``: the bid filter's request features per auction, or a
kind's instance fields per served instance) and is saved with the detector:

* categorical columns: Chi-square test of the category counts. Categories are coded with a
  vocabulary fitted on the reference; a value the reference never saw maps to one extra "other"
  code, so a flood of a new publisher category or device is drift, not an error;
* numeric columns: two-sample Kolmogorov-Smirnov test. ``score`` is the model's score of the row
  (for the bid filter the mean partner score of the auction: prediction drift); rows without a
  score (NaN) are left out of that one test.

Every feature is tested at ``p_value / n_features`` (Bonferroni), so the chance of a false alarm
on a window is at most ``p_value``. Two backends give the same decisions:

* ``alibi``: ``alibi_detect.cd.TabularDrift`` (Chi-square + K-S) over the request features and
  ``alibi_detect.cd.KSDrift`` over the score; persisted with ``alibi_detect.saving.save_detector``.
  alibi-detect 0.13.0 needs numpy<2, so it lives only in the monitor's environment
  (``make monitor-setup``, ``.venv-monitor``) and is imported inside functions here;
* ``scipy``: the same tests with ``scipy.stats``, for drift checks without alibi-detect (and as
  the example of another backend behind ``DriftDetector``).

Typical use (the bid filter's columns are the default; pass ``columns`` for another kind)::

    rows = [drift_row(request_features(req, ts_ms), score) for ...]
    detector = fit_detector(drift_frame(reference_rows), p_value=0.01)
    save_detector(detector, Path("deploy/detector/7"))
    report = load_detector(Path("deploy/detector/7")).predict(drift_frame(rows))
    report.drift, report.drifted
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from bidflow.errors import MonitorError
from bidflow.kinds.base import MISSING as UNKNOWN
from bidflow.kinds.base import SCORE
from bidflow.kinds.bid_filter import DRIFT_CATEGORICAL, DRIFT_NUMERIC
from bidflow.kinds.bid_filter import drift_row as drift_row

if TYPE_CHECKING:
    from bidflow.config import MonitorConfig
    from bidflow.kinds.base import DriftShape

Backend = Literal["alibi", "scipy"]
Kind = Literal["numeric", "categorical"]

# The bid filter's columns: the default of every function here, and what a sidecar without its own
# column lists (none was written without them) describes.
MONITORED_CATEGORICAL: Final[tuple[str, ...]] = DRIFT_CATEGORICAL
MONITORED_NUMERIC: Final[tuple[str, ...]] = (*DRIFT_NUMERIC, SCORE)
MONITORED_COLUMNS: Final = MONITORED_CATEGORICAL + MONITORED_NUMERIC

SIDECAR: Final = "bidflow-drift.json"
FORMAT_VERSION: Final = 1
BACKENDS: Final[tuple[Backend, ...]] = ("alibi", "scipy")
SETUP_HINT: Final = (
    "alibi-detect runs in the monitor's own environment (it needs numpy<2): run `make monitor-setup` and use "
    ".venv-monitor/bin/python, or fit with backend='scipy'"
)

# The bid filter's dtypes: its flags (interstitial, device_type, ...) are ints, the rest text.
_BID_FILTER_INTS: Final = frozenset(
    {"device_type", "connection_type", "interstitial", "rewarded", "has_user_id", "secure", "tmax"}
)
_TABULAR_DIR: Final = "tabular"
_SCORE_DIR: Final = "score"
_REFERENCE_FILE: Final = "reference.npz"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Columns:
    """The monitored columns of one kind: categorical ones, then numeric ones (matrix order), then ``score``.

    Attributes:
        categorical: tested by Chi-square.
        numeric: tested by Kolmogorov-Smirnov (without ``score``, which every detector adds).
    """

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    def __post_init__(self) -> None:
        names = (*self.categorical, *self.numeric)
        if not names or len(set(names)) != len(names) or SCORE in names:
            raise MonitorError(
                "monitored columns must be distinct and not empty, and 'score' is added by the detector",
                got=", ".join(names) or "none",
            )

    @classmethod
    def of(cls, shape: DriftShape) -> Columns:
        """A kind's drift shape's columns."""
        return cls(tuple(shape.categorical), tuple(shape.numeric))

    @property
    def features(self) -> tuple[str, ...]:
        """The columns of the tabular test, in matrix order."""
        return (*self.categorical, *self.numeric)

    @property
    def all(self) -> tuple[str, ...]:
        """Every column a drift frame has."""
        return (*self.features, SCORE)

    def dtypes(self) -> dict[str, str]:
        """Column dtypes of a drift frame: ints for the bid filter's flags, text for other categories."""
        bid_filter = self == BID_FILTER
        types = {name: "int64" if bid_filter and name in _BID_FILTER_INTS else "object" for name in self.categorical}
        types.update({name: "int64" if bid_filter and name in _BID_FILTER_INTS else "float64" for name in self.numeric})
        types[SCORE] = "float64"
        return types


BID_FILTER: Final = Columns(DRIFT_CATEGORICAL, DRIFT_NUMERIC)


# -- results --


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test on one window.

    Attributes:
        name: the monitored column.
        kind: ``categorical`` (Chi-square) or ``numeric`` (Kolmogorov-Smirnov).
        statistic: the Chi-square statistic or the K-S distance.
        p_value: the test's p-value (float32 precision, as alibi-detect reports it).
        drift: ``p_value`` is below the report's corrected threshold.
    """

    name: str
    kind: Kind
    statistic: float
    p_value: float
    drift: bool


@dataclass(frozen=True)
class DriftReport:
    """The result of comparing one window with the reference.

    Attributes:
        drift: at least one feature drifted.
        threshold: the per-feature p-value threshold after the Bonferroni correction.
        features: one entry per tested feature (``score`` is absent when the window has no scores).
        n_reference: reference rows the detector was fitted on.
        n_current: rows in the window.
        backend: ``alibi`` or ``scipy``.
    """

    drift: bool
    threshold: float
    features: tuple[FeatureDrift, ...]
    n_reference: int
    n_current: int
    backend: str

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the drifted features, most significant first."""
        hits = sorted((f for f in self.features if f.drift), key=lambda f: f.p_value)
        return tuple(f.name for f in hits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain floats, finite numbers only)."""
        return {
            "drift": self.drift,
            "threshold": self.threshold,
            "drifted": list(self.drifted),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "backend": self.backend,
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "statistic": _finite(f.statistic),
                    "p_value": _finite(f.p_value),
                    "drift": f.drift,
                }
                for f in self.features
            ],
        }


class DriftDetector(Protocol):
    """What every backend offers: a fitted detector that judges one window at a time."""

    backend: str
    columns: tuple[str, ...]
    monitored: Columns

    def predict(self, current: pd.DataFrame) -> DriftReport:
        """Compare ``current`` (``drift_frame`` rows) with the reference."""
        ...


# -- rows --


def drift_frame(rows: Sequence[dict[str, Any]], columns: Columns = BID_FILTER) -> pd.DataFrame:
    """Monitored rows (``drift_row``, or a kind's ``ServedRow.values``) as a frame with fixed column order
    and dtypes (also when empty)."""
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns.all))
    dtypes = columns.dtypes()
    try:
        return frame.astype(dtypes)
    except (TypeError, ValueError) as exc:
        raise MonitorError(
            "drift rows have values of the wrong type",
            expected=", ".join(f"{name}: {dtype}" for name, dtype in dtypes.items()),
            got=str(exc)[:200],
            hint="build rows with the kind's drift shape (bidflow.kinds.base.DriftShape)",
        ) from exc


# -- fitting --


def fit_detector(
    reference: pd.DataFrame, p_value: float, backend: Backend = "alibi", columns: Columns = BID_FILTER
) -> DriftDetector:
    """A detector over ``columns`` for windows compared with ``reference`` (``drift_frame`` columns; extra
    columns are ignored).

    A reference whose ``score`` column is empty (no model scores) gives a detector without the
    score test; ``columns`` says what is tested.
    """
    if not 0.0 < p_value < 1.0:
        raise MonitorError("drift test level out of range", expected="0 < p_value < 1", got=str(p_value))
    frame = _checked(reference, "reference", columns)
    encoder = _Encoder.fit(frame, columns)
    x_ref = encoder.encode(frame, "reference")
    score_ref = _scores(frame)
    fitted = _Fitted(encoder, p_value, len(frame), score_ref.size > 0)
    if backend == "alibi":
        return AlibiDetector.build(fitted, x_ref, score_ref)
    if backend == "scipy":
        return ScipyDetector(fitted, x_ref, score_ref)
    raise MonitorError("unknown drift backend", expected=" or ".join(BACKENDS), got=repr(backend))


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig) -> DriftReport:
    """Fit an alibi-detect detector on ``reference`` at ``cfg.p_value`` and judge ``current`` with it."""
    return fit_detector(reference, cfg.p_value, backend="alibi").predict(current)


# -- persistence --


def save_detector(detector: DriftDetector, path: Path) -> None:
    """Write ``detector`` to the folder ``path`` (replacing an earlier detector folder there).

    Layout: ``bidflow-drift.json`` (backend, columns: categorical and numeric, category vocabularies,
    p-value) and, for
    ``alibi``, ``tabular/`` and ``score/`` written by ``alibi_detect.saving.save_detector``
    (``config.toml`` + ``x_ref.npy`` each); for ``scipy``, ``reference.npz``.
    """
    if not isinstance(detector, AlibiDetector | ScipyDetector):
        raise MonitorError(
            "cannot save this drift detector",
            expected="a detector from bidflow.monitoring.drift.fit_detector",
            got=type(detector).__name__,
        )
    path = Path(path)
    if path.exists() and not (path.is_dir() and ((path / SIDECAR).is_file() or not any(path.iterdir()))):
        raise MonitorError(
            "refusing to overwrite a path that is not a drift detector folder",
            where=path,
            hint="choose an empty or new folder",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written beside the target and renamed into place: a reader never sees half a detector
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise MonitorError("cannot write the drift detector", where=path, got=str(exc)) from exc
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the detector from a monitor running as another user
        detector.write(staging)
        (staging / SIDECAR).write_text(json.dumps(detector.sidecar(), indent=2) + "\n", encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except (OSError, RuntimeError) as exc:  # alibi's save_detector raises RuntimeError("Saving failed ...")
        raise MonitorError("cannot write the drift detector", where=path, got=str(exc)[:300]) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; left over only on failure


def load_detector(path: Path) -> DriftDetector:
    """The detector saved by ``save_detector`` in ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise MonitorError(
            "drift detector folder not found",
            where=path,
            hint="fit one at training time (`python -m bidflow.monitoring fit`) or point monitor.detector at it",
        )
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        saved_by_alibi = (path / "config.toml").is_file()
        raise MonitorError(
            "not a bidflow drift detector folder" + (" (a bare alibi-detect detector)" if saved_by_alibi else ""),
            where=path,
            expected=f"{SIDECAR} beside the saved detector",
            hint="save detectors with bidflow.monitoring.drift.save_detector",
        )
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        version, backend = meta["format"], meta["backend"]
        fitted = _Fitted.from_sidecar(meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MonitorError("drift detector description is unreadable", where=sidecar, got=str(exc)[:200]) from exc
    if version != FORMAT_VERSION:
        raise MonitorError(
            "drift detector saved in another format version",
            where=sidecar,
            expected=str(FORMAT_VERSION),
            got=str(version),
            hint="fit the detector again with this bidflow",
        )
    if backend == "alibi":
        return AlibiDetector.read(fitted, path)
    if backend == "scipy":
        return ScipyDetector.read(fitted, path)
    raise MonitorError("unknown drift detector backend", where=sidecar, expected=" or ".join(BACKENDS), got=backend)


# -- backends --


@dataclass(frozen=True)
class _Encoder:
    """Category vocabularies fitted on the reference; frames to the float matrix both backends test."""

    columns: Columns
    vocabularies: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Columns) -> _Encoder:
        return cls(columns, {name: tuple(sorted(set(_labels(frame[name])))) for name in columns.categorical})

    def encode(self, frame: pd.DataFrame, what: str) -> FloatArray:
        """Columns in ``Columns.features`` order: category codes (unseen -> len(vocabulary)), then the numbers."""
        categorical = self.columns.categorical
        x = np.empty((len(frame), len(self.columns.features)), dtype=np.float64)
        for i, name in enumerate(categorical):
            codes = pd.Categorical(_labels(frame[name]), categories=self.vocabularies[name]).codes
            x[:, i] = np.where(codes < 0, len(self.vocabularies[name]), codes)
        for i, name in enumerate(self.columns.numeric, start=len(categorical)):
            values = _numbers(frame[name], name, what)
            if np.isnan(values).any():
                raise MonitorError(
                    f"{what} column '{name}' has missing values",
                    expected="a number in every row (the kind's drift shape always writes one)",
                    got=f"{int(np.isnan(values).sum())} missing of {len(values)}",
                )
            x[:, i] = values
        return x

    def category_counts(self) -> tuple[int, ...]:
        return tuple(len(self.vocabularies[name]) for name in self.columns.categorical)


@dataclass(frozen=True)
class _Fitted:
    """What both backends share: the encoder, the test level, the reference size."""

    encoder: _Encoder
    p_value: float
    n_reference: int
    has_score: bool

    @property
    def monitored(self) -> Columns:
        return self.encoder.columns

    @property
    def columns(self) -> tuple[str, ...]:
        features = self.monitored.features
        return (*features, SCORE) if self.has_score else features

    @property
    def threshold(self) -> float:
        return self.p_value / len(self.columns)

    def sidecar(self, backend: Backend) -> dict[str, Any]:
        from bidflow import __version__

        return {
            "format": FORMAT_VERSION,
            "backend": backend,
            "columns": list(self.columns),
            "categorical": list(self.monitored.categorical),
            "numeric": [*self.monitored.numeric, *((SCORE,) if self.has_score else ())],
            "vocabularies": {name: list(values) for name, values in self.encoder.vocabularies.items()},
            "p_value": self.p_value,
            "threshold": self.threshold,
            "n_reference": self.n_reference,
            "bidflow": __version__,
        }

    @classmethod
    def from_sidecar(cls, meta: dict[str, Any]) -> _Fitted:
        columns = tuple(meta["columns"])
        monitored = Columns(
            tuple(str(c) for c in meta["categorical"]), tuple(str(c) for c in meta["numeric"] if c != SCORE)
        )
        if columns not in ((*monitored.features, SCORE), monitored.features):
            raise ValueError(f"columns {list(columns)} are not its categorical then numeric columns")
        vocabularies = {name: tuple(str(v) for v in meta["vocabularies"][name]) for name in monitored.categorical}
        return cls(
            _Encoder(monitored, vocabularies), float(meta["p_value"]), int(meta["n_reference"]), SCORE in columns
        )

    def report(
        self,
        backend: str,
        n_current: int,
        tabular: tuple[npt.NDArray[Any], npt.NDArray[Any]],
        score: tuple[float, float] | None,
    ) -> DriftReport:
        """Assemble the report from per-feature (p-values, statistics) of the tabular part and the score."""
        threshold = self.threshold
        p_values, statistics = tabular
        categorical = frozenset(self.monitored.categorical)
        tested: list[tuple[str, Kind, float, float]] = [
            (name, "categorical" if name in categorical else "numeric", float(s), float(p))
            for name, p, s in zip(self.monitored.features, p_values, statistics, strict=True)
        ]
        if score is not None:
            tested.append((SCORE, "numeric", score[1], score[0]))
        features = tuple(
            FeatureDrift(name, kind, statistic, p, bool(p < threshold)) for name, kind, statistic, p in tested
        )
        return DriftReport(
            drift=any(f.drift for f in features),
            threshold=threshold,
            features=features,
            n_reference=self.n_reference,
            n_current=n_current,
            backend=backend,
        )

    def window(self, current: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
        frame = _checked(current, "current window", self.monitored)
        return self.encoder.encode(frame, "current window"), _scores(frame) if self.has_score else _EMPTY


_EMPTY: Final = np.empty(0, dtype=np.float64)


class AlibiDetector:
    """alibi-detect's ``TabularDrift`` (request features) and ``KSDrift`` (score) with bidflow's encoding.

    Both alibi detectors are built with ``p_val`` scaled so that their own Bonferroni threshold
    (``p_val / n_features``) equals bidflow's ``p_value / len(columns)``; the report's per-feature
    p-values are alibi's ``return_p_val`` output.
    """

    backend: str = "alibi"

    def __init__(self, fitted: _Fitted, tabular: Any, score: Any | None) -> None:
        self.fitted = fitted
        self.columns: tuple[str, ...] = fitted.columns
        self.monitored: Columns = fitted.monitored
        self.tabular = tabular
        self.score = score

    @classmethod
    def build(cls, fitted: _Fitted, x_ref: FloatArray, score_ref: FloatArray) -> AlibiDetector:
        cd = _alibi("cd")
        threshold = fitted.threshold
        tabular = cd.TabularDrift(
            x_ref,
            p_val=threshold * len(fitted.monitored.features),
            categories_per_feature=dict(enumerate(fitted.encoder.category_counts())),
            correction="bonferroni",
        )
        score = (
            cd.KSDrift(score_ref.reshape(-1, 1), p_val=threshold, correction="bonferroni") if fitted.has_score else None
        )
        return cls(fitted, tabular, score)

    def predict(self, current: pd.DataFrame) -> DriftReport:
        x, scores = self.fitted.window(current)
        out = self.tabular.predict(x, drift_type="batch", return_p_val=True, return_distance=True)["data"]
        score: tuple[float, float] | None = None
        if self.score is not None and scores.size:
            data = self.score.predict(scores.reshape(-1, 1), return_p_val=True, return_distance=True)["data"]
            score = (float(data["p_val"][0]), float(data["distance"][0]))
        return self.fitted.report(self.backend, len(x), (out["p_val"], out["distance"]), score)

    def sidecar(self) -> dict[str, Any]:
        meta = self.fitted.sidecar("alibi")
        meta["alibi_detect"] = str(getattr(importlib.import_module("alibi_detect"), "__version__", "unknown"))
        return meta

    def write(self, folder: Path) -> None:
        saving = _alibi("saving")
        with _quiet_alibi():
            for name, detector in ((_TABULAR_DIR, self.tabular), (_SCORE_DIR, self.score)):
                if detector is not None:
                    (folder / name).mkdir()
                    saving.save_detector(detector, folder / name)

    @classmethod
    def read(cls, fitted: _Fitted, path: Path) -> AlibiDetector:
        saving = _alibi("saving")
        parts: dict[str, Any] = {}
        for name, wanted in ((_TABULAR_DIR, True), (_SCORE_DIR, fitted.has_score)):
            if not wanted:
                continue
            try:
                with _quiet_alibi():
                    parts[name] = saving.load_detector(path / name)
            except Exception as exc:  # alibi raises whatever its loaders raise
                raise MonitorError(
                    "alibi-detect could not load the saved drift detector",
                    where=path / name,
                    got=f"{type(exc).__name__}: {str(exc)[:200]}",
                    hint="fit and save the detector again with the monitor environment's alibi-detect",
                ) from exc
        tabular = parts[_TABULAR_DIR]
        n_features = len(fitted.monitored.features)
        if type(tabular).__name__ != "TabularDrift" or getattr(tabular, "n_features", None) != n_features:
            raise MonitorError(
                "saved drift detector does not match its description",
                where=path / _TABULAR_DIR,
                expected=f"TabularDrift over {n_features} features",
                got=f"{type(tabular).__name__} over {getattr(tabular, 'n_features', '?')} features",
            )
        return cls(fitted, tabular, parts.get(_SCORE_DIR))


class ScipyDetector:
    """The same tests as ``AlibiDetector`` with ``scipy.stats`` (no alibi-detect needed).

    Chi-square: ``chi2_contingency`` on the reference and window counts over the union of their
    categories (as alibi's ``TabularDrift``); K-S: ``ks_2samp(..., method="asymp")``. P-values are
    rounded to float32 as alibi reports them, so both backends decide alike.
    """

    backend: str = "scipy"

    def __init__(self, fitted: _Fitted, x_ref: FloatArray, score_ref: FloatArray) -> None:
        self.fitted = fitted
        self.columns: tuple[str, ...] = fitted.columns
        self.monitored: Columns = fitted.monitored
        self.x_ref = x_ref
        self.score_ref = score_ref

    def predict(self, current: pd.DataFrame) -> DriftReport:
        from scipy.stats import chi2_contingency, ks_2samp  # type: ignore[import-untyped, unused-ignore]

        x, scores = self.fitted.window(current)
        n_categorical, n_features = len(self.monitored.categorical), len(self.monitored.features)
        p_values = np.zeros(n_features, dtype=np.float32)
        statistics = np.zeros_like(p_values)
        for f, count in enumerate(self.fitted.encoder.category_counts()):
            categories = np.union1d(np.arange(count), np.unique(x[:, f]))
            table = np.vstack([_counts(self.x_ref[:, f], categories), _counts(x[:, f], categories)])
            result = chi2_contingency(table)
            statistics[f], p_values[f] = result.statistic, result.pvalue
        for f in range(n_categorical, n_features):
            ks = ks_2samp(self.x_ref[:, f], x[:, f], alternative="two-sided", method="asymp")
            statistics[f], p_values[f] = ks.statistic, ks.pvalue
        score: tuple[float, float] | None = None
        if self.fitted.has_score and scores.size:
            ks = ks_2samp(self.score_ref, scores, alternative="two-sided", method="asymp")
            score = (float(np.float32(ks.pvalue)), float(np.float32(ks.statistic)))
        return self.fitted.report(self.backend, len(x), (p_values, statistics), score)

    def sidecar(self) -> dict[str, Any]:
        return self.fitted.sidecar("scipy")

    def write(self, folder: Path) -> None:
        np.savez(folder / _REFERENCE_FILE, x_ref=self.x_ref, score_ref=self.score_ref)

    @classmethod
    def read(cls, fitted: _Fitted, path: Path) -> ScipyDetector:
        file = path / _REFERENCE_FILE
        try:
            with np.load(file, allow_pickle=False) as saved:
                x_ref, score_ref = saved["x_ref"], saved["score_ref"]
        except (OSError, KeyError, ValueError) as exc:
            raise MonitorError("saved drift reference is unreadable", where=file, got=str(exc)[:200]) from exc
        n_features = len(fitted.monitored.features)
        if x_ref.ndim != 2 or x_ref.shape[1] != n_features:
            raise MonitorError(
                "saved drift reference does not match its description",
                where=file,
                expected=f"{n_features} columns",
                got=str(x_ref.shape),
            )
        return cls(fitted, x_ref, score_ref)


# -- helpers --


def _alibi(module: Literal["cd", "saving"]) -> ModuleType:
    """``alibi_detect.<module>``, or a MonitorError saying where alibi-detect is installed."""
    try:
        return importlib.import_module(f"alibi_detect.{module}")
    except ImportError as exc:
        raise MonitorError(
            "alibi-detect is not installed in this environment",
            got=f"{type(exc).__name__}: {exc}",
            hint=SETUP_HINT,
        ) from exc


@contextlib.contextmanager
def _quiet_alibi() -> Iterator[None]:
    """alibi-detect logs ~30 INFO lines per load and a WARNING per new folder; keep them at WARNING+."""
    loggers = [logging.getLogger(name) for name in ("alibi_detect.saving.saving", "alibi_detect.saving.loading")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _checked(frame: pd.DataFrame, what: str, columns: Columns) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise MonitorError(f"{what} must be a pandas DataFrame", got=type(frame).__name__, hint="use drift_frame(rows)")
    missing = [name for name in columns.all if name not in frame.columns]
    if missing:
        raise MonitorError(
            f"{what} lacks monitored columns: {', '.join(missing)}",
            expected=", ".join(columns.all),
            got=", ".join(map(str, frame.columns[:30])) or "no columns",
            hint="build rows with the kind's drift shape and drift_frame",
        )
    if frame.empty:
        raise MonitorError(f"{what} has no rows", hint="a drift test needs at least one row on each side")
    return frame


def _labels(column: pd.Series) -> npt.NDArray[np.str_]:
    """Category labels as text: ints (also ints stored as floats or bools) as '4', missing as 'unknown'."""
    values = column.to_numpy()
    if pd.api.types.is_bool_dtype(column):
        return values.astype(np.int64).astype(str)
    if pd.api.types.is_numeric_dtype(column):
        floats = values.astype(np.float64)
        missing = np.isnan(floats)
        if np.all(np.mod(floats[~missing], 1.0) == 0.0):
            text = np.where(missing, 0, floats).astype(np.int64).astype(str)
        else:
            text = floats.astype(str)
        return np.where(missing, UNKNOWN, text)
    return np.asarray([UNKNOWN if v is None or v is pd.NA or v != v else str(v) for v in values], dtype=str)


def _numbers(column: pd.Series, name: str, what: str) -> FloatArray:
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise MonitorError(f"{what} column '{name}' is not numeric", got=f"{column.dtype}: {str(exc)[:120]}") from exc


def _scores(frame: pd.DataFrame) -> FloatArray:
    values = _numbers(frame[SCORE], SCORE, "score")
    return values[~np.isnan(values)]


def _counts(values: FloatArray, categories: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return np.asarray([(values == c).sum() for c in categories], dtype=np.int64)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None

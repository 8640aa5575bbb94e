"""Request features + online features -> the float32 matrix a model reads, without pandas.

Training encodes a frame with ``TrainedModel.matrix`` (pandas, vocabulary codes, float32); serving
must produce the identical matrix from one decoded request and the online store's block. The
``ColumnPlan`` is built once per loaded model: for every column of the model's ``FeatureSpec`` it
records where the value comes from (the request transform ``bidflow.openrtb.features``, the
per-row key such as the partner, or a column of the FeatureService block) and whether it is a
category code. The partners' part (their codes and online features, ``BidFilterAssembler.rows``)
does not depend on the rest of the request, so the model server's online reader keeps it per
context; per request, the request part is encoded once and broadcast to every partner's row
(``complete``): a handful of numpy operations whatever the number of partners.

Column names are never listed here: they come from the model's spec, the request transform's
``FEATURE_NAMES`` and the reader's ``feature_names`` (the FeatureService), so a column that none of
them provides is an error at load time, not a silent NaN at serving time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bidflow.errors import ModelError
from bidflow.modeling.dataset import UNSEEN_CODE, CategoryEncoder, FeatureSpec

FloatMatrix = npt.NDArray[np.float32]
_UNSEEN: Final = float(UNSEEN_CODE)


@dataclass(frozen=True)
class _Coded:
    """One column taken from a value that varies per row (the partner, a CTR row's field)."""

    position: int
    name: str
    lookup: Mapping[str, int] | None  # vocabulary (category -> code); None for a numeric column


class ColumnPlan:
    """Where each column of a model's matrix comes from.

    Args:
        spec: the model's feature spec (column order, categorical columns).
        encoder: the model's category vocabularies.
        shared: columns whose value is the same for every row of a request (request features).
        per_row: columns whose value differs per row (the partner; every field of a CTR row).
        online: the FeatureService's columns, in the order of the reader's matrix.

    Raises:
        ModelError: a model column is provided by none of them.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        encoder: CategoryEncoder,
        *,
        shared: Sequence[str] = (),
        per_row: Sequence[str] = (),
        online: Sequence[str] = (),
    ) -> None:
        self.width = len(spec.names)
        categorical = set(spec.categorical)
        vocab = {c: _lookup(encoder, c) for c in spec.categorical}
        shared_set, per_row_set = set(shared), set(per_row)
        online_index = {name: i for i, name in enumerate(online)}
        self.shared: list[_Coded] = []
        self.per_row: list[_Coded] = []
        online_dst: list[int] = []
        online_src: list[int] = []
        missing = []
        for j, name in enumerate(spec.names):
            coded = _Coded(j, name, vocab[name] if name in categorical else None)
            if name in per_row_set:
                self.per_row.append(coded)
            elif name in shared_set:
                self.shared.append(coded)
            elif name in online_index:
                online_dst.append(j)
                online_src.append(online_index[name])
            else:
                missing.append(name)
        if missing:
            raise ModelError(
                f"the model reads {len(missing)} column(s) that serving cannot provide",
                expected="request features, the per-row key(s) or the model's FeatureService columns",
                got=", ".join(missing[:12]),
                hint="serve the model with the feature service it was trained on (spec.feature_service)",
            )
        self.online_width = len(online)
        self.uses_online = bool(online_dst)
        # Usually the service's block lands as one contiguous run of columns: a slice copy, no gather.
        self._online_dst: slice | npt.NDArray[np.intp] = _as_slice(online_dst)
        self._online_src: slice | npt.NDArray[np.intp] = _as_slice(online_src)
        self._shared_get: Callable[[Any], tuple[Any, ...]] | None = (
            _getter([c.name for c in self.shared]) if self.shared else None
        )
        # Each run of consecutive model columns among the shared ones: (columns, their values' slice).
        self._shared_runs = _runs([c.position for c in self.shared])
        self._shared_codes = [(k, c.lookup.get) for k, c in enumerate(self.shared) if c.lookup is not None]

    def fill_shared(self, out: FloatMatrix, request: Any) -> None:
        """Set the columns whose value is the same on every row of ``out`` from ``request``.

        Args:
            out: the matrix (rows x ``width``).
            request: an object with the shared columns as attributes (``RequestFeatures``).
        """
        if self._shared_get is None:
            return
        values = list(self._shared_get(request))
        try:
            for k, code in self._shared_codes:
                value = values[k]
                values[k] = code(value, UNSEEN_CODE) if type(value) is str else _encode(self.shared[k], value)
            # numpy reads a number, None (NaN) and numeric text as float() and pd.to_numeric do
            encoded = np.array(values, dtype=np.float32)
        except (TypeError, ValueError):  # other text in a numeric column: one value at a time
            raw = self._shared_get(request)
            encoded = np.array([_encode(c, v) for c, v in zip(self.shared, raw, strict=True)], dtype=np.float32)
        for columns, taken in self._shared_runs:
            out[:, columns] = encoded[taken]

    def fill_online(self, out: FloatMatrix, online: npt.NDArray[np.float64] | None) -> None:
        """Copy the FeatureService block (rows x service columns) into ``out`` (None: leave NaN)."""
        if online is not None and self.uses_online:
            out[:, self._online_dst] = online[:, self._online_src]


class BidFilterAssembler:
    """The bid filter's matrix: one request, one row per candidate partner.

    Args:
        spec: the model's feature spec.
        encoder: its vocabularies.
        request_columns: names of the request transform's features (``FEATURE_NAMES``).
        partner_column: the per-row key column.
        online_columns: the reader's ``feature_names`` (empty when the model reads none).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        encoder: CategoryEncoder,
        request_columns: Sequence[str],
        partner_column: str,
        online_columns: Sequence[str] = (),
    ) -> None:
        self.plan = ColumnPlan(spec, encoder, shared=request_columns, per_row=(partner_column,), online=online_columns)
        self._partner: _Coded | None = self.plan.per_row[0] if self.plan.per_row else None

    @property
    def uses_online(self) -> bool:
        """Whether the model reads FeatureService columns (else no online lookup is needed)."""
        return self.plan.uses_online

    def matrix(self, request: Any, partners: Sequence[str], online: npt.NDArray[np.float64] | None) -> FloatMatrix:
        """The model's float32 matrix for ``partners`` (rows in that order).

        Args:
            request: the request's ``RequestFeatures``.
            partners: the candidate partners.
            online: the reader's block for those partners (float64, rows x service columns), or
                None when the model reads no online features.
        """
        return self.complete(self.rows(online, partners), request)

    def rows(self, online: npt.NDArray[np.float64] | None, partners: Sequence[str]) -> FloatMatrix:
        """The partners' part of the matrix: their codes and online features; the request's columns NaN.

        It depends on the request only through the partners and the online features, so the online
        reader keeps it per context (``OnlineFeatureReader.set_shape``): a request then copies
        those rows and fills in its own columns (``complete``).
        """
        out = np.full((len(partners), self.plan.width), np.nan, dtype=np.float32)
        partner = self._partner
        if partner is not None:
            lookup = partner.lookup
            if lookup is None:
                raise ModelError("the partner column must be categorical", where=partner.name)
            out[:, partner.position] = [lookup.get(p, UNSEEN_CODE) for p in partners]
        self.plan.fill_online(out, online)
        return out

    def complete(self, rows: FloatMatrix, request: Any) -> FloatMatrix:
        """``rows`` (from ``rows``, changed in place) with the request's columns filled in: the matrix."""
        self.plan.fill_shared(rows, request)
        return rows


class RowAssembler:
    """A matrix from independent rows of raw values (the CTR model: one row per impression).

    Args:
        spec: the model's feature spec.
        encoder: its vocabularies.
        online_columns: the reader's ``feature_names``.
    """

    def __init__(self, spec: FeatureSpec, encoder: CategoryEncoder, online_columns: Sequence[str] = ()) -> None:
        online = set(online_columns)
        self.inputs = tuple(name for name in spec.names if name not in online)
        self.plan = ColumnPlan(spec, encoder, per_row=self.inputs, online=online_columns)

    def matrix(self, rows: Sequence[Mapping[str, Any]], online: npt.NDArray[np.float64] | None) -> FloatMatrix:
        """The model's float32 matrix for ``rows`` (a missing or null value: unseen code / NaN)."""
        out = np.full((len(rows), self.plan.width), np.nan, dtype=np.float32)
        for column in self.plan.per_row:
            out[:, column.position] = [_encode(column, row.get(column.name)) for row in rows]
        self.plan.fill_online(out, online)
        return out


def _encode(column: _Coded, value: Any) -> float:
    """The float a model reads for one raw value, exactly as ``feature_matrix`` encodes a frame."""
    if column.lookup is not None:
        # CategoryEncoder compares values as text; a missing value is 'unseen'.
        return _UNSEEN if value is None else float(column.lookup.get(str(value), UNSEEN_CODE))
    if value is None:
        return float("nan")
    if isinstance(value, str):
        # pd.to_numeric(errors="coerce"): text that is not a number is missing.
        try:
            return float(value)
        except ValueError:
            return float("nan")
    return float(value)


def _runs(positions: Sequence[int]) -> list[tuple[slice, slice]]:
    """Each run of consecutive values in ``positions``: (the range of values, where in ``positions`` it is)."""
    runs: list[tuple[slice, slice]] = []
    start = 0
    for k in range(1, len(positions) + 1):
        if k == len(positions) or positions[k] != positions[k - 1] + 1:
            runs.append((slice(positions[start], positions[k - 1] + 1), slice(start, k)))
            start = k
    return runs


def _lookup(encoder: CategoryEncoder, column: str) -> dict[str, int]:
    if column not in encoder.vocabularies:
        raise ModelError("the model has no vocabulary for a categorical column", where=column)
    return {value: i + 1 for i, value in enumerate(encoder.vocabularies[column])}


def _getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    get = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (get(obj),)
    return get


def _as_slice(index: Sequence[int]) -> slice | npt.NDArray[np.intp]:
    if index and list(index) == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return np.asarray(index, dtype=np.intp)

"""Thresholds of a value-ranked filter on the score scale, per call (the serving path).

A policy that ranks by expected bid value holds its thresholds in CPM: a call is made when
P(bid) x its CPM estimate reaches the threshold, that is when the score reaches the threshold
divided by the estimate. The estimate is ``bidflow.modeling.economics.price_estimate`` of the
call's price columns, computed here by a compiled loop because it runs once per auction: as numpy
array operations on 30 rows it cost a large share of a whole prediction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bidflow.modeling.economics import MIN_PRICE


def scale_thresholds(
    thresholds: npt.NDArray[np.float64], matrix: npt.NDArray[Any], columns: Sequence[int]
) -> npt.NDArray[np.float64]:
    """``thresholds`` (CPM) divided by each row's ``price_estimate``; ``columns`` index ``PRICE_COLUMNS``."""
    out = np.empty(len(thresholds), dtype=np.float64)
    _kernel()(thresholds, matrix, np.asarray(columns, dtype=np.int64), MIN_PRICE, out)
    return out


@functools.cache
def _kernel() -> Callable[..., None]:
    """The loop, compiled by numba on its first call (imported here: never at import time)."""
    import numba

    @numba.njit(nogil=True, boundscheck=False, error_model="numpy")
    def scale(thresholds: Any, matrix: Any, columns: Any, min_price: float, out: Any) -> None:
        for r in range(matrix.shape[0]):
            base = np.float64(matrix[r, columns[0]])
            estimate = 1.0
            if base > 0.0 and np.isfinite(base):  # unknown partner mean: 1 CPM
                estimate = base
                for k in range(1, columns.shape[0]):
                    ratio = np.float64(matrix[r, columns[k]]) / base
                    if ratio > 0.0 and np.isfinite(ratio):  # unknown slice: ratio 1
                        estimate *= ratio
            out[r] = thresholds[r] / max(estimate, min_price)

    return scale

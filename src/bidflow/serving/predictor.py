"""The compiled predictor: an XGBoost booster's trees as flat arrays, walked by a branch-free kernel.

The registered artifact stays the XGBoost model (``model.ubj`` + bundle); the trees are read from
the booster's own JSON when the model server loads it, so there is nothing extra to register,
version or keep in step.

Why a kernel of our own and not onnxruntime or treelite/tl2cgen (one thread, the demo's
default-trained bid filter: 45 trees of depth 6, 63 features, 10 % missing values; and the serving
issue's reference model, 300 trees of depth 8; an AMD EPYC, 2 cores):

=========================================  ============  ============  ===================
route                                      30 rows, 45   30 rows, 300  max |diff| vs xgboost
=========================================  ============  ============  ===================
xgboost ``inplace_predict``                ~400 µs       ~840 µs       --
tl2cgen (gcc -O3), its ``DMatrix``         59 µs         --            3.0e-7
onnxruntime 1.32 (onnxmltools)             40 µs         301 µs        1.8e-7
this kernel (numba)                        12-13 µs      105 µs        5.0e-8
=========================================  ============  ============  ===================

A tree walk is one data-dependent branch per level; onnxruntime and tl2cgen take it as a branch,
and the CPU mispredicts about half of them (about 4 ns per node here). The kernel instead pads
every tree to one depth (a leaf points to itself) and picks the next node arithmetically, with no
branch, going through every row of the batch at one level before the next: the rows' walks are
independent, so the CPU overlaps them. Inside the model server, where the rest of a request
leaves the caches cold, the gap widens (timed inside a loaded server: onnxruntime 56 µs, the kernel
18 µs per auction).

The kernel is compiled by numba on the first call (about 1 s, at load: ``verify`` makes that
call), never at import, and writes nothing to disk (the serving image's root is read-only).

``TreePredictor.verify`` compares the kernel with the booster on probe rows at load time: a model
the kernel reads differently (an xgboost upgrade that changes the JSON) stops the model from
loading instead of serving different scores.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bidflow.errors import ModelError

TOLERANCE: Final = 1e-5  # largest |compiled - xgboost| score allowed
NAME: Final = "numba"  # the predictor label in the model-info metric

FloatMatrix = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]


class TreePredictor:
    """Scores float32 matrices like an XGBoost ``binary:logistic`` booster.

    Args:
        booster: the ``xgboost.Booster`` (read, not changed).
        n_features: columns of the matrices it will score.

    Raises:
        ModelError: the booster is not a ``binary:logistic`` tree model with numeric splits.
    """

    def __init__(self, booster: Any, n_features: int) -> None:
        trees = _Trees.read(booster, n_features)
        self.n_features = n_features
        self.n_trees = len(trees.roots)
        self.depth = trees.depth
        self._trees = trees
        self._score = _kernel()

    def predict(self, x: FloatMatrix) -> Scores:
        """P(label = 1) for each row of ``x`` (float32, C-contiguous, ``n_features`` columns)."""
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.n_features or not x.flags.c_contiguous:
            raise ModelError(
                "the predictor reads C-contiguous float32 rows of the model's width",
                expected=f"(n, {self.n_features}) float32",
                got=f"{x.shape} {x.dtype}",
            )
        t = self._trees
        out = np.empty(len(x), dtype=np.float64)
        self._score(x, t.feature, t.threshold, t.child, t.default_left, t.roots, t.depth, t.base_margin, out)
        return out

    def verify(self, booster: Any, x: FloatMatrix, tolerance: float = TOLERANCE) -> float:
        """Largest |this - xgboost| score on ``x``; raises when it exceeds ``tolerance``.

        Raises:
            ModelError: the kernel scores differently from the booster.
        """
        expected = np.asarray(booster.inplace_predict(x, missing=np.nan), dtype=np.float64)
        got = self.predict(x)
        diff = float(np.max(np.abs(got - expected))) if len(x) else 0.0
        if not diff <= tolerance:  # also catches NaN
            raise ModelError(
                "the compiled trees score differently from xgboost",
                expected=f"|difference| <= {tolerance}",
                got=f"{diff:.3g} on {len(x)} probe rows",
                hint="check the xgboost version in uv.lock against the one the model was trained with",
            )
        return diff


@dataclass(frozen=True)
class _Trees:
    """Every tree of a booster in flat arrays, each tree padded to the deepest one's depth.

    Node ``i``: ``feature[i]``, ``threshold[i]`` (the leaf value on a leaf), ``default_left[i]``
    (where a missing value goes), children ``child[2i]`` (``x < threshold``) and ``child[2i + 1]``.
    A leaf's children are itself, so a walk of ``depth`` steps ends on the leaf whatever its level.
    """

    feature: npt.NDArray[np.uint32]
    threshold: npt.NDArray[np.float32]
    child: npt.NDArray[np.uint32]
    default_left: npt.NDArray[np.uint8]
    roots: npt.NDArray[np.uint32]
    depth: int
    base_margin: float

    @classmethod
    def read(cls, booster: Any, n_features: int) -> _Trees:
        """The trees of ``booster`` from its JSON form."""
        document = json.loads(bytes(booster.save_raw("json")))
        learner = document["learner"]
        objective = learner["objective"]["name"]
        if objective != "binary:logistic":
            raise ModelError(
                "the model server scores binary:logistic boosters only", expected="binary:logistic", got=objective
            )
        gbm = learner["gradient_booster"]
        if gbm.get("name") != "gbtree":
            raise ModelError("the model server scores tree boosters only", expected="gbtree", got=str(gbm.get("name")))
        trees = gbm["model"]["trees"]
        if not trees:
            raise ModelError("the booster has no trees")
        feature: list[int] = []
        threshold: list[float] = []
        child: list[int] = []
        default_left: list[int] = []
        roots: list[int] = []
        depth = 0
        for k, tree in enumerate(trees):
            if any(tree.get("split_type") or ()):
                raise ModelError(
                    "the booster has categorical splits, which the model server does not score",
                    where=f"tree {k}",
                    hint="train on category codes (bidflow.modeling.dataset), as `bidflow train` does",
                )
            base = len(feature)
            roots.append(base)
            left, right = tree["left_children"], tree["right_children"]
            splits, conditions, defaults = tree["split_indices"], tree["split_conditions"], tree["default_left"]
            for i, (lo, hi) in enumerate(zip(left, right, strict=True)):
                if lo == -1:  # a leaf: its value, and itself as both children
                    feature.append(0)
                    child += [base + i, base + i]
                    default_left.append(1)
                else:
                    if not 0 <= splits[i] < n_features:
                        raise ModelError(
                            "a tree splits on a column the model does not have",
                            where=f"tree {k}",
                            expected=f"0..{n_features - 1}",
                            got=str(splits[i]),
                        )
                    feature.append(splits[i])
                    child += [base + lo, base + hi]
                    default_left.append(int(defaults[i]))
                threshold.append(conditions[i])
            depth = max(depth, _depth(left, right))
        return cls(
            np.asarray(feature, dtype=np.uint32),
            np.asarray(threshold, dtype=np.float32),
            np.asarray(child, dtype=np.uint32),
            np.asarray(default_left, dtype=np.uint8),
            np.asarray(roots, dtype=np.uint32),
            depth,
            _base_margin(learner["learner_model_param"]["base_score"]),
        )


def _depth(left: Sequence[int], right: Sequence[int]) -> int:
    """Splits on the longest path from the root to a leaf."""
    deepest, level, frontier = 0, 0, [0]
    while frontier:
        deepest = level
        frontier = [c for i in frontier if left[i] != -1 for c in (left[i], right[i])]
        level += 1
    return deepest


def _base_margin(raw: str) -> float:
    """The margin every score starts from: logit of ``base_score`` (stored as ``"[5E-1]"`` or ``"5E-1"``)."""
    values = [float(v) for v in str(raw).strip("[]").split(",") if v.strip()]
    if len(values) != 1 or not 0.0 < values[0] < 1.0:
        raise ModelError("the booster's base_score is not one probability", got=str(raw))
    p = values[0]
    return math.log(p / (1.0 - p))


@functools.cache
def _kernel() -> Callable[..., None]:
    """The scoring kernel, compiled by numba on its first call (imported here: never at import time)."""
    import numba

    @numba.njit(nogil=True, boundscheck=False, error_model="numpy")
    def score(
        x: Any, feature: Any, threshold: Any, child: Any, default_left: Any, roots: Any, depth: int,
        base_margin: float, out: Any,
    ) -> None:  # fmt: skip
        n, width = x.shape
        flat = x.ravel()
        margin = np.full(n, np.float32(base_margin), dtype=np.float32)
        node = np.empty(n, dtype=np.uint32)
        one, two = np.uint32(1), np.uint32(2)
        for tree in range(roots.shape[0]):
            node[:] = roots[tree]
            for _ in range(depth):
                for r in range(n):
                    i = node[r]
                    v = flat[np.uint32(r * width) + feature[i]]
                    # No branch: x < t goes left, and so does a missing value where the split says so.
                    left = np.uint32(v < threshold[i]) | (np.uint32(v != v) & np.uint32(default_left[i]))
                    node[r] = child[two * i + one - left]
            for r in range(n):
                margin[r] += threshold[node[r]]
        for r in range(n):
            out[r] = 1.0 / (1.0 + math.exp(-np.float64(margin[r])))

    return score


def probe_rows(n_features: int, categorical: Sequence[int], rows: int = 512, seed: int = 0) -> FloatMatrix:
    """Rows that reach many leaves: small integer codes, wide-ranging numbers, some missing values.

    Args:
        n_features: matrix width.
        categorical: positions of the columns that hold category codes (the others are numeric).
        rows: how many rows.
        seed: random seed (the probe is deterministic).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=(rows, n_features)) * rng.choice([0.01, 1.0, 100.0], size=(rows, n_features))
    codes = list(categorical)
    x[:, codes] = rng.integers(0, 40, size=(rows, len(codes)))
    x[rng.random((rows, n_features)) < 0.1] = np.nan
    return np.ascontiguousarray(x, dtype=np.float32)

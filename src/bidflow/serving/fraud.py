"""The fraud kind's server: one score per click, P(genuine and converting), with its streaming velocity features.

The tabular server (``bidflow.serving.tabular``) with clicks as rows: a row carries the click's raw
fields, and the server turns its click time into the model's ``hour`` and reads the FeatureService's
velocity rows by (ip, app, device, os). v2 with named inputs (one per field, shape [n])::

    {"inputs": [{"name": "ip", "shape": [1], "datatype": "INT64", "data": [87540]},
                {"name": "app", ...}, {"name": "device", ...}, {"name": "os", ...},
                {"name": "channel", ...},
                {"name": "click_time", "shape": [1], "datatype": "INT64", "data": [1510047038]}]}
    -> one output "p_genuine" (FP64 [n])

``click_time`` is UTC seconds since the epoch. The features are read as of the latest click time of the
request, not the server's clock: a click is scored at its own time, which is also what a replay of a
past day needs. v1 takes the same fields as instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from bidflow.serving.assemble import FloatMatrix, RowAssembler
from bidflow.serving.base import ModelSource, ServeOptions
from bidflow.serving.errors import RequestError
from bidflow.serving.tabular import Rows, TabularModel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from kserve.protocol.infer_type import InferRequest

    from bidflow.config import Config
    from bidflow.modeling.dataset import CategoryEncoder, FeatureSpec
    from bidflow.modeling.train import TrainedModel
    from bidflow.serving.online import GuardedReader

CLICK_TIME: Final = "click_time"
HOUR: Final = "hour"  # the model's column derived from the click time


class ClickRows(RowAssembler):
    """A click's fields -> the model's matrix: ``hour`` from ``click_time``, the rest as the tabular rows.

    Its inputs are the fields a request carries: the model's own (but ``hour``), the FeatureService's
    join keys (``ip`` is one the model does not read itself) and ``click_time``.
    """

    def __init__(self, spec: FeatureSpec, encoder: CategoryEncoder, online_columns: Sequence[str],
                 keys: Sequence[str]) -> None:  # fmt: skip
        super().__init__(spec, encoder, online_columns)
        own = [name for name in self.inputs if name != HOUR]
        self.inputs = (*own, *(k for k in keys if k not in own), CLICK_TIME)

    def matrix(self, rows: Sequence[Mapping[str, Any]], online: npt.NDArray[np.float64] | None) -> FloatMatrix:
        return super().matrix([{**row, HOUR: (click_seconds(row) // 3600) % 24} for row in rows], online)


def click_seconds(row: Mapping[str, Any]) -> int:
    """The row's click time in UTC seconds.

    Raises:
        RequestError: absent, or not a whole number of seconds.
    """
    value = row.get(CLICK_TIME)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise RequestError("click_time must be UTC seconds since the epoch", field=CLICK_TIME, got=repr(value))
    return int(value)


class FraudModel(TabularModel):
    """P(a click is genuine and converts), per click (request and response shapes: the module docstring)."""

    output = "p_genuine"

    def __init__(self, name: str, config: Config, source: ModelSource, options: ServeOptions | None = None) -> None:
        # No online cache: the stream rewrites a key's row with every click, and the click being scored
        # is usually the one that just did; a cached row would be the previous click's.
        super().__init__(name, config, source, replace(options or ServeOptions(), feature_cache_s=0.0))

    def _prepare(self, model: TrainedModel, online: GuardedReader | None) -> tuple[RowAssembler, tuple[str, ...]]:
        columns = online.reader.feature_names if online is not None else ()
        keys = tuple(online.reader.spec.join_keys) if online is not None else ()
        return ClickRows(model.spec, model.encoder, columns, keys), keys

    def preprocess(self, payload: bytes | dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Rows:
        """The tabular rows, every one with a click time, looked up as of the latest of them."""
        rows = super().preprocess(payload, headers)
        latest = max(click_seconds(row) for row in rows.rows)
        return replace(rows, ts_ms=latest * 1000)

"""What the model servers' ``:explain`` route answers per scored row, and how many contributions it shows.

KServe's explain route is ``POST /v1/models/<name>:explain`` with the body predict takes; the server
reads it with the same checks (the same 400s), builds the same matrix (the same online features),
and answers per row the score predict would give, the base value, the margin and the top
contributions (``bidflow.modeling.explain``). The Open Inference Protocol (v2) defines no explain
call and KServe offers none for it, so a v2 client explains through the v1 route.

The number of contributions per row is ``explain.top`` of the configuration; a client may ask for
another with the ``x-bidflow-explain-top`` header (0: every feature, as the drift monitor does).
Explaining costs a TreeSHAP pass through XGBoost, far more than a prediction through the compiled
predictor (bench/README.md, the explain rows): it never runs on the predict route, it is timed apart
(``bidflow_serving_explain_seconds``), and it is not counted as a decision. A server builds the
request's matrix on its event loop (the online reader and the assemblers are not shared across
threads) and leaves the TreeSHAP pass, which XGBoost runs in C without the GIL, to a worker thread
(``StagedModel.explain_plan``), so predict requests keep being answered meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from bidflow.serving.errors import RequestError

if TYPE_CHECKING:
    from bidflow.modeling.train import TrainedModel

TOP_HEADER: Final = "x-bidflow-explain-top"
MAX_TOP: Final = 10_000


def top_of(headers: Mapping[str, str] | None, default: int) -> int:
    """Contributions per row: the request's ``x-bidflow-explain-top`` header, else ``default``."""
    raw = (headers or {}).get(TOP_HEADER)
    if raw is None:
        return default
    text = str(raw).strip()
    if not text.isdigit() or int(text) > MAX_TOP:
        raise RequestError(
            f"header '{TOP_HEADER}' is how many contributions to show per row",
            field=f"headers.{TOP_HEADER}",
            expected=f"an integer from 0 (all) to {MAX_TOP}",
            got=text[:40],
        )
    return int(text)


def explain_rows(
    model: TrainedModel, x: npt.NDArray[np.float32], scores: npt.NDArray[np.float64], top: int
) -> list[dict[str, Any]]:
    """Per row of ``x``: its score (as predict gives it), base value, margin and top contributions."""
    from bidflow.modeling.explain import contributions, top_contributions

    found = contributions(model, x, nthread=1)
    features = found.features
    return [
        {
            "score": float(scores[i]),
            "base_value": found.base,
            "margin": float(found.margin[i]),
            "contributions": [c.to_json() for c in top_contributions(model, features, found.values[i], x[i], top)],
        }
        for i in range(len(x))
    ]

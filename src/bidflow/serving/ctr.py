"""The CTR kind's server: the tabular server over iPinYou impressions, its v2 output named ``ctr``."""

from __future__ import annotations

from bidflow.serving.tabular import TabularModel


class CTRModel(TabularModel):
    """Click probability of iPinYou impressions (request and response shapes: ``bidflow.serving.tabular``)."""

    output = "ctr"

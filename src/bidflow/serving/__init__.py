"""Model servers on KServe, one per model kind's request shape.

Modules: ``base`` (``ServedModel``: where a model comes from, loading, readiness, stage timers),
``bid_filter`` (``BidFilterModel``: OpenRTB auctions -> call/skip per demand partner) with
``bid_filter_features`` (its online-read layout), ``tabular`` (``TabularModel``: a score per row of
named fields, for CTR and kinds users add) and ``ctr`` (the CTR kind's server), ``bodies`` (JSON
bodies, v2 tensors and parameters), ``assemble`` (request + online features -> the model's matrix,
no pandas), ``predictor`` (XGBoost's trees, compiled at load time), ``online`` (the feature store,
failing open), ``errors`` (every error -> its HTTP status, in one place), ``metrics`` (Prometheus),
``server`` (KServe's endpoints bound to 127.0.0.1, per-request logging off), ``__main__``
(``python -m bidflow.serving``) and ``commands`` (``bidflow serve``). Which class serves a kind is
the kind's ``served_model`` (``bidflow.kinds``).

Nothing is imported here: ``import bidflow.serving`` stays free of kserve, numba and Feast.
"""

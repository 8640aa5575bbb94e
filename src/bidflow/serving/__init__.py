"""Model servers on KServe: the bid filter (call/skip per demand partner) and the CTR model.

Modules: ``model`` (``BidFilterModel``, the ``kserve.Model`` for OpenRTB auctions, and the loading
shared with ``ctr``), ``ctr`` (``CTRModel``), ``assemble`` (request + online features -> the
model's matrix, no pandas), ``predictor`` (XGBoost's trees, compiled at load time), ``online``
(the feature store, failing open), ``errors`` (every error -> its HTTP status, in one place),
``metrics`` (Prometheus), ``server`` (KServe's endpoints bound to 127.0.0.1, per-request logging
off), ``__main__`` (``python -m bidflow.serving``) and ``commands`` (``bidflow serve``).

Nothing is imported here: ``import bidflow.serving`` stays free of kserve, numba and Feast.
"""

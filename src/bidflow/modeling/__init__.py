"""Training, evaluation (incl. bid-filter economics), the bias gate and the MLflow registry adapter.

Modules, in pipeline order: ``dataset`` (feature spec, vocabulary encoding, time split), ``inputs``
(parquet / iPinYou / Feast rows), ``train`` (XGBoost, pure), ``metrics``, ``economics`` (bid-filter
thresholds, exploration, calls saved; also used by serving), ``evaluate`` (champion/challenger gate),
``fairness`` (bias gate), ``plots`` and ``report`` (HTML/JSON), ``lineage`` (data version),
``registry`` (MLflow), ``ctr`` (the CTR model's data), ``steps`` (what the CLI and pipeline
components run) and ``commands`` (the CLI). Nothing heavy is imported here.
"""

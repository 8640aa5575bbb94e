"""Drift monitoring: detectors fitted at training time, the monitor service, automatic rollback.

The monitor runs in its own environment (``.venv-monitor``, ``make monitor-setup``) because
alibi-detect 0.13.0 needs numpy<2; see ``monitor/pyproject.toml``. ``bidflow.monitoring.drift``
imports alibi-detect only inside functions, so its ``scipy`` backend also works in the main
environment.
"""

"""Alerts, recording rules and dashboards over the metrics bidflow's servers export, generated as code.

The model servers (``bidflow.serving.metrics``), the local router (``bidflow.deploy.router_metrics``)
and the drift monitor (``bidflow.monitoring.service``) export Prometheus metrics; this package turns
them into what an operator looks at:

* ``rules``: Prometheus recording and alerting rules, built as data from ``RuleSettings`` (every
  threshold and duration a parameter with its production default), written as a plain rules file and
  as the groups of the chart's ``PrometheusRule``;
* ``dashboards``: Grafana dashboards built with Grafana's own typed builders (grafana-foundation-sdk,
  imported only when a dashboard is built): serving, the canary and drift loop, and one economics
  dashboard per registered model kind;
* ``promql``: the metric names a PromQL expression reads, so tests can hold every rule and panel to
  the names the code really exports;
* ``render``: the generated files and where they live in the repository (``bidflow ops render``).
"""

"""Kubeflow Pipelines v2 training pipelines for bidflow: wiring only, plus compile/run/submit helpers.

* ``bid_filter``, ``ctr``: the ``@dsl.pipeline`` definitions (``bid_filter_pipeline``, ``ctr_pipeline``);
* ``platform``: Secrets, resources, caching and retries attached to tasks (kfp-kubernetes);
* ``catalog``: the pipelines by name, compiling to IR YAML, their typed parameters;
* ``local``: running a pipeline with ``kfp.local`` (no Docker, no cluster);
* ``submit``: uploading and running it on a Kubeflow Pipelines endpoint with ``kfp.Client``;
* ``commands``: the ``bidflow pipeline`` command group.

Importing this package imports nothing heavy; kfp is imported by the modules that need it.
"""

"""Deployment: the InferenceService schema and checks, the canary policy and its backends (local, KServe)."""

"""Deployment: the KServe InferenceService schema and checks, and (later) the canary policy and its backends."""

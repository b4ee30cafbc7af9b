"""The routing sidecar in front of Triton: version routing, canary splits,
a version-aware response cache, request ids and metrics."""

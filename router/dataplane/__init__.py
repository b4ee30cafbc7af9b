"""Predictions, knowing nothing of HTTP: model catalog, preprocessing,
version routing, cache and single-flight around the Triton gateway."""

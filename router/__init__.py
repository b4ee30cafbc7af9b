"""The routing sidecar in front of Triton.

A request walks down the tree and back once:

    edge/       HTTP: the app, middleware, body parsing, one module of routes per surface
    dataplane/  no HTTP: version routing, cache, single-flight, catalog, the Triton gateway
    jobs/       the same predictions, queued on a Redis Stream and run by workers

with settings, logging, metrics, the per-request record and the domain errors beside them.
"""

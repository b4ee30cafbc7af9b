"""The HTTP edge: the app factory, middleware, request bodies, error handlers
and the routes, one module per surface. It hands typed requests to the
dataplane and turns its typed results into responses."""

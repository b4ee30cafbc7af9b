"""The routes, one module per surface."""

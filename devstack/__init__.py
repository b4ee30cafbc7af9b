"""The whole local stack as child processes: Triton, Redis and the router."""

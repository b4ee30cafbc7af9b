"""Asynchronous predictions: a job store on a Redis Stream and the worker
that runs them through the same dataplane as `/predict`."""

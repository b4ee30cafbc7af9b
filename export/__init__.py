"""Export PyTorch models into the Triton model repository: `python -m export`.

A factory for `python -m export build NAME --from FILE.py:FACTORY` returns
`export.Servable`."""

from export.servable import Servable

__all__ = ["Servable"]

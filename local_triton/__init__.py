"""The real Triton Inference Server, run locally from the nvidia-pytriton wheel."""

from local_triton.server import Ports, TritonError, TritonServer, find_installation

__all__ = ["Ports", "TritonError", "TritonServer", "find_installation"]

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A private copy of the checked-in model repository."""
    dest = tmp_path / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, dest)
    return dest

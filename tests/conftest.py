"""Test configuration: make tests/ importable (reference harness) and keep CPU use predictable.

torch runs single-threaded in tests: on a small, shared CI machine intra-op threads oversubscribe
the cores and make small-tensor work many times slower, without changing any result.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def wenv(tmp_path, monkeypatch):
    """An isolated weights dir / HF cache / offline setting (see test_weights_loading.setup_weights_env)."""
    from test_weights_loading import setup_weights_env

    return setup_weights_env(tmp_path, monkeypatch)


@pytest.fixture
def tiny_reg(wenv, monkeypatch):
    """A registry of tiny test checkpoints on top of ``wenv``."""
    from test_weights_loading import setup_tiny_registry

    return setup_tiny_registry(wenv, monkeypatch)

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


@pytest.fixture
def offline_bench_env(tmp_path, monkeypatch):
    """No downloads and no weights (so judges fall back to dlib), caches inside tmp, no donor folder
    set; restores the process-wide weights settings afterwards."""
    monkeypatch.setenv("PRIVPIX_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("PRIVPIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PRIVPIX_DONORS", raising=False)
    yield
    from privacy_cli.weights import configure

    configure(None, None)

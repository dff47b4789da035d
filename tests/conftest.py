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

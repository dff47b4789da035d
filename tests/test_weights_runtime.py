"""privacy_cli.runtime: device choice, one runner per process, model runners, batching helpers."""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest
import torch
from test_weights_loading import Tiny, setup_tiny_registry, setup_weights_env, tiny_state

from privacy_cli import runtime
from privacy_cli.errors import UsageError
from privacy_cli.models import registry as mreg


@pytest.fixture
def tiny_reg(tmp_path, monkeypatch):
    env = setup_tiny_registry(setup_weights_env(tmp_path, monkeypatch), monkeypatch)
    available = [m for m in mreg._ARCH_MODULES if importlib.util.find_spec(m) is not None]
    monkeypatch.setattr(mreg, "_ARCH_MODULES", available)
    runtime.clear_runners()
    yield env
    runtime.clear_runners()


def test_choose_device():
    auto = runtime.choose_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif runtime._mps_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    assert runtime.choose_device("cpu") == torch.device("cpu")
    assert runtime.choose_device(None) == auto
    with pytest.raises(UsageError, match="bad device 'tpu'"):
        runtime.choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            UsageError,
            match=r"--device cuda was requested but CUDA is not available .*use --device auto or --device cpu",
        ):
            runtime.choose_device("cuda")
    else:
        with pytest.raises(UsageError, match="CUDA device"):
            runtime.choose_device(f"cuda:{torch.cuda.device_count()}")
    if not runtime._mps_available():
        with pytest.raises(UsageError, match="MPS is not available"):
            runtime.choose_device("mps")


def test_get_runner_builds_once_even_under_concurrency():
    runtime.clear_runners()
    built = []

    def factory():
        time.sleep(0.05)
        built.append(1)
        return object()

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(runtime.get_runner("k", factory))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len({id(r) for r in results}) == 1
    assert runtime.cached_runners() == ["k"]

    def failing():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        runtime.get_runner("bad", failing)
    assert "bad" not in runtime.cached_runners()
    runtime.clear_runners()
    assert runtime.cached_runners() == []


def test_model_runner_loads_lazily_once_and_reports(tiny_reg):
    tiny_reg.wdir.mkdir(parents=True)
    torch.save(tiny_state(3), tiny_reg.wdir / "tiny-sd.pth")
    r1 = runtime.model_runner("test-tiny", device="cpu", half=True)  # half: not on CPU
    r2 = runtime.model_runner("test-tiny", device="cpu", half=True)
    assert r1 is r2
    info = r1.info()
    assert info["model"] == "test-tiny" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert (
        info["load_s"] >= 0
        and info["weights"]["weights"] == "tiny-sd"
        and info["weights"]["where"] == "weights-dir"
    )
    x = torch.rand(5, 3, 8, 8)
    out = r1(x)
    assert out.shape == (5, 2) and not out.requires_grad and out.is_inference()
    ref = Tiny().eval()
    ref.load_state_dict(tiny_state(3))
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(r1.map_batches(x, batch_size=2), out)


def test_batching_helpers():
    assert list(runtime.iter_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(UsageError):
        list(runtime.iter_batches([1], 0))
    imgs = [np.full((4, 6, 3), i, np.uint8) for i in range(3)] + [np.zeros((5, 6, 3), np.uint8)]
    assert runtime.group_by_size(imgs) == {(4, 6): [0, 1, 2], (5, 6): [3]}
    batch = runtime.images_to_tensor(imgs[:3])
    assert batch.shape == (3, 3, 4, 6) and batch.dtype == torch.float32
    assert torch.allclose(batch[2], torch.full((3, 4, 6), 2 / 255))
    back = runtime.tensor_to_images(batch)
    assert all(np.array_equal(a, b) for a, b in zip(back, imgs[:3], strict=True))
    with pytest.raises(UsageError, match="uint8"):
        runtime.images_to_tensor([np.zeros((4, 4, 3), np.float32)])

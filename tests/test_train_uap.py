"""privpix train uap (UAP + DeepFool) on generated data with a small classifier the test trains:
the requested fooling rate is reached, resuming gives the same perturbation, and perturb --attack
uap applies it within its bound."""

from __future__ import annotations

import json

import numpy as np
import pytest

SIZE = 40
CROP = 32


K = 10


def _blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    """n (SIZE, SIZE+8, 3) uint8 images of K classes (class = i % K): a textured surface whose
    brightness level (30 + 20 * class) and colour cast encode the class."""
    out = []
    for i in range(n):
        c = i % K
        level = 30 + 20 * c + rng.normal(0, 5, (SIZE, SIZE + 8))
        cast = np.array([1.0, 1.0 - 0.02 * c, 1.0 + 0.02 * c]) * rng.uniform(0.97, 1.03, 3)
        out.append(np.clip(level[..., None] * cast, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def cnn_target(tmp_path_factory):
    import torch

    from privacy_cli import attack
    from privacy_cli.attack.targets import ClassifierTarget, resize_short_crop

    rng = np.random.default_rng(0)
    imgs = _blobs(rng, 200)
    labels = torch.tensor([i % K for i in range(len(imgs))])
    x = resize_short_crop(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), SIZE, CROP) / 255.0
    torch.manual_seed(0)
    model = torch.nn.Sequential(  # small and non-linear, quick to train
        torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * (CROP // 4) ** 2, 16),
        torch.nn.ReLU(), torch.nn.Linear(16, K),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    model.eval()
    t = ClassifierTarget("test-cnn", model, [f"level{k}" for k in range(K)], (0, 0, 0), (1, 1, 1), SIZE, CROP)
    attack._FACTORIES["test-cnn"] = (lambda device="cpu": t, "test classifier")
    attack._INSTANCES.clear()
    folder = tmp_path_factory.mktemp("uapdata")
    from PIL import Image

    for i, im in enumerate(_blobs(np.random.default_rng(1), 30)):
        Image.fromarray(im).save(folder / f"b{i:02d}.png")
    yield t, folder
    attack._FACTORIES.pop("test-cnn", None)
    attack._INSTANCES.clear()


def test_uap_reaches_fooling_rate_and_resume_is_identical(cnn_target, tmp_path):
    import torch

    from privacy_cli.io import iter_images
    from privacy_cli.train.uap import load_uap, train_uap

    _, folder = cnn_target
    paths = sorted(iter_images([folder]))
    kw = dict(xi=40.0, fooling=0.8, max_epochs=4, resize=SIZE, crop=CROP, device="cpu", checkpoint_every=5)
    full = train_uap(paths, "test-cnn", tmp_path / "full.safetensors", **kw)
    assert full is not None and full.fooling_rate >= 0.8
    v_full, meta = load_uap(full.path)
    assert v_full.shape == (3, CROP, CROP) and v_full.abs().max() <= 40.0
    assert meta["target"] == "test-cnn" and meta["xi"] == 40.0 and meta["norm"] == "linf"
    assert meta["resize"] == SIZE and meta["crop"] == CROP and meta["fooling_rate"] >= 0.8
    # interrupted after 7 DeepFool visits (checkpoint at 5), then resumed
    out = tmp_path / "resumed.safetensors"
    assert train_uap(paths, "test-cnn", out, stop_after=7, **kw) is None
    assert (tmp_path / "resumed.partial.safetensors").is_file() and not out.exists()
    res = train_uap(paths, "test-cnn", out, **kw)
    assert res is not None and res.resumed
    assert torch.equal(load_uap(out)[0], v_full)
    assert not (tmp_path / "resumed.partial.safetensors").exists()


def test_cli_train_and_apply_uap(cnn_target, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    target, folder = cnn_target
    uap_file = tmp_path / "u.safetensors"
    r = CliRunner().invoke(
        app,
        ["train", "uap", str(folder), "-t", "test-cnn", "--xi", "40", "--fooling-rate", "0.8",
         "--max-epochs", "4", "-o", str(uap_file), "--device", "cpu", "--json", "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][0])
    assert rec["fooling_rate"] >= 0.8
    src = folder / "b00.png"
    out = tmp_path / "b00_uap.png"
    r = CliRunner().invoke(
        app,
        ["perturb", str(src), "-o", str(out), "-t", "test-cnn", "--attack", "uap", "--uap", str(uap_file),
         "-e", "40", "--json", "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    a = np.asarray(Image.open(src).convert("RGB")).astype(int)
    b = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert 0 < np.abs(a - b).max() <= 40
    rec = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][0])
    assert "test-cnn" in rec["targets"]

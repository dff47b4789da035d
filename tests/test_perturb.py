"""privpix perturb on a classifier the test trains: FGSM/PGD flip what epsilon allows, the saved PNG
respects the L-infinity bound exactly, and --require-success writes nothing where the attack failed.

The classifier is linear (logistic regression on the pixels of generated stripe patterns), so the
smallest L-infinity change that flips each prediction is known exactly: |margin| / ||w_a - w_b||_1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

SIZE = 32


def _stripes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n (SIZE, SIZE, 3) uint8 images in [40, 215] (so +-40 never clips): class 0 horizontal
    stripes, class 1 vertical, random phase/period/colour and noise."""
    imgs, labels = [], []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(n):
        label = i % 2
        period = rng.uniform(4, 10)
        coord = yy if label == 0 else xx
        wave = np.sin(2 * np.pi * coord / period + rng.uniform(0, 6.3)) * rng.uniform(0.2, 0.6)
        base = rng.uniform(0.3, 0.7, 3)
        img = base[None, None, :] + wave[..., None] * rng.uniform(0.5, 1.0, 3)[None, None, :]
        img = img + rng.normal(0, 0.08, img.shape)
        imgs.append(np.clip(40 + img * 175, 40, 215).astype(np.uint8))
        labels.append(label)
    return np.stack(imgs), np.array(labels)


@pytest.fixture(scope="module")
def linear_target():
    """A linear 2-class classifier trained here, registered as target ``test-linear``."""
    import torch

    from privacy_cli import attack
    from privacy_cli.attack.targets import ClassifierTarget

    rng = np.random.default_rng(0)
    x, y = _stripes(rng, 400)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    target = ClassifierTarget(
        "test-linear", model, ["horizontal", "vertical"], (0, 0, 0), (1, 1, 1), SIZE, SIZE
    )
    attack._FACTORIES["test-linear"] = (lambda device="cpu": target, "test classifier")
    attack._INSTANCES.clear()
    yield target, model
    attack._FACTORIES.pop("test-linear", None)
    attack._INSTANCES.clear()


def _flip_distance(model, images: np.ndarray) -> np.ndarray:
    """Exact smallest L-infinity change (grey levels) that flips the linear model's prediction."""
    import torch

    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    x = images.transpose(0, 3, 1, 2).reshape(len(images), -1).astype(np.float64) / 255.0
    z = x @ w.T + b
    pred = z.argmax(1)
    margin = np.abs(z[:, 0] - z[:, 1])
    dw = np.abs(w[0] - w[1]).sum()
    del torch
    return margin / dw * 255.0, pred


@pytest.fixture(scope="module")
def test_set(linear_target):
    _, model = linear_target
    x, _ = _stripes(np.random.default_rng(1), 24)
    dist, pred = _flip_distance(model, x)
    # the test is only meaningful if some but not all predictions can be flipped
    eps = float(np.ceil(np.median(dist)))
    allowed = float((dist <= eps).mean())
    assert 0.4 <= allowed < 1.0 and eps <= 40
    return x, pred, eps, allowed


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_flip_what_epsilon_allows(linear_target, test_set, attack):
    from privacy_cli.methods.perturb import perturb

    x, pred, eps, allowed = test_set
    target, _ = linear_target
    mask = np.ones((SIZE, SIZE), np.float32)
    flipped = 0
    for img, p in zip(x, pred, strict=True):
        out, info = perturb(img, mask, targets="test-linear", attack=attack, epsilon=eps, steps=10, rounds=1)
        assert np.abs(out.astype(int) - img.astype(int)).max() <= eps
        assert info["linf"] <= eps
        after = int(target.predict(out).argmax())
        flipped += after != p
        assert info["checked"]["test-linear"]["success"] == (after != p)
    assert flipped / len(x) >= allowed


def test_min_psnr_floor_holds(linear_target, test_set):
    """--min-psnr: the output keeps PSNR >= the floor (3 dB above what the same attack reaches
    without it), and the L-infinity bound still holds."""
    from privacy_cli.methods.perturb import perturb, psnr

    x, _, eps, _ = test_set
    mask = np.ones((SIZE, SIZE), np.float32)
    for img in x[:4]:
        kw = {"targets": "test-linear", "epsilon": eps, "steps": 10, "rounds": 1}
        free, _ = perturb(img, mask, **kw)
        floor = psnr(img, free) + 3.0
        out, info = perturb(img, mask, min_psnr=floor, **kw)
        assert psnr(img, out) >= floor
        assert np.abs(out.astype(int) - img.astype(int)).max() <= eps and info["linf"] <= eps


def test_fgsm_under_a_psnr_floor_stays_one_signed_step(linear_target, test_set):
    """FGSM with --min-psnr is still one signed step: every pixel of the linear model's gradient
    moves by the same number of grey levels (the step shrunk evenly into the floor), not the
    gradient-shaped step PGD takes under a floor."""
    from privacy_cli.methods.perturb import perturb, psnr

    x, _, eps, _ = test_set
    mask = np.ones((SIZE, SIZE), np.float32)
    for img in x[:3]:
        free, _ = perturb(img, mask, targets="test-linear", attack="fgsm", epsilon=eps)
        floor = psnr(img, free) + 2.0
        out, _ = perturb(img, mask, targets="test-linear", attack="fgsm", epsilon=eps, min_psnr=floor)
        change = np.unique(np.abs(out.astype(int) - img.astype(int)))
        assert psnr(img, out) >= floor
        assert len(change) == 1 and 0 < change[0] < eps, change


def test_cli_png_respects_bound_and_require_success(linear_target, test_set, tmp_path):
    """In-process CLI run: PNG outputs within epsilon of their inputs; with --require-success an
    image whose label could not be flipped gets no output and the exit code is 1."""
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    x, pred, eps, _ = test_set
    target, model = linear_target
    dist, _ = _flip_distance(model, x)
    small = max(1.0, float(np.floor(np.min(dist[dist > 1]))))  # flips some images, not all
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(x[:8]):
        Image.fromarray(img).save(src / f"p{i}.png")
    out_dir = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "perturb", str(src), "-o", str(out_dir), "-t", "test-linear", "-e", str(int(small)),
            "--attack", "fgsm", "--require-success", "--json", "--quiet",
        ],
    )  # fmt: skip
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 8
    can_flip = dist[:8] <= int(small)
    assert can_flip.any() and not can_flip.all()
    assert res.exit_code == 1
    for i, rec in enumerate(sorted(records, key=lambda r: r["input"])):
        out = out_dir / f"p{i}.png"
        if rec["status"] == "ok":
            assert rec["targets"]["test-linear"]["success"] is True
            saved = np.asarray(Image.open(out).convert("RGB")).astype(int)
            assert np.abs(saved - x[i].astype(int)).max() <= int(small)
            assert rec["linf_saved"] <= int(small)
            assert target.predict(saved.astype(np.uint8)).argmax() != pred[i]
        else:
            assert rec["status"] == "error" and "--require-success" in rec["error"]
            assert not out.exists()
        assert not can_flip[i] or rec["status"] == "ok"
    assert not list(out_dir.glob(".*"))  # no temporary file left behind


def test_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    r = CliRunner().invoke(app, ["perturb", str(img), "-t", "nope"])
    assert r.exit_code == 2 and "unknown target" in r.output
    r = CliRunner().invoke(app, ["perturb", str(img), "-e", "0"])
    assert r.exit_code == 2 and "--epsilon" in r.output
    r = CliRunner().invoke(app, ["perturb", str(img), "--attack", "uap"])
    assert r.exit_code == 2 and "--uap" in r.output
    assert not (tmp_path / "a_perturb.png").exists()

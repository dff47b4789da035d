"""Learned adversarial task masks (paper 003): training on a generated task, top-K selection, applying
at full resolution (whole image and per face), resume, and the `train mask` / `mask --learned` CLI.

The generated task: the label (red or blue) is carried by one small patch at a random position;
everything else is an identity-like texture (one of eight smooth colour fields plus noise).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from privacy_cli.cli.app import app
from privacy_cli.errors import RegionError
from privacy_cli.methods.learned_mask import apply_learned, learned_reveal
from privacy_cli.models.masker import Z_OFF, mask_gate, topk_mask
from privacy_cli.train.masker import MaskTrainConfig, Split, evaluate_run, fit

S, PATCH, K = 16, 4, 25.0
N_TRAIN, EPOCHS = 512, 16
runner = CliRunner()


def make_task(
    n: int, seed: int, size: int = S, patch: int = PATCH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, size, size, 3) uint8, labels (n,), patch boxes (n, 4) as x0, y0, x1, y1."""
    import cv2

    rng = np.random.default_rng(seed)
    tex_rng = np.random.default_rng(1234)  # the same eight "identities" in every split
    textures = [
        cv2.resize(
            tex_rng.uniform(60, 200, (6, 6, 3)).astype(np.float32),
            (size, size),
            interpolation=cv2.INTER_CUBIC,
        )
        for _ in range(8)
    ]
    x = np.empty((n, size, size, 3), np.uint8)
    y = rng.integers(0, 2, n)
    boxes = np.empty((n, 4), np.int64)
    for k in range(n):
        img = textures[rng.integers(0, 8)] + rng.normal(0, 8, (size, size, 3))
        r, c = rng.integers(0, size - patch + 1, 2)
        img[r : r + patch, c : c + patch] = (230, 40, 40) if y[k] == 0 else (40, 40, 230)
        x[k] = np.clip(img, 0, 255).astype(np.uint8)
        boxes[k] = (c, r, c + patch, r + patch)
    return x, y, boxes


def _config(out: Path, adversarial: bool, **kw) -> MaskTrainConfig:
    base = dict(
        out_dir=out,
        keep=K,
        size=S,
        epochs=EPOCHS,
        batch_size=32,
        lr=3e-3,
        adversarial=adversarial,
        patience=0,
        base=8,
        device="cpu",
        quiet=True,
        task="patch-colour",
    )
    base.update(kw)
    return MaskTrainConfig(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Adversarial and non-adversarial runs trained on the same generated data, plus a test split."""
    root = tmp_path_factory.mktemp("learned_mask")
    x, y, _ = make_task(N_TRAIN + 128, seed=1)
    train, val = Split(x[:N_TRAIN], y[:N_TRAIN]), Split(x[N_TRAIN:], y[N_TRAIN:])
    out = {}
    for name, adv in (("adv", True), ("non", False)):
        fit(_config(root / name, adv), train, val, ["red", "blue"])
        out[name] = root / name
    out["test"] = make_task(200, seed=2)
    return out


def _revealed(run: Path, images: np.ndarray, keep: float = K) -> np.ndarray:
    """(N, S, S) bool: the pixels `mask --learned` reveals in each image (through the apply path)."""
    return np.stack([learned_reveal(im, run, keep, "cpu")[0] for im in images])


def _region_masks(boxes: np.ndarray) -> np.ndarray:
    m = np.zeros((len(boxes), S, S), bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m[k, y0:y1, x0:x1] = True
    return m


def test_topk_keeps_exactly_k_percent_with_their_soft_values() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 1, 20, 20, generator=g)
    mk = topk_mask(m, 25.0)
    for b in range(3):
        kept = mk[b] > 0
        assert int(kept.sum()) == 100  # exactly 25% of 400
        assert torch.equal(mk[b][kept], m[b][kept])  # soft values, not 1
        assert float(m[b][~kept].max()) <= float(m[b][kept].min())  # the largest ones
    m.requires_grad_(True)
    topk_mask(m, 25.0).sum().backward()
    assert int((m.grad > 0).sum()) == 300  # gradients reach the kept values only


def test_stretched_gate_is_exactly_zero_and_passes_gradients_at_zero() -> None:
    z = torch.tensor([-8.0, Z_OFF - 1e-3, Z_OFF + 0.5, 0.0, 8.0], requires_grad=True)
    m = mask_gate(z, "stretched", straight_through=True)
    v = m.detach()
    assert v[0] == 0 and v[1] == 0 and 0 < v[2] < v[3] < 1 and abs(float(v[4]) - 1) < 1e-6
    assert bool((torch.sigmoid(z) > 0).all())  # the paper's gate is never 0
    m.sum().backward()
    assert bool((z.grad > 0).all())  # a pixel at 0 (or 1) can still move


def test_adversarial_mask_reveals_the_task_region_and_hides_the_task_from_the_rest(runs) -> None:
    x, y, boxes = runs["test"]
    region = _region_masks(boxes)
    rev = _revealed(runs["adv"], x)
    coverage = (rev & region).sum() / region.sum()
    assert coverage >= 0.80, f"revealed pixels cover {coverage:.2%} of the label region"
    acc = evaluate_run(runs["adv"], Split(x, y))
    assert acc["acc_p"] >= 0.90, acc
    assert abs(acc["acc_o"] - 0.5) <= 0.10, acc  # two balanced classes: the obfuscator is at chance


def test_adversarial_step_does_not_trade_the_task_region_for_dimming(runs) -> None:
    """Both models reveal exactly K%; the adversarial one must not give up task pixels to hide the
    task from x_o by dimming it there (what the literal gradient through the soft values did: 26%
    coverage against the non-adversarial 90% on this task, hence the straight-through selection)."""
    x, _y, boxes = runs["test"]
    region = _region_masks(boxes)
    cov, rest = {}, {}
    for name in ("adv", "non"):
        rev = _revealed(runs[name], x)
        assert np.allclose(rev.reshape(len(x), -1).sum(1), round(K / 100 * S * S))
        cov[name] = (rev & region).sum() / region.sum()
        rest[name] = (rev & ~region).sum() / (~region).sum()
    assert cov["adv"] >= cov["non"] - 0.05, cov
    assert rest["adv"] <= rest["non"] + 0.05 * region.sum() / (~region).sum(), rest


def test_full_resolution_reveal_matches_k_and_keeps_original_pixels(runs) -> None:
    import cv2

    x, _y, _ = runs["test"]
    big = cv2.resize(x[0], (157, 111), interpolation=cv2.INTER_CUBIC)  # not square, not a multiple of S
    for keep in (25.0, 10.0):
        out, info = apply_learned(big, np.ones(big.shape[:2], np.float32), runs["adv"], keep=keep)
        rev, soft, _ = learned_reveal(big, runs["adv"], keep, "cpu")
        assert (
            abs(rev.mean() * 100 - keep) <= 1.0 and abs(info["learned"]["revealed_share"] * 100 - keep) <= 1.0
        )
        assert np.array_equal(out[rev], big[rev])  # binary reveal: original values
        assert not out[~rev].any()  # everything else filled (black)
    out, _ = apply_learned(big, np.ones(big.shape[:2], np.float32), runs["adv"], soft=True, fill="white")
    rev, soft, _ = learned_reveal(big, runs["adv"], None, "cpu")
    expect = np.round(big[rev].astype(np.float32) * soft[rev][:, None])
    assert np.abs(out[rev].astype(np.float32) - expect).max() <= 1.0
    assert (out[~rev] == 255).all()


def test_face_model_reveals_only_inside_faces(runs, tmp_path: Path) -> None:
    photo = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    run = tmp_path / "face_run"
    shutil.copytree(runs["adv"], run, ignore=shutil.ignore_patterns("checkpoint", "*.jsonl"))
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(input="face", face_scale=1.6)
    (run / "config.json").write_text(json.dumps(cfg))
    rev, _soft, info = learned_reveal(rgb, run, 25.0, "cpu")
    assert info["faces"] >= 1
    from privacy_cli.methods.learned_mask import detect_faces

    boxes = detect_faces(rgb)
    inside = np.zeros(rgb.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        side = max(x1 - x0, y1 - y0) * 1.6
        half = side / 2 + side / S  # the crop square, plus one model pixel of bilinear warp-back
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside[
            max(0, int(cy - half)) : int(np.ceil(cy + half)), max(0, int(cx - half)) : int(np.ceil(cx + half))
        ] = True
    assert rev.any() and not (rev & ~inside).any()  # nothing outside the face crops is revealed
    if info["faces"] == 1:  # exactly K% of the face's crop area (clipped to the photo)
        assert (
            rev.sum() == round(0.25 * info["face_area_pixels"]) and info["face_area_pixels"] <= inside.sum()
        )
    out, _ = apply_learned(rgb, np.ones(rgb.shape[:2], np.float32), run)
    assert not out[~rev].any() and np.array_equal(out[rev], rgb[rev])
    with pytest.raises(RegionError, match="no face"):
        apply_learned(np.full((120, 160, 3), 90, np.uint8), np.ones((120, 160), np.float32), run)


@pytest.mark.parametrize("adversary", ["shared", "separate"])
def test_resume_continues_bit_identically(tmp_path: Path, adversary: str) -> None:
    from safetensors.torch import load_file

    x, y, _ = make_task(80, seed=5, size=16, patch=4)
    train, val = Split(x[:64], y[:64]), Split(x[64:], y[64:])
    kw = dict(size=16, epochs=2, batch_size=16, adversary=adversary, rest_weight=1.0)
    fit(_config(tmp_path / "straight", True, **kw), train, val, ["red", "blue"])
    fit(_config(tmp_path / "resumed", True, **dict(kw, epochs=1)), train, val, ["red", "blue"])
    res = fit(_config(tmp_path / "resumed", True, **kw), train, val, ["red", "blue"])
    assert res.resumed_from == 1 and res.epoch == 2
    nets = ["masker", "phi"] + (["adversary"] if adversary == "separate" else [])
    cfg = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert cfg["adversary"] == adversary and cfg["rest_weight"] == 1.0
    assert (tmp_path / "resumed" / "adversary.safetensors").is_file() == (adversary == "separate")
    for f in (f"{n}.safetensors" for n in nets):
        a = load_file(str(tmp_path / "straight" / "checkpoint" / f))
        b = load_file(str(tmp_path / "resumed" / "checkpoint" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    sa = torch.load(tmp_path / "straight" / "checkpoint" / "optim.pt", weights_only=True)
    sb = torch.load(tmp_path / "resumed" / "checkpoint" / "optim.pt", weights_only=True)
    assert sa.keys() == sb.keys() == ({"pred", "obf", "adv"} if adversary == "separate" else {"pred", "obf"})
    for opt in sa:
        for pid, st in sa[opt]["state"].items():
            assert all(torch.equal(v, sb[opt]["state"][pid][n]) for n, v in st.items() if torch.is_tensor(v))


def test_cli_train_then_mask(runs, tmp_path: Path) -> None:
    x, y, _ = make_task(48, seed=7, size=16, patch=4)
    data = tmp_path / "data"
    data.mkdir()
    rows = ["file,label"]
    for i, (im, lab) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(im).save(data / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{'red' if lab == 0 else 'blue'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "mask",
            str(data),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--keep",
            "30",
            "--size",
            "16",
            "--epochs",
            "1",
            "-b",
            "16",
            "--out",
            str(run),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    assert (
        cfg["keep"] == 30
        and cfg["size"] == 16
        and cfg["classes"] == ["blue", "red"]
        and cfg["input"] == "image"
    )
    assert cfg["task"] == "labels" and len(cfg["normalisation"]["mean"]) == 3
    assert (run / "masker.safetensors").is_file() and (run / "phi.safetensors").is_file()
    assert [json.loads(ln)["epoch"] for ln in (run / "train_log.jsonl").read_text().splitlines()[1:]] == [1]

    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.fromarray(runs["test"][0][0]).resize((90, 70)))).save(photo)
    out, masks = tmp_path / "out.png", tmp_path / "masks"
    r = runner.invoke(
        app,
        [
            "mask",
            str(photo),
            "-o",
            str(out),
            "--learned",
            str(runs["adv"]),
            "--save-mask",
            str(masks),
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["status"] == "ok" and abs(rec["learned"]["revealed_share"] - 0.25) <= 0.01
    saved = np.asarray(Image.open(masks / "photo.png"))
    res = np.asarray(Image.open(out))
    assert saved.shape == (70, 90) and abs((saved > 0).mean() - 0.25) <= 0.01
    assert not res[saved == 0].any()
    # usage errors before any work: --keep without --learned, a folder that is not a run
    assert runner.invoke(app, ["mask", str(photo), "--keep", "30"]).exit_code == 2
    assert runner.invoke(app, ["mask", str(photo), "--learned", str(tmp_path)]).exit_code == 2


def test_bench_method_spec_reaches_the_learned_mask(runs) -> None:
    from privacy_cli.bench.specs import apply_method, parse_methods

    (spec,) = parse_methods(f"mask:learned={runs['adv']},keep=25")
    assert spec.name == "mask" and spec.kwargs == {"learned": str(runs["adv"]), "keep": 25}
    img = np.asarray(Image.fromarray(runs["test"][0][1]).resize((64, 48)))
    out = apply_method(spec, img, np.ones((48, 64), np.float32))
    rev, _, _ = learned_reveal(img, runs["adv"], 25, "cpu")
    assert np.array_equal(out[rev], img[rev]) and not out[~rev].any()

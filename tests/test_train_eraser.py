"""ERASER fine-tuning on tiny generated data (CPU): data loaders, stage 1 / stage 2 effects,
checkpoint + resume, evaluation, CLI wiring.

Every network is built without pretrained weights. For speed only, the generator has 1-2 FFC
residual blocks instead of 18 and training crops are 32x32; the losses, optimisers, checkpoint
format and schedule are the real ones.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from privacy_cli.errors import InputError
from privacy_cli.train.data import StepBatchSampler, collate, open_dataset
from privacy_cli.train.eraser import EraserTrainer, TrainConfig, latest_checkpoint, train_eraser

SIZE = 64


def _picture(rng: np.random.Generator) -> np.ndarray:
    """A 64x64 RGB picture: a colour gradient with a few filled shapes."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = (c0 * (1 - xx[..., None]) + c1 * yy[..., None]).clip(0, 255).astype(np.uint8)
    for _ in range(3):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(5, 15)), color, -1)
        else:
            cv2.rectangle(
                img, (x, y), (x + int(rng.integers(6, 20)), y + int(rng.integers(6, 20))), color, -1
            )
    return img


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """images/ + masks/ (6 pairs; half the masks named <stem>_mask.png) and one image without a mask."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(root / "images" / f"img{i}.png"), _picture(rng))
        m = np.zeros((SIZE, SIZE), np.uint8)
        cx, cy = (int(v) for v in rng.integers(16, 48, 2))
        cv2.ellipse(m, (cx, cy), (int(rng.integers(6, 14)), int(rng.integers(6, 14))), 0, 0, 360, 255, -1)
        name = f"img{i}_mask.png" if i % 2 else f"img{i}.png"
        cv2.imwrite(str(root / "masks" / name), m)
    cv2.imwrite(str(root / "images" / "no_mask.png"), _picture(rng))
    return root


@pytest.fixture(scope="module")
def vr_data(tmp_path_factory) -> Path:
    """A Visual Redactions tree: train (4 annotated images + 1 without polygons) and val (2)."""
    root = tmp_path_factory.mktemp("vr")
    ann_dir = root / "annotations" / "2017_v1"
    ann_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        anns = {}
        for i in range(n):
            image_id = f"2017_{split}_{i:04d}"
            cv2.imwrite(str(root / "images" / split / f"{image_id}.jpg"), _picture(rng))
            x0, y0 = 8 + 4 * i, 10 + 2 * i
            attrs = [
                {
                    "attr_id": "a105_face_all",
                    "polygons": [[x0, y0, x0 + 30, y0, x0 + 30, y0 + 20, x0, y0 + 20]],
                },
                {"attr_id": "a49_phone", "polygons": [[40, 40, 60, 40, 50, 58]]},
            ]
            if split == "train" and i == 4:
                attrs = []  # annotated, but nothing sensitive: skipped
            anns[image_id] = {
                "image_path": f"images/{split}/{image_id}.jpg",
                "image_width": SIZE,
                "image_height": SIZE,
                "attributes": attrs,
            }
        (ann_dir / f"{split}.json").write_text(json.dumps({"annotations": anns}))
    return root


def test_data_loaders_folder_and_visual_redactions(folder_data, vr_data):
    ds = open_dataset(folder_data, size=32)
    assert len(ds) == 6 and sorted(it.name for it in ds.items) == [f"img{i}" for i in range(6)]
    s = ds[(2, 123)]
    assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32)
    assert s["image"].dtype == torch.float32 and 0 <= s["image"].min() and s["image"].max() <= 1
    assert set(torch.unique(s["mask"]).tolist()) == {0.0, 1.0}  # the crop contains mask pixels
    assert torch.equal(ds[(2, 123)]["image"], s["image"])  # a key fully determines the sample
    # the crop is a window of the (possibly flipped) full image
    rgb, mask = ds.load(2)
    full = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    crop = s["image"]
    found = any(
        torch.equal(f[:, y : y + 32, x : x + 32], crop)
        for f in (full, full.flip(-1))
        for y in range(33)
        for x in range(33)
    )
    assert found
    batches = list(StepBatchSampler(len(ds), 4, seed=0, start_step=0, num_steps=3))
    first_epoch = [k for b in batches for k, _ in b][:6]
    assert sorted(first_epoch) == list(range(6))  # every image once per epoch
    resumed = list(StepBatchSampler(len(ds), 4, seed=0, start_step=2, num_steps=1))
    assert resumed[0] == batches[2]  # resuming at a step sees the same batch
    b = collate([ds[k] for k in batches[0]])
    assert b["image"].shape == (4, 3, 32, 32) and b["mask"].shape == (4, 1, 32, 32)

    vr = open_dataset(vr_data, split="train", size=32)
    assert [it.name for it in vr.items] == [f"2017_train_{i:04d}" for i in range(4)]
    rgb, mask = vr.load(1)
    assert rgb.shape == (SIZE, SIZE, 3) and mask.dtype == bool
    x0, y0 = 12, 12  # image 1's face rectangle (x0+30, y0+20), rasterised with its boundary
    assert mask[y0 : y0 + 21, x0 : x0 + 31].all()
    assert mask[45, 50] and not mask[5, 5] and not mask[35, 5]
    assert len(open_dataset(vr_data, split="val", size=32)) == 2
    faces_only = open_dataset(vr_data, split="train", size=32, attributes=["a105_face_all"])
    assert not faces_only.load(1)[1][45, 50]
    with pytest.raises(InputError):
        open_dataset(vr_data, split="test")
    with pytest.raises(InputError):
        open_dataset(folder_data / "images")


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=data,
        out_dir=out,
        pretrained=False,
        generator_kwargs={"n_blocks": 1},
        size=32,
        batch_size=2,
        device="cpu",
        quiet=True,
        eval_images=2,
        checkpoint_every=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_stage1_lowers_quality_then_stage2_raises_difference(folder_data, tmp_path):
    # lambda_diff 10: large enough that 3 steps show the effect on an untrained generator
    cfg = _config(folder_data, tmp_path, generator_kwargs={"n_blocks": 2}, lambda_diff=10.0)
    trainer = EraserTrainer(cfg, torch.device("cpu"))
    ds = open_dataset(folder_data, size=32, train=False)
    batch = collate([ds[i] for i in (0, 3)])
    image, mask = batch["image"], batch["mask"]
    d0 = copy.deepcopy(trainer.discriminator)  # score G against the same critic before and after

    def measure() -> dict[str, float]:
        trainer.train_mode()
        live, trainer.discriminator = trainer.discriminator, d0
        try:
            with torch.no_grad():
                res = trainer.generator_losses(image, mask, 0, stage=2)
        finally:
            trainer.discriminator = live
        return {k: float(v) for k, v in res.items() if k not in ("pred", "out")}

    before = measure()
    for step in range(3):
        logs = trainer.train_step(batch, step, stage=1)
    assert "diff" not in logs and {"l1", "resnet_pl", "adv_g", "fm", "loss_d", "d_r1"} <= set(logs)
    after1 = measure()
    assert after1["quality"] < 0.99 * before["quality"]
    assert after1["l1"] < 0.95 * before["l1"] and after1["resnet_pl"] < before["resnet_pl"]
    for step in range(3, 6):
        logs = trainer.train_step(batch, step, stage=2)
    assert {"diff", "diff_content", "diff_style", "diff_objective"} <= set(logs)
    assert logs["loss_g"] == pytest.approx(logs["quality"] - 10.0 * logs["diff_objective"], rel=1e-5)
    after2 = measure()
    # stage 1 pulled the region towards the original, stage 2 pushes it away
    assert after1["diff"] < before["diff"]
    assert after2["diff"] > after1["diff"] + 0.02
    for v in after2.values():
        assert np.isfinite(v)


def test_checkpoint_resume_continues_and_reproduces(folder_data, tmp_path):
    full = train_eraser(_config(folder_data, tmp_path / "a", stage1_steps=1, stage2_steps=1))
    assert full.step == 2 and full.stage2_start == 1 and full.resumed_from is None

    part = train_eraser(_config(folder_data, tmp_path / "b", stage1_steps=1, stage2_steps=0))
    assert part.step == 1 and part.weights is not None and part.weights.is_file()
    resumed = train_eraser(_config(folder_data, tmp_path / "b", stage1_steps=1, stage2_steps=1))
    assert resumed.resumed_from == 1 and resumed.step == 2 and resumed.stage == 2
    assert latest_checkpoint(tmp_path / "b").name == "step_00000002"

    from safetensors.torch import load_file

    for name in ("eraser.safetensors", "discriminator.safetensors"):
        a = load_file(str(full.checkpoint / name))
        b = load_file(str(resumed.checkpoint / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    keys = load_file(str(resumed.weights)).keys()
    assert any(k.startswith("generator.model.") for k in keys) and {"fusion.weight", "fusion.bias"} <= set(
        keys
    )
    opt = torch.load(resumed.checkpoint / "optimizer.pt", weights_only=True)
    assert opt and all(isinstance(v, torch.Tensor) for v in opt.values())
    meta = json.loads((resumed.checkpoint / "meta.json").read_text())
    assert meta["step"] == 2 and meta["stage2_start"] == 1

    # every loss of every step is logged; the resumed run appends to the same file
    records = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r and "event" not in r]
    assert [(r["step"], r["stage"]) for r in steps] == [(1, 1), (2, 2)]
    for r in steps:
        assert {
            "l1",
            "resnet_pl",
            "adv_g",
            "fm",
            "quality",
            "loss_g",
            "loss_d",
            "d_real",
            "d_fake",
            "d_r1",
        } <= set(r)
    assert "diff" in steps[1] and "diff" not in steps[0]

    # evaluation: quality outside, difference inside the mask
    m = resumed.metrics
    assert m["images"] == 2
    for k in (
        "psnr",
        "ssim",
        "l1_known",
        "psnr_known",
        "ssim_known",
        "mae_hole",
        "psnr_hole",
        "ssim_hole",
        "vgg_diff",
    ):
        assert np.isfinite(m[k]), k
    assert m["mae_hole"] > 0 and m["vgg_diff"] > 0 and m["psnr"] > m["psnr_hole"]
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["step"] == 2


def test_cli_train_eraser_wiring(tmp_path):
    from typer.testing import CliRunner

    from privacy_cli.cli.train_cmd import app

    runner = CliRunner()
    res = runner.invoke(app, ["eraser", "--help"])
    assert res.exit_code == 0 and "--stage2-steps" in res.output and "--lambda-diff" in res.output
    res = runner.invoke(app, ["eraser", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1
    assert "not a folder" in (res.output + (res.stderr if res.stderr_bytes is not None else ""))


def test_cli_train_eraser_offline_names_the_import_command(tmp_path, folder_data, monkeypatch):
    """--offline: missing starting weights fail at once, saying downloads are off and how to import."""
    from typer.testing import CliRunner

    from privacy_cli.cli.train_cmd import app
    from privacy_cli.weights import configure

    for var in ("HF_HUB_OFFLINE", "PRIVPIX_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    try:
        res = CliRunner().invoke(
            app,
            [
                "eraser",
                str(folder_data),
                "--out",
                str(tmp_path / "run"),
                "--init",
                "big-lama",
                "--offline",
                "--weights-dir",
                str(tmp_path / "w"),
                "--stage1-steps",
                "1",
                "--stage2-steps",
                "0",
            ],
        )
    finally:
        configure(None, None)
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert res.exit_code == 1, text
    assert "downloads are off" in text and "privpix weights import big-lama" in text
    assert not (tmp_path / "run" / "eraser.safetensors").exists()

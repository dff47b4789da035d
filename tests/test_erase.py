"""`privpix erase`: classical path on real photos, crop strategy, and the full neural path with a
test-made big-lama checkpoint resolved from a weights dir."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from privacy_cli.cli.app import app
from privacy_cli.methods import erase as erase_mod
from privacy_cli.methods.erase import Inpainter, inpaint_regions

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
runner = CliRunner()


def _records(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


@pytest.fixture()
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.mark.parametrize("model", ["telea", "ns"])
def test_classical_erase_changes_only_the_region(photo: np.ndarray, model: str) -> None:
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[80:200, 170:300] = 1  # the astronaut's face
    out, info = erase_mod.erase(photo, mask, model=model)
    assert info["model_used"] == model
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    inside = np.abs(out.astype(int) - photo.astype(int))[mask > 0].mean()
    assert inside > 10  # different content
    # natural: the fill is smooth, no holes/black box left
    assert out[mask > 0].mean() > 40


def test_crop_strategy_bounds_model_input(photo: np.ndarray) -> None:
    """A small region in a big photo is processed in a context crop at the working size."""
    big = np.ascontiguousarray(np.tile(photo, (6, 8, 1)))  # 3072 x 4096
    mask = np.zeros(big.shape[:2], np.float32)
    mask[1000:1160, 2000:2120] = 1
    mask[2500:2900, 300:700] = 1
    seen: list[tuple[int, ...]] = []

    def fn(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        seen.append(rgb.shape)
        assert hole.shape == rgb.shape[:2] and hole.any()
        out = rgb.copy()
        out[hole] = (0, 255, 0)
        return out

    out = inpaint_regions(big, mask, Inpainter("probe", fn, 256), context=2.5)
    assert len(seen) == 2
    assert all(max(s[:2]) <= 256 for s in seen)
    assert (out[mask > 0] == (0, 255, 0)).all()
    assert np.array_equal(out[mask == 0], big[mask == 0])


def test_auto_without_weights_uses_classical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: np.ndarray
) -> None:
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tmp_path / "a.png"
    Image.fromarray(photo).save(src)
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps([{"box": [170, 80, 300, 200], "kind": "face"}]))
    r = runner.invoke(app, ["erase", str(src), "--boxes", str(boxes), "--json"])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert rec["model_used"] == "telea" and rec["status"] == "ok"
    # a learned model asked for explicitly without weights: clear error naming the fetch command
    r = runner.invoke(app, ["erase", str(src), "--boxes", str(boxes), "--model", "big-lama", "--overwrite"])
    assert r.exit_code == 1
    assert "privpix weights fetch big-lama" in r.output
    assert "Traceback" not in r.output


@pytest.mark.skipif(not (FACES_ID / "identities.csv").exists(), reason=f"faces-id not found at {FACES_ID}")
def test_telea_erase_removes_identity_on_real_photos(tmp_path: Path) -> None:
    from privacy_cli.faceid import default_recognizer
    from privacy_cli.io import load_image

    with open(FACES_ID / "identities.csv") as f:
        files = [row["file"] for row in csv.DictReader(f)][::6]  # one photo in six: every identity group
    r = runner.invoke(
        app,
        [
            "erase",
            *[str(FACES_ID / x) for x in files],
            "-o",
            str(tmp_path),
            "--model",
            "telea",
            "--detect",
            "faces",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    recs = {Path(x["input"]).name: x for x in _records(r.stdout)}
    rec = default_recognizer()
    judged = matched = 0
    for name in files:
        faces = [g for g in recs[name]["regions"] if g["kind"] == "face"]
        assert faces, f"no face found in {name}"
        box = tuple(
            max(faces, key=lambda g: (g["box"][2] - g["box"][0]) * (g["box"][3] - g["box"][1]))["box"]
        )
        emb = rec.embed(load_image(FACES_ID / name).rgb, box)
        if emb is None:
            continue
        judged += 1
        matched += rec.find_identity_match(emb, load_image(tmp_path / name).rgb, box)
    assert judged >= len(files) - 1
    assert matched == 0, f"dlib still matched {matched}/{judged} erased faces"


@pytest.fixture(scope="module")
def random_lama_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised big-lama generator saved as the Lightning checkpoint (`big-lama-ckpt`
    alternative: {"state_dict": {"generator." + key: ...}}) in a weights dir."""
    from privacy_cli.models import build_model

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    gen = build_model("big-lama", pretrained=False)
    sd = {"generator." + k: v for k, v in gen.state_dict().items()}
    torch.save({"state_dict": sd, "pytorch-lightning_version": "1.2.9", "epoch": 0}, d / "big-lama-ckpt.ckpt")
    return d


@pytest.mark.parametrize("model", ["big-lama", "eraser"])
def test_neural_erase_end_to_end(
    random_lama_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, photo: np.ndarray
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    erase_mod.clear_cache()
    src = tmp_path / "a.jpg"
    Image.fromarray(photo[::2, ::2]).save(src)  # 256 x 256
    mask = np.zeros((256, 256), np.uint8)
    mask[40:100, 85:150] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    args = [
        "erase",
        str(src),
        "--mask",
        str(tmp_path / "m.png"),
        "--weights-dir",
        str(random_lama_weights),
        "--offline",
        "--json",
    ]
    r = runner.invoke(app, [*args, "--model", model])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert rec["model_used"] == model
    out = np.asarray(Image.open(tmp_path / "a_erase.jpg")).astype(int)
    orig = np.asarray(Image.open(src)).astype(int)
    assert np.abs(out[40:100, 85:150] - orig[40:100, 85:150]).mean() > 5
    assert np.abs(out[150:, :] - orig[150:, :]).mean() < 2  # JPEG re-encode only
    if model == "big-lama":
        # auto picks the learned model once its weights are present, and says so
        r = runner.invoke(app, [*args, "--overwrite"])
        assert r.exit_code == 0 and _records(r.stdout)[0]["model_used"] in ("big-lama", "eraser")
    erase_mod.clear_cache()


def test_eraser_on_lama_weights_equals_lama(
    random_lama_weights: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ERASER with identity fusion on big-lama weights reproduces LaMa (the paper's starting point)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    from privacy_cli.weights import configure

    configure(weights_dir=random_lama_weights, offline=True)
    try:
        erase_mod.clear_cache()
        img = np.ascontiguousarray(photo[::4, ::4])
        mask = np.zeros(img.shape[:2], np.float32)
        mask[20:50, 40:80] = 1
        a, _ = erase_mod.erase(img, mask, model="big-lama")
        b, _ = erase_mod.erase(img, mask, model="eraser")
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    finally:
        configure(None, None)
        erase_mod.clear_cache()


def test_migan_erase_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: np.ndarray) -> None:
    """`--model migan` through resolution, the ONNX wrapper, crops and compositing. The test-made graph
    has MI-GAN's pipeline I/O (uint8 image + mask, 255 = known) and fills holes with 255 - image."""
    from test_weights_loading import migan_pipeline_onnx

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    erase_mod.clear_cache()
    weights = tmp_path / "w"
    weights.mkdir()
    migan_pipeline_onnx(weights / "migan.onnx")
    src = tmp_path / "a.png"
    img = np.ascontiguousarray(photo[::2, ::2])
    Image.fromarray(img).save(src)
    mask = np.zeros((256, 256), np.uint8)
    mask[40:100, 85:150] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    r = runner.invoke(
        app,
        [
            "erase",
            str(src),
            "--mask",
            str(tmp_path / "m.png"),
            "--model",
            "migan",
            "--weights-dir",
            str(weights),
            "--offline",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert _records(r.stdout)[0]["model_used"] == "migan"
    out = np.asarray(Image.open(tmp_path / "a_erase.png")).astype(int)
    assert np.array_equal(out[40:100, 85:150], 255 - img[40:100, 85:150].astype(int))
    keep = mask == 0
    assert np.array_equal(out[keep], img[keep])
    erase_mod.clear_cache()

"""Targets `facenet-vggface2` and `arcface-ir-se50` (identity cloaking against the torch
recognisers, used when their weights are present): the attack's differentiable crops reproduce the
recogniser's own, `privpix perturb` against ArcFace leaves no saved photo matched to its original,
and missing weights are a one-line error naming the weights command.

The published checkpoints cannot be downloaded here, so the tests write random weights in their
published layouts (facenet-pytorch's state_dict with the 8631-way head, pSp's IR-SE50 state_dict),
with batch-norm statistics taken from faces-id face crops so the random networks still tell faces
apart (different people: ArcFace cosine about 0.0-0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
PHOTOS = (
    "img1.jpg",
    "img8.jpg",
    "img13.jpg",
    "img16.jpg",
    "img18.jpg",
    "img22.jpg",
    "img30.jpg",
    "img40.jpg",
)


def _photo(name: str, side: int = 512) -> np.ndarray:
    from PIL import Image

    im = Image.open(FACES_ID / name).convert("RGB")
    im.thumbnail((side, side))
    return np.asarray(im)


@pytest.fixture
def recogniser_weights(wenv):
    """Random FaceNet and ArcFace checkpoints (BN statistics of faces-id crops) in the weights dir."""
    import torch

    from privacy_cli import attack
    from privacy_cli.bench import privacy as P
    from privacy_cli.models.irse import arcface_ir_se50
    from privacy_cli.models.zoo import facenet_vggface2
    from privacy_cli.runtime import clear_runners
    from privacy_cli.weights.registry import get_weights
    from privacy_cli.weights.resolve import weights_dir_path

    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    imgs = [_photo(n) for n in PHOTOS]
    wenv.wdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, model, emb_cls in (
        ("facenet-vggface2", facenet_vggface2(), P.FaceNetEmbedder),
        ("arcface-ir-se50", arcface_ir_se50(), P.ArcFaceEmbedder),
    ):
        emb = emb_cls(model)
        crops = [emb.prepare(im, f) for im in imgs for f in emb.detect(im)[:1]]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
                m.reset_running_stats()
        with torch.no_grad():
            model.train()
            emb.forward(x)
        model.eval()
        sd = model.state_dict()
        if name == "facenet-vggface2":  # the published file carries the VGGFace2 classifier head
            sd["logits.weight"], sd["logits.bias"] = torch.randn(8631, 512), torch.randn(8631)
        torch.save(sd, weights_dir_path(get_weights(name)))
    P.clear_caches()
    clear_runners()
    attack._INSTANCES.clear()
    yield imgs
    P.clear_caches()
    clear_runners()
    attack._INSTANCES.clear()


@pytest.mark.parametrize("name", ["facenet-vggface2", "arcface-ir-se50"])
def test_differentiable_crops_match_the_recogniser(recogniser_weights, name):
    import torch

    from privacy_cli import attack

    t = attack.get_target(name, "cpu")
    for img in recogniser_weights[:3]:
        st = t.setup(img)
        assert len(st.faces) >= 1
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            e = t.embed_t(x, st.faces).double().numpy()
        cos = (e * st.reference).sum(1)
        assert cos.min() > 0.999, cos  # same crop, same network: the attack optimises what is judged
        verdict = t.judge(img, st)
        assert verdict["success"] is False and verdict["margin"] < 0 and verdict["identities_matched"] >= 1


def test_perturb_against_arcface_unlinks_saved_photos(recogniser_weights, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli.bench.privacy import get_embedder
    from privacy_cli.cli.app import app
    from privacy_cli.methods.perturb import psnr

    src = tmp_path / "in"
    src.mkdir()
    names = ["img1.png"]
    for n, img in zip(names, recogniser_weights[:1], strict=True):
        Image.fromarray(img).save(src / n)
    r = CliRunner().invoke(
        app,
        [
            "perturb",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "-t",
            "arcface-ir-se50",
            "-e",
            "8",
            "--json",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")]
    assert len(records) == 1
    emb = get_embedder("arcface", "cpu")
    for n, img in zip(names, recogniser_weights[:1], strict=True):
        rec = next(x for x in records if x["input"].endswith(n))
        check = rec["targets"]["arcface-ir-se50"]
        assert check["success"] is True and check["margin"] > 0
        out = np.asarray(Image.open(tmp_path / "out" / n).convert("RGB"))
        assert np.abs(out.astype(int) - img.astype(int)).max() <= 8 and psnr(img, out) > 30
        # judged again here: the recogniser finds the face and no longer matches it to the original
        ref = emb.embed(img)
        found = emb.detect(out)
        assert found, "the face must still be there"
        assert max(float(np.dot(ref, emb.embed(out, f))) for f in found) < 0.19


def test_missing_recogniser_weights_are_a_one_line_error(wenv, tmp_path, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli import attack
    from privacy_cli.bench import privacy as P
    from privacy_cli.cli.app import app

    monkeypatch.setenv("PRIVPIX_OFFLINE", "1")
    P.clear_caches()
    attack._INSTANCES.clear()
    img = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(img)
    r = CliRunner().invoke(app, ["perturb", str(img), "-o", str(tmp_path / "out"), "-t", "facenet-vggface2"])
    assert r.exit_code != 0
    errors = [line for line in r.output.splitlines() if "facenet-vggface2" in line]
    assert len(errors) == 1 and "privpix weights" in errors[0] and "a.png" in errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    P.clear_caches()
    attack._INSTANCES.clear()

"""``deidentify --model latent | private-encoder`` end to end on a real face, with checkpoints the test
builds in the published layouts: e4e / pSp dicts (``state_dict`` with ``encoder.*``/``decoder.*``,
``latent_avg``, ``opts``) whose decoder is an 8x8 StyleGAN2 of the same classes (so CPU runs stay
short), a plain IR-SE50 state_dict (``model_ir_se50.pth`` layout), and LPIPS(alex) with a random backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.skipif(not FACES_ID.is_dir(), reason=f"faces-id dataset not found at {FACES_ID}")

SIZE = 8  # decoder resolution of the test checkpoints (4 W+ entries)


def _weights_env(mp: pytest.MonkeyPatch, root: Path) -> Path:
    from privacy_cli.weights import registry, resolve

    wdir = root / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    mp.setenv("PRIVPIX_WEIGHTS_DIR", str(wdir))
    mp.setenv("HF_HUB_CACHE", str(root / "hf"))
    mp.setenv("PRIVPIX_OFFLINE", "1")
    for var in ("HF_HUB_OFFLINE", "PRIVPIX_WEIGHTS_TOML", "HF_HOME"):
        mp.delenv(var, raising=False)
    mp.setitem(resolve._SETTINGS, "weights_dir", None)
    mp.setitem(resolve._SETTINGS, "offline", None)
    registry._CACHE.clear()
    return wdir


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Weights dir with test-built e4e, Private-Encoder (beta 0.2) and ArcFace checkpoints."""
    import torch

    from privacy_cli.bench import features
    from privacy_cli.methods import deidentify as d
    from privacy_cli.models.irse import arcface_ir_se50
    from privacy_cli.models.psp import PSPPipeline

    root = tmp_path_factory.mktemp("deid-models")
    with pytest.MonkeyPatch.context() as mp:
        wdir = _weights_env(mp, root)
        torch.manual_seed(0)
        model = PSPPipeline("Encoder4Editing", SIZE)
        sd = {k: v for k, v in model.state_dict().items()}
        lat = model.decoder.mean_latent(256).repeat(model.decoder.n_latent, 1)
        torch.save(
            {"state_dict": sd, "latent_avg": lat, "opts": {"encoder_type": "Encoder4Editing"}},
            wdir / "e4e-ffhq.pt",
        )
        pe_dir = wdir / d.PE_FOLDER
        pe_dir.mkdir()
        torch.save(
            {
                "state_dict": sd,
                "latent_avg": lat,
                "opts": {"encoder_type": "GradualStyleEncoder", "target_id": 0.2},
            },
            pe_dir / d.pe_checkpoint_name(0.2),
        )
        del model, sd
        torch.save(arcface_ir_se50().state_dict(), wdir / "arcface-ir-se50.pth")
        import torchvision

        alex = torchvision.models.alexnet(weights=None).features.state_dict()
        lp = features.build_lpips("alex", backbone_state={f"features.{k}": v for k, v in alex.items()})
        mp.setitem(features._LPIPS_CACHE, ("alex", "cpu"), lp)
        (wdir / "alexnet-owt-7be5be79.pth").write_bytes(
            b""
        )  # present for the check; LPIPS comes from the cache
        img = np.asarray(Image.open(FACES_ID / "img12.jpg").convert("RGB"))
        from privacy_cli.faceid import default_recognizer

        x0, y0, x1, y1 = default_recognizer().locate(img)[0]
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, 0.65 * (x1 - x0), 0.65 * (y1 - y0)
        mask = np.zeros(img.shape[:2], np.float32)
        mask[int(cy - hh) : int(cy + hh), int(cx - hw) : int(cx + hw)] = 1.0
        yield {"img": img, "mask": mask, "wdir": wdir}
        d._PSP_CACHE.clear()


def _check_output(img: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[mask == 0] == img[mask == 0]).all()
    assert np.abs(out.astype(int) - img.astype(int))[mask > 0].mean() > 2


def test_latent_backend_end_to_end(env) -> None:  # noqa: ANN001
    from privacy_cli.methods.deidentify import deidentify, missing_latent_weights

    assert missing_latent_weights() == ["alexnet"]  # LPIPS(alex) is the test's, from the LPIPS cache
    out, info = deidentify(env["img"], env["mask"], beta=0.0, model="latent", steps=2)
    assert info["model_used"] == "latent"
    face = info["faces"][0]
    assert face["backend"] == "latent" and face["steps"] == 2 and face["beta"] == 0.0
    assert -1.0 <= face["arcface_similarity"] <= 1.0
    assert "identity_similarity" in face
    _check_output(env["img"], env["mask"], out)


def test_latent_optimisation_moves_cosine_towards_beta(env) -> None:  # noqa: ANN001
    """Identity loss only: the W+ codes move so that cos(ArcFace(G(w)), ArcFace(x)) approaches beta."""
    from privacy_cli.methods import deidentify as d

    faces, _ = d.analyse_faces(env["img"], env["mask"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(d, "LATENT_LAMBDA_LPIPS", 0.0)
        mp.setattr(d, "LATENT_LAMBDA_W", 0.0)
        start = d._latent(faces, beta=1.0, steps=0, device="cpu", weights=None)[0][1]["arcface_similarity"]
        end = d._latent(faces, beta=1.0, steps=4, device="cpu", weights=None)[0][1]["arcface_similarity"]
    assert end > start


def test_private_encoder_backend_uses_the_checkpoint_for_beta(env) -> None:  # noqa: ANN001
    from privacy_cli.errors import WeightsError
    from privacy_cli.methods.deidentify import choose_model, deidentify

    assert choose_model("auto", 0.2) == "private-encoder"
    out, info = deidentify(env["img"], env["mask"], beta=0.2, model="private-encoder", judge=False)
    face = info["faces"][0]
    assert face["backend"] == "private-encoder" and face["checkpoint"] == "privacy_0.2.pt"
    _check_output(env["img"], env["mask"], out)
    with pytest.raises(WeightsError, match=r"available: 0\.2.*privpix train deidentify"):
        deidentify(env["img"], env["mask"], beta=0.5, model="private-encoder")


def test_missing_weights_is_one_line_naming_the_fetch_command(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from privacy_cli.cli.app import app

    _weights_env(monkeypatch, tmp_path)
    out = tmp_path / "o.jpg"
    r = CliRunner().invoke(
        app, ["deidentify", str(FACES_ID / "img12.jpg"), "-o", str(out), "--model", "latent"]
    )
    assert r.exit_code == 1 and not out.exists()
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert (
        len(lines) == 1
        and "privpix weights fetch e4e-ffhq" in lines[0]
        and "privpix train deidentify" in lines[0]
    )
    r = CliRunner().invoke(
        app,
        [
            "deidentify",
            str(FACES_ID / "img12.jpg"),
            "-o",
            str(out),
            "--model",
            "private-encoder",
            "--beta",
            "0.3",
        ],
    )
    assert r.exit_code == 1 and "privpix train deidentify" in r.output and not out.exists()


def test_training_lowers_the_identity_gap_and_resumes(env, tmp_path: Path) -> None:  # noqa: ANN001
    import json
    import shutil

    from privacy_cli.cli.app import app
    from privacy_cli.methods.deidentify import PE_FOLDER, identity_net, load_psp
    from privacy_cli.train.deidentify import identity_gap, load_faces

    data = tmp_path / "faces"
    data.mkdir()
    for n in ("img10.jpg", "img12.jpg"):
        shutil.copy(FACES_ID / n, data / n)
    init = env["wdir"] / PE_FOLDER / "privacy_0.2.pt"
    run = tmp_path / "run"
    args = ["train", "deidentify", str(data), "--beta", "0", "--init", str(init), "--out", str(run),
            "--batch-size", "1", "--lr", "1e-3", "--lambda-id", "1", "--lambda-l2", "0", "--lambda-lpips", "0",
            "--no-install", "--json"]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--steps", "2"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["step"] == 2 and rec["resumed_from"] is None and rec["faces"] == 2
    faces, _ = load_faces(data)
    net = identity_net("cpu")
    before = identity_gap(load_psp(init, "GradualStyleEncoder"), net, faces, 0.0, "cpu")
    trained = Path(rec["weights"])
    assert trained.name == "privacy_0.pt"
    ckpt = __import__("torch").load(trained, weights_only=True)
    assert ckpt["opts"]["target_id"] == 0.0 and any(k.startswith("decoder.") for k in ckpt["state_dict"])
    after = identity_gap(load_psp(trained, "GradualStyleEncoder"), net, faces, 0.0, "cpu")
    assert after < before, (before, after)
    r = CliRunner().invoke(app, [*args, "--steps", "3"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["step"] == 3 and rec["resumed_from"] == 2
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

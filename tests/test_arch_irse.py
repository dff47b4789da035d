"""IR-SE50 (ArcFace) and IR-101 (CurricularFace) backbones: reference equivalence, checkpoint
key filters on test-made checkpoints in the published layouts, and the embedding helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import assert_matches_reference

from privacy_cli.errors import InputError
from privacy_cli.models import registry
from privacy_cli.models.irse import (
    IRBackbone,
    arcface_ir_se50,
    curricularface_ir101,
    face_embedding,
    idloss_face_crop,
    irse_key_filter,
)

FACES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


@pytest.fixture(scope="module")
def arcface() -> IRBackbone:
    torch.manual_seed(0)
    return arcface_ir_se50()


@pytest.fixture(scope="module")
def arcface_default() -> IRBackbone:
    """Default (kaiming) init: unlike the reference fills, outputs depend clearly on the input."""
    torch.manual_seed(3)
    return arcface_ir_se50()


@pytest.fixture(scope="module")
def curricular() -> IRBackbone:
    torch.manual_seed(0)
    return curricularface_ir101()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def test_arcface_ir_se50_matches_strongfill_reference(arcface):
    def run(m, a):
        return {"emb": m(_t(a["x"])), "emb2": m(_t(a["x2"]))}

    diffs = assert_matches_reference(arcface, "arcface_ir_se50_strongfill", run, atol=1e-5)
    assert set(diffs) == {"emb", "emb2"}


def test_arcface_ir_se50_matches_detfill_reference_units_and_idloss(arcface):
    """The plain-fill reference also stores per-unit outputs, intermediate maps and the pSp
    identity-loss crop, which check the backbone beyond the bias-dominated embedding."""

    def run(m, a):
        x = _t(a["x"])
        outs = {"emb": m(x), "pre_l2norm_emb": m.forward_features(x)}
        crop = idloss_face_crop(_t(a["idloss_x256"]))
        outs["idloss_x112_after_crop_pool"] = crop
        outs["idloss_emb"] = m(crop)
        for u in (0, 1, 3, 21):
            inp = _t(a[f"unit_body{u}_in"])
            outs[f"unit_body{u}_out"] = m.body[u](inp)
            outs[f"unit_body{u}_res_out"] = m.body[u].res_layer(inp)
        outs["unit_output_layer_out"] = m.output_layer(_t(a["unit_output_layer_in"]))
        feats = {"input_layer": m.input_layer(x)}
        f = feats["input_layer"]
        for i, unit in enumerate(m.body):
            f = unit(f)
            feats[f"body{i}"] = f
        for name in ("input_layer", "body2", "body6", "body20", "body23"):
            f = feats[name]
            c = f.shape[-1] // 2 - 2
            outs[f"inter_{name}_chmean"] = f.mean(dim=(2, 3))
            outs[f"inter_{name}_crop4"] = f[:, :, c : c + 4, c : c + 4]
        return outs

    diffs = assert_matches_reference(arcface, "arcface_ir_se50", run, atol=1e-5)
    assert len(diffs) == 23  # every stored output: 4 embeddings/crops, 9 unit checks, 10 intermediates


def test_curricularface_ir101_matches_strongfill_reference(curricular):
    # the plain-fill "curricularface_ir101" reference stores only the bias-dominated embedding,
    # which adds nothing to this check, so it is not run (it matches too: max diff 0.0)
    def run(m, a):
        return {"emb": m(_t(a["x"])), "emb2": m(_t(a["x2"]))}

    diffs = assert_matches_reference(curricular, "curricularface_ir101_strongfill", run, atol=1e-5)
    assert set(diffs) == {"emb", "emb2"}


def test_structure_and_registry():
    for name, builder, ref in (
        ("arcface-ir-se50", arcface_ir_se50, "arcface_ir_se50_strongfill"),
        ("curricularface-ir101", curricularface_ir101, "curricularface_ir101_strongfill"),
    ):
        # registry.get_entry() would import every family module; look at this family's entries only
        entry = registry._REGISTRY[name]
        assert entry.builder is builder and entry.weights == name and entry.reference == ref
        assert entry.key_filter is irse_key_filter


def _roundtrip(tmp_path: Path, obj: dict) -> dict:
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_arcface_key_filter_published_layout(arcface, tmp_path):
    """model_ir_se50.pth: plain state_dict, no prefix, possibly without num_batches_tracked."""
    src = arcface  # any distinctive weights (filled by the reference tests or default init)
    legacy = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    raw = _roundtrip(tmp_path, legacy)
    assert all(not k.startswith("module.") for k in raw)

    torch.manual_seed(1)
    dst = arcface_ir_se50()
    dst.load_state_dict(irse_key_filter(raw, dst), strict=True)
    _assert_same_state(src, dst)

    # a DataParallel copy inside a {"state_dict": ...} container: unusable as is, fine filtered
    wrapped = {"state_dict": {"module." + k: v for k, v in raw.items()}}
    dst2 = arcface_ir_se50()
    with pytest.raises(RuntimeError):
        dst2.load_state_dict(wrapped["state_dict"], strict=True)
    dst2.load_state_dict(irse_key_filter(wrapped, dst2), strict=True)
    _assert_same_state(src, dst2)


def test_curricularface_key_filter_published_layout(curricular, tmp_path):
    """CurricularFace_Backbone.pth: plain state_dict, affine-free final BatchNorm1d."""
    src = curricular
    sd = src.state_dict()
    assert "output_layer.4.weight" not in sd and "output_layer.4.running_mean" in sd
    assert not any("res_layer.5" in k for k in sd)  # plain IR units, no squeeze-excite
    raw = _roundtrip(tmp_path, sd)
    torch.manual_seed(2)
    dst = curricularface_ir101()
    dst.load_state_dict(irse_key_filter(raw, dst), strict=True)
    _assert_same_state(src, dst)


def test_face_embedding_normalisation_and_shapes(arcface_default):
    m = arcface_default
    torch.manual_seed(3)
    faces = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        emb = face_embedding(m, faces)
        assert emb.shape == (2, 512) and emb.dtype == torch.float32
        assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
        # the published weights expect RGB mapped to [-1, 1]
        assert torch.allclose(emb, m(faces * 2 - 1), atol=1e-6)
        assert not torch.allclose(emb, m(faces), atol=1e-3)
        assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    with pytest.raises(InputError):
        face_embedding(m, torch.rand(3, 112, 112))
    with pytest.raises(InputError):
        face_embedding(m, torch.rand(1, 4, 112, 112))
    with pytest.raises(InputError):
        idloss_face_crop(torch.rand(1, 1, 256, 256))


def test_face_embedding_resizes_real_photos(arcface_default):
    """Real photos at a size other than 112: resized (bilinear, antialiased) before the backbone."""
    if not FACES.exists():
        pytest.skip(f"face photos not found at {FACES}")
    from PIL import Image

    crops = []
    for name in ("img1.jpg", "img2.jpg"):
        img = Image.open(FACES / name).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((150, 150), Image.BILINEAR)
        crops.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0)
    faces = torch.stack(crops)
    m = arcface_default
    with torch.no_grad():
        emb = face_embedding(m, faces)
        small = torch.nn.functional.interpolate(faces, size=(112, 112), mode="bilinear", antialias=True)
        ref = m(small * 2 - 1)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb, ref, atol=1e-5)
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)

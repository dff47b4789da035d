"""AnimeGANv2, CartoonGAN and CycleGAN generators: reference equivalence, checkpoint key filters on
test-made checkpoints in the published layouts, and the pre/post-processing helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import assert_matches_reference

from privacy_cli.errors import InputError, UsageError
from privacy_cli.models import registry
from privacy_cli.models.stylization import (
    AnimeGANv2Generator,
    CartoonGANGenerator,
    ResnetGenerator,
    animegan2_face_paint_v2,
    cartoongan_hayao,
    cyclegan_key_filter,
    cyclegan_ukiyoe,
    plain_key_filter,
    stylize_animegan2,
    stylize_cartoongan,
    stylize_cyclegan,
    stylize_tensor,
)

ATOL = 1e-5  # the references' stated tolerance (float32, CPU)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _plus_one(module: torch.nn.Module, keys: list[str]) -> None:
    """The references' ``variant_normscale_plus1``: add 1.0 to the listed norm scales."""
    sd = module.state_dict()
    for k in keys:
        sd[k] = sd[k] + 1.0
    module.load_state_dict(sd, strict=True)


def _variant_keys(ref_name: str) -> list[str]:
    from reference import load_ref

    return load_ref(ref_name)["variant_normscale_plus1"]["keys"]


# ---------------------------------------------------------------------------------------------
# Reference equivalence


def test_animegan2_matches_references():
    m = animegan2_face_paint_v2()
    diffs = assert_matches_reference(
        m, "animegan2_generator_strongfill", lambda m, a: {"out": m(_t(a["x"]))}, atol=ATOL
    )
    assert set(diffs) == {"out"}

    keys = _variant_keys("animegan2_generator")

    def run(m, a):
        x = _t(a["x"])
        outs = {"out": m(x), "out_align_corners_false": m(x, align_corners=False)}
        _plus_one(m, keys)  # GroupNorm scales near 1 exercise the spatial path
        outs["out_normscale_plus1"] = m(x)
        outs["out_normscale_plus1_align_corners_false"] = m(x, align_corners=False)
        return outs

    assert len(assert_matches_reference(m, "animegan2_generator", run, atol=ATOL)) == 4


def test_cartoongan_matches_references():
    m = cartoongan_hayao()
    diffs = assert_matches_reference(
        m, "cartoongan_generator_strongfill", lambda m, a: {"out": m(_t(a["x"]))}, atol=ATOL
    )
    assert set(diffs) == {"out"}

    keys = _variant_keys("cartoongan_generator")

    def run(m, a):
        # the outputs are tanh(pre): compared with the pre-activation's scale (see assert_close_scaled);
        # with the norm scales +1 most values saturate at +-1 and the rest lie on tanh's steep part
        pre: list = []
        hook = m.deconv03_1.register_forward_hook(lambda mod, i, o: pre.append(o))
        try:
            x = _t(a["x"])
            outs = {"out": (m(x), pre[-1])}
            _plus_one(m, keys)
            outs["out_normscale_plus1"] = (m(x), pre[-1])
        finally:
            hook.remove()
        return outs

    assert len(assert_matches_reference(m, "cartoongan_generator", run, atol=ATOL)) == 2


def test_cyclegan_matches_references():
    m = cyclegan_ukiyoe()
    for ref in ("cyclegan_resnet9_generator_strongfill", "cyclegan_resnet9_generator"):
        diffs = assert_matches_reference(m, ref, lambda m, a: {"out": m(_t(a["x"]))}, atol=ATOL)
        assert set(diffs) == {"out"}


def test_registry_entries():
    for name, builder, ref, key_filter in (
        (
            "animegan2-face-paint-v2",
            animegan2_face_paint_v2,
            "animegan2_generator_strongfill",
            plain_key_filter,
        ),
        ("cartoongan-hayao", cartoongan_hayao, "cartoongan_generator_strongfill", plain_key_filter),
        ("cyclegan-ukiyoe", cyclegan_ukiyoe, "cyclegan_resnet9_generator_strongfill", cyclegan_key_filter),
    ):
        # registry.get_entry() would import every family module; look at this family's entries only
        entry = registry._REGISTRY[name]
        assert entry.builder is builder and entry.weights == name and entry.reference == ref
        assert entry.key_filter is key_filter
        assert not builder().training


# ---------------------------------------------------------------------------------------------
# Key filters on checkpoints in the published on-disk layouts


def _roundtrip(tmp_path: Path, obj: dict) -> dict:
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_cyclegan_key_filter_drops_legacy_instance_norm_stats(tmp_path):
    """latest_net_G.pth: plain state_dict, no prefix; the 2017 files carry running stats for
    the parameter-free InstanceNorm layers, which must be dropped (and only those)."""
    torch.manual_seed(0)
    src = cyclegan_ukiyoe()
    legacy = dict(src.state_dict())
    norms = [n for n, mod in src.named_modules() if isinstance(mod, torch.nn.InstanceNorm2d)]
    assert len(norms) == 23
    for n in norms:
        c = src.get_submodule(n).num_features
        legacy[f"{n}.running_mean"] = torch.zeros(c)
        legacy[f"{n}.running_var"] = torch.ones(c)
    raw = _roundtrip(tmp_path, legacy)
    assert "model.10.conv_block.2.running_mean" in raw and "model.1.weight" in raw

    torch.manual_seed(1)
    dst = cyclegan_ukiyoe()
    with pytest.raises(RuntimeError):
        dst.load_state_dict(raw, strict=True)
    filtered = cyclegan_key_filter(raw, dst)
    assert len(raw) - len(filtered) == 2 * len(norms)
    dst.load_state_dict(filtered, strict=True)
    _assert_same_state(src, dst)

    # a stray conv key is not silently dropped: the strict load still reports it
    raw["model.1.running_mean"] = torch.zeros(64)
    with pytest.raises(RuntimeError):
        dst.load_state_dict(cyclegan_key_filter(raw, dst), strict=True)


@pytest.mark.parametrize("builder", [animegan2_face_paint_v2, cartoongan_hayao])
def test_plain_key_filter_published_layout(builder, tmp_path):
    """face_paint_512_v2.pt / Hayao_net_G_float.pth: plain state_dicts with the module's keys."""
    torch.manual_seed(0)
    src = builder()
    raw = _roundtrip(tmp_path, src.state_dict())
    torch.manual_seed(1)
    dst = builder()
    dst.load_state_dict(plain_key_filter(raw, dst), strict=True)
    _assert_same_state(src, dst)
    # DataParallel copies in a {"state_dict": ...} container map to the same weights
    wrapped = {"state_dict": {"module." + k: v for k, v in raw.items()}}
    dst2 = builder()
    dst2.load_state_dict(plain_key_filter(wrapped, dst2), strict=True)
    _assert_same_state(src, dst2)


# ---------------------------------------------------------------------------------------------
# Pre/post-processing


def _image(b: int, h: int, w: int) -> torch.Tensor:
    """A smooth colour test card in [0, 1] whose channels differ (so RGB/BGR mix-ups show)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx * yy)])
    return torch.stack([img * (0.6 + 0.4 * i / max(b - 1, 1)) for i in range(b)])


@pytest.fixture(scope="module")
def generators() -> dict:
    torch.manual_seed(0)
    gens = {
        "animegan2": animegan2_face_paint_v2(),
        "cartoongan": cartoongan_hayao(),
        "cyclegan": cyclegan_ukiyoe(),
    }
    with torch.no_grad():  # CartoonGAN's default norm scale is 1 and shift 0; vary them
        for name, p in gens["cartoongan"].named_parameters():
            if name.endswith((".scale", ".shift")):
                p.add_(0.3 * torch.randn_like(p))
    return gens


@pytest.mark.parametrize("size", [(37, 53), (61, 30), (5, 7), (1, 1)])
@pytest.mark.parametrize("name", ["animegan2", "cartoongan", "cyclegan"])
def test_stylize_keeps_shape_and_range_for_odd_sizes(generators, name, size):
    image = _image(2, *size)
    with torch.no_grad():
        out = stylize_tensor(generators[name], image)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    if min(size) > 8:
        assert out.std() > 1e-3  # a real stylised image, not a constant


def test_stylize_pre_and_post_processing_conventions(generators):
    """At sizes needing no padding, each helper equals the published recipe written out."""
    image = _image(1, 32, 48)
    ag, cg, cy = generators["animegan2"], generators["cartoongan"], generators["cyclegan"]
    with torch.no_grad():
        x = image * 2 - 1
        want = (ag(x, align_corners=True) * 0.5 + 0.5).clamp(0, 1)
        assert torch.allclose(stylize_animegan2(ag, image), want, atol=1e-6)

        bgr = image[:, [2, 1, 0]] * 2 - 1
        want = (cg(bgr)[:, [2, 1, 0]] * 0.5 + 0.5).clamp(0, 1)
        got = stylize_cartoongan(cg, image)
        assert torch.allclose(got, want, atol=1e-6)
        rgb_fed = (cg(x) * 0.5 + 0.5).clamp(0, 1)
        assert (got - rgb_fed).abs().max() > 1e-2  # channel order matters for this model

        want = ((cy(x) + 1) / 2).clamp(0, 1)
        assert torch.allclose(stylize_cyclegan(cy, image), want, atol=1e-6)
        assert torch.allclose(stylize_tensor(cy, image), want, atol=1e-6)


def test_stylize_padding_crops_back_the_image_region(generators):
    """Odd sizes are mirror-padded to multiples of 4 and cropped: same as padding by hand."""
    image = _image(1, 30, 45)
    cy = generators["cyclegan"]
    with torch.no_grad():
        padded = torch.nn.functional.pad(image * 2 - 1, (0, 3, 0, 2), mode="reflect")
        want = ((cy(padded)[..., :30, :45] + 1) / 2).clamp(0, 1)
        assert torch.allclose(stylize_cyclegan(cy, image), want, atol=1e-6)


def test_model_classes_and_errors(generators):
    assert isinstance(generators["animegan2"], AnimeGANv2Generator)
    assert isinstance(generators["cartoongan"], CartoonGANGenerator)
    assert isinstance(generators["cyclegan"], ResnetGenerator)
    with pytest.raises(InputError):
        stylize_tensor(generators["cyclegan"], torch.rand(3, 16, 16))
    with pytest.raises(InputError):
        stylize_cartoongan(generators["cartoongan"], torch.rand(1, 4, 16, 16))
    with pytest.raises(UsageError):
        stylize_tensor(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 16, 16))

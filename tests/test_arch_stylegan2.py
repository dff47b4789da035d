"""StyleGAN2 generator (rosinality layout) against ../shared/reference and its checkpoint format.

The 1024px forward is heavy on CPU (several seconds), so each reference is run once per session in a
module-scoped fixture: the strong-fill reference (true FIR kernels) and the detfill reference (every buffer
overwritten, so the FIR flip direction and the use of the kernel buffers are observable; intermediate
activations captured with hooks). Behaviour tests use a small 8px generator of the same layout.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled, assert_matches_reference, load_ref

from privacy_cli.errors import UsageError, WeightsError
from privacy_cli.models import registry
from privacy_cli.models.stylegan2 import (
    StyleGAN2Generator,
    stylegan2_checkpoint_filter,
    stylegan2_ffhq,
    upfirdn2d,
)

STRONG = "stylegan2_ffhq_generator_strongfill"
DET = "stylegan2_ffhq_generator"


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _center(x: torch.Tensor, n: int) -> torch.Tensor:
    s = x.shape[-1]
    return x[..., s // 2 - n // 2 : s // 2 + n // 2, s // 2 - n // 2 : s // 2 + n // 2]


def _image_outputs(img: torch.Tensor, prefix: str = "out") -> dict[str, torch.Tensor]:
    return {f"{prefix}_crop": img[:, :, 480:544, 480:544], f"{prefix}_pool32": F.avg_pool2d(img, 32)}


def _stats(img: torch.Tensor, prefix: str = "out") -> dict[str, torch.Tensor]:
    d = img[0].double()
    stats = torch.stack([d.mean(dim=(1, 2)), d.std(dim=(1, 2), unbiased=False)], dim=1)
    return {f"{prefix}_stats": stats, f"{prefix}_minmax": torch.stack([d.min(), d.max()])}


def _mapping_outputs(g: StyleGAN2Generator, z: torch.Tensor) -> dict[str, torch.Tensor]:
    outs, h = {}, z
    for k, layer in enumerate(g.style):
        h = layer(h)
        outs[f"inter_style_layer{k}"] = h
    outs["w"] = g.style(z)
    return outs


TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def strong_run() -> dict:
    """Strong-fill reference: out_crop / out_pool32 of one 1024 forward and the mapping output w."""
    g = stylegan2_ffhq()

    def run(m: StyleGAN2Generator, ref: dict) -> dict:
        t0 = time.perf_counter()
        img, _ = m([_t(ref["latent"])], input_is_latent=True, randomize_noise=False)
        TIMINGS["strong_forward_1024_s"] = time.perf_counter() - t0
        return {**_image_outputs(img), "w": m.style(_t(ref["z"]))}

    diffs = assert_matches_reference(g, STRONG, run, atol=1e-4, equalized=True, keep=(".kernel",))
    return {"model": g, "diffs": diffs}


@pytest.fixture(scope="module")
def det_run() -> dict:
    """Detfill reference (kernels overwritten too): image, stats, every StyledConv / skip / mapping layer."""
    g = stylegan2_ffhq()
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_mod, _inp, out):
            captured[name] = out

        return hook

    hooks = [
        g.conv1.register_forward_hook(keep("conv_00")),
        g.to_rgb1.register_forward_hook(keep("skip_004")),
    ]
    for i, conv in enumerate(g.convs):
        hooks.append(conv.register_forward_hook(keep(f"conv_{i + 1:02d}")))
    for i, to_rgb in enumerate(g.to_rgbs):
        hooks.append(to_rgb.register_forward_hook(keep(f"skip_{2 ** (i + 3):03d}")))

    def run(m: StyleGAN2Generator, ref: dict) -> dict:
        img, _ = m([_t(ref["latent"])], input_is_latent=True, randomize_noise=False)
        outs = {**_image_outputs(img), **_stats(img), **_mapping_outputs(m, _t(ref["z"]))}
        for name, x in captured.items():
            if name.startswith("conv_"):
                outs[f"inter_{name}_chmean"] = x.mean(dim=(2, 3))
                outs[f"inter_{name}_crop4"] = _center(x, 4)
            elif x.shape[-1] <= 32:
                outs[f"inter_{name}"] = x
            else:
                outs[f"inter_{name}_pool32"] = F.avg_pool2d(x, x.shape[-1] // 32)
                outs[f"inter_{name}_crop16"] = _center(x, 16)
        return outs

    diffs = assert_matches_reference(g, DET, run, atol=2e-6)
    for h in hooks:
        h.remove()
    return {"model": g, "diffs": diffs}


def test_strongfill_reference(strong_run: dict) -> None:
    assert set(strong_run["diffs"]) == {"out_crop", "out_pool32", "w"}
    print(f"strongfill max abs diffs: {strong_run['diffs']}, forward {TIMINGS.get('strong_forward_1024_s')}s")


def test_detfill_reference_with_intermediates(det_run: dict) -> None:
    diffs = det_run["diffs"]
    # 17 StyledConvs, 9 skips (4 full + 5 pooled/cropped), 9 mapping layers, image and stats
    assert sum(k.startswith("inter_conv_") for k in diffs) == 34
    assert sum(k.startswith("inter_skip_") for k in diffs) == 4 + 2 * 5
    assert sum(k.startswith("inter_style_layer") for k in diffs) == 9
    assert {"out_crop", "out_pool32", "out_stats", "out_minmax", "w"} <= set(diffs)
    print(f"detfill worst diff: {max(diffs.values()):.3g} ({max(diffs, key=diffs.get)})")


@pytest.mark.parametrize(
    "unit,module_path,kind",
    [
        ("conv1", "conv1", "conv"),
        ("convs0", "convs.0", "conv"),
        ("convs1", "convs.1", "conv"),
        ("convs14", "convs.14", "conv"),
        ("convs15", "convs.15", "conv"),
        ("to_rgb1", "to_rgb1", "rgb"),
        ("to_rgbs0", "to_rgbs.0", "rgb"),
        ("to_rgbs7", "to_rgbs.7", "rgb"),
    ],
)
@torch.no_grad()
def test_detfill_unit_submodules(det_run: dict, unit: str, module_path: str, kind: str) -> None:
    """Single submodules on batch-2, amplitude-1 inputs (stored in the reference)."""
    a = load_ref(DET)["arrays"]
    mod = det_run["model"].get_submodule(module_path)
    x, s = _t(a[f"unit_{unit}_in"]), _t(a[f"unit_{unit}_style"])
    if kind == "conv":
        out = mod(x, s, noise=_t(a[f"unit_{unit}_noise"]))
    else:
        skip = a.get(f"unit_{unit}_skip")
        out = mod(x, s, None if skip is None else _t(skip))
    assert_close_scaled(out, a[f"unit_{unit}_out"], f"unit {unit}")


@torch.no_grad()
def test_detfill_unit_mapping(det_run: dict) -> None:
    a = load_ref(DET)["arrays"]
    style = det_run["model"].style
    assert_close_scaled(
        style[1](style[0](_t(a["unit_mapping_z"]))), a["unit_mapping_layer1_out"], "layer1", 1e-6
    )
    assert_close_scaled(
        style[8](_t(a["unit_mapping_layer8_in"])), a["unit_mapping_layer8_out"], "layer8", 1e-6
    )


@pytest.mark.slow
@torch.no_grad()
def test_strongfill_second_latent_and_detfill_true_kernels(strong_run: dict, det_run: dict) -> None:
    """Two more 1024 forwards: the second strong-fill latent, and detfill with the constructor FIR kernels."""
    a = load_ref(STRONG)["arrays"]
    img, _ = strong_run["model"]([_t(a["latent2"])], input_is_latent=True, randomize_noise=False)
    assert_close_scaled(F.avg_pool2d(img, 32), a["out2_pool32"], "out2_pool32", atol=1e-4)

    ref = load_ref(DET)["arrays"]
    g = det_run["model"]
    filled = {k: v.clone() for k, v in g.state_dict().items() if k.endswith(".kernel")}
    fresh = StyleGAN2Generator(size=1024).state_dict()
    g.load_state_dict({k: fresh[k] for k in filled}, strict=False)
    try:
        img, _ = g([_t(ref["latent"])], input_is_latent=True, randomize_noise=False)
    finally:
        g.load_state_dict(filled, strict=False)
    outs = {**_image_outputs(img, "truekernel_out"), **_stats(img, "truekernel_out")}
    for k, v in outs.items():
        assert_close_scaled(v, ref[k], k, atol=5e-6)


# ---------------------------------------------------------------------------------------------------------
# ops and behaviour (small generator, same layout)


def test_upfirdn2d_is_a_true_convolution() -> None:
    """An impulse filtered with full padding reproduces the kernel itself (not its flip)."""
    k = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    delta = torch.zeros(1, 2, 1, 1)
    delta[0, :, 0, 0] = 1.0
    out = upfirdn2d(delta, torch.nn.functional.pad(k, (0, 0, 0, 1)), pad=(3, 3))
    assert torch.equal(out[0, 0, :3, :4], k)
    # up=2 inserts zeros after each sample; down=2 keeps every other output
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = upfirdn2d(x, torch.ones(1, 1), up=2)
    assert torch.equal(up[0, 0], torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0]]))
    assert torch.equal(upfirdn2d(up, torch.ones(1, 1), down=2), x)


@pytest.fixture(scope="module")
def small() -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(size=8, style_dim=64, n_mlp=2, channel_multiplier=1).eval()


@torch.no_grad()
def test_small_generator_shapes_and_w_vs_wplus(small: StyleGAN2Generator) -> None:
    assert small.n_latent == 4 and small.num_layers == 3
    w = torch.randn(2, 64)
    img_w, lat = small([w], input_is_latent=True, randomize_noise=False, return_latents=True)
    assert img_w.shape == (2, 3, 8, 8) and lat.shape == (2, 4, 64)
    img_wp, none = small(w[:, None].repeat(1, 4, 1), input_is_latent=True, randomize_noise=False)
    assert none is None
    torch.testing.assert_close(img_w, img_wp)
    # stored noise is deterministic; fresh noise changes the image
    again, _ = small([w], input_is_latent=True, randomize_noise=False)
    assert torch.equal(again, img_w)
    for n in small.noise_buffers():
        n.zero_()
    small.conv1.noise.weight.fill_(1.0)
    fresh, _ = small([w], input_is_latent=True, randomize_noise=True)
    quiet, _ = small([w], input_is_latent=True, randomize_noise=False)
    assert not torch.allclose(fresh, quiet)
    explicit, _ = small([w], input_is_latent=True, noise=[torch.zeros(1, 1, 1, 1)] * small.num_layers)
    torch.testing.assert_close(explicit, quiet)


@torch.no_grad()
def test_small_generator_truncation_and_mixing(small: StyleGAN2Generator) -> None:
    z = torch.randn(3, 64)
    with pytest.raises(UsageError, match="truncation"):
        small([z], truncation=0.5, randomize_noise=False)
    small.latent_avg = small.mean_latent(256)[0]
    # psi = 0 maps every code to latent_avg: identical images
    img, lat = small([z], truncation=0.0, randomize_noise=False, return_latents=True)
    torch.testing.assert_close(lat, small.latent_avg.expand(3, 4, 64))
    torch.testing.assert_close(img[0], img[2])
    half, lat_half = small([z], truncation=0.5, randomize_noise=False, return_latents=True)
    torch.testing.assert_close(lat_half[:, 0], 0.5 * (small.style(z) + small.latent_avg))
    # style mixing: first inject_index entries from the first code, the rest from the second
    z2 = torch.randn(3, 64)
    _, mixed = small([z, z2], inject_index=3, randomize_noise=False, return_latents=True)
    torch.testing.assert_close(mixed[:, :3], small.style(z)[:, None].expand(3, 3, 64))
    torch.testing.assert_close(mixed[:, 3:], small.style(z2)[:, None].expand(3, 1, 64))
    with pytest.raises(UsageError, match="W\\+"):
        small(torch.randn(1, 5, 64), input_is_latent=True)
    with pytest.raises(UsageError, match="z codes"):
        small(torch.randn(1, 4, 64))
    with pytest.raises(UsageError, match="one mean W"):
        small([z], truncation=0.5, truncation_latent=torch.zeros(4, 64))
    small.latent_avg = None


# ---------------------------------------------------------------------------------------------------------
# checkpoint format


def _published_layout(g: StyleGAN2Generator) -> dict:
    """A dict in the layout of stylegan2-ffhq-config-f.pt (convert_weight.py / train.py output)."""
    disc = {"convs.0.0.weight": torch.randn(8, 3, 1, 1), "final_linear.1.bias": torch.zeros(1)}
    return {
        "g_ema": g.state_dict(),
        "latent_avg": torch.linspace(-1, 1, g.style_dim),
        "g": {k: v + 1 for k, v in g.state_dict().items()},
        "d": disc,
        "args": {"size": g.size, "n_mlp": 2},
    }


def test_checkpoint_filter_rosinality_file(tmp_path, small: StyleGAN2Generator) -> None:
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save(_published_layout(small), path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    target = StyleGAN2Generator(size=8, style_dim=64, n_mlp=2, channel_multiplier=1)
    assert target.latent_avg is None
    entry = registry._REGISTRY["stylegan2-ffhq"]
    assert entry.key_filter is stylegan2_checkpoint_filter and entry.weights == "stylegan2-ffhq"
    sd = entry.key_filter(ckpt, target)
    target.load_state_dict(sd, strict=True)
    for k, v in small.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k  # g_ema, not the non-EMA "g"
    torch.testing.assert_close(target.latent_avg, torch.linspace(-1, 1, 64))
    assert "latent_avg" not in target.state_dict()


def test_checkpoint_filter_psp_decoder_and_bare(tmp_path, small: StyleGAN2Generator) -> None:
    psp_like = {
        "state_dict": {
            **{f"decoder.{k}": v for k, v in small.state_dict().items()},
            "encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3),
        },
        "latent_avg": torch.ones(4, 64),
        "opts": {"output_size": 8},
    }
    torch.save(psp_like, tmp_path / "psp.pt")
    ckpt = torch.load(tmp_path / "psp.pt", weights_only=True)
    target = StyleGAN2Generator(size=8, style_dim=64, n_mlp=2, channel_multiplier=1)
    target.load_state_dict(stylegan2_checkpoint_filter(ckpt, target), strict=True)
    torch.testing.assert_close(target.latent_avg, torch.ones(64))
    bare = stylegan2_checkpoint_filter(dict(small.state_dict()), target)
    assert set(bare) == set(small.state_dict())
    with pytest.raises(WeightsError, match="stylegan2"):
        stylegan2_checkpoint_filter({"model": {"conv.weight": torch.zeros(1)}}, target)
    with pytest.raises(WeightsError, match="latent_avg"):
        stylegan2_checkpoint_filter({"g_ema": small.state_dict(), "latent_avg": torch.zeros(7)}, target)


def test_registry_entry() -> None:
    entry = registry._REGISTRY["stylegan2-ffhq"]
    assert entry.reference == STRONG and entry.tags == {"fill_equalized": True, "fill_keep": (".kernel",)}
    assert entry.builder is stylegan2_ffhq
    g = entry.builder(size=64)
    assert g.size == 64 and g.n_latent == 10 and g.latent_avg is None


def test_loads_through_the_weights_loader(tmp_path, small: StyleGAN2Generator) -> None:
    """The whole published dict reaches the key filter through privacy_cli.weights (strict load)."""
    from privacy_cli.weights.loading import apply_weights
    from privacy_cli.weights.registry import get_weights

    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save(_published_layout(small), path)
    entry = registry._REGISTRY["stylegan2-ffhq"]
    target = StyleGAN2Generator(size=8, style_dim=64, n_mlp=2, channel_multiplier=1)
    apply_weights(target, path, get_weights(entry.weights), arch=entry.name, key_filter=entry.key_filter)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in small.state_dict().items())
    torch.testing.assert_close(target.latent_avg, torch.linspace(-1, 1, 64))

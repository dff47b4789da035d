"""pSp / e4e encoders and the encode -> StyleGAN2 pipeline against ../shared/reference, plus checkpoints.

One 267M-parameter encoder is built per session and filled twice: strong fill (``psp_encoder_ir_se50_
strongfill``, plus the e4e head on the same features) and detfill (``psp_encoder_ir_se50`` intermediates
and unit tests, then ``psp_ffhq_encode_pipeline`` with a detfill 1024 decoder sharing the encoder's
tensors). Each fixture computes everything it compares while its fill is in place. Checkpoint tests use
full-size published layouts whose tensors are stride-0 views (a few KB on disk) loaded into meta modules.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from reference import assert_close_scaled, assert_matches_reference, detfill, load_ref

from privacy_cli.errors import UsageError, WeightsError
from privacy_cli.models import registry
from privacy_cli.models.psp import (
    Encoder4Editing,
    GradualStyleEncoder,
    PSPPipeline,
    psp_checkpoint_filter,
    psp_encoder,
    psp_encoder_checkpoint_filter,
)
from privacy_cli.models.stylegan2 import StyleGAN2Generator, stylegan2_checkpoint_filter

STRONG = "psp_encoder_ir_se50_strongfill"
DET = "psp_encoder_ir_se50"
PIPE = "psp_ffhq_encode_pipeline"
TIMINGS: dict[str, float] = {}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _amp_in(shape: tuple[int, ...], phase: float) -> torch.Tensor:
    return (detfill().det_input(shape, phase) - 0.5) * 2


def _center4(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1] // 2
    return x[..., s - 2 : s + 2, s - 2 : s + 2]


def _val(t: torch.Tensor) -> float:
    return float(t.detach())


def _meta(cls, *args, **kwargs):
    with torch.device("meta"):
        return cls(*args, **kwargs)


@pytest.fixture(scope="module")
def encoder() -> GradualStyleEncoder:
    return psp_encoder()


@pytest.fixture(scope="module")
def strong(encoder: GradualStyleEncoder) -> dict:
    """Strong-fill codes for x; e4e codes (rows 0..7) from the same weights and pyramid features."""
    extra: dict[str, torch.Tensor] = {}

    def run(m: GradualStyleEncoder, ref: dict) -> dict:
        t0 = time.perf_counter()
        feats = m.pyramid(_t(ref["x"]))
        codes = m.head(*feats)
        TIMINGS["encoder_forward_256_s"] = time.perf_counter() - t0
        e4e = _meta(Encoder4Editing)
        e4e.load_state_dict(m.state_dict(), strict=True, assign=True)  # shares m's tensors
        e4e.eval()
        assert e4e.progressive_stage == 18
        e4e.progressive_stage = 7  # offsets for rows 1..7 only (cheaper: 8 of the 18 style blocks)
        extra["e4e"] = e4e.head(*feats)
        extra["codes"] = codes
        return {"codes": codes}

    diffs = assert_matches_reference(encoder, STRONG, run, atol=1e-5)
    return {"diffs": diffs, **extra}


@pytest.fixture(scope="module")
def det(encoder: GradualStyleEncoder) -> dict:
    """Detfill encoder intermediates + units, and the full pipeline with a detfill decoder."""
    d = detfill()
    pipe_ref = load_ref(PIPE)
    out: dict = {}
    feats: dict[str, torch.Tensor] = {}

    def keep(name: str, pre: bool = False):
        def hook(_mod, args, result=None):
            feats[name] = args[0] if pre else result

        return hook

    def run(m: GradualStyleEncoder, ref: dict) -> dict:
        decoder = StyleGAN2Generator(1024)
        d.fill_module(decoder)
        pipe = _meta(PSPPipeline, "GradualStyleEncoder", 1024)
        pipe.encoder.load_state_dict(m.state_dict(), strict=True, assign=True)  # shares m's tensors
        pipe.decoder.load_state_dict(decoder.state_dict(), strict=True, assign=True)
        del decoder
        assert not d.check_keys(pipe.state_dict(), pipe_ref), "pipeline state_dict differs from pSp's"
        pipe.latent_avg = _t(pipe_ref["arrays"]["latent_avg"])
        pipe.eval()
        enc = pipe.encoder
        hooks = [
            enc.input_layer.register_forward_hook(keep("input_layer")),
            enc.body[6].register_forward_hook(keep("c1_body6")),
            enc.body[20].register_forward_hook(keep("c2_body20")),
            enc.body[23].register_forward_hook(keep("c3_body23")),
            enc.latlayer1.register_forward_hook(keep("lat1")),
            enc.latlayer2.register_forward_hook(keep("lat2")),
            enc.styles[3].register_forward_pre_hook(keep("p2", pre=True)),
            enc.styles[7].register_forward_pre_hook(keep("p1", pre=True)),
            enc.register_forward_hook(keep("codes")),
        ]
        t0 = time.perf_counter()
        y_hat, latents = pipe(_t(ref["x"]), resize=True, randomize_noise=False, return_latents=True)
        TIMINGS["pipeline_forward_s"] = time.perf_counter() - t0
        for h in hooks:
            h.remove()
        out["pipeline"] = {"codes_plus_latent_avg": latents, "y_hat_256": y_hat}
        res = {"codes": feats.pop("codes")}
        for name, f in feats.items():
            res[f"inter_{name}_chmean"] = f.mean(dim=(2, 3))
            res[f"inter_{name}_crop4"] = _center4(f)
        return res

    out["diffs"] = assert_matches_reference(encoder, DET, run, atol=1e-5)

    # unit tests on the (still detfill) encoder
    a = load_ref(DET)["arrays"]
    units = {}
    with torch.no_grad():
        for i in (0, 1, 3, 21):
            x = _t(a[f"unit_body{i}_in"])
            units[f"unit_body{i}_out"] = encoder.body[i](x)
            units[f"unit_body{i}_res_out"] = encoder.body[i].res_layer(x)
        feats.clear()
        hooks = [
            encoder.styles[3].register_forward_pre_hook(keep("p2", pre=True)),
            encoder.styles[7].register_forward_pre_hook(keep("p1", pre=True)),
        ]
        c1 = _amp_in((1, 128, 64, 64), 0.3)
        c2 = _amp_in((1, 256, 32, 32), 0.6)
        c3 = _amp_in((1, 512, 16, 16), 0.9)
        units["unit_head_codes"] = encoder.head(c1, c2, c3)
        for h in hooks:
            h.remove()
        for name in ("p2", "p1"):
            units[f"unit_head_{name}_chmean"] = feats[name].mean(dim=(2, 3))
            units[f"unit_head_{name}_crop4"] = _center4(feats[name])
    out["units"] = units
    return out


# ---------------------------------------------------------------------------------------------------------
# references


def test_strongfill_encoder_reference(strong: dict) -> None:
    assert set(strong["diffs"]) == {"codes"}
    print(f"strongfill codes max abs diff {strong['diffs']}, forward {TIMINGS.get('encoder_forward_256_s')}s")


def test_e4e_head_is_base_code_plus_psp_offsets(strong: dict) -> None:
    """e4e: row 0 = styles[0](c3) (= pSp row 0); row i = row 0 + pSp row i up to progressive_stage."""
    psp, e4e = strong["codes"], strong["e4e"]
    assert e4e.shape == psp.shape == (1, 18, 512)
    torch.testing.assert_close(e4e[:, 0], psp[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(e4e[:, 1:8], psp[:, 1:8] + psp[:, :1], rtol=0, atol=1e-7)
    torch.testing.assert_close(e4e[:, 8:], psp[:, :1].expand(1, 10, 512), rtol=0, atol=0)
    assert (psp[:, 1:8] - psp[:, :1]).abs().max() > 1e-3  # the relation is not trivially satisfied


def test_detfill_encoder_reference_with_intermediates(det: dict) -> None:
    diffs = det["diffs"]
    assert len([k for k in diffs if k.startswith("inter_")]) == 16 and "codes" in diffs
    print(f"detfill encoder worst diff {max(diffs.values()):.3g} ({max(diffs, key=diffs.get)})")


def test_detfill_encoder_units(det: dict) -> None:
    a = load_ref(DET)["arrays"]
    assert len(det["units"]) == 13
    for name, got in det["units"].items():
        assert_close_scaled(got, a[name], name)


def test_pipeline_reference(det: dict) -> None:
    a = load_ref(PIPE)["arrays"]
    for name, got in det["pipeline"].items():
        ratio = assert_close_scaled(got, a[name], f"pipeline {name}", atol=2e-6)
        print(
            f"pipeline {name}: worst diff / scale {ratio:.3g} (forward {TIMINGS.get('pipeline_forward_s')}s)"
        )


def test_encoder_rejects_wrong_input_size(encoder: GradualStyleEncoder) -> None:
    with pytest.raises(UsageError, match="256"):
        encoder(torch.zeros(1, 3, 128, 128))


# ---------------------------------------------------------------------------------------------------------
# checkpoints in the published layouts


def _constant_state(module: torch.nn.Module, prefix: str, start: int) -> dict[str, torch.Tensor]:
    """Full-size state_dict whose i-th tensor is the constant ``start + i`` as a stride-0 view."""
    sd = {}
    for i, (k, v) in enumerate(module.state_dict().items()):
        sd[prefix + k] = torch.tensor(start + i, dtype=v.dtype).expand(v.shape)
    return sd


@pytest.fixture(scope="module")
def e4e_ckpt(tmp_path_factory) -> tuple[dict, dict]:
    """``e4e_ffhq_encode.pt`` layout: state_dict with encoder.* / decoder.*, latent_avg [18,512], opts."""
    enc, dec = _meta(Encoder4Editing), _meta(StyleGAN2Generator, 1024)
    state = {**_constant_state(enc, "encoder.", 1), **_constant_state(dec, "decoder.", 10_000)}
    ckpt = {
        "state_dict": state,
        "latent_avg": torch.randn(18, 512, generator=torch.Generator().manual_seed(0)),
        "opts": {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True, "stylegan_size": 1024},
    }
    path = tmp_path_factory.mktemp("ckpt") / "e4e_ffhq_encode.pt"
    torch.save(ckpt, path)
    assert path.stat().st_size < 2_000_000
    return torch.load(path, map_location="cpu", weights_only=True), ckpt


def test_e4e_encoder_key_filter(e4e_ckpt) -> None:
    loaded, orig = e4e_ckpt
    entry = registry._REGISTRY["e4e-ffhq"]
    assert entry.weights == "e4e-ffhq" and entry.key_filter is psp_encoder_checkpoint_filter
    model = _meta(Encoder4Editing)
    sd = entry.key_filter(loaded, model)
    assert all(not k.startswith(("encoder.", "decoder.")) for k in sd)
    model.load_state_dict(sd, strict=True, assign=True)
    want = orig["state_dict"]
    assert _val(model.body[21].shortcut_layer[0].weight[0, 0, 0, 0]) == _val(
        want["encoder.body.21.shortcut_layer.0.weight"][0, 0, 0, 0]
    )
    assert _val(model.styles[17].linear.bias[3]) == _val(want["encoder.styles.17.linear.bias"][3])
    assert model.latent_avg.shape == (18, 512) and torch.equal(model.latent_avg, orig["latent_avg"])
    # the pSp encoder refuses e4e weights: same keys, different forward
    with pytest.raises(WeightsError, match="Encoder4Editing"):
        psp_encoder_checkpoint_filter(loaded, _meta(GradualStyleEncoder))


def test_e4e_pipeline_key_filter(e4e_ckpt) -> None:
    loaded, orig = e4e_ckpt
    entry = registry._REGISTRY["e4e-ffhq-pipeline"]
    assert entry.weights == "e4e-ffhq" and entry.key_filter is psp_checkpoint_filter
    pipe = _meta(PSPPipeline, "Encoder4Editing", 1024)
    pipe.load_state_dict(entry.key_filter(loaded, pipe), strict=True, assign=True)
    assert _val(pipe.decoder.noises.noise_16[0, 0, 5, 5]) == _val(
        orig["state_dict"]["decoder.noises.noise_16"][0, 0, 5, 5]
    )
    assert torch.equal(pipe.latent_avg, orig["latent_avg"])
    torch.testing.assert_close(pipe.decoder.latent_avg, orig["latent_avg"].mean(0))
    # the generator alone loads the decoder part of the same file
    gen = _meta(StyleGAN2Generator, 1024)
    gen.load_state_dict(stylegan2_checkpoint_filter(loaded, gen), strict=True, assign=True)
    assert _val(gen.style[8].bias[0]) == _val(orig["state_dict"]["decoder.style.8.bias"][0])


def test_psp_checkpoint_variants(tmp_path) -> None:
    enc = _meta(GradualStyleEncoder)
    # an older pSp checkpoint: no encoder_type in opts, latent_avg [512]; plus a bare encoder state_dict
    ckpt = {
        "state_dict": {
            **_constant_state(enc, "encoder.", 1),
            "decoder.input.input": torch.zeros(1, 512, 4, 4),
        },
        "latent_avg": torch.ones(512),
        "opts": {"checkpoint_path": None},
    }
    torch.save(ckpt, tmp_path / "psp_ffhq_encode.pt")
    loaded = torch.load(tmp_path / "psp_ffhq_encode.pt", weights_only=True)
    entry = registry._REGISTRY["psp-encoder"]
    assert entry.reference == STRONG and entry.key_filter is psp_encoder_checkpoint_filter
    target = _meta(GradualStyleEncoder)
    target.load_state_dict(entry.key_filter(loaded, target), strict=True, assign=True)
    assert target.latent_avg.shape == (1, 512)
    bare = {k[len("encoder.") :]: v for k, v in loaded["state_dict"].items() if k.startswith("encoder.")}
    assert set(psp_encoder_checkpoint_filter(bare, target)) == set(enc.state_dict())
    with pytest.raises(WeightsError, match="encoder"):
        psp_encoder_checkpoint_filter({"state_dict": {"decoder.x": torch.zeros(1)}}, target)
    with pytest.raises(WeightsError, match="latent_avg"):
        psp_encoder_checkpoint_filter({**loaded, "latent_avg": torch.zeros(5, 512)}, target)
    with pytest.raises(WeightsError, match="decoder"):
        psp_checkpoint_filter(loaded | {"state_dict": bare}, _meta(PSPPipeline))


def test_registry_names() -> None:
    names = {"psp-encoder", "e4e-ffhq", "psp-ffhq-pipeline", "e4e-ffhq-pipeline"}
    assert names <= set(registry._REGISTRY)
    assert registry._REGISTRY["psp-ffhq-pipeline"].weights == "psp-ffhq-encode"
    with torch.device("meta"):
        assert isinstance(registry._REGISTRY["e4e-ffhq"].builder(), Encoder4Editing)
        pipe = registry._REGISTRY["e4e-ffhq-pipeline"].builder()
    assert pipe.encoder_type == "Encoder4Editing" and pipe.encoder.n_styles == pipe.decoder.n_latent == 18
    d = detfill()
    assert not d.check_keys(pipe.state_dict(), load_ref(PIPE))

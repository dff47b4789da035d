"""ERASER model: prior fusion == LaMa at init, palette tokenizer, Gibbs sampler, priors, checkpoints.

CPU only, small tensors. The LaMa-equivalence test uses the full big-lama generator (18 blocks,
built without pretrained weights, BatchNorm statistics randomised); the prior and checkpoint tests
use a 2-block generator for speed only (they do not depend on the generator's depth).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy_cli.errors import WeightsError
from privacy_cli.models import build_model
from privacy_cli.models.eraser import (
    MASK_TOKEN,
    Eraser,
    PaletteTokenizer,
    PriorTransformer,
    eraser_key_filter,
    gibbs_sample,
    ict_transformer_key_filter,
    image_to_grid,
    load_palette,
    mask_to_grid,
    uniform_palette,
)
from privacy_cli.models.lama import lama_inpaint


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_((torch.rand(m.running_mean.shape, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _image(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour images (gradients + a bright disc), not noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(b):
        a = torch.rand(3, 3, generator=g)
        img = a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + 0.2 * a[:, 2, None, None]
        cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
        disc = ((yy * h - cy) ** 2 + (xx * w - cx) ** 2) < (min(h, w) / 5) ** 2
        out.append((img / img.max()).clamp(0, 1) * ~disc + disc * torch.rand(3, 1, 1, generator=g))
    return torch.stack(out).float()


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    """big-lama with 2 residual blocks instead of 18 (speed only)."""
    torch.manual_seed(0)
    g = build_model("big-lama", pretrained=False, n_blocks=2)
    _randomise_bn(g)
    return g.eval()


def test_fusion_init_reproduces_lama_exactly():
    torch.manual_seed(0)
    generator = build_model("big-lama", pretrained=False)  # the full big-lama architecture
    _randomise_bn(generator)
    eraser = Eraser.from_lama(generator).eval()
    assert eraser.generator is generator
    w = eraser.fusion.weight.detach()[:, :, 0, 0]
    assert torch.equal(w[:, :3], torch.eye(3)) and not w[:, 3:].any() and not eraser.fusion.bias.any()
    img = _image(2, 36, 44)  # not a multiple of 8: padding conventions must match too
    mask = torch.zeros(2, 1, 36, 44)
    mask[0, :, 8:30, 10:40] = 1
    mask[1, :, 20:36, 0:16] = 0.4  # soft values: binarised as > 0 by both
    with torch.no_grad():
        ours = eraser(img, mask, prior="coarse")
        lama = lama_inpaint(generator, img, mask)
        # the priors do reach the generator once the fusion uses them
        eraser.fusion.weight[:, 3:].normal_(0, 0.3)
        changed = eraser(img, mask, prior="coarse")
    assert torch.equal(ours, lama)
    hole = (mask > 0).expand_as(img)
    assert torch.equal(ours[~hole], img[~hole])
    assert (changed - lama)[hole].abs().max() > 1e-6 and torch.equal(changed[~hole], img[~hole])
    with torch.no_grad():  # nothing to erase: the image comes back unchanged
        assert torch.equal(eraser(img, torch.zeros_like(mask)), img)


def test_palette_tokenizer_round_trip(tmp_path):
    pal = uniform_palette()
    assert pal.shape == (512, 3) and pal.dtype == torch.float32
    assert len(torch.unique(pal, dim=0)) == 512 and pal.min() > 0 and pal.max() < 1
    tok = PaletteTokenizer()
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = tok.encode(img)
    assert ids.shape == (2, 32, 32) and ids.dtype == torch.int64 and 0 <= ids.min() and ids.max() < 512
    assert (tok.decode(ids) - img).abs().max() <= 1 / 16 + 1e-6
    # palette colours map to themselves; id 64r + 8g + b
    grid = pal.T.reshape(1, 3, 16, 32)
    assert torch.equal(tok.encode(grid).flatten(), torch.arange(512))
    assert torch.equal(tok.decode(torch.arange(512).view(1, 16, 32)), grid)
    assert torch.equal(pal[64 * 7 + 8 * 0 + 3], torch.tensor([15 / 16, 1 / 16, 7 / 16]))
    # ICT-format palette (k-means centres in [-1,1]) loads as rint(127.5*(c+1))/255
    rng = np.random.default_rng(0)
    centres = rng.uniform(-1, 1, (512, 3))
    np.save(tmp_path / "kmeans_centers.npy", centres)
    tok.set_palette(tmp_path / "kmeans_centers.npy")
    np.testing.assert_allclose(tok.palette.numpy(), np.rint(127.5 * (centres + 1)) / 255, atol=1e-7)
    assert torch.equal(
        tok.decode(tok.encode(tok.palette.T.reshape(1, 3, 16, 32))), tok.palette.T.reshape(1, 3, 16, 32)
    )
    np.save(tmp_path / "bad.npy", centres[:100])
    with pytest.raises(WeightsError):
        load_palette(tmp_path / "bad.npy")


def test_gibbs_sampler_raster_order_masked_only_and_seeded():
    torch.manual_seed(0)
    model = PriorTransformer(n_layer=2, n_embd=32, n_head=4, block_size=64).eval()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 512, (2, 64), generator=g)
    masked = torch.rand(2, 64, generator=g) < 0.4
    masked[:, 10] = True
    x = torch.where(masked, torch.full_like(tokens, MASK_TOKEN), tokens)
    calls = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(list(kw["positions"])), with_kwargs=True
    )
    a = gibbs_sample(model, x, top_k=40, generator=torch.Generator().manual_seed(7))
    hook.remove()
    union = masked.any(0).nonzero().flatten().tolist()
    assert calls == [[p] for p in union]  # one forward per masked position, raster order
    assert not (a == MASK_TOKEN).any() and a.max() < 512
    assert torch.equal(a[~masked], tokens[~masked])
    b = gibbs_sample(model, x, top_k=40, generator=torch.Generator().manual_seed(7))
    c = gibbs_sample(model, x, top_k=40, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # top_k=1 is greedy: independent of the seed, and equal to the argmax at the first masked cell
    d1 = gibbs_sample(model, x, top_k=1, generator=torch.Generator().manual_seed(1))
    d2 = gibbs_sample(model, x, top_k=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(d1, d2)
    first = union[0]
    with torch.no_grad():
        greedy = model(x, positions=[first])[:, 0].argmax(-1)
    rows = masked[:, first]
    assert torch.equal(d1[rows, first], greedy[rows])
    # the MLM objective is finite and trainable
    loss = model.mlm_loss(tokens, masked)
    loss.backward()
    assert torch.isfinite(loss) and model.tok_emb.weight.grad.abs().sum() > 0


def _eraser_with_tiny_transformer(generator) -> Eraser:
    torch.manual_seed(1)
    tr = PriorTransformer(n_layer=1, n_embd=16, n_head=2)
    # tokens_per_step=128 keeps this CPU test fast; the one-at-a-time order is tested above
    return Eraser.from_lama(generator, tr, tokens_per_step=128).eval()


def test_priors_condition_on_the_right_cells(generator):
    img = _image(1, 64, 64, seed=2)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 18:41, 9:37] = 1
    img2 = img.clone()
    img2[(mask > 0).expand_as(img)] = torch.rand(
        int(mask.sum()) * 3, generator=torch.Generator().manual_seed(5)
    )
    cells = mask_to_grid(mask)[0]  # (32,32): region cells (any pixel in the mask)
    assert cells.sum() == (40 // 2 - 18 // 2 + 1) * (36 // 2 - 9 // 2 + 1)
    for mode in ("coarse", "transformer"):
        eraser = _eraser_with_tiny_transformer(generator)
        tok = eraser.tokenizer
        quant = tok.decode(tok.encode(image_to_grid(img)))[0]
        p_g, p_r = eraser.priors(img, mask, mode, torch.Generator().manual_seed(0))
        assert p_g.shape == p_r.shape == (1, 3, 32, 32)
        # P_G keeps the context cells, P_R the region cells (tokens of the area-averaged image)
        assert torch.equal(p_g[0][:, ~cells], quant[:, ~cells])
        assert torch.equal(p_r[0][:, cells], quant[:, cells])
        # privacy: the global prior does not depend on the pixels inside the region
        p_g2, _ = eraser.priors(img2, mask, mode, torch.Generator().manual_seed(0))
        assert torch.equal(p_g, p_g2)
    # seeded transformer priors are reproducible through forward(); other seeds differ
    eraser = _eraser_with_tiny_transformer(generator)
    with torch.no_grad():
        a = eraser(img, mask, prior="transformer", seed=4)
        b = eraser(img, mask, prior="transformer", seed=4)
        eraser.fusion.weight[:, 3:].fill_(0.2)
        c = eraser(img, mask, prior="transformer", seed=4)
        d = eraser(img, mask, prior="transformer", seed=5)
    assert torch.equal(a, b) and not torch.equal(c, d)
    hole = (mask > 0).expand_as(img)
    assert torch.equal(c[~hole], img[~hole])
    assert eraser.resolve_prior("auto") == "transformer"
    assert Eraser.from_lama(generator).resolve_prior("auto") == "coarse"


def test_eraser_checkpoint_key_filter(generator):
    src = _eraser_with_tiny_transformer(generator)
    with torch.no_grad():
        src.fusion.weight.add_(0.01)
    sd = {f"model.{k}": v.clone() for k, v in src.state_dict().items()}
    # with transformer keys: a transformer of the file's size is built and marked ready
    small = {"n_blocks": 2}
    dst = build_model("eraser", pretrained=False, generator=small)
    assert dst.transformer is None and dst.resolve_prior() == "coarse"
    dst.load_state_dict(eraser_key_filter(sd, dst))
    assert dst.transformer is not None and dst.transformer_ready and dst.transformer.config["n_embd"] == 16
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # without: the transformer is dropped (coarse prior)
    no_tr = {k: v for k, v in sd.items() if ".transformer." not in f".{k}"}
    dst2 = build_model(
        "eraser", pretrained=False, generator=small, transformer={"n_layer": 1, "n_embd": 16, "n_head": 2}
    )
    dst2.load_state_dict(eraser_key_filter(no_tr, dst2))
    assert dst2.transformer is None and dst2.resolve_prior() == "coarse"
    with pytest.raises(WeightsError, match="big-lama"):
        eraser_key_filter({f"generator.{k}": v for k, v in generator.state_dict().items()}, dst2)
    # an ICT checkpoint ({'model': sd} with causal-mask buffers, no palette) loads strictly
    ict = {k: v for k, v in src.transformer.state_dict().items() if k != "tokenizer.palette"}
    ict.update({f"blocks.{i}.attn.mask": torch.ones(1, 1, 1024, 1024).tril() for i in range(1)})
    tr = PriorTransformer(n_layer=1, n_embd=16, n_head=2)
    tr.load_state_dict(ict_transformer_key_filter({"model": ict}, tr))
    assert torch.equal(tr.head.weight, src.transformer.head.weight)

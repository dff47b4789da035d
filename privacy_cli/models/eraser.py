"""ERASER (Yang et al., AAAI 2023): adversarial sensitive-element remover on a LaMa FFC generator.

Written from the paper's method section (``../shared/papers/000_448f7a8233baa463.txt``); the Prior
Transformer follows the layout of ICT (Wan et al., ICCV 2021), whose parameter names it keeps so
that ICT transformer checkpoints load.

Pipeline, for an image ``I`` in [0,1] and a mask ``M`` (1 = sensitive):

1. **Priors** (32x32, no gradient). ``I`` is reduced to a 32x32 token grid over a 512-colour
   palette (:class:`PaletteTokenizer`). The global prior ``P_G`` has the region cells replaced by
   ``[MASK]`` and re-sampled; the region prior ``P_R`` keeps only the region cells and re-samples
   everything else. Sampling is Gibbs sampling with the bidirectional :class:`PriorTransformer`,
   one token at a time in raster order (:func:`gibbs_sample`). Without transformer weights the
   documented ``"coarse"`` fallback is used instead (see :meth:`Eraser.priors`).
2. **Prior fusion**: ``conv1x1([I*(1-M), up(P_G), up(P_R)])`` (9 -> 3 channels), priors upsampled
   bilinearly to the image size. Initialised to the identity on ``I*(1-M)`` and zero on the priors
   (zero bias), so an ERASER built on big-lama weights with an untrained fusion *is* LaMa.
3. **FFC generator**: big-lama's :class:`~privacy_cli.models.lama.FFCResNetGenerator` on
   ``cat([fused, M])``; the result is composited only inside ``M``.

Choices the paper leaves open (documented, deliberate):

* The masked image ``I*(1-M)`` goes into the fusion (as in LaMa); the priors go in unmasked, so
  ``P_R`` can carry the coarse structure of the region, as the paper intends.
* At the 32x32 token resolution a cell counts as *region* when any of its pixels is in ``M``
  (max-pool) and the image is reduced by area averaging, so no pixel of the region influences any
  token ``P_G`` is conditioned on (ICT uses nearest/bilinear resizing, which can leak the region's
  colours into neighbouring context tokens).
* ICT's k-means palette is not available offline: the default palette is the 8x8x8 uniform RGB
  grid (:func:`uniform_palette`); a ``(512,3)`` ``.npy`` palette (ICT's ``kmeans_centers.npy`` in
  [-1,1], or [0,1], or [0,255]) can be loaded with :func:`load_palette`.
* ICT marks masked tokens by zeroing their embedding; here the id :data:`MASK_TOKEN` (512) is the
  ``[MASK]`` token and is embedded as the zero vector, which is the same computation, so ICT
  checkpoints (512-row embedding) load unchanged.
* The paper writes the block as ``E' = LN(MSA(E)) + E``; ICT (whose weights the paper uses) applies
  LayerNorm *before* attention/MLP (``x + MSA(LN(x))``). We follow ICT so its weights work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, MethodError, UsageError, WeightsError
from .lama import FFCResNetGenerator, symmetric_pad_br
from .registry import register_model

#: size of the visual vocabulary (palette entries)
VOCAB_SIZE = 512
#: token id of ``[MASK]`` (embedded as the zero vector, as ICT does)
MASK_TOKEN = 512
#: side of the prior grid (32x32 = 1024 tokens)
PRIOR_SIZE = 32
PRIOR_MODES = ("auto", "transformer", "coarse")


# --------------------------------------------------------------------------------------------
# Palette tokenizer
# --------------------------------------------------------------------------------------------


def uniform_palette() -> Tensor:
    """The default 512-colour palette: the 8x8x8 uniform RGB grid, cell centres.

    Entry ``64*r + 8*g + b`` (r, g, b in 0..7) is ``((2r+1)/16, (2g+1)/16, (2b+1)/16)``, so the
    nearest-colour error is at most 1/16 per channel. Returns ``(512,3)`` float32 in [0,1].
    """
    levels = (torch.arange(8, dtype=torch.float32) * 2 + 1) / 16
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    return torch.stack([r.reshape(-1), g.reshape(-1), b.reshape(-1)], dim=1)


def load_palette(source: str | Path | np.ndarray | Tensor, value_range: str = "auto") -> Tensor:
    """A ``(512,3)`` palette as float32 RGB in [0,1].

    ``source`` is a ``.npy`` file (read with ``allow_pickle=False``) or an array. ``value_range``:
    ``"unit"`` ([0,1]), ``"ict"`` ([-1,1], ICT's ``kmeans_centers.npy``), ``"uint8"`` ([0,255]) or
    ``"auto"`` (negative values -> ict, values above 1 -> uint8, else unit). ICT rounds its centres
    to integers in [0,255] before quantising; so do we for ``"ict"``.
    """
    name = str(source) if isinstance(source, (str, Path)) else "palette"
    if isinstance(source, (str, Path)):
        try:
            arr = np.load(Path(source), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise WeightsError(f"{source}: cannot read palette ({e})") from None
    else:
        arr = source.detach().cpu().numpy() if isinstance(source, Tensor) else np.asarray(source)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (VOCAB_SIZE, 3):
        raise WeightsError(f"{name}: palette must have shape ({VOCAB_SIZE}, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise WeightsError(f"{name}: palette has non-finite values")
    if value_range == "auto":
        value_range = "ict" if arr.min() < 0 else ("uint8" if arr.max() > 1 else "unit")
    if value_range == "ict":
        arr = np.rint(127.5 * (arr + 1.0)) / 255.0
    elif value_range == "uint8":
        arr = arr / 255.0
    elif value_range != "unit":
        raise UsageError(f"palette value_range must be auto, unit, ict or uint8, got {value_range!r}")
    if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise WeightsError(f"{name}: palette values outside the {value_range} range")
    return torch.from_numpy(np.clip(arr, 0.0, 1.0).astype(np.float32))


class PaletteTokenizer(nn.Module):
    """Nearest-colour quantisation to a 512-entry palette (the visual vocabulary).

    The palette is the buffer ``palette`` ``(512,3)`` float32 RGB in [0,1] (persistent unless
    ``persistent=False``): token ids only mean something together with their palette.
    """

    def __init__(self, palette: Tensor | None = None, persistent: bool = True) -> None:
        super().__init__()
        self.register_buffer("palette", uniform_palette() if palette is None else palette.float(), persistent)

    def set_palette(self, palette: str | Path | np.ndarray | Tensor, value_range: str = "auto") -> None:
        """Replace the palette (see :func:`load_palette` for the accepted forms)."""
        self.palette.copy_(load_palette(palette, value_range).to(self.palette.device))

    def encode(self, image: Tensor) -> Tensor:
        """``(B,3,h,w)`` RGB in [0,1] -> ``(B,h,w)`` int64 token ids in [0,512): nearest palette
        colour by squared RGB distance (ties -> lowest id)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"tokenizer: image must be (B,3,h,w), got {tuple(image.shape)}")
        b, _, h, w = image.shape
        pix = image.detach().permute(0, 2, 3, 1).reshape(-1, 3).float()
        pal = self.palette.to(pix.device)
        # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every c
        d = pal.pow(2).sum(1)[None, :] - 2.0 * pix @ pal.T
        return d.argmin(dim=1).view(b, h, w)

    def decode(self, tokens: Tensor) -> Tensor:
        """``(B,h,w)`` token ids -> ``(B,3,h,w)`` float32 RGB in [0,1]. ``[MASK]`` decodes to mid grey."""
        if tokens.ndim != 3:
            raise InputError(f"tokenizer: tokens must be (B,h,w), got {tuple(tokens.shape)}")
        grey = torch.full((1, 3), 0.5, dtype=self.palette.dtype, device=self.palette.device)
        table = torch.cat([self.palette, grey], dim=0)
        rgb = table[tokens.to(self.palette.device).clamp(0, VOCAB_SIZE)]
        return rgb.permute(0, 3, 1, 2).contiguous()


def image_to_grid(image: Tensor, size: int = PRIOR_SIZE) -> Tensor:
    """Area-average ``(B,3,H,W)`` to ``(B,3,size,size)`` (every pixel counts once)."""
    return F.adaptive_avg_pool2d(image, size)


def mask_to_grid(mask: Tensor, size: int = PRIOR_SIZE) -> Tensor:
    """``(B,1,H,W)`` -> ``(B,size,size)`` bool: a cell is region when any of its pixels is > 0."""
    return F.adaptive_max_pool2d((mask > 0).float(), size)[:, 0] > 0


# --------------------------------------------------------------------------------------------
# Prior Transformer (ICT layout)
# --------------------------------------------------------------------------------------------


class GELU2(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation ICT's released models use."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention without a causal mask (bidirectional); ``(B,L,D)`` -> ``(B,L,D)``.

    Separate ``query``/``key``/``value`` projections and an output ``proj`` (ICT's names), scale
    ``1/sqrt(head_dim)``.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(x)),
            heads(self.value(x)),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + MSA(LN1(x))`` then ``x + MLP(LN2(x))``; MLP = Linear(D,4D), GELU2, Linear(4D,D)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, gelu2: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            GELU2() if gelu2 else nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class PriorTransformer(nn.Module):
    """ICT's bidirectional (BERT-style) transformer over a ``grid x grid`` token image.

    Defaults are ICT's Places2 configuration (35 layers, width 512, 8 heads, GELU2, 32x32 tokens,
    512-colour vocabulary). Parameters: ``tok_emb`` (512 x D), ``pos_emb`` (1 x L x D), ``blocks.i``
    (:class:`TransformerBlock`), ``ln_f``, ``head`` (D -> 512, no bias); the palette lives in
    ``tokenizer.palette``.

    ``forward(tokens)`` takes ``(B,L)`` int64 ids in [0,512] (512 = ``[MASK]``, embedded as zeros)
    and returns logits ``(B,L,512)`` (or ``(B,len(positions),512)`` with ``positions``).
    """

    def __init__(
        self,
        n_layer: int = 35,
        n_embd: int = 512,
        n_head: int = 8,
        block_size: int = PRIOR_SIZE * PRIOR_SIZE,
        vocab_size: int = VOCAB_SIZE,
        dropout: float = 0.0,
        gelu2: bool = True,
    ) -> None:
        super().__init__()
        grid = math.isqrt(block_size)
        if grid * grid != block_size:
            raise ValueError(f"block_size {block_size} is not a square number of tokens")
        if vocab_size != VOCAB_SIZE:
            raise ValueError(f"the prior vocabulary has {VOCAB_SIZE} colours, got vocab_size={vocab_size}")
        self.grid = grid
        self.block_size = block_size
        self.config = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size, gelu2=gelu2)
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[TransformerBlock(n_embd, n_head, dropout, gelu2) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.tokenizer = PaletteTokenizer()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-style init (as ICT): N(0, 0.02) weights, zero biases, unit LayerNorm; pos_emb zeros
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, positions: Tensor | list[int] | None = None) -> Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.block_size:
            raise InputError(
                f"prior transformer: tokens must be (B,L<={self.block_size}), got {tuple(tokens.shape)}"
            )
        is_mask = tokens >= MASK_TOKEN
        emb = self.tok_emb(tokens.clamp(0, MASK_TOKEN - 1)) * (~is_mask).unsqueeze(-1).to(self.pos_emb.dtype)
        x = self.drop(emb + self.pos_emb[:, : tokens.shape[1]])
        x = self.blocks(x)
        if positions is not None:
            x = x[:, positions]
        return self.head(self.ln_f(x))

    def mlm_loss(self, tokens: Tensor, masked: Tensor) -> Tensor:
        """The masked-language-model objective (paper eq. 3): mean negative log-likelihood of the
        true ``tokens`` ``(B,L)`` at the positions where ``masked`` ``(B,L)`` bool is True, with those
        positions replaced by ``[MASK]`` in the input. Returns a scalar."""
        logits = self(torch.where(masked, torch.full_like(tokens, MASK_TOKEN), tokens))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
        m = masked.reshape(-1).to(nll.dtype)
        return (nll * m).sum() / m.sum().clamp_min(1.0)


def _top_k_filter(logits: Tensor, k: int | None) -> Tensor:
    if k is None or k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@torch.no_grad()
def gibbs_sample(
    model: PriorTransformer,
    tokens: Tensor,
    *,
    top_k: int | None = 40,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    tokens_per_step: int = 1,
) -> Tensor:
    """Fill every ``[MASK]`` of ``tokens`` ``(B,L)`` by Gibbs sampling in raster order.

    Positions are visited in increasing index (row-major = raster order over the grid); at each
    one the transformer is run on the current sequence (earlier samples included, later ones still
    ``[MASK]``), its logits there are divided by ``temperature``, restricted to the ``top_k`` most
    likely colours and one token is drawn with ``generator``. Only ``[MASK]`` positions change.
    ``tokens_per_step > 1`` draws that many consecutive masked positions from one forward pass (a
    faster approximation; 1 = the paper's one-at-a-time sampling). Cost: one transformer forward
    per masked position. Returns a new ``(B,L)`` int64 tensor without ``[MASK]`` ids.
    """
    if temperature <= 0:
        raise UsageError(f"gibbs_sample: temperature must be > 0, got {temperature}")
    if tokens_per_step < 1:
        raise UsageError(f"gibbs_sample: tokens_per_step must be >= 1, got {tokens_per_step}")
    x = tokens.clone()
    masked = x >= MASK_TOKEN
    positions = masked.any(dim=0).nonzero().flatten().tolist()
    for start in range(0, len(positions), tokens_per_step):
        pos = positions[start : start + tokens_per_step]
        logits = model(x, positions=pos).float() / temperature  # (B,P,V)
        probs = F.softmax(_top_k_filter(logits, top_k), dim=-1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        drawn = drawn.view(x.shape[0], len(pos)).to(x.device)
        x[:, pos] = torch.where(masked[:, pos], drawn, x[:, pos])
    return x


# --------------------------------------------------------------------------------------------
# ERASER
# --------------------------------------------------------------------------------------------


def identity_fusion_(conv: nn.Conv2d) -> nn.Conv2d:
    """Initialise the 9->3 fusion conv to pass the masked image through: identity on channels
    0..2, zero on the prior channels 3..8, zero bias. Returns ``conv``."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 0, 0] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class Eraser(nn.Module):
    """ERASER: Prior Transformer priors + 1x1 prior fusion + big-lama FFC generator.

    Submodules (state_dict prefixes): ``generator`` (FFCResNetGenerator), ``fusion`` (Conv2d 9->3,
    1x1, bias) and, when present, ``transformer`` (:class:`PriorTransformer`).

    Args:
        generator: the FFC generator (default: a fresh big-lama-configured one).
        transformer: the Prior Transformer, or None (then only the ``"coarse"`` prior is possible).
        prior: default prior mode: ``"auto"`` (transformer when its weights were loaded - see
            :attr:`transformer_ready` - else coarse), ``"transformer"`` or ``"coarse"``.
        top_k, temperature, tokens_per_step: Gibbs sampling settings (ICT inference: top_k 40).
        coarse_size: working size (pixels, square) of the generator's coarse pass for the
            ``"coarse"`` prior.
    """

    def __init__(
        self,
        generator: nn.Module | None = None,
        transformer: PriorTransformer | None = None,
        prior: str = "auto",
        top_k: int | None = 40,
        temperature: float = 1.0,
        tokens_per_step: int = 1,
        coarse_size: int = 64,
    ) -> None:
        super().__init__()
        if prior not in PRIOR_MODES:
            raise UsageError(f"eraser: prior must be one of {', '.join(PRIOR_MODES)}, got {prior!r}")
        if coarse_size % 8 or coarse_size < PRIOR_SIZE:
            raise UsageError(
                f"eraser: coarse_size must be a multiple of 8 and >= {PRIOR_SIZE}, got {coarse_size}"
            )
        self.generator = generator if generator is not None else FFCResNetGenerator()
        self.fusion = identity_fusion_(nn.Conv2d(9, 3, kernel_size=1, bias=True))
        self.transformer = transformer
        #: True when the transformer holds trained weights (set by the key filter / attach_transformer)
        self.transformer_ready = False
        # palette of the coarse prior when there is no transformer (not saved)
        self._fallback_tokenizer = PaletteTokenizer(persistent=False)
        self.prior = prior
        self.top_k = top_k
        self.temperature = temperature
        self.tokens_per_step = tokens_per_step
        self.coarse_size = coarse_size

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_lama(
        cls, generator: nn.Module, transformer: PriorTransformer | None = None, **kwargs: Any
    ) -> Eraser:
        """An ERASER around an existing big-lama generator (the module is shared, not copied) with an
        identity-initialised fusion: its output equals LaMa's (``lama_inpaint``) exactly."""
        eraser = cls(generator=generator, transformer=transformer, **kwargs)
        p = next(generator.parameters())
        eraser.fusion.to(p.device)
        eraser._fallback_tokenizer.to(p.device)
        if transformer is not None:
            eraser.transformer_ready = True
        return eraser

    def attach_transformer(self, transformer: PriorTransformer, palette: Any = None) -> Eraser:
        """Use ``transformer`` (trained weights) for the priors; optionally set its palette
        (see :func:`load_palette`). Returns self."""
        if transformer.grid != PRIOR_SIZE:
            raise UsageError(f"eraser: the prior transformer must work on {PRIOR_SIZE}x{PRIOR_SIZE} tokens")
        if palette is not None:
            transformer.tokenizer.set_palette(palette)
        self.transformer = transformer.to(self.fusion.weight.device)
        self.transformer_ready = True
        return self

    def reset_fusion(self) -> None:
        """Re-initialise the fusion to the LaMa-equivalent identity."""
        identity_fusion_(self.fusion)

    @property
    def tokenizer(self) -> PaletteTokenizer:
        """The palette tokenizer in use (the transformer's when there is one)."""
        return self.transformer.tokenizer if self.transformer is not None else self._fallback_tokenizer

    def resolve_prior(self, prior: str | None = None) -> str:
        """``"transformer"`` or ``"coarse"`` for the requested mode (None = the default)."""
        mode = prior or self.prior
        if mode not in PRIOR_MODES:
            raise UsageError(f"eraser: prior must be one of {', '.join(PRIOR_MODES)}, got {mode!r}")
        if mode == "auto":
            return "transformer" if (self.transformer is not None and self.transformer_ready) else "coarse"
        if mode == "transformer" and self.transformer is None:
            raise MethodError(
                "eraser: prior 'transformer' needs Prior Transformer weights (none loaded); use 'coarse'"
            )
        return mode

    # ---- priors ---------------------------------------------------------------------------

    @torch.no_grad()
    def priors(
        self, image: Tensor, mask: Tensor, prior: str | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The global and region priors ``(P_G, P_R)``, each ``(B,3,32,32)`` float32 RGB in [0,1]
        (palette colours).

        ``image`` ``(B,3,H,W)`` in [0,1]; ``mask`` ``(B,1,H,W)``, > 0 = sensitive.

        * ``"transformer"``: tokens of the 32x32 area-averaged image; ``P_G`` = Gibbs sample with
          the region cells set to ``[MASK]``, ``P_R`` = Gibbs sample with every other cell set to
          ``[MASK]`` (one batched sampling pass, ``generator`` seeds it).
        * ``"coarse"`` (no transformer weights): ``P_G`` = the generator's own LaMa pass (plain
          ``cat([I*(1-M), M])`` input, eval-mode BatchNorm) on the image area-averaged to
          ``coarse_size`` x ``coarse_size`` (32x32 for smaller images; mask max-pooled),
          composited, area-averaged to 32x32 and quantised to the palette - an inference of the
          region from its context only; ``P_R`` = the image itself quantised at 32x32 (the
          region's coarse structure and its actual surroundings). Deterministic; ``generator`` is
          unused. Costs about ``(coarse_size/H)*(coarse_size/W)`` of the main generator pass.
        """
        mode = self.resolve_prior(prior)
        tok = self.tokenizer
        img = image.float()
        m = (mask > 0).float()
        if mode == "coarse":
            # the coarse pass never upsamples: small images run at the 32x32 prior size
            c = self.coarse_size if min(img.shape[-2:]) >= self.coarse_size else PRIOR_SIZE
            img_c = F.adaptive_avg_pool2d(img, c)
            m_c = F.adaptive_max_pool2d(m, c)
            was_training = self.generator.training
            self.generator.eval()  # no batch statistics from the coarse pass
            try:
                pred = self.generator(torch.cat([img_c * (1 - m_c), m_c], dim=1))
            finally:
                self.generator.train(was_training)
            comp = m_c * pred + (1 - m_c) * img_c
            p_g = tok.decode(tok.encode(image_to_grid(comp)))
            p_r = tok.decode(tok.encode(image_to_grid(img)))
            return p_g.to(img.device), p_r.to(img.device)
        assert self.transformer is not None
        grid = self.transformer.grid
        tokens = tok.encode(image_to_grid(img, grid)).flatten(1)  # (B,L)
        cells = mask_to_grid(m, grid).flatten(1)
        masked = torch.full_like(tokens, MASK_TOKEN)
        x = torch.cat([torch.where(cells, masked, tokens), torch.where(cells, tokens, masked)], dim=0)
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            y = gibbs_sample(
                self.transformer,
                x,
                top_k=self.top_k,
                temperature=self.temperature,
                generator=generator,
                tokens_per_step=self.tokens_per_step,
            )
        finally:
            self.transformer.train(was_training)
        rgb = tok.decode(y.view(-1, grid, grid)).to(img.device)
        b = image.shape[0]
        return rgb[:b], rgb[b:]

    # ---- generator ------------------------------------------------------------------------

    def generator_input(self, image: Tensor, mask: Tensor, p_g: Tensor, p_r: Tensor) -> Tensor:
        """``(B,4,H,W)`` = ``cat([fusion([I*(1-M), up(P_G), up(P_R)]), M])``; ``mask`` must be binary
        ``(B,1,H,W)``; priors ``(B,3,h,w)`` are upsampled bilinearly to ``(H,W)``."""
        size = image.shape[-2:]
        if p_g.shape[-2:] != size:
            p_g = F.interpolate(p_g, size=size, mode="bilinear", align_corners=False)
        if p_r.shape[-2:] != size:
            p_r = F.interpolate(p_r, size=size, mode="bilinear", align_corners=False)
        fused = self.fusion(torch.cat([image * (1 - mask), p_g, p_r], dim=1))
        return torch.cat([fused, mask], dim=1)

    def predict(self, image: Tensor, mask: Tensor, p_g: Tensor, p_r: Tensor) -> Tensor:
        """The generator's raw prediction ``(B,3,H,W)`` in (0,1) (not composited); H, W multiples of 8,
        ``mask`` binary ``(B,1,H,W)``. Differentiable (used for training)."""
        return self.generator(self.generator_input(image, mask, p_g, p_r))

    def forward(
        self,
        image: Tensor,
        mask: Tensor,
        prior: str | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Erase: ``image`` ``(B,3,H,W)`` float in [0,1], ``mask`` ``(B,1,H,W)`` (or ``(1,1,H,W)``),
        values > 0 = sensitive (binarised like LaMa) -> ``(B,3,H,W)`` float32 in [0,1], equal to
        ``image`` outside the mask.

        Any H, W: both are padded bottom/right to a multiple of 8 (numpy 'symmetric', as LaMa) and
        cropped back. ``seed`` (or an explicit ``generator``) makes the transformer prior
        reproducible. Runs in float32 with autocast disabled (half precision breaks the FFTs).
        Gradients flow through fusion and generator when enabled by the caller.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"eraser: image must be (B,3,H,W), got {tuple(image.shape)}")
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:]:
            raise InputError(
                f"eraser: mask must be (B,1,H,W) matching image {tuple(image.shape)}, got {tuple(mask.shape)}"
            )
        if mask.shape[0] not in (1, image.shape[0]):
            raise InputError(
                f"eraser: mask batch {mask.shape[0]} does not match image batch {image.shape[0]}"
            )
        param = self.fusion.weight
        if param.dtype != torch.float32:
            raise MethodError(
                f"eraser: the model must be float32 (is {param.dtype}); fp16 breaks the FFC generator"
            )
        out_device = image.device
        h, w = image.shape[-2:]
        img = symmetric_pad_br(image.to(param.device, torch.float32), 8)
        m = (symmetric_pad_br(mask.to(param.device), 8) > 0).to(torch.float32)
        m = m.expand(img.shape[0], -1, -1, -1)
        if not bool(m.any()):
            return image.to(torch.float32).clone()
        if generator is None and seed is not None and self.resolve_prior(prior) == "transformer":
            generator = torch.Generator(device=param.device).manual_seed(int(seed))
        with torch.autocast(device_type=param.device.type, enabled=False):
            p_g, p_r = self.priors(img, m, prior, generator)
            pred = self.predict(img, m, p_g, p_r)
            out = m * pred + (1 - m) * img
        return out[..., :h, :w].to(out_device)


# --------------------------------------------------------------------------------------------
# Checkpoint key filters + registry
# --------------------------------------------------------------------------------------------


def _unwrap(state_dict: Any, what: str) -> Mapping[str, Any]:
    sd = state_dict
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{what}: checkpoint is a {type(sd).__name__}, not a state_dict")
    return sd


def _transformer_keys(sd: Mapping[str, Any], model: PriorTransformer | None) -> dict[str, Any]:
    """ICT-layout transformer keys: drop ICT's causal-mask buffers (``blocks.i.attn.mask``) and
    fill a missing ``tokenizer.palette`` with the model's current palette (uniform by default)."""
    out = {k: v for k, v in sd.items() if not k.endswith(".attn.mask")}
    if "tokenizer.palette" not in out:
        out["tokenizer.palette"] = model.tokenizer.palette.clone() if model is not None else uniform_palette()
    return out


def _transformer_config(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor values of a :class:`PriorTransformer` read from its keys (heads: ICT's 8)."""
    try:
        n_layer = 1 + max(
            int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.endswith("ln1.weight")
        )
        n_embd = int(sd["tok_emb.weight"].shape[1])
        block_size = int(sd["pos_emb"].shape[1])
    except (KeyError, ValueError, IndexError, AttributeError) as e:
        raise WeightsError(
            f"prior transformer: cannot read its configuration from the checkpoint ({e})"
        ) from None
    return dict(n_layer=n_layer, n_embd=n_embd, n_head=8, block_size=block_size)


def ict_transformer_key_filter(state_dict: Any, model: PriorTransformer) -> dict[str, Any]:
    """An ICT transformer checkpoint (``{'model': state_dict}`` or a plain state_dict, optional
    ``module.`` prefix) -> :class:`PriorTransformer` keys. ICT ships its palette separately
    (``kmeans_centers.npy``): set it with ``model.tokenizer.set_palette(path)``."""
    sd = dict(_unwrap(state_dict, "ict-transformer"))
    if "tok_emb.weight" not in sd and "module.tok_emb.weight" in sd:
        sd = {k[len("module.") :]: v for k, v in sd.items() if k.startswith("module.")}
    if "tok_emb.weight" not in sd:
        raise WeightsError("ict-transformer: no tok_emb.weight in checkpoint (not an ICT transformer)")
    return _transformer_keys(sd, model)


def eraser_key_filter(state_dict: Any, model: Eraser) -> dict[str, Any]:
    """An ERASER checkpoint (``generator.*``, ``fusion.*`` and optionally ``transformer.*`` keys,
    possibly under a wrapper prefix such as ``model.`` or ``eraser.``) -> :class:`Eraser` keys.

    Adapts ``model`` to the file: without ``transformer.*`` keys its transformer is removed (the
    coarse prior is used); with them a transformer of the checkpoint's size is built and marked
    ready.
    """
    sd = _unwrap(state_dict, "eraser")
    prefix = next((k[: -len("fusion.weight")] for k in sd if k.endswith("fusion.weight")), None)
    if prefix is None:
        hint = (
            " (a big-lama checkpoint: use Eraser.from_lama(build_model('big-lama')))"
            if any("model.1.ffc.convl2l.weight" in k for k in sd)
            else ""
        )
        raise WeightsError(f"eraser: no fusion.weight in checkpoint{hint}")
    sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    out = {k: v for k, v in sd.items() if k.startswith(("generator.", "fusion."))}
    tr = {k[len("transformer.") :]: v for k, v in sd.items() if k.startswith("transformer.")}
    if tr:
        cfg = _transformer_config(tr)
        current = model.transformer
        if current is None or any(current.config[k] != v for k, v in cfg.items() if k != "n_head"):
            device = model.fusion.weight.device
            model.transformer = PriorTransformer(**cfg).to(device)
        tr = _transformer_keys(tr, model.transformer)
        out.update({f"transformer.{k}": v for k, v in tr.items()})
        model.transformer_ready = True
    else:
        model.transformer = None
        model.transformer_ready = False
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in out and not k.startswith("transformer."):
            out[k] = v.clone()
    return out


@register_model("eraser", weights="eraser", key_filter=eraser_key_filter)
def eraser(
    transformer: bool | dict[str, Any] = False, generator: dict[str, Any] | None = None, **kwargs: Any
) -> Eraser:
    """ERASER on a big-lama generator. ``transformer``: False (default: none until a checkpoint
    with ``transformer.*`` keys is loaded), True (ICT Places2 configuration) or PriorTransformer
    keyword arguments. ``generator``: FFCResNetGenerator keyword arguments. Other keywords go to
    :class:`Eraser` (``prior``, ``top_k``, ``coarse_size`` ...)."""
    tr = None
    if transformer:
        tr = PriorTransformer(**(transformer if isinstance(transformer, dict) else {}))
    return Eraser(FFCResNetGenerator(**(generator or {})), tr, **kwargs)


@register_model("ict-transformer", weights="ict-places2-nature", key_filter=ict_transformer_key_filter)
def ict_transformer(**kwargs: Any) -> PriorTransformer:
    """ICT's Places2 Prior Transformer (35 layers, width 512, 8 heads, GELU2, 32x32 tokens)."""
    return PriorTransformer(**kwargs)


__all__ = [
    "MASK_TOKEN",
    "PRIOR_SIZE",
    "VOCAB_SIZE",
    "Eraser",
    "PaletteTokenizer",
    "PriorTransformer",
    "eraser_key_filter",
    "gibbs_sample",
    "ict_transformer_key_filter",
    "identity_fusion_",
    "image_to_grid",
    "load_palette",
    "mask_to_grid",
    "uniform_palette",
]

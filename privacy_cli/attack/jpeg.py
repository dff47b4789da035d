"""A differentiable approximation of JPEG compression (as Pillow/libjpeg write it), for EOT.

``jpeg_approx(x, quality)``: x (B, 3, H, W) float RGB in [0, 255] -> the same shape, what a JPEG at
``quality`` decodes to, approximately: JFIF YCbCr, 4:2:0 chroma subsampling (2x2 means, bilinear
upsampling; or 4:4:4), 8x8 orthonormal DCT, the standard (ITU T.81 Annex K) quantisation tables scaled by
libjpeg's quality rule, rounding with a straight-through gradient. Attacks optimised through it
survive the real save far better than attacks that never saw the quantisation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32  # fmt: skip


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """(8, 8) quantisation table for ``quality`` in [1, 100] (libjpeg's scaling, baseline clamp)."""
    q = max(1, min(100, int(quality)))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float32)
    return ((base * scale + 50) // 100).clamp(1, 255).view(8, 8)


@lru_cache(maxsize=1)
def _dct_matrix() -> torch.Tensor:
    m = torch.zeros(8, 8, dtype=torch.float32)
    for k in range(8):
        for n in range(8):
            m[k, n] = math.cos(math.pi * (2 * n + 1) * k / 16) * (math.sqrt(0.125) if k == 0 else 0.5)
    return m


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _blocks_roundtrip(ch: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT -> quantise -> dequantise -> IDCT on (B, H, W) with H, W multiples of 8."""
    b, h, w = ch.shape
    d = _dct_matrix().to(ch)
    blocks = (ch - 128.0).view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = d @ blocks @ d.T
    coef = _round_ste(coef / table.to(ch)) * table.to(ch)
    out = d.T @ coef @ d
    return out.permute(0, 1, 3, 2, 4).reshape(b, h, w) + 128.0


def jpeg_approx(x: torch.Tensor, quality: int = 95, subsample: bool = True) -> torch.Tensor:
    """Differentiable JPEG round trip of (B, 3, H, W) RGB in [0, 255] (see the module docstring);
    ``subsample=False`` keeps chroma at full resolution (4:4:4, what privpix writes from q90 up)."""
    b, _, h, w = x.shape
    ph, pw = (-h) % 16, (-w) % 16
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    r, g, bl = xp[:, 0], xp[:, 1], xp[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
    y = _blocks_roundtrip(y, quant_table(quality))
    chroma = torch.stack([cb, cr], 1)
    if subsample:
        chroma = F.avg_pool2d(chroma, 2)
    ct = quant_table(quality, chroma=True)
    chroma = torch.stack([_blocks_roundtrip(chroma[:, i].contiguous(), ct) for i in range(2)], 1)
    if subsample:
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0] - 128.0, chroma[:, 1] - 128.0
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out[:, :, :h, :w].clamp(0, 255)


__all__ = ["jpeg_approx", "quant_table"]

"""Learned adversarial task masks (paper 003, Gupta et al. 2021): the U-Net masker and the shared
predictor/obfuscator classifier Φ.

* :class:`MaskerUNet`: image ``(B, C, S, S)`` (normalised) -> soft mask ``(B, 1, S, S)`` in [0, 1]
  (the paper's sigmoid, or a stretched and clipped sigmoid that can be exactly 0), a U-Net (Ronneberger et al. 2015) with ``depth`` down/up levels and skip connections.
* :class:`TaskClassifier` (Φ): four blocks of [3x3 conv, batch-norm, ReLU, 2x2 max-pool], a dense
  layer with batch-norm and ReLU, and a final dense layer giving class logits (softmax in the loss),
  as in the paper's implementation details. The same Φ is the predictor (on ``x_p``) and the
  obfuscator (on ``x_o``); it is also the task classifier used to measure utility.

:func:`topk_mask` is the paper's top-K% selection. No published weights exist: ``privpix train
mask`` writes them into a run folder (``masker.safetensors`` + ``phi.safetensors``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_model

__all__ = ["GATES", "Z_OFF", "MaskerUNet", "TaskClassifier", "mask_gate", "topk_mask", "topk_select"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


#: soft-mask gates: the paper's sigmoid (never 0), or a sigmoid stretched to (-STRETCH, 1 + STRETCH)
#: and clipped to [0, 1] (hard-concrete style, Louizos et al. 2018), exactly 0 for z <= Z_OFF
GATES = ("sigmoid", "stretched")
STRETCH = 0.1
#: the logit at and below which the stretched gate is exactly 0
Z_OFF = math.log(STRETCH / (1.0 + STRETCH))


def mask_gate(z: Tensor, gate: str = "sigmoid", straight_through: bool = False) -> Tensor:
    """The soft mask ``m`` in [0, 1] from the masker's logits ``z`` (any shape). ``straight_through``
    (stretched gate): the same values, but the gradient passes the clip as if it were not there, so a
    pixel at exactly 0 can still be pulled back up."""
    m = torch.sigmoid(z)
    if gate == "stretched":
        u = m * (1.0 + 2.0 * STRETCH) - STRETCH
        m = u.clamp(0.0, 1.0)
        if straight_through:
            m = m.detach() + u - u.detach()
    return m


class MaskerUNet(nn.Module):
    """U-Net masker: ``(B, in_ch, S, S)`` -> soft mask ``(B, 1, S, S)`` in (0, 1) (``gate="sigmoid"``,
    the paper) or [0, 1] (``"stretched"``: exactly 0 wherever the logit is <= ``Z_OFF``).

    S must be divisible by ``2**depth``. ``base`` channels at full resolution, doubled per level.
    ``straight_through`` (set by the trainer, training mode only): see :func:`mask_gate`.
    """

    def __init__(self, in_ch: int = 3, base: int = 16, depth: int = 3, gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate {gate!r}: one of {GATES}")
        self.depth = depth
        self.gate = gate
        chs = [base * 2**i for i in range(depth + 1)]
        self.inc = _double_conv(in_ch, chs[0])
        self.downs = nn.ModuleList(_double_conv(chs[i], chs[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(chs[i + 1], chs[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up_convs = nn.ModuleList(_double_conv(2 * chs[i], chs[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(chs[0], 1, 1)
        self.straight_through = False

    def forward(self, x: Tensor) -> Tensor:
        return mask_gate(self.logits(x), self.gate, self.straight_through and self.training)

    def logits(self, x: Tensor) -> Tensor:
        """The mask's logits ``z`` ``(B, 1, S, S)`` (``m = mask_gate(z, self.gate)``): for the stretched
        gate they also rank the pixels that are all exactly 0 in ``m``."""
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            h = conv(torch.cat([up(h), skips.pop()], dim=1))
        return self.out(h)


class TaskClassifier(nn.Module):
    """Φ: ``(B, in_ch, S, S)`` -> logits ``(B, classes)``; S divisible by 16."""

    def __init__(
        self,
        classes: int = 2,
        in_ch: int = 3,
        size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or size % 16:
            raise ValueError("Φ has four conv blocks; size must be divisible by 16")
        blocks: list[nn.Module] = []
        cin = in_ch
        for w in widths:
            blocks += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*blocks)
        flat = cin * (size // 16) ** 2
        self.dense = nn.Sequential(nn.Linear(flat, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(True))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dense(self.features(x).flatten(1)))


def topk_select(
    m: Tensor, keep: float, straight_through: bool = False, score: Tensor | None = None
) -> Tensor:
    """The top-K% indicator of each mask: ``(B, 1, H, W)`` with exactly ``round(keep/100 * H*W)``
    (at least 1) ones per image (ties broken by index), zeros elsewhere.

    With ``straight_through`` the forward value is the same, and the backward pass treats the
    indicator as ``sigmoid((m - t) / tau)`` (t: the K-th largest value, tau: half the mask's standard
    deviation), so a loss can move pixels into or out of the selection.

    ``score`` (same shape as m, e.g. the logits of a stretched-gate mask): rank and relax by it
    instead of m; it must order the pixels as m does wherever m's values differ.
    """
    b = m.shape[0]
    flat = (m if score is None else score).reshape(b, -1)
    k = max(1, min(flat.shape[1], round(keep / 100.0 * flat.shape[1])))
    top = flat.topk(k, dim=1)
    sel = torch.zeros_like(flat).scatter_(1, top.indices, 1.0)
    if straight_through:
        t = top.values[:, -1:].detach()
        tau = 0.5 * flat.detach().std(dim=1, keepdim=True).clamp_min(1e-4)
        soft = torch.sigmoid((flat - t) / tau)
        sel = sel + soft - soft.detach()
    return sel.reshape(m.shape)


def topk_mask(m: Tensor, keep: float) -> Tensor:
    """Top-K% selection (paper 003): keep the ``keep`` percent largest values of each mask with their
    soft value, zero the rest.

    m: ``(B, 1, H, W)`` soft mask; keep: percent in (0, 100]. Exactly ``round(keep/100 * H*W)``
    (at least 1) values per image are kept (ties broken by index). Gradients flow to the kept values.
    """
    return m * topk_select(m, keep)


@register_model("mask-unet", weights="learned-mask-unet", family="learned-mask")
def mask_unet(in_ch: int = 3, base: int = 16, depth: int = 3, gate: str = "sigmoid") -> MaskerUNet:
    """The paper-003 masker (U-Net; sigmoid soft mask, or the stretched gate)."""
    return MaskerUNet(in_ch=in_ch, base=base, depth=depth, gate=gate)


@register_model("mask-phi", weights="learned-mask-phi", family="learned-mask")
def mask_phi(classes: int = 2, in_ch: int = 3, size: int = 64) -> TaskClassifier:
    """The paper-003 predictor/obfuscator Φ (also the task classifier for utility)."""
    return TaskClassifier(classes=classes, in_ch=in_ch, size=size)

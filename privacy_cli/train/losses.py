"""Losses for ERASER fine-tuning: LaMa's generation losses and ERASER's Difference Loss.

All functions are functional (no hidden state); networks are passed in. Images are ``(B,3,H,W)``
float RGB in [0,1], masks ``(B,1,H,W)`` float in {0,1} with 1 = hole / sensitive region. Loss
weights default to the big-lama training configuration (``LAMA_NOTES.md`` section 4).

Generation (quality) losses, minimised:

* :func:`masked_l1` - per-pixel L1 weighted 10 on known pixels, 0 in the hole.
* :func:`resnet_pl_loss` - ResNetPL: MSE of the ADE20k ResNet50-dilated features (layers 1-4), x30.
* :func:`generator_adversarial_loss` / :func:`discriminator_adversarial_loss` - non-saturating GAN
  with R1 penalty on real images (:func:`r1_penalty`, coefficient 0.001), mask-as-fake target;
  generator term x10.
* :func:`feature_matching_loss` - MSE between discriminator features of fake and real, x100.

ERASER's Difference Loss, *maximised* (:func:`difference_loss`, :func:`difference_objective`):
the paper defines it as a perceptual loss (Johnson et al.) = content loss + style loss (Gatys et
al.) computed with VGG inside the region, ``L_diff = L_content + L_style``, and trains
``min L_quality - lambda * L_diff``. Maximising a raw perceptual distance is unbounded in
spirit (the generator can trade any amount of quality for it), so we maximise
``log(1 + min(L_diff, margin))`` instead: the same maximisers, a gradient that shrinks as
``1/(1+L_diff)`` and, with a ``margin``, exactly zero once the region is different enough. The
generator's sigmoid output keeps ``L_diff`` itself finite. Each layer's term is divided by the
original's own feature energy inside the region (``normalize=True``), a per-sample constant that
leaves the maximisers unchanged but makes the scale independent of the VGG weights and the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------------
# LaMa generation losses
# --------------------------------------------------------------------------------------------


def masked_l1(
    pred: Tensor, target: Tensor, mask: Tensor, weight_known: float = 10.0, weight_missing: float = 0.0
) -> Tensor:
    """LaMa's L1: ``mean(|pred - target| * (weight_known*(1-mask) + weight_missing*mask))`` over all
    elements. pred/target ``(B,3,H,W)``, mask ``(B,1,H,W)``. Returns a scalar."""
    w = weight_known * (1 - mask) + weight_missing * mask
    return ((pred - target).abs() * w).mean()


def resnet_pl_loss(encoder: nn.Module, pred: Tensor, target: Tensor, weight: float = 30.0) -> Tensor:
    """ResNetPL: ``weight * sum_l MSE(enc_l(pred), enc_l(target))`` over the encoder's feature list.

    ``encoder`` is the ADE20k ResNet50-dilated encoder (``build_model("lama-resnetpl-ade20k")``):
    its ``features(x)`` ImageNet-normalises an image in [0,1] and returns layers 1-4. Target
    features are computed without gradient. Returns a scalar.
    """
    feats = encoder.features if hasattr(encoder, "features") else encoder
    with torch.no_grad():
        ft = feats(target)
    fp = feats(pred)
    return weight * sum(F.mse_loss(a, b) for a, b in zip(fp, ft, strict=True))


def generator_adversarial_loss(fake_logits: Tensor, weight: float = 10.0) -> Tensor:
    """Non-saturating generator term ``weight * mean(softplus(-D(fake)))``; logits ``(B,1,h,w)``."""
    return weight * F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1 gradient penalty per sample: ``|| d sum(D(real)) / d real ||^2`` -> ``(B,)``.

    ``real_images`` must have ``requires_grad=True`` and ``real_logits`` computed from them; the
    graph is kept (``create_graph``) so the penalty can be back-propagated into D.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)


def discriminator_adversarial_loss(
    real_logits: Tensor,
    fake_logits: Tensor,
    mask: Tensor,
    r1: Tensor | None = None,
    gp_coef: float = 0.001,
) -> dict[str, Tensor]:
    """LaMa's NonSaturatingWithR1 discriminator loss with ``mask_as_fake_target``.

    real: ``softplus(-D(real))``; fake: ``softplus(D(fake))`` on logit cells over the hole and
    ``softplus(-D(fake))`` on cells over known pixels (the mask is resized to the logit grid with
    nearest-neighbour); R1: ``gp_coef * batch-mean(r1)``. The total is the mean over elements of
    their sum (= sum of the three means). No extra weight (LaMa applies its 10 only to G).
    Returns ``{"total", "real", "fake", "r1"}`` scalars.
    """
    real = F.softplus(-real_logits).mean()
    m = F.interpolate(mask, size=fake_logits.shape[-2:], mode="nearest")
    fake = (F.softplus(fake_logits) * m + F.softplus(-fake_logits) * (1 - m)).mean()
    gp = gp_coef * r1.mean() if r1 is not None else real.new_zeros(())
    return {"total": real + fake + gp, "real": real, "fake": fake, "r1": gp}


def feature_matching_loss(
    fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor], weight: float = 100.0
) -> Tensor:
    """``weight * mean_i MSE(fake_i, real_i)`` over the discriminator's feature maps (no mask); the
    real features are detached."""
    losses = [F.mse_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats, strict=True)]
    return weight * torch.stack(losses).mean()


# --------------------------------------------------------------------------------------------
# VGG features + ERASER Difference Loss
# --------------------------------------------------------------------------------------------

#: VGG19 ``features`` indices of the ReLU outputs by name (torchvision layout, configuration E)
VGG19_RELU = {
    "relu1_1": 1,
    "relu1_2": 3,
    "relu2_1": 6,
    "relu2_2": 8,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu3_3": 15,
    "relu3_4": 17,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu4_3": 24,
    "relu4_4": 26,
    "relu5_1": 29,
}
#: Gatys et al.: content at relu4_2, style at relu1_1 ... relu5_1
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class VGGFeatures(nn.Module):
    """VGG19 ``features[:30]`` (up to relu5_1) returning named ReLU outputs.

    Max-pools are replaced by 2x2/2 average pools (as in LaMa's perceptual loss and Gatys et al.;
    same positions, smoother gradients), inputs in [0,1] are ImageNet-normalised, ReLUs are not
    in-place (their outputs are returned). Frozen: parameters do not require gradients.

    ``forward(x (B,3,H,W)) -> {name: (B,C,h,w)}`` for the requested ``layers``.
    """

    def __init__(self, features: nn.Sequential, layers: Sequence[str] = tuple(VGG19_RELU)) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in VGG19_RELU]
        if unknown:
            raise UsageError(f"unknown VGG19 layers {unknown}; known: {', '.join(VGG19_RELU)}")
        self.layers = tuple(layers)
        last = max(VGG19_RELU[n] for n in self.layers)
        mods: list[nn.Module] = []
        for m in list(features)[: last + 1]:
            if isinstance(m, nn.MaxPool2d):
                m = nn.AvgPool2d(2, 2)
            elif isinstance(m, nn.ReLU):
                m = nn.ReLU(inplace=False)
            mods.append(m)
        self.features = nn.Sequential(*mods)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # frozen: always eval
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        want = {VGG19_RELU[n]: n for n in self.layers}
        out: dict[str, Tensor] = {}
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        for i, m in enumerate(self.features):
            x = m(x)
            if i in want:
                out[want[i]] = x
        return out


def vgg19_features(pretrained: bool = True, layers: Sequence[str] = tuple(VGG19_RELU)) -> VGGFeatures:
    """:class:`VGGFeatures` over VGG19: with ``pretrained`` the ImageNet weights of the registry's
    ``vgg19`` entry (``build_model("vgg19")``), else torchvision's VGG initialisation (He normal,
    fan-out, zero bias - features stay alive through all 16 conv layers)."""
    if pretrained:
        from ..models import build_model

        features = build_model("vgg19", pretrained=True).features
    else:
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"], batch_norm=False)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return VGGFeatures(features, layers)


def _resize_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Fraction of each feature cell covered by the mask (area resize)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_avg_pool2d(mask, tuple(size))


def masked_gram(feat: Tensor, mask: Tensor) -> Tensor:
    """Gram matrix of ``feat`` ``(B,C,h,w)`` over the cells weighted by ``mask`` ``(B,1,h,w)``:
    ``(F*m)(F*m)^T / (C * sum(m))`` -> ``(B,C,C)``."""
    b, c = feat.shape[:2]
    f = (feat * mask).flatten(2)
    denom = (c * mask.flatten(1).sum(1)).clamp_min(1e-8).view(b, 1, 1)
    return f @ f.transpose(1, 2) / denom


def masked_content(fo: Tensor, ft: Tensor, mask: Tensor) -> Tensor:
    """Mean squared feature difference inside ``mask``: ``sum(m*(fo-ft)^2) / (C*sum(m))`` -> ``(B,)``."""
    c = fo.shape[1]
    num = (mask * (fo - ft).pow(2)).flatten(1).sum(1)
    return num / (c * mask.flatten(1).sum(1)).clamp_min(1e-8)


def difference_loss(
    vgg: VGGFeatures,
    output: Tensor,
    original: Tensor,
    mask: Tensor,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_weight: float = 1.0,
    style_weight: float = 1.0,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """ERASER's Difference Loss ``L_diff = content + style`` between ``output`` and ``original``
    inside ``mask``, per sample (a quantity to *maximise*).

    content = ``content_weight * sum_l masked_content(VGG_l(out), VGG_l(orig))`` over
    ``content_layers``; style = ``style_weight * sum_l mean((G_l(out) - G_l(orig))^2)`` with masked
    Gram matrices over ``style_layers``. Masks are area-resized to each layer; the original's
    features carry no gradient.

    ``normalize`` (default) divides each layer's term by the same quantity computed against zero
    for the original (its masked feature energy ``masked_content(orig, 0)``, resp. ``mean(G_orig^2)``):
    0 = identical, about 1-2 = unrelated content of similar energy. This only rescales each
    sample's loss by a constant of the original, so the maximisers are the paper's, but the scale
    no longer depends on the VGG weights or the image contrast, which keeps ``lambda_diff`` and
    ``diff_margin`` meaningful. Returns ``{"total", "content", "style"}``, each ``(B,)``; samples
    with an empty mask give 0.
    """
    with torch.no_grad():
        ft = vgg(original)
    fo = vgg(output)
    b = output.shape[0]
    content = output.new_zeros(b)
    style = output.new_zeros(b)
    for name in content_layers:
        m = _resize_mask(mask, fo[name].shape[-2:])
        term = masked_content(fo[name], ft[name], m)
        if normalize:
            term = term / masked_content(ft[name], torch.zeros_like(ft[name]), m).clamp_min(1e-12)
        content = content + term
    for name in style_layers:
        m = _resize_mask(mask, fo[name].shape[-2:])
        gt = masked_gram(ft[name], m)
        term = (masked_gram(fo[name], m) - gt).pow(2).flatten(1).mean(1)
        if normalize:
            term = term / gt.pow(2).flatten(1).mean(1).clamp_min(1e-24)
        style = style + term
    content = content_weight * content
    style = style_weight * style
    return {"total": content + style, "content": content, "style": style}


def difference_objective(d: Tensor, margin: float | None = None) -> Tensor:
    """The bounded quantity maximised in stage 2: ``mean(log(1 + min(d, margin)))`` over the batch.

    ``d`` ``(B,)`` Difference Loss values >= 0. ``margin`` None = no clamp. The trainer *subtracts*
    ``lambda_diff * difference_objective(d)`` from the generator loss. Returns a scalar.
    """
    if margin is not None:
        d = d.clamp(max=margin)
    return torch.log1p(d.clamp_min(0)).mean()


def perceptual_difference(vgg: VGGFeatures, output: Tensor, original: Tensor, mask: Tensor) -> Tensor:
    """Evaluation metric PL-V inside the mask: sum over every VGG layer the module returns of
    :func:`masked_content` -> ``(B,)`` (higher = more different). No gradient."""
    with torch.no_grad():
        fo, ft = vgg(output), vgg(original)
        total = output.new_zeros(output.shape[0])
        for name in fo:
            total = total + masked_content(fo[name], ft[name], _resize_mask(mask, fo[name].shape[-2:]))
    return total


__all__ = [
    "CONTENT_LAYERS",
    "STYLE_LAYERS",
    "VGG19_RELU",
    "VGGFeatures",
    "difference_loss",
    "difference_objective",
    "discriminator_adversarial_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "masked_content",
    "masked_gram",
    "masked_l1",
    "perceptual_difference",
    "r1_penalty",
    "resnet_pl_loss",
    "vgg19_features",
]

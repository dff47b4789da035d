"""Text detector ``"text"``: RapidOCR (PP-OCRv4 ONNX models shipped in the rapidocr-onnxruntime wheel).

Each recognised line becomes a Region of kind "text" with its 4-point quadrilateral as
``polygon``, the enclosing ``box``, the recognition confidence as ``score``, the string as
``label`` only with ``keep_text=True`` (never by default: regions go into JSON records) and its PII category (:func:`privacy_cli.detect.pii.classify_lines`: lines on one row
are classified together, so a label such as "DOB" makes the date next to it personal) as ``category``.
With ``text="pii"`` only lines with a PII category are kept.

Measured on 16 photos of ``shared/datasets/faces-id`` (400-4352 px): about 1 s CPU per photo
(0.25 s for 560 px, 2.5-2.9 s for 2000-4000 px photos, which OCR at a 2000 px long side).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..errors import UsageError
from ..regions import Region
from .base import check_image, register_detector
from .pii import pii_runs

#: lines recognised with less confidence than min_score but at least this are kept as unread
#: fragments: never classified themselves, covered when they continue a personal line's row
FRAGMENT_SCORE = 0.2
#: Long side (px) the image is downscaled to before OCR (PP-OCR's detector runs at <= 2000 px).
DEFAULT_MAX_SIDE = 2000
_RAPIDOCR_LOGGERS = ("RapidOCR", "OrtInferSession")


def _quiet_rapidocr() -> None:
    """rapidocr logs through its own stream handlers; keep them silent (our --json owns stdout)."""
    for name in _RAPIDOCR_LOGGERS:
        log = logging.getLogger(name)
        log.setLevel(logging.CRITICAL + 1)
        log.propagate = False


class RapidOCRTextDetector:
    """OCR with RapidOCR, strings classified into PII categories.

    text: "all" keeps every line, "pii" only lines with a PII category. min_score: minimum
    recognition confidence in [0, 1]. max_side: long side (px) the image is downscaled to first.
    threads: onnxruntime intra-op threads (0 = its default, one per core; 1 is faster when the
    cores are shared with other busy processes: 5.9 s vs 10.0 s for 8 photos on a loaded 2-core box).
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
        _quiet_rapidocr()
        from rapidocr_onnxruntime import RapidOCR

        _quiet_rapidocr()
        self.text = text
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.threads = int(threads)
        self.keep_text = bool(keep_text)
        kwargs = {"intra_op_num_threads": self.threads} if self.threads else {}
        self._engine = RapidOCR(text_score=self.min_score, **kwargs)
        # RapidOCR mutates thresholds per call; one call at a time per engine
        self._lock = threading.Lock()

    def _ocr(self, bgr: np.ndarray) -> list[Any]:
        with self._lock:
            result, _elapse = self._engine(bgr, text_score=min(self.min_score, FRAGMENT_SCORE))
        return result or []

    def read_lines(self, image: np.ndarray) -> list[tuple[list[tuple[float, float]], str, float]]:
        """OCR ``image`` (H, W, 3) uint8 RGB -> ``[(quad, text, score), ...]``: each recognised line's
        4 corner points (x, y) in original pixels (clipped to the image), its text and confidence."""
        import cv2

        image = check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1.0:
            small = cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        bgr = np.ascontiguousarray(small[..., ::-1])
        out = []
        for quad, string, score in self._ocr(bgr):
            string = str(string).strip()
            if not string:
                continue
            pts = np.asarray(quad, np.float64).reshape(-1, 2) / scale
            pts[:, 0] = np.clip(pts[:, 0], 0, w)
            pts[:, 1] = np.clip(pts[:, 1], 0, h)
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            out.append(([(float(x), float(y)) for x, y in pts], string, float(score)))
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
    import cv2

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

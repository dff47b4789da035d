"""68 facial landmarks with dlib's shape predictor (``shape_predictor_68_face_landmarks.dat``).

The weights ship in the ``face_recognition_models`` package (offline, real). dlib's 68-point
predictor (iBUG 300-W layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) always
returns 68 points for any rectangle, so "landmarks found" needs a check: :func:`find_landmarks` first
looks for the face with dlib's own HOG detector inside the region (the boxes the predictor was
trained on), and otherwise runs the predictor on the region's box and keeps the points only when
they have a frontal face's geometry (eyes level and apart, nose between them, mouth below) and the
HOG detector finds a face in the upright crop they align. Profile,
heavily occluded and tiny faces therefore come back as None, and the caller decides what to do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: faces smaller than this (pixels, shorter side of the face box) get no landmarks
MIN_FACE = 24
#: HOG search runs on the region crop resized so the region is about this many pixels across
HOG_SIDE = 240
_LOCK = threading.Lock()

LEFT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54
NOSE_TIP = 30


@lru_cache(maxsize=1)
def _predictor() -> Any:
    import dlib

    from ..faceid import _model_file

    return dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))


@dataclass
class FaceLandmarks:
    """68 landmarks ``points`` (68, 2) float32 in image pixels (x, y); ``box`` the face rectangle the
    predictor ran on (x0, y0, x1, y1); ``source`` "hog" (dlib found the face) or "box" (the region's
    box, geometry-checked)."""

    points: np.ndarray
    box: tuple[float, float, float, float]
    source: str


def predict(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """68 landmarks (68, 2) float32 for the face in ``box`` (x0, y0, x1, y1 pixels) of ``image``
    (H, W, 3) uint8 RGB. Always 68 points; see :func:`plausible` for whether they describe a face."""
    import dlib

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    rect = dlib.rectangle(x0, y0, max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1))
    with _LOCK:  # dlib objects are not documented as thread-safe
        shape = _predictor()(np.ascontiguousarray(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def plausible(points: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """True when ``points`` (68, 2) look like a frontal-to-three-quarter face inside ``box``:
    inter-ocular distance 20-70% of the box width, eyes tilted < 35 degrees, nose tip between the
    eyes across, mouth below the eyes by 25-160% of the inter-ocular distance."""
    bw = max(1.0, box[2] - box[0])
    el, er = points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)
    d = er - el
    iod = float(np.hypot(*d))
    if not (0.2 * bw <= iod <= 0.7 * bw) or d[0] <= 0:
        return False
    if abs(np.degrees(np.arctan2(d[1], d[0]))) > 35:
        return False
    # coordinates in the eye frame: u along the eye line (0 = left eye, 1 = right eye), v perpendicular
    ex, ey = d / iod, np.array([-d[1], d[0]]) / iod
    nose = points[NOSE_TIP] - el
    u = float(nose @ ex) / iod
    mouth = (points[MOUTH_LEFT] + points[MOUTH_RIGHT]) / 2 - el
    v = float(mouth @ ey) / iod
    return 0.05 <= u <= 0.95 and 0.25 <= v <= 1.6


def hog_detector() -> Any:
    from ..faceid import hog_detector as _hog

    return _hog()


def _hog_faces(
    image: np.ndarray, region: tuple[float, float, float, float]
) -> list[tuple[float, float, float, float]]:
    """dlib HOG faces whose centre lies in ``region`` (searched on a padded crop around it)."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = region
    pad = 0.3 * max(x1 - x0, y1 - y0)
    cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    cx1, cy1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
    crop = image[cy0:cy1, cx0:cx1]
    if crop.size == 0:
        return []
    scale = HOG_SIDE / max(1.0, max(x1 - x0, y1 - y0))
    small = cv2.resize(
        crop,
        (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    with _LOCK:
        rects = hog_detector()(np.ascontiguousarray(small), 0)
    out = []
    for r in rects:
        b = (
            cx0 + r.left() / scale,
            cy0 + r.top() / scale,
            cx0 + (r.right() + 1) / scale,
            cy0 + (r.bottom() + 1) / scale,
        )
        mx, my = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if x0 <= mx <= x1 and y0 <= my <= y1:
            out.append(b)
    out.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return out


def find_landmarks(
    image: np.ndarray, region: tuple[float, float, float, float], box_scale: float = 1.3
) -> list[FaceLandmarks]:
    """Landmarks of every face in ``region`` (x0, y0, x1, y1 pixels) of ``image`` (H, W, 3) uint8 RGB.

    ``region`` is a face box grown by ``box_scale`` (the detector's box as the pipeline masks it), or
    any user region. Faces dlib's HOG detector finds there come first; when it finds none, the
    predictor runs on the region shrunk by ``box_scale`` and its points are kept only if
    :func:`plausible`. Returns [] when no face with usable landmarks is there (profile, occluded,
    smaller than :data:`MIN_FACE` pixels).
    """
    x0, y0, x1, y1 = region
    if min(x1 - x0, y1 - y0) / max(box_scale, 1.0) < MIN_FACE:
        return []
    found = []
    for b in _hog_faces(image, region):
        if min(b[2] - b[0], b[3] - b[1]) >= MIN_FACE:
            pts = predict(image, b)
            if plausible(pts, b):
                found.append(FaceLandmarks(pts, b, "hog"))
    if found:
        return found
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) / 2 / box_scale, (y1 - y0) / 2 / box_scale
    b = (cx - hw, cy - hh, cx + hw, cy + hh)
    pts = predict(image, b)
    if not plausible(pts, b):
        return []
    # on a non-face the predictor still returns a face-like shape: keep the points only when dlib's
    # HOG detector finds a face in the crop they align (upright, eyes level: a much easier view)
    from ..align import align_face

    crop = align_face(image, pts, 256).crop
    with _LOCK:
        confirmed = len(hog_detector()(crop, 0)) > 0
    return [FaceLandmarks(pts, b, "box")] if confirmed else []

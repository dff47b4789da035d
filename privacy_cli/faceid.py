"""Identity judge: dlib's face recogniser (ResNet, 128-d embeddings) and HOG face detector.

Uses the weights shipped by the ``face_recognition_models`` package (found on disk without
importing it: its ``__init__`` needs ``pkg_resources``) and ``dlib`` from ``dlib-bin``. Two
embeddings of the same person are closer than :data:`MATCH_THRESHOLD` (dlib's standard 0.6,
Euclidean); this is the judge tests and the bench use to decide whether an obfuscated face is
still recognised. Models load lazily, once per process.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, WeightsError

#: dlib's standard decision threshold for its face recognition model (Euclidean distance).
MATCH_THRESHOLD = 0.6

Box = tuple[float, float, float, float]


def models_dir() -> Path:
    """Folder holding the ``face_recognition_models`` weight files."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("face_recognition_models: package not installed (dlib face weights missing)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_file(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise WeightsError(f"{path}: dlib model file missing")
    return str(path)


@lru_cache(maxsize=1)
def hog_detector() -> Any:
    """dlib's HOG frontal face detector (shared, created once)."""
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _shape_predictor() -> Any:
    import dlib

    return dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))


@lru_cache(maxsize=1)
def _encoder() -> Any:
    import dlib

    return dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise InputError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise InputError(f"expected uint8 pixels, got {a.dtype}")
    return np.ascontiguousarray(a[..., :3])


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two (128,) embeddings."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def same_person(a: np.ndarray, b: np.ndarray, threshold: float = MATCH_THRESHOLD) -> bool:
    """True when two embeddings are closer than ``threshold`` (dlib's 0.6 by default)."""
    return distance(a, b) < threshold


class DlibFaceRecognizer:
    """dlib HOG detector + 5-point landmarks + ResNet face descriptor.

    upsample: HOG upsampling count (1 finds faces down to ~40 px at the detection resolution).
    max_side: detection runs on a copy downscaled to this long side; landmarks and embeddings use
    the full-resolution image. num_jitters: dlib's descriptor jitter count (1 = none, as in
    face_recognition's default).
    """

    MATCH_THRESHOLD = MATCH_THRESHOLD

    def __init__(self, upsample: int = 1, max_side: int = 1024, num_jitters: int = 1) -> None:
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.num_jitters = int(num_jitters)

    def locate(self, image: np.ndarray) -> list[Box]:
        """Face boxes ``(x0, y0, x1, y1)`` (original pixels, x1/y1 exclusive), largest first."""
        import cv2

        img = _rgb(image)
        h, w = img.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            img = cv2.resize(
                img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        rects = hog_detector()(img, self.upsample)
        boxes = []
        for r in rects:
            x0, y0 = max(0.0, r.left() / scale), max(0.0, r.top() / scale)
            x1, y1 = min(float(w), (r.right() + 1) / scale), min(float(h), (r.bottom() + 1) / scale)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                boxes.append((x0, y0, x1, y1))
        boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return boxes

    def _embed_box(self, img: np.ndarray, box: Box) -> np.ndarray:
        import dlib

        h, w = img.shape[:2]
        x0, y0, x1, y1 = box
        left, top = int(math.floor(max(0.0, x0))), int(math.floor(max(0.0, y0)))
        right, bottom = int(math.ceil(min(float(w), x1))) - 1, int(math.ceil(min(float(h), y1))) - 1
        rect = dlib.rectangle(left, top, max(left + 1, right), max(top + 1, bottom))
        shape = _shape_predictor()(img, rect)
        vec = _encoder().compute_face_descriptor(img, shape, self.num_jitters)
        return np.asarray(vec, np.float64)

    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """(128,) float64 embedding of the face at ``box``, or of the largest detected face when
        ``box`` is None; None when no face is found."""
        img = _rgb(image)
        if box is None:
            boxes = self.locate(img)
            if not boxes:
                return None
            box = boxes[0]
        return self._embed_box(img, box)

    def embed_all(self, image: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        """``(box, (128,) embedding)`` for every detected face, largest first ([] when none)."""
        img = _rgb(image)
        return [(b, self._embed_box(img, b)) for b in self.locate(img)]

    distance = staticmethod(distance)

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        """True when the two embeddings are closer than :data:`MATCH_THRESHOLD`."""
        return same_person(a, b, self.MATCH_THRESHOLD)

    def find_identity_match(
        self, original_embedding: np.ndarray, processed_image: np.ndarray, original_box: Box | None = None
    ) -> bool:
        """Is the original identity still recognised anywhere in ``processed_image``?

        True when any face the detector finds there, or (when ``original_box`` is given) the
        recogniser run at the original face's location even though nothing was detected there,
        is within :data:`MATCH_THRESHOLD` of ``original_embedding``. So an obfuscation counts as
        de-identifying only if the face is neither found-and-matched nor matched in place.
        """
        img = _rgb(processed_image)
        for _box, emb in self.embed_all(img):
            if self.same_person(original_embedding, emb):
                return True
        if original_box is not None:
            emb = self._embed_box(img, original_box)
            if self.same_person(original_embedding, emb):
                return True
        return False


@lru_cache(maxsize=1)
def default_recognizer() -> DlibFaceRecognizer:
    """A shared :class:`DlibFaceRecognizer` with default settings."""
    return DlibFaceRecognizer()


def find_identity_match(
    original_embedding: np.ndarray,
    processed_image: np.ndarray,
    original_box: Box | None = None,
    recognizer: DlibFaceRecognizer | None = None,
) -> bool:
    """Module-level :meth:`DlibFaceRecognizer.find_identity_match` with the shared recogniser."""
    rec = recognizer or default_recognizer()
    return rec.find_identity_match(original_embedding, processed_image, original_box)

"""FFHQ-style face alignment from 68 landmarks, the inverse warp, and a seamless paste-back.

Alignment follows the procedure the FFHQ data set was built with (Karras et al., 2019): an oriented
square whose axis ``x`` is the eye line corrected by the eye-to-mouth direction, half-side
``max(2 * |eye-to-eye|, 1.8 * |eye-to-mouth|)``, centred ``0.1 * eye-to-mouth`` below the eye
midpoint; it is resampled to the backend's resolution with one affine warp (OpenCV, bilinear,
mirrored border, as FFHQ pads by reflection). FFHQ's extra blur of the padded border is left out:
only the face hull is pasted back, never the border.

Paste-back: the processed crop is warped back with the inverse affine, its colours are matched to the
original face (mean and standard deviation per Lab channel inside the face), and it is blended with a
soft mask: the convex hull of the landmarks, extended over the forehead, feathered by a fraction of
the face size. Pixels where that mask is 0 are exactly the input's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect.landmarks import LEFT_EYE, MOUTH_LEFT, MOUTH_RIGHT, RIGHT_EYE

#: forehead points: the brow landmarks moved up by this fraction of the eye-to-mouth distance
FOREHEAD = 0.45
#: feather (Gaussian sigma) of the blend mask as a fraction of the inter-ocular distance
FEATHER = 0.12


def ffhq_quad(points: np.ndarray) -> np.ndarray:
    """FFHQ crop quad (4, 2) float64 for 68 landmarks ``points`` (68, 2) in pixels: corners
    top-left, bottom-left, bottom-right, top-right of the oriented square (the face upright)."""
    lm = np.asarray(points, np.float64)
    eye_l, eye_r = lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye line + mouth direction rotated
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def alignment_matrix(points: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) float64 affine mapping image pixels to the ``size`` x ``size`` aligned crop."""
    import cv2

    quad = ffhq_quad(points)
    dst = np.array([[0, 0], [0, size], [size, size]], np.float64)
    return cv2.getAffineTransform(quad[:3].astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply the (2, 3) affine ``matrix`` to ``points`` (N, 2); returns (N, 2) float32."""
    p = np.asarray(points, np.float64)
    return (p @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine."""
    import cv2

    return cv2.invertAffineTransform(matrix)


@dataclass
class AlignedFace:
    """An aligned face: ``crop`` (size, size, 3) uint8 RGB, ``matrix`` image -> crop (2, 3),
    ``points`` the 68 landmarks in crop pixels (68, 2), ``image_points`` in image pixels."""

    crop: np.ndarray
    matrix: np.ndarray
    points: np.ndarray
    image_points: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])


def align_face(image: np.ndarray, points: np.ndarray, size: int = 256) -> AlignedFace:
    """FFHQ-aligned ``size`` x ``size`` crop of the face with landmarks ``points`` (68, 2) in
    ``image`` (H, W, 3) uint8 RGB. The crop may extend past the image: the border is mirrored."""
    import cv2

    m = alignment_matrix(points, size)
    crop = cv2.warpAffine(
        np.ascontiguousarray(image),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return AlignedFace(crop, m, transform_points(points, m), np.asarray(points, np.float32))


def face_outline(points: np.ndarray) -> np.ndarray:
    """Outline points (N, 2) of the face: the 68 landmarks plus the brows raised over the forehead."""
    lm = np.asarray(points, np.float32)
    eye_avg = (lm[LEFT_EYE].mean(0) + lm[RIGHT_EYE].mean(0)) / 2
    mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    up = eye_avg - mouth_avg  # image "up" for this face
    forehead = lm[17:27] + FOREHEAD * up
    return np.concatenate([lm, forehead])


def hull_mask(points: np.ndarray, shape: tuple[int, int], feather: float | None = None) -> np.ndarray:
    """Soft face mask (H, W) float32 in [0, 1] for ``shape`` = (H, W): the convex hull of
    :func:`face_outline`, eroded by ``2 * feather`` and blurred with sigma ``feather`` pixels (default
    :data:`FEATHER` x inter-ocular distance), so it falls to 0 at the hull's edge."""
    import cv2

    lm = np.asarray(points, np.float32)
    if feather is None:
        feather = FEATHER * float(np.hypot(*(lm[RIGHT_EYE].mean(0) - lm[LEFT_EYE].mean(0))))
    hull = cv2.convexHull(np.round(face_outline(lm) * 4).astype(np.int32))
    m = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(m, hull, 255, lineType=cv2.LINE_AA, shift=2)
    if feather >= 0.5:
        k = int(4 * round(feather) + 1)  # erode by 2 sigma: the blurred edge ends at the hull
        m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        m = cv2.GaussianBlur(m, (0, 0), feather)
    out = m.astype(np.float32) / 255.0
    out[out < 1.0 / 255] = 0.0
    return out


#: the blend mask of large faces is drawn at a scale where the inter-ocular distance is this many pixels
MASK_IOD = 80.0


def _box_mask(points: np.ndarray, shape: tuple[int, int], iod: float) -> np.ndarray:
    """:func:`hull_mask` for a face box, drawn at reduced scale for large faces and resized up
    (the mask is smooth, so this changes it by well under 1%; its zero set stays inside the box)."""
    import cv2

    scale = min(1.0, MASK_IOD / max(iod, 1e-6))
    if scale >= 0.999:
        return hull_mask(points, shape, feather=FEATHER * iod)
    sh, sw = max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))
    small = hull_mask(points * scale, (sh, sw), feather=FEATHER * iod * scale)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    big[big < 1.0 / 255] = 0.0
    return big


def match_colour(source: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``source`` (H, W, 3) uint8 RGB with the per-channel Lab mean and standard deviation of
    ``reference`` (same shape), both measured where ``weight`` (H, W) > 0.5. Returns uint8."""
    import cv2

    step = max(1, int(np.sqrt(weight.size / 40000)))  # statistics from ~40k pixels are plenty
    sel = weight[::step, ::step] > 0.5
    if sel.sum() < 16:
        return source
    s_lab = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)
    s = s_lab[::step, ::step][sel].astype(np.float32)
    r = cv2.cvtColor(np.ascontiguousarray(reference[::step, ::step]), cv2.COLOR_RGB2LAB)[sel].astype(
        np.float32
    )
    gain = np.clip((r.std(0) + 1e-3) / (s.std(0) + 1e-3), 0.5, 2.0)
    offset = r.mean(0) - s.mean(0) * gain
    # per-channel linear map as a lookup table on the uint8 Lab values
    lut = np.clip(np.round(np.arange(256, dtype=np.float32)[:, None] * gain + offset), 0, 255).astype(
        np.uint8
    )
    out = np.stack([lut[s_lab[..., c], c] for c in range(3)], axis=-1)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)


def paste_back(
    image: np.ndarray,
    face: AlignedFace,
    new_crop: np.ndarray,
    limit: np.ndarray | None = None,
    colour: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``new_crop`` (S, S, 3) uint8 (a processed ``face.crop``) back into ``image`` (H, W, 3).

    Works on the face's bounding box only. The blend mask is :func:`hull_mask` of the face's image
    landmarks, multiplied by ``limit`` (H, W) in [0, 1] when given (the region mask: nothing changes
    outside it). With ``colour`` the warped face is colour-matched to the original face first.
    Returns ``(result (H, W, 3) uint8, blend mask (H, W) float32)``; result == image where mask == 0.
    """
    import cv2

    from .methods.compose import composite

    h, w = image.shape[:2]
    outline = face_outline(face.image_points)
    iod = float(np.hypot(*(face.image_points[RIGHT_EYE].mean(0) - face.image_points[LEFT_EYE].mean(0))))
    pad = int(np.ceil(FEATHER * iod * 3)) + 2
    x0 = int(max(0, np.floor(outline[:, 0].min()) - pad))
    y0 = int(max(0, np.floor(outline[:, 1].min()) - pad))
    x1 = int(min(w, np.ceil(outline[:, 0].max()) + pad + 1))
    y1 = int(min(h, np.ceil(outline[:, 1].max()) + pad + 1))
    mask = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return image.copy(), mask
    # crop -> box pixels: inverse of (image -> crop) after shifting the image origin to (x0, y0)
    shift = np.array([[1, 0, x0], [0, 1, y0]], np.float64)
    m_box = face.matrix @ np.vstack([shift, [0, 0, 1]])
    back = cv2.warpAffine(
        np.ascontiguousarray(new_crop),
        m_box,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    local = _box_mask(face.image_points - np.array([x0, y0], np.float32), (y1 - y0, x1 - x0), iod)
    if limit is not None:
        local = local * np.clip(limit[y0:y1, x0:x1], 0.0, 1.0)
    orig = image[y0:y1, x0:x1]
    if colour:
        back = match_colour(back, orig, local)
    out = image.copy()
    out[y0:y1, x0:x1] = composite(orig, back, local)
    mask[y0:y1, x0:x1] = local
    return out, mask

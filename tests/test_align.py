"""FFHQ alignment from dlib's 68 landmarks, inverse warp and blend, on real faces (faces-id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privacy_cli.align import align_face, ffhq_quad, hull_mask, match_colour, paste_back
from privacy_cli.detect.landmarks import find_landmarks, plausible

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.skipif(not FACES_ID.is_dir(), reason=f"faces-id dataset not found at {FACES_ID}")


def _face(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(Image.open(FACES_ID / name).convert("RGB"))
    h, w = img.shape[:2]
    found = find_landmarks(img, (0, 0, w, h), box_scale=1.0)
    assert found, f"{name}: no landmarks"
    return img, found[0].points


@pytest.fixture(scope="module")
def face10() -> tuple[np.ndarray, np.ndarray]:
    return _face("img10.jpg")


def test_landmarks_lie_on_the_face(face10) -> None:  # noqa: ANN001
    img, pts = face10
    assert pts.shape == (68, 2)
    # eyes above the nose tip above the mouth, left eye left of right eye (image coordinates)
    el, er = pts[36:42].mean(0), pts[42:48].mean(0)
    assert el[0] < pts[30, 0] < er[0]
    assert max(el[1], er[1]) < pts[30, 1] < pts[48:55, 1].mean()
    assert plausible(pts, (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()))


def test_alignment_puts_eyes_and_mouth_where_ffhq_does(face10) -> None:  # noqa: ANN001
    img, pts = face10
    a = align_face(img, pts, 256)
    el, er = a.points[36:42].mean(0), a.points[42:48].mean(0)
    mouth = (a.points[48] + a.points[54]) / 2
    # FFHQ geometry: eye line horizontal, eye midpoint on the vertical centre line, mouth below it
    assert abs(el[1] - er[1]) < 0.02 * 256
    assert abs((el[0] + er[0]) / 2 - 128) < 0.03 * 256
    assert abs(mouth[0] - 128) < 0.05 * 256
    assert 0.15 * 256 < np.hypot(*(er - el)) < 0.35 * 256
    assert mouth[1] > el[1] + 0.15 * 256
    q = ffhq_quad(pts)
    assert np.allclose(np.hypot(*(q[1] - q[0])), np.hypot(*(q[3] - q[0])), rtol=1e-6)  # a square


@pytest.mark.parametrize("name", ["img10.jpg", "img12.jpg"])
def test_round_trip_reproduces_face_and_leaves_rest_untouched(name: str) -> None:
    img, pts = _face(name)
    side = int(round(np.hypot(*(ffhq_quad(pts)[1] - ffhq_quad(pts)[0]))))
    a = align_face(img, pts, side)  # about 1:1, so only the two bilinear resamplings differ
    out, mask = paste_back(img, a, a.crop)
    diff = np.abs(out.astype(int) - img.astype(int)).max(axis=2)
    inside = mask > 0.5
    assert inside.sum() > 5000
    assert diff[inside].mean() < 3.0 and np.median(diff[inside]) <= 3
    assert (out[mask == 0] == img[mask == 0]).all()


def test_paste_back_respects_the_limit_mask(face10) -> None:  # noqa: ANN001
    img, pts = face10
    a = align_face(img, pts, 128)
    limit = np.zeros(img.shape[:2], np.float32)
    limit[: int(pts[30, 1])] = 1.0  # only the upper half of the face may change
    out, mask = paste_back(img, a, np.zeros_like(a.crop), limit=limit, colour=False)
    assert (out[limit == 0] == img[limit == 0]).all()
    assert (mask[limit == 0] == 0).all() and mask.max() == pytest.approx(1.0, abs=0.01)
    assert (out[mask > 0.99] < 3).all()  # the black replacement is really pasted where mask is 1


def test_hull_mask_is_soft_and_covers_the_forehead(face10) -> None:  # noqa: ANN001
    img, pts = face10
    m = hull_mask(pts, img.shape[:2])
    assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    brow_y = int(pts[17:27, 1].min())
    x = int(pts[27, 0])
    assert m[brow_y - 5, x] > 0.9  # above the brows: forehead included
    assert 0 < ((m > 0) & (m < 1)).sum()  # feathered edge
    iod = np.hypot(*(pts[42:48].mean(0) - pts[36:42].mean(0)))
    assert m[int(pts[8, 1] + 0.12 * iod) + 2, x] == 0  # just below the chin: untouched


def test_match_colour_moves_statistics_to_the_reference() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(60, 120, (64, 64, 3)).astype(np.uint8)
    ref = rng.integers(140, 220, (64, 64, 3)).astype(np.uint8)
    out = match_colour(src, ref, np.ones((64, 64), np.float32))
    assert abs(out.astype(float).mean() - ref.astype(float).mean()) < 6

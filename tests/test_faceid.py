"""Identity judge (dlib ResNet embeddings) on real photos of known identities."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from privacy_cli import faceid
from privacy_cli.errors import InputError
from privacy_cli.faceid import MATCH_THRESHOLD, DlibFaceRecognizer, distance, find_identity_match, same_person

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
# two photos each of three identities (see identities.csv)
PHOTOS = ["img1.jpg", "img2.jpg", "img13.jpg", "img14.jpg", "img18.jpg", "img19.jpg"]


@pytest.fixture(scope="module")
def identities() -> dict[str, str]:
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    with open(FACES_ID / "identities.csv", newline="") as f:
        return {r["file"]: r["identity"] for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def rec() -> DlibFaceRecognizer:
    return DlibFaceRecognizer()


@pytest.fixture(scope="module")
def photos(identities) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(FACES_ID / name).convert("RGB")) for name in PHOTOS}


@pytest.fixture(scope="module")
def embeddings(rec, photos) -> dict[str, np.ndarray]:
    out = {}
    for name, img in photos.items():
        e = rec.embed(img)
        assert e is not None, name
        out[name] = e
    return out


def test_model_files_are_found_without_importing_the_package():
    d = faceid.models_dir()
    assert (d / "dlib_face_recognition_resnet_model_v1.dat").is_file()
    assert (d / "shape_predictor_5_face_landmarks.dat").is_file()


def test_embeddings_are_128d(embeddings):
    for e in embeddings.values():
        assert e.shape == (128,) and e.dtype == np.float64 and np.isfinite(e).all()
        assert 0.5 < np.linalg.norm(e) < 3.0
    a, b = embeddings["img1.jpg"], embeddings["img13.jpg"]
    assert distance(a, b) == pytest.approx(float(np.sqrt(((a - b) ** 2).sum())))


def test_same_identity_matches_and_different_do_not(identities, embeddings):
    names = list(embeddings)
    same, diff = 0, 0
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = distance(embeddings[a], embeddings[b])
            assert d == pytest.approx(distance(embeddings[b], embeddings[a]))
            if identities[a] == identities[b]:
                same += 1
                assert same_person(embeddings[a], embeddings[b]) and d < MATCH_THRESHOLD, (a, b, d)
            else:
                diff += 1
                assert not same_person(embeddings[a], embeddings[b]) and d > 0.7, (a, b, d)
    assert same == 3 and diff == 12


def test_locate_finds_one_face_per_portrait(rec, photos):
    for name, img in photos.items():
        boxes = rec.locate(img)
        assert len(boxes) == 1, name
        x0, y0, x1, y1 = boxes[0]
        h, w = img.shape[:2]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) > 0.1 * min(h, w)


def test_embed_all_returns_every_face(rec):
    if not (FACES_ID / "couple.jpg").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    img = np.asarray(Image.open(FACES_ID / "couple.jpg").convert("RGB"))
    pairs = rec.embed_all(img)
    assert len(pairs) == 2
    (b0, e0), (b1, e1) = pairs
    assert (b0[2] - b0[0]) >= (b1[2] - b1[0])  # largest first
    assert not rec.same_person(e0, e1)


def test_images_without_faces_give_none(rec):
    from skimage import data

    assert rec.embed(data.coffee()) is None
    assert rec.embed(np.full((200, 300, 3), 127, np.uint8)) is None
    assert rec.embed_all(data.rocket()) == []
    assert rec.locate(np.zeros((50, 50, 3), np.uint8)) == []


def test_bad_input_is_an_input_error(rec):
    with pytest.raises(InputError):
        rec.embed(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(InputError):
        rec.locate(np.zeros((40, 40, 2), np.uint8))


def test_identity_match_survives_copies_and_fails_after_heavy_blur(rec, photos, embeddings):
    img = photos["img14.jpg"]
    orig = embeddings["img14.jpg"]
    box = rec.locate(img)[0]
    assert find_identity_match(orig, img, box, recognizer=rec)
    assert rec.find_identity_match(orig, photos["img13.jpg"])  # another photo of the same person
    assert not rec.find_identity_match(orig, photos["img18.jpg"], box)  # someone else
    x0, y0, x1, y1 = (int(v) for v in box)
    blurred = img.copy()
    blurred[y0:y1, x0:x1] = cv2.GaussianBlur(img, (0, 0), 16)[y0:y1, x0:x1]
    assert not rec.find_identity_match(orig, blurred, box)


def test_identity_match_checks_the_known_box_when_detection_fails(photos, embeddings):
    """A detector that sees nothing (image shrunk to 64 px) must not make a still-recognisable face
    count as de-identified: the recogniser is also run at the original box."""
    img = photos["img14.jpg"]
    blind = DlibFaceRecognizer(max_side=64)
    assert blind.locate(img) == []
    box = DlibFaceRecognizer().locate(img)[0]
    orig = embeddings["img14.jpg"]
    assert not blind.find_identity_match(orig, img)
    assert blind.find_identity_match(orig, img, box)
    emb = blind.embed(img, box)
    assert emb is not None and distance(emb, orig) < 1e-6

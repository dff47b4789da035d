"""End to end on real photos (../shared/datasets/faces-id): detection recall, de-identification judged by
dlib's face recogniser, metadata stripped, inputs untouched."""

from __future__ import annotations

import csv
import hashlib
import json
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


def _single_person_photos() -> list[str]:
    with open(FACES_ID / "identities.csv") as f:
        return [row["file"] for row in csv.DictReader(f)]


def _digests() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(FACES_ID.glob("*.jpg"))}


@pytest.fixture(scope="module")
def blurred(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], dict[str, str]]:
    """Default `privpix blur --detect faces` over the whole folder, once for the module."""
    out = tmp_path_factory.mktemp("blurred")
    before = _digests()
    r = CliRunner().invoke(
        app, ["blur", str(FACES_ID), "-o", str(out), "--detect", "faces", "--json", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    records = {Path(x["input"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    return out, records, before


def test_every_single_person_photo_gets_its_face_found(blurred) -> None:  # noqa: ANN001
    _out, records, _ = blurred
    missed = [f for f in _single_person_photos() if records[f]["regions_found"] < 1]
    assert not missed, f"no face found in {missed}"
    for group in ("couple.jpg", "selfie-many-people.jpg"):
        if group in records:
            assert records[group]["regions_found"] >= 2


def test_default_blur_defeats_dlib_recogniser(blurred) -> None:  # noqa: ANN001
    from privacy_cli.faceid import default_recognizer

    out, records, _ = blurred
    rec = default_recognizer()
    judged = matched = 0
    for f in _single_person_photos():
        original = np.asarray(Image.open(FACES_ID / f).convert("RGB"))
        from privacy_cli.io import load_image

        original = load_image(FACES_ID / f).rgb  # orientation applied, as the output
        faces = [r for r in records[f]["regions"] if r["kind"] == "face"]
        box = max(faces, key=lambda r: (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))["box"]
        emb = rec.embed(original, tuple(box))
        if emb is None:
            continue
        judged += 1
        processed = load_image(out / f).rgb
        if rec.find_identity_match(emb, processed, tuple(box)):
            matched += 1
    assert judged >= 0.9 * len(_single_person_photos())
    assert matched <= 0.05 * judged, f"identity still matched on {matched}/{judged} blurred photos"


def test_outputs_carry_no_metadata_and_inputs_untouched(blurred) -> None:  # noqa: ANN001
    out, _records, before = blurred
    assert _digests() == before
    gps_inputs = [p for p in FACES_ID.glob("*.jpg") if Image.open(p).getexif().get_ifd(0x8825)]
    assert gps_inputs, "dataset expected to contain GPS EXIF"
    for p in sorted(out.glob("*.jpg")):
        with Image.open(p) as im:
            assert not im.getexif(), f"{p.name} still has EXIF"
            assert "xmp" not in im.info and "comment" not in im.info

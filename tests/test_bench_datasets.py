"""Bench datasets (Visual Redactions, faces with identities, pairs, folders) and the option parsers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_cli.bench.calibrate import STRENGTH, Calibrator, StrengthParam, Target, parse_targets
from privacy_cli.bench.datasets import (
    VR_ATTRIBUTES,
    VR_GROUPS,
    VR_MIN_PIXELS,
    detect_format,
    open_dataset,
    parse_attributes,
    vr_regions,
)
from privacy_cli.bench.specs import MethodSpec, parse_methods, parse_metrics
from privacy_cli.errors import InputError, UsageError

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


def _photo(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def _textured(path: Path, w: int, h: int, seed: int) -> Path:
    """A photo-like JPEG: colour gradients plus smooth texture (so blur and mosaic change SSIM gradually)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.5], -1)
    tex = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)), (0, 0), 1.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(base + tex + 30, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def make_vr(root: Path, n: int = 3, split: str = "val2017", w: int = 96, h: int = 72) -> dict:
    """A Visual Redactions tree: per image a face polygon (kept), a phone polygon of 4x4 px (under
    25x25, ignored) and a two-polygon plate instance (kept: 20x20 + 15x15 px = 625 px)."""
    (root / "annotations" / "2017_v1").mkdir(parents=True, exist_ok=True)
    anns = {}
    for i in range(n):
        iid = f"2017_{i + 1:08d}"
        _textured(root / "images" / split / f"{iid}.jpg", w, h, seed=i)
        anns[iid] = {
            "image_path": f"images/{split}/{iid}.jpg",
            "image_height": h,
            "image_width": w,
            "attributes": [
                {
                    "instance_id": f"{iid}_0",
                    "attr_id": "a105_face_all",
                    "polygons": [[10, 10, 40, 12, 38, 40, 12, 38, 10, 10]],
                    "area": [800],
                    "bbox": [[10, 10, 30, 30]],
                    "segmentation": {"size": [h, w], "counts": "not-read"},
                },
                {
                    "instance_id": f"{iid}_1",
                    "attr_id": "a49_phone",
                    "polygons": [[60, 50, 64, 50, 64, 54, 60, 54]],
                },
                {
                    "instance_id": f"{iid}_2",
                    "attr_id": "a108_license_plate_all",
                    "polygons": [[50, 5, 69, 5, 69, 24, 50, 24], [75, 5, 89, 5, 89, 19, 75, 19]],
                },
            ],
        }
    (root / "annotations" / "2017_v1" / f"{split}.json").write_text(json.dumps({"annotations": anns}))
    return anns


# ------------------------------------------------------------------------------ visual redactions


def test_vr_attribute_table_is_the_24_ids_of_config_py() -> None:
    assert len(VR_ATTRIBUTES) == 24
    assert {
        "a105_face_all",
        "a108_license_plate_all",
        "a109_person_body",
        "a111_name_all",
        "a49_phone",
        "a90_email",
    } <= set(VR_ATTRIBUTES)
    groups = [a for g in VR_GROUPS.values() for a in g]
    assert sorted(groups) == sorted(VR_ATTRIBUTES) and len(groups) == 24
    assert (
        len(VR_GROUPS["textual"]) == 8 and len(VR_GROUPS["visual"]) == 9 and len(VR_GROUPS["multimodal"]) == 7
    )


def test_parse_attributes() -> None:
    assert parse_attributes("a105,a49_phone") == ("a105_face_all", "a49_phone")
    assert parse_attributes("multimodal") == VR_GROUPS["multimodal"]
    assert parse_attributes("all") is None and parse_attributes(None) is None
    with pytest.raises(UsageError, match="unknown Visual Redactions attribute"):
        parse_attributes("a999_nothing")


def test_visual_redactions_polygons_and_small_instances(tmp_path: Path) -> None:
    make_vr(tmp_path, n=3)
    assert detect_format(tmp_path) == "visual-redactions"
    ds = open_dataset(tmp_path)
    assert ds.format == "visual-redactions" and ds.split == "val2017" and len(ds) == 3
    assert ds.small_instances == 3  # one 4x4 phone per image
    item = ds.items[0]
    assert item.key == "2017_00000001" and item.size == (96, 72)
    kinds = sorted(r.kind for r in item.regions)
    assert kinds == ["a105_face_all", "a108_license_plate_all", "a108_license_plate_all"]
    assert all(r.polygon is not None for r in item.regions)
    face = next(r for r in item.regions if r.kind == "a105_face_all")
    assert face.label == "Face" and face.box == (10.0, 10.0, 40.0, 40.0)
    # the mask is the rasterised polygons, not the RLE
    mask = item.regions.to_mask()
    ref = np.zeros((72, 96), np.uint8)
    cv2.fillPoly(ref, [np.array([[10, 10], [40, 12], [38, 40], [12, 38], [10, 10]], np.int32)], 1)
    cv2.fillPoly(ref, [np.array([[50, 5], [69, 5], [69, 24], [50, 24]], np.int32)], 1)
    cv2.fillPoly(ref, [np.array([[75, 5], [89, 5], [89, 19], [75, 19]], np.int32)], 1)
    assert np.array_equal(mask > 0, ref > 0)


def test_instance_size_threshold_is_625_pixels() -> None:
    def entry(side: int) -> dict:
        poly = [0, 0, side - 1, 0, side - 1, side - 1, 0, side - 1]
        return {
            "image_width": 100,
            "image_height": 100,
            "attributes": [{"attr_id": "a49_phone", "polygons": [poly]}],
        }

    kept, small = vr_regions(entry(25))
    assert len(kept) == 1 and small == 0  # 25 x 25 pixels = MIN_PIXELS: kept
    kept, small = vr_regions(entry(24))
    assert kept == [] and small == 1
    assert VR_MIN_PIXELS == 625


def test_visual_redactions_filters(tmp_path: Path) -> None:
    make_vr(tmp_path, n=4)
    ds = open_dataset(tmp_path, attributes="a108", limit=2)
    assert len(ds) == 2 and ds.attributes == ("a108_license_plate_all",)
    assert {r.kind for it in ds.items for r in it.regions} == {"a108_license_plate_all"}
    # only the tiny phone selected: every image has nothing left and is skipped
    with_phone = open_dataset(tmp_path, attributes="a49_phone")
    assert len(with_phone) == 0 and len(with_phone.skipped) == 4
    with pytest.raises(InputError, match="test2017.json: annotation file missing"):
        open_dataset(tmp_path, split="test")
    with pytest.raises(UsageError, match="--split"):
        open_dataset(tmp_path, split="holdout")
    (tmp_path / "images" / "val2017" / "2017_00000002.jpg").unlink()
    ds = open_dataset(tmp_path)
    assert len(ds) == 3 and any("image missing" in r for _, r in ds.skipped)


def test_visual_redactions_bad_json(tmp_path: Path) -> None:
    (tmp_path / "annotations" / "2017_v1").mkdir(parents=True)
    (tmp_path / "annotations" / "2017_v1" / "val2017.json").write_text('{"images": []}')
    with pytest.raises(InputError, match="not a Visual Redactions annotation file"):
        open_dataset(tmp_path)


# ------------------------------------------------------------------------------------------ faces


def test_faces_identity_folders(tmp_path: Path) -> None:
    for ident, n in (("alice", 2), ("bob", 3)):
        for i in range(n):
            _photo(tmp_path / ident / f"p{i}.jpg", seed=i)
    (tmp_path / ".hidden").mkdir()
    assert detect_format(tmp_path) == "faces"
    ds = open_dataset(tmp_path)
    assert ds.format == "faces" and len(ds) == 5 and ds.n_identities == 2
    assert [it.identity for it in ds.items] == ["alice", "alice", "bob", "bob", "bob"]
    assert ds.items[0].key == "alice/p0" and ds.items[0].regions is None


def test_faces_csv(tmp_path: Path) -> None:
    for i in range(3):
        _photo(tmp_path / f"img{i}.jpg", seed=i)
    (tmp_path / "ids.csv").write_text("file,identity\nimg0.jpg,a\nimg1.jpg,a\nimg2.jpg,b\nimg9.jpg,c\n")
    ds = open_dataset(tmp_path / "ids.csv")
    assert len(ds) == 3 and [it.identity for it in ds.items] == ["a", "a", "b"]
    assert ds.skipped and "img9" in ds.skipped[0][0]
    assert open_dataset(tmp_path).format == "faces"  # the folder holding the CSV
    (tmp_path / "bad.csv").write_text("file,identity\nimg0.jpg,\n")
    with pytest.raises(InputError, match="needs both"):
        open_dataset(tmp_path / "bad.csv")


def test_faces_id_csv_when_present() -> None:
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"shared faces-id dataset not found at {FACES_ID}")
    ds = open_dataset(FACES_ID)
    assert ds.format == "faces" and len(ds) == 61 and ds.n_identities == 13
    assert all(it.image.is_file() for it in ds.items)


# ------------------------------------------------------------------------------------------ pairs


def test_pairs_by_path_then_stem(tmp_path: Path) -> None:
    o, p = tmp_path / "orig", tmp_path / "proc"
    _photo(o / "a.jpg")
    _photo(o / "sub" / "b.jpg")
    _photo(o / "c.jpg")
    _photo(p / "a.jpg")
    _photo(p / "sub" / "b.png")  # other suffix: matched by stem
    ds = open_dataset(original=o, processed=p)
    assert ds.format == "pairs" and [it.key for it in ds.items] == ["a", "sub/b"]
    assert ds.items[1].processed == p / "sub" / "b.png"
    assert ds.skipped == [("c", "no processed file for c.jpg")]
    with pytest.raises(UsageError, match="needs both"):
        open_dataset(original=o, format="pairs")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no file matches"):
        open_dataset(original=o, processed=empty)


def test_folder_and_errors(tmp_path: Path) -> None:
    _photo(tmp_path / "x.png")
    assert detect_format(tmp_path) == "folder"
    assert len(open_dataset(tmp_path)) == 1
    with pytest.raises(InputError, match="no such file"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(UsageError, match="--format"):
        open_dataset(tmp_path, format="coco")
    with pytest.raises(UsageError, match="--attributes only applies"):
        open_dataset(tmp_path, attributes="a105")


# ------------------------------------------------------------------------------------- parsers


def test_parse_methods_options_and_sweeps() -> None:
    specs = parse_methods("blur:radius=8,pixelate:block=16,mask:fill=white")
    assert specs == [
        MethodSpec("blur", (("radius", 8),)),
        MethodSpec("pixelate", (("block", 16),)),
        MethodSpec("mask", (("fill", "white"),)),
    ]
    assert specs[0].label == "blur:radius=8" and specs[0].kwargs == {"radius": 8}
    sweep = parse_methods("blur:radius=2/4.5/8,none")
    assert [s.label for s in sweep] == ["blur:radius=2", "blur:radius=4.5", "blur:radius=8", "none"]
    # an option after a comma belongs to the method before it
    assert parse_methods("blur:radius=3,strength=2")[0].kwargs == {"radius": 3, "strength": 2}
    assert parse_methods("mask:fill=#ff0000")[0].kwargs == {"fill": "#ff0000"}
    with pytest.raises(UsageError, match="has no option 'size'"):
        parse_methods("pixelate:size=3")
    with pytest.raises(UsageError, match="unknown method"):
        parse_methods("smudge")
    with pytest.raises(UsageError, match="name=value"):
        parse_methods("blur:8")
    # option values are checked against the method's type hints before any image is processed
    with pytest.raises(UsageError, match="blur:radius must be float, got 'abc'"):
        parse_methods("blur:radius=abc")
    with pytest.raises(UsageError, match="pixelate:block must be int"):
        parse_methods("pixelate:block=2.5")
    with pytest.raises(UsageError, match="radius must be float"):
        parse_methods("blur:radius=2/inf")


def test_parse_metrics_and_targets() -> None:
    assert parse_metrics(None) is None
    assert parse_metrics("ssim,lpips") == ("ssim", "lpips_alex", "lpips_vgg")
    assert set(parse_metrics("privacy")) == {"identity_similarity", "deid_rate", "reid_rank1"}
    assert "pl_r" in parse_metrics("eraser") and "fid" in parse_metrics("private-encoder")
    with pytest.raises(UsageError, match="unknown metric"):
        parse_metrics("sharpness")
    assert parse_targets("identity") == [Target("identity_similarity", v) for v in (0.1, 0.2, 0.4)]
    assert parse_targets("ssim:0.65;id=0.2") == [Target("ssim", 0.65), Target("identity_similarity", 0.2)]
    with pytest.raises(UsageError):
        parse_targets("psnr:30")


def test_calibration_bisection_on_a_monotone_function() -> None:
    """The search itself, on a known monotone response (no images): it must land on the target."""

    class FakeCalibrator(Calibrator):
        def __init__(self) -> None:
            super().__init__(runner=None, n=1, tolerance=0.005, steps=12)  # type: ignore[arg-type]
            self.calls = 0

        def evaluate(self, method: str, option: str, metric: str, strength: float) -> float:
            self.calls += 1
            return 1.0 / (1.0 + strength / 4.0)  # decreasing, like identity similarity over blur radius

    cal = FakeCalibrator()
    c = cal.calibrate("blur", Target("identity_similarity", 0.2))
    assert c.reached and abs(c.achieved - 0.2) <= 0.005 and abs(c.strength - 16.0) < 0.6
    assert c.spec.name == "blur" and c.option == "radius" and len(c.evaluations) == cal.calls <= 14
    # an unreachable target returns the closest end, flagged
    far = FakeCalibrator().calibrate("blur", Target("identity_similarity", -0.5))
    assert not far.reached and far.strength == STRENGTH["blur"].hi
    ints = FakeCalibrator().calibrate("pixelate", Target("ssim", 0.25))
    assert float(ints.strength).is_integer() and abs(ints.strength - 12) <= 1
    assert StrengthParam("beta", 0.0, 1.0, log=False).clip(0.123456) == 0.12

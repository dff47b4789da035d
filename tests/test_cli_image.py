"""CLI conventions of the image commands: outputs, skipping, exit codes, --json, bad input, region sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from privacy_cli.cli.app import app

runner = CliRunner()


def _img(path: Path, w: int = 80, h: int = 60, exif: bool = False) -> Path:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {}
    if exif:
        e = Image.Exif()
        e[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0), 3: "E", 4: (4.0, 5.0, 6.0)}
        kw["exif"] = e.tobytes()
    Image.fromarray(arr).save(path, **kw)
    return path


def _mask(path: Path, w: int = 80, h: int = 60, box=(10, 10, 40, 30), mode: str = "L") -> Path:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).convert(mode).save(path)
    return path


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def test_help_is_self_explanatory() -> None:
    r = runner.invoke(app, ["blur", "--help"])
    assert r.exit_code == 0
    for opt in ("--radius", "--mask", "--detect", "--box-scale", "--overwrite", "--json", "--keep-metadata"):
        assert opt in r.stdout


def test_blur_with_mask_writes_next_to_input(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.jpg", exif=True)
    before = src.read_bytes()
    m = _mask(tmp_path / "m.png")
    r = runner.invoke(app, ["blur", str(src), "--mask", str(m), "--json"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "a_blur.jpg"
    assert out.exists() and src.read_bytes() == before
    (rec,) = _records(r.stdout)
    assert rec["status"] == "ok" and rec["output"] == str(out) and rec["regions_found"] == 1
    assert set(rec) >= {"input", "output", "status", "regions_found", "regions_obfuscated", "seconds"}
    with Image.open(out) as im:
        assert not im.getexif()
        o = np.asarray(im).astype(int)
    a = np.asarray(Image.open(src)).astype(int)
    assert np.abs(o[10:30, 10:40] - a[10:30, 10:40]).mean() > 10
    assert np.abs(o[40:, 50:] - a[40:, 50:]).mean() < 3  # JPEG re-encoding only


def test_existing_output_skipped_unless_overwrite(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.png")
    m = _mask(tmp_path / "m.png")
    assert runner.invoke(app, ["mask", str(src), "--mask", str(m)]).exit_code == 0
    out = tmp_path / "a_mask.png"
    out.write_bytes(b"sentinel")
    r = runner.invoke(app, ["mask", str(src), "--mask", str(m), "--json"])
    assert r.exit_code == 0 and _records(r.stdout)[0]["status"] == "skipped"
    assert out.read_bytes() == b"sentinel"
    r = runner.invoke(app, ["mask", str(src), "--mask", str(m), "--overwrite"])
    assert r.exit_code == 0 and out.read_bytes() != b"sentinel"


def test_batch_goes_on_after_bad_files_and_exits_1(tmp_path: Path) -> None:
    d = tmp_path / "in"
    _img(d / "good1.png")
    _img(d / "sub" / "good2.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    trunc = d / "trunc.png"
    data = _img(tmp_path / "t.png", 400, 300).read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    r = runner.invoke(
        app, ["pixelate", str(d), "-o", str(tmp_path / "out"), "--boxes", str(_boxes(tmp_path)), "--json"]
    )
    assert r.exit_code == 1
    recs = {Path(x["input"]).name: x for x in _records(r.stdout)}
    assert recs["good1.png"]["status"] == "ok" and recs["good2.png"]["status"] == "ok"
    assert recs["broken.jpg"]["status"] == "error" and "broken.jpg" in recs["broken.jpg"]["error"]
    assert recs["trunc.png"]["status"] == "error" and "truncated" in recs["trunc.png"]["error"]
    assert (tmp_path / "out" / "good1.png").exists() and (tmp_path / "out" / "sub" / "good2.png").exists()
    assert not (tmp_path / "out" / "broken.jpg").exists() and not (tmp_path / "out" / "trunc.png").exists()
    assert "Traceback" not in r.output


def _boxes(tmp_path: Path) -> Path:
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps([{"box": [5, 5, 30, 30]}, {"polygon": [[40, 40], [70, 40], [70, 55]]}]))
    return p


def test_mask_size_mismatch_and_resize(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.png")
    m = _mask(tmp_path / "small.png", 40, 30, (5, 5, 20, 15))
    r = runner.invoke(app, ["blur", str(src), "--mask", str(m)])
    assert r.exit_code == 1 and "does not match" in r.output and "small.png" in r.output
    assert not (tmp_path / "a_blur.png").exists()
    r = runner.invoke(app, ["blur", str(src), "--mask", str(m), "--resize-mask"])
    assert r.exit_code == 0 and (tmp_path / "a_blur.png").exists()


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA", "P", "I;16"])
def test_mask_any_mode(tmp_path: Path, mode: str) -> None:
    src = _img(tmp_path / "a.png")
    m = tmp_path / "m.png"
    arr = np.zeros((60, 80), np.uint8)
    arr[10:30, 10:40] = 255
    im = Image.fromarray(arr)
    im = im.convert("I;16") if mode == "I;16" else im.convert(mode)
    im.save(m)
    r = runner.invoke(app, ["mask", str(src), "--mask", str(m), "--fill", "white", "--json"])
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open(tmp_path / "a_mask.png"))
    assert (out[10:30, 10:40] == 255).all()
    assert np.array_equal(out[35:, 45:], np.asarray(Image.open(src))[35:, 45:])


def test_mask_dir_by_stem(tmp_path: Path) -> None:
    _img(tmp_path / "in" / "x.png")
    _img(tmp_path / "in" / "y.png")
    (tmp_path / "masks").mkdir()
    _mask(tmp_path / "masks" / "x.png")
    _mask(tmp_path / "masks" / "y_mask.png")
    r = runner.invoke(app, ["mask", str(tmp_path / "in"), "--mask-dir", str(tmp_path / "masks"), "--json"])
    assert r.exit_code == 0, r.output
    assert all(x["status"] == "ok" and x["regions_found"] == 1 for x in _records(r.stdout))
    _img(tmp_path / "in" / "z.png")
    r = runner.invoke(app, ["mask", str(tmp_path / "in" / "z.png"), "--mask-dir", str(tmp_path / "masks")])
    assert r.exit_code == 1 and "no mask" in r.output


def test_visual_redactions_annotations(tmp_path: Path) -> None:
    root = tmp_path / "vr"
    src = _img(root / "images" / "val2017" / "2017_42.jpg", 120, 100)
    ann = {
        "annotations": {
            "2017_42": {
                "image_path": "images/val2017/2017_42.jpg",
                "image_width": 120,
                "image_height": 100,
                "attributes": [
                    {"attr_id": "a105_face_all", "polygons": [[10, 10, 60, 10, 60, 60, 10, 60]]},
                    {"attr_id": "a49_phone", "polygons": [[70, 70, 100, 70, 100, 95, 70, 95]]},
                ],
            }
        }
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "val2017.json").write_text(json.dumps(ann))
    r = runner.invoke(
        app,
        [
            "mask",
            str(src),
            "--annotations",
            str(root / "annotations" / "val2017.json"),
            "--attributes",
            "a105_face_all",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open(root / "images" / "val2017" / "2017_42_mask.jpg")).astype(int)
    assert out[20:50, 20:50].max() < 30  # face polygon filled black
    assert out[75:90, 75:95].mean() > 30  # phone not selected: untouched


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.png")
    r = runner.invoke(app, ["blur", str(src), "--detect", "unicorns"])
    assert r.exit_code == 2 and "unicorns" in r.output
    r = runner.invoke(app, ["mask", str(src), "--mask", str(tmp_path / "nope.png")])
    assert r.exit_code == 2 and "nope.png" in r.output
    r = runner.invoke(app, ["blur", str(src), "--radius", "-3"])
    assert r.exit_code == 2


def test_missing_input_reported(tmp_path: Path) -> None:
    r = runner.invoke(app, ["blur", str(tmp_path / "ghost.jpg"), "--detect", "none", "--json"])
    assert r.exit_code == 1
    (rec,) = _records(r.stdout)
    assert rec["status"] == "error" and "ghost.jpg" in rec["error"]


def test_pixel_limit_option(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.png", 200, 200)
    r = runner.invoke(app, ["blur", str(src), "--detect", "none", "--max-pixels", "1000"])
    assert r.exit_code == 1 and "too large" in r.output and not (tmp_path / "a_blur.png").exists()


def test_keep_metadata_opt_in(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.jpg", exif=True)
    m = _mask(tmp_path / "m.png")
    assert runner.invoke(app, ["blur", str(src), "--mask", str(m), "--keep-metadata"]).exit_code == 0
    with Image.open(tmp_path / "a_blur.jpg") as im:
        assert im.getexif().get_ifd(0x8825)


def test_workers_and_quiet(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / "in" / f"{i}.png")
    r = runner.invoke(
        app, ["blur", str(tmp_path / "in"), "--boxes", str(_boxes(tmp_path)), "-j", "2", "--quiet"]
    )
    assert r.exit_code == 0 and r.stdout.strip() == ""
    assert len(list((tmp_path / "in").glob("*_blur.png"))) == 4


def test_two_images_at_once_keep_order_bytes_and_fail_closed(tmp_path: Path) -> None:
    """-j 2 runs two images' compute stage at once (decode and encode overlapping): records come in
    input order, every output equals the one-at-a-time run's bytes, and a broken file in the middle is
    an error record (exit 1) while the rest are written."""
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (60 + 7 * i, 80, 3), np.uint8)).save(src / f"{i}.png")
    (src / "3b.png").write_bytes(b"not a png")
    outs = {}
    for j in ("1", "2"):
        out = tmp_path / f"out{j}"
        r = runner.invoke(
            app, ["blur", str(src), "-o", str(out), "--boxes", str(_boxes(tmp_path)), "-j", j, "--json"]
        )
        assert r.exit_code == 1, r.output
        recs = _records(r.stdout)
        assert [Path(x["input"]).name for x in recs] == sorted(p.name for p in src.iterdir())
        assert [x["status"] for x in recs].count("error") == 1 and not (out / "3b.png").exists()
        outs[j] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(outs["2"]) == 7 and outs["1"] == outs["2"]


def test_auto_workers_two_only_for_torch_free_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from privacy_cli.cli.batch import auto_workers
    from privacy_cli.detect import ort

    def fn(job):  # noqa: ANN001, ANN202
        return None

    monkeypatch.setattr(ort, "usable_cores", lambda: 2)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert auto_workers(fn) == 1  # not marked torch-free (erase, deidentify, ...)
    fn.torch_free = True  # type: ignore[attr-defined]
    assert auto_workers(fn) == 2
    monkeypatch.setitem(sys.modules, "torch", object())  # a torch model already uses every core
    assert auto_workers(fn) == 1
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(ort, "usable_cores", lambda: 1)  # e.g. taskset -c 0 on a bigger machine
    assert auto_workers(fn) == 1


def test_detector_crash_fails_closed_naming_the_file(tmp_path: Path) -> None:
    from privacy_cli.detect import register_detector

    class Crashing:
        name, kinds = "test-crashing", ("face",)

        def detect(self, image):  # noqa: ANN001, ANN202
            raise RuntimeError("model exploded")

    register_detector("test-crashing")(lambda: Crashing())
    src = _img(tmp_path / "a.png")
    r = runner.invoke(app, ["blur", str(src), "--detect", "test-crashing", "--json"])
    assert r.exit_code == 1
    (rec,) = _records(r.stdout)
    assert rec["status"] == "error" and rec["error"].startswith(str(src)) and "model exploded" in rec["error"]
    assert not (tmp_path / "a_blur.png").exists()


def test_explicit_source_with_nothing_for_an_image_fails_closed(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "in" / "a.png"), _img(tmp_path / "in" / "b.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[5, 5, 30, 30]]}))
    r = runner.invoke(app, ["blur", str(a), str(b), "--boxes", str(boxes), "--json"])
    assert r.exit_code == 1
    recs = {Path(x["input"]).name: x for x in _records(r.stdout)}
    assert recs["a.png"]["status"] == "ok"
    assert recs["b.png"]["status"] == "error" and "--allow-empty" in recs["b.png"]["error"]
    assert not (tmp_path / "in" / "b_blur.png").exists()
    # an empty list, an empty mask and a mask-dir without the image's mask: the same
    boxes.write_text("[]")
    r = runner.invoke(app, ["blur", str(b), "--boxes", str(boxes)])
    assert r.exit_code == 1 and not (tmp_path / "in" / "b_blur.png").exists()
    empty = _mask(tmp_path / "empty.png", box=(0, 0, 0, 0))
    r = runner.invoke(app, ["blur", str(b), "--mask", str(empty)])
    assert r.exit_code == 1 and "empty" in r.output and not (tmp_path / "in" / "b_blur.png").exists()
    # --allow-empty: an unchanged copy, on purpose
    r = runner.invoke(app, ["blur", str(b), "--boxes", str(boxes), "--allow-empty", "--json"])
    assert r.exit_code == 0 and _records(r.stdout)[0]["regions_obfuscated"] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "in" / "b_blur.png")), np.asarray(Image.open(b)))


def test_boxes_plain_list_and_formats_documented(tmp_path: Path) -> None:
    src = _img(tmp_path / "a.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([[10, 10, 40, 30], [50, 35, 70, 55]]))
    r = runner.invoke(app, ["mask", str(src), "--boxes", str(boxes), "--fill", "white", "--json"])
    assert r.exit_code == 0, r.output
    assert _records(r.stdout)[0]["regions_found"] == 2
    out = np.asarray(Image.open(tmp_path / "a_mask.png"))
    assert (out[10:30, 10:40] == 255).all() and (out[35:55, 50:70] == 255).all()
    # the same per image, by name
    boxes.write_text(json.dumps({"a.png": [[10, 10, 40, 30]]}))
    r = runner.invoke(app, ["mask", str(src), "--boxes", str(boxes), "--overwrite", "--json"])
    assert r.exit_code == 0 and _records(r.stdout)[0]["regions_found"] == 1
    h = runner.invoke(app, ["blur", "--help"], terminal_width=200).stdout
    assert "[[x0,y0,x1,y1]" in h and "--allow-empty" in h and "--show-text" in h


@pytest.mark.parametrize(
    "content",
    ['[[1, 2, "nan", 4]]', "[[0, 0, 10]]", '[{"box": [0, 0, 1e400, 5]}]', '{"a.png": [[5, 5, 1, 1]]}', "7"],
)
def test_bad_boxes_file_is_a_usage_error_before_any_work(tmp_path: Path, content: str) -> None:
    src = _img(tmp_path / "a.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content)
    r = runner.invoke(app, ["blur", str(src), "--boxes", str(boxes)])
    assert r.exit_code == 2 and "boxes.json" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "a_blur.png").exists()


def test_same_name_inputs_never_overwrite_each_other(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "a" / "x.png"), _img(tmp_path / "b" / "x.png", 90, 70)
    boxes = _boxes(tmp_path)
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(
            app,
            ["blur", str(a), str(b), "-o", str(tmp_path / "out"), "--boxes", str(boxes), "--json", *extra],
        )
        assert r.exit_code == 0, r.output
        recs = _records(r.stdout)
        assert [x["status"] for x in recs] == ["ok", "ok"] or extra == [] and recs[0]["status"] == "skipped"
        outs = [Path(x["output"]) for x in recs]
        assert len(set(outs)) == 2
    with (
        Image.open(tmp_path / "out" / "x.png") as i1,
        Image.open(tmp_path / "out" / "x-2.png") as i2,
    ):
        assert i1.size == (80, 60) and i2.size == (90, 70)


def test_animated_gif_every_frame_obfuscated(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((60, 80, 3), v, np.uint8)) for v in (40, 200)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    boxes = tmp_path / "b.json"
    boxes.write_text("[[10, 10, 40, 30]]")
    r = runner.invoke(app, ["mask", str(src), "--boxes", str(boxes), "--fill", "white", "--json"])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert (
        rec["frames"] == 2
        and rec["regions_obfuscated"] == 2
        and [g["frame"] for g in rec["regions"]] == [0, 1]
    )
    with Image.open(tmp_path / "anim_mask.gif") as im:
        assert im.n_frames == 2
        for i in range(2):
            im.seek(i)
            arr = np.asarray(im.convert("RGB"))
            assert (arr[10:30, 10:40] == 255).all() and (arr[40:, 50:] != 255).all()


def test_folder_scan_lists_what_it_skips(tmp_path: Path) -> None:
    _img(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    r = runner.invoke(app, ["blur", str(tmp_path / "in"), "--boxes", str(_boxes(tmp_path)), "--json"])
    assert r.exit_code == 0
    recs = {Path(x["input"]).name: x for x in _records(r.stdout)}
    assert recs["notes.txt"]["status"] == "skipped" and recs["notes.txt"]["reason"] == "not an image"
    assert "1 written, 1 skipped, 0 failed" in r.stderr


def test_unreadable_subfolder_is_an_error(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads every folder: run without the capabilities that allow it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    _img(tmp_path / "in" / "ok.png")
    _img(tmp_path / "in" / "locked" / "hidden.png")
    (tmp_path / "in" / "locked").chmod(0)
    try:
        main = "import sys; from privacy_cli.cli.app import main; sys.argv[0] = 'privpix'; main()"
        cmd = [
            *prefix,
            sys.executable,
            "-c",
            main,
            "blur",
            str(tmp_path / "in"),
            "--boxes",
            str(_boxes(tmp_path)),
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 1, p.stderr
        errs = [x for x in p.stderr.splitlines() if "error" in x]
        assert len(errs) == 1 and "locked" in errs[0] and "cannot read folder" in errs[0]
        assert (tmp_path / "in" / "ok_blur.png").exists()
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)


@pytest.mark.parametrize(
    "args",
    [
        ["blur", "--radius", "inf"],
        ["blur", "--feather", "nan"],
        ["blur", "--box-scale", "inf"],
        ["mask", "--fill", "purple"],
        ["erase", "--context", "inf", "--model", "telea"],
    ],
)
def test_absurd_values_are_usage_errors_before_any_work(tmp_path: Path, args: list[str]) -> None:
    # the input does not exist: checked per file this would be exit 1, up front it is exit 2
    r = runner.invoke(app, [*args, str(tmp_path / "ghost.png"), "--detect", "none", "--allow-empty"])
    assert r.exit_code == 2, r.output
    assert "ghost.png" not in r.output


@pytest.mark.parametrize(
    "args", [["blur", "--dilate", "100000"], ["blur", "--feather", "1e9"], ["pixelate", "--block", "100000"]]
)
def test_huge_geometry_is_bounded_by_the_image(tmp_path: Path, args: list[str]) -> None:
    src = _img(tmp_path / "a.png")
    boxes = tmp_path / "b.json"
    boxes.write_text("[[30, 20, 40, 30]]")
    r = runner.invoke(app, [*args, str(src), "--boxes", str(boxes), "--json"])
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open(tmp_path / f"a_{args[0]}.png")).astype(int)
    a = np.asarray(Image.open(src)).astype(int)
    if args[1] != "--block":  # grown past the image: every pixel obfuscated
        assert (np.abs(out - a).sum(axis=2) > 0).mean() > 0.9
    else:  # one cell covers the region: a single colour
        assert len(np.unique(out[20:30, 30:40].reshape(-1, 3), axis=0)) == 1


def test_python_warnings_go_through_the_output(tmp_path: Path) -> None:
    import warnings

    # EXIF claiming more entries than it holds: Pillow warns while reading it
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\x40\x00\x00\x00\xff\xff\xff\xff"
    src = tmp_path / "w.jpg"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(src, exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        r = runner.invoke(app, ["blur", str(src), "--boxes", str(_boxes(tmp_path))])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines and all(x.startswith("warning: UserWarning") for x in lines), r.stderr
    assert "TiffImagePlugin" not in r.stderr and "warnings.warn" not in r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        r = runner.invoke(app, ["blur", str(src), "--boxes", str(_boxes(tmp_path)), "--overwrite", "-q"])
    assert r.exit_code == 0 and r.stderr == ""


def test_missing_weights_resolved_once_per_run(tmp_path: Path, wenv) -> None:  # noqa: ANN001
    for name in ("a", "b", "c"):
        _img(tmp_path / "in" / f"{name}.png")
    boxes = tmp_path / "b.json"
    boxes.write_text("[[10, 10, 40, 30]]")
    # weights missing, downloads failing (the wenv fixture's stand-in for an unusable network)
    r = runner.invoke(
        app, ["erase", str(tmp_path / "in"), "--model", "migan", "--boxes", str(boxes), "--json"]
    )
    assert r.exit_code == 1
    errors = [x["error"].split(": ", 1)[1] for x in _records(r.stdout)]  # without the file name
    assert len(errors) == 3 and len(set(errors)) == 1 and "privpix weights import migan" in errors[0]
    assert r.stderr.count("downloading migan") == 1  # one attempt for the whole run
    assert not list((tmp_path / "in").glob("*_erase.png"))


def test_interrupt_says_how_many_were_written_and_how_to_resume(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import typer

    from privacy_cli.cli.batch import run_jobs
    from privacy_cli.cli.output import Output
    from privacy_cli.io import plan_outputs
    from privacy_cli.pipeline import Result

    for name in ("a", "b", "c"):
        _img(tmp_path / f"{name}.png")
    jobs = plan_outputs([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], "blur")

    def one(job):  # noqa: ANN001, ANN202
        if job.input.name == "b.png":
            raise KeyboardInterrupt  # Ctrl-C while the second image is processed
        return Result(str(job.input), str(job.output), "ok")

    with pytest.raises(typer.Exit) as e:
        run_jobs(jobs, one, Output(), "blur")
    assert e.value.exit_code == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 written" in err and "run the same command again to resume" in err


def test_folder_job_threads_follow_the_cores_the_process_may_use(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """--workers shares the cores this process may run on (affinity mask: taskset, a container's CPU
    set), not the machine's: 2 usable cores of 16 with 2 workers give each image 1 torch thread, not 8."""
    import torch

    from privacy_cli.cli import batch
    from privacy_cli.cli.output import Output
    from privacy_cli.detect import ort
    from privacy_cli.io import plan_outputs
    from privacy_cli.pipeline import Result

    for name in ("a", "b"):
        _img(tmp_path / f"{name}.png")
    jobs = plan_outputs([tmp_path / "a.png", tmp_path / "b.png"], "blur")
    seen = []

    def one(job):  # noqa: ANN001, ANN202
        seen.append(torch.get_num_threads())
        return Result(str(job.input), str(job.output), "skipped")

    before = torch.get_num_threads()
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 16)
    try:
        for usable, want in ((2, 1), (16, 8)):
            monkeypatch.setattr(ort, "usable_cores", lambda n=usable: n)
            seen.clear()
            code, _ = batch.run_jobs(jobs, one, Output(False, True), "blur", workers=2)
            assert code == 0 and seen == [want, want], (usable, seen)
    finally:
        torch.set_num_threads(before)


def test_console_usage_errors_are_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    main = "import sys; from privacy_cli.cli.app import main; sys.argv[0] = 'privpix'; main()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for args in (["blur", "--box-scale", "1000"], ["mask", "--fill", "purple"], ["blur", "--radius", "inf"]):
        p = subprocess.run(
            [sys.executable, "-c", main, *args, str(tmp_path / "x.png")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr
        assert args[1] in lines[0]


def test_help_shows_no_type_placeholders_for_flags_or_swallowed_brackets() -> None:
    def helptext(*args: str) -> str:
        return runner.invoke(app, [*args, "--help"], env={"COLUMNS": "250"}).stdout

    h = helptext("blur")
    assert "<bool>" not in h and "<list[str]>" not in h and "INPUT" in h
    d = helptext("detect")
    assert "{image: [regions]}" in d and "<bool>" not in d
    assert "[default: every present checkpoint]" in helptext("weights", "verify")

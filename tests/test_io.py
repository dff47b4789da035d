"""Image I/O: every bad-input case, colour modes, metadata stripping, atomic writes, output naming."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privacy_cli.errors import InputError, UsageError
from privacy_cli.io import load_image, plan_outputs, save_image


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2).astype(np.uint8)


def _exif_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return exif.tobytes()


def test_exif_orientation_applied_and_metadata_stripped(tmp_path: Path) -> None:
    src = tmp_path / "in.jpg"
    Image.fromarray(_photo(40, 60)).save(src, exif=_exif_with_gps(), quality=95)
    before = src.read_bytes()
    loaded = load_image(src)
    assert loaded.size == (40, 60)  # orientation 6 swaps width and height
    dst = save_image(loaded.rgb, tmp_path / "out.jpg", like=loaded)
    assert src.read_bytes() == before
    with Image.open(dst) as im:
        assert len(im.getexif()) == 0
        assert "exif" not in im.info and "xmp" not in im.info
    kept = save_image(loaded.rgb, tmp_path / "kept.jpg", like=loaded, keep_metadata=True)
    with Image.open(kept) as im:
        exif = im.getexif()
        assert exif.get(0x010F) == "Camera maker"
        assert exif.get(0x0112) == 1  # orientation already applied: reset so viewers do not rotate twice
        assert exif.get_ifd(0x8825)


@pytest.mark.parametrize(
    "mode,ext",
    [
        ("L", ".png"),
        ("LA", ".png"),
        ("P", ".png"),
        ("RGBA", ".png"),
        ("CMYK", ".jpg"),
        ("I;16", ".png"),
        ("RGB", ".webp"),
        ("RGB", ".tiff"),
        ("RGB", ".bmp"),
        ("RGB", ".heic"),
    ],
)
def test_colour_modes_round_trip(tmp_path: Path, mode: str, ext: str) -> None:
    rgb = _photo()
    if mode == "I;16":
        im = Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)
    elif mode == "LA":
        im = Image.fromarray(rgb).convert("L").convert("LA")
        im.putalpha(Image.fromarray(np.full((48, 64), 128, np.uint8)))
    else:
        im = Image.fromarray(rgb).convert(mode)
    src = tmp_path / f"in{ext}"
    im.save(src)
    loaded = load_image(src)
    assert loaded.rgb.shape == (48, 64, 3) and loaded.rgb.dtype == np.uint8
    out = save_image(loaded.rgb, tmp_path / f"out{ext}", like=loaded)
    with Image.open(out) as o:
        assert o.size == (64, 48)
        if mode in ("L", "I;16"):
            assert o.mode in ("L", "I;16", "I")
        if mode in ("RGBA", "LA"):
            assert "A" in o.mode
            assert np.array_equal(np.asarray(o.getchannel("A")), loaded.alpha)
        if mode == "I;16":
            # 16-bit precision kept where nothing changed
            assert np.array_equal(np.asarray(o).astype(np.uint16), loaded.high)


def test_icc_profile_kept(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc.jpg"
    Image.fromarray(_photo()).save(src, icc_profile=icc)
    loaded = load_image(src)
    out = save_image(loaded.rgb, tmp_path / "o.jpg", like=loaded)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_photo(200, 200)).save(good)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases = {
        truncated: "truncated",
        corrupt: "corrupt",
        text: "not an image",
        empty: "empty",
        tmp_path / "missing.jpg": "no such file",
        tmp_path: "directory",
    }
    for path, word in cases.items():
        with pytest.raises(InputError) as e:
            load_image(path)
        msg = str(e.value)
        assert str(path) in msg and word in msg and "\n" not in msg


def test_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(big)
    with pytest.raises(InputError, match="too large"):
        load_image(big, max_pixels=10_000_000)
    assert load_image(big, max_pixels=12_000_000).size == (4000, 3000)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    p = tmp_path / "locked.png"
    Image.fromarray(_photo()).save(p)
    p.chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        load_image(p)


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / "out.png"

    def boom(self, fp, *a, **k):  # noqa: ANN001
        fp.write(b"partial data")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_image(_photo(), dst)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_replaced_atomically(tmp_path: Path) -> None:
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")
    save_image(_photo(), dst)
    with Image.open(dst) as im:
        assert im.size == (64, 48)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_output_naming_and_tree_mirroring(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("a.jpg", "sub/b.png", "sub/notes.txt", "a_blur.jpg"):
        p = tmp_path / "in" / rel
        if rel.endswith(".txt"):
            p.write_text("x")
        else:
            Image.fromarray(_photo()).save(p)
    jobs = plan_outputs([tmp_path / "in"], "blur")
    assert sorted(j.output.relative_to(tmp_path).as_posix() for j in jobs if j.output) == [
        "in/a_blur.jpg",
        "in/sub/b_blur.png",
    ]
    # a file that is not an image is listed as skipped, not dropped silently
    assert [(j.input.name, j.skip) for j in jobs if j.output is None] == [("notes.txt", "not an image")]
    jobs = plan_outputs([tmp_path / "in"], "blur", tmp_path / "out")
    assert sorted(j.output.relative_to(tmp_path).as_posix() for j in jobs if j.output) == [
        "out/a.jpg",
        "out/sub/b.png",
    ]
    jobs = plan_outputs([str(tmp_path / "in" / "*.jpg")], "pixelate")
    assert [j.input.name for j in jobs] == ["a.jpg", "a_blur.jpg"]
    with pytest.raises(UsageError):
        plan_outputs([tmp_path / "in"], "blur", tmp_path / "single.jpg")
    # an output that would land on an input is refused
    jobs = plan_outputs([tmp_path / "in" / "a.jpg"], "blur", tmp_path / "in" / "a.jpg")
    assert jobs[0].error and "overwrite an input" in jobs[0].error


def test_png_bytes_not_an_image_extension(tmp_path: Path) -> None:
    # content decides, not the extension: a PNG named .jpg loads fine
    p = tmp_path / "x.jpg"
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="PNG")
    p.write_bytes(buf.getvalue())
    assert load_image(p).format == "PNG"


def test_same_name_inputs_get_unique_outputs(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(_photo()).save(tmp_path / d / "x.jpg")
    jobs = plan_outputs([tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"], "blur", tmp_path / "out")
    assert [j.output.name for j in jobs] == ["x.jpg", "x-2.jpg"]  # -o DIR keeps names, made unique
    # two folders with the same tree, and the same file given twice (processed once)
    jobs = plan_outputs([tmp_path / "a", tmp_path / "b", tmp_path / "a" / "x.jpg"], "blur", tmp_path / "out")
    assert [j.output.name for j in jobs] == ["x.jpg", "x-2.jpg"]


def test_extensionless_and_gif_images_found_in_folders(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_photo()).save(d / "anim.gif")
    Image.fromarray(_photo()).save(d / "noext", format="JPEG")
    jobs = plan_outputs([d], "blur", tmp_path / "out")
    assert sorted(j.output.name for j in jobs) == ["anim.gif", "noext.jpg"]


def test_animated_gif_and_multipage_tiff_keep_every_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((40, 50, 3), v, np.uint8)) for v in (30, 120, 220)]
    for name in ("anim.gif", "anim.webp", "pages.tiff"):
        src = tmp_path / name
        frames[0].save(src, save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
        loaded = load_image(src)
        assert len(loaded.frames) == 2
        assert [int(f.rgb.mean()) for f in (loaded, *loaded.frames)] == pytest.approx([30, 120, 220], abs=3)
        outs = [(f.rgb, f, None) for f in loaded.frames]
        dst = save_image(loaded.rgb, tmp_path / f"out_{name}", like=loaded, frames=outs)
        with Image.open(dst) as im:
            assert im.n_frames == 3
            if name != "pages.tiff":
                im.seek(1)
                im.load()
                assert im.info.get("duration") == 200


def test_pixel_limit_counts_all_frames(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((100, 100, 3), v, np.uint8)) for v in (0, 100, 200)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="3 frames"):
        load_image(src, max_pixels=25_000)


def test_max_pixels_is_the_only_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    # Pillow's own guard (89.5 MP by default; errors past twice that) scaled down so the test stays small
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = tmp_path / "big.png"
    Image.new("L", (100, 95)).save(big)  # 9500 px: past Pillow's error threshold (2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw DecompressionBombWarning
        with pytest.raises(InputError, match="too large.*--max-pixels"):
            load_image(big, max_pixels=9000)
        assert load_image(big, max_pixels=10_000).size == (100, 95)


def test_outputs_get_umask_permissions_and_stale_temps_are_removed(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        dst = save_image(_photo(), tmp_path / "out.png")
    finally:
        os.umask(old)
    assert dst.stat().st_mode & 0o777 == 0o644
    # a run killed while writing out.png left its temporary file (its process is gone)
    dead = _dead_pid()
    stale = tmp_path / f".out.png.privpix-{dead}-abc123.part"
    stale.write_bytes(b"partial")
    live = tmp_path / f".out.png.privpix-{os.getppid()}-def456.part"  # a running process: kept
    live.write_bytes(b"in progress")
    other = tmp_path / ".out.png.other-tool.part"  # not ours: kept
    other.write_bytes(b"x")
    save_image(_photo(), dst)
    assert not stale.exists() and live.exists() and other.exists()


def _dead_pid() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_keep_metadata_on_tiff_keeps_what_tiff_can_hold(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 00:00:00"
    src = tmp_path / "in.tif"
    Image.fromarray(_photo()).save(src, exif=exif.tobytes())
    loaded = load_image(src)
    notes: list[str] = []
    dst = save_image(loaded.rgb, tmp_path / "out.tif", like=loaded, keep_metadata=True, notes=notes)
    with Image.open(dst) as im:
        assert im.getexif().get(0x010F) == "Maker"
    assert len(notes) == 1 and "EXIF" in notes[0] and "\n" not in notes[0]

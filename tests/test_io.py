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
    assert sorted(j.output.relative_to(tmp_path).as_posix() for j in jobs) == [
        "in/a_blur.jpg",
        "in/sub/b_blur.png",
    ]
    jobs = plan_outputs([tmp_path / "in"], "blur", tmp_path / "out")
    assert sorted(j.output.relative_to(tmp_path).as_posix() for j in jobs) == ["out/a.jpg", "out/sub/b.png"]
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

"""Classical methods and regions: pixels outside regions untouched, inside changed as specified."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from privacy_cli.errors import RegionError, UsageError
from privacy_cli.methods import get_method, list_methods
from privacy_cli.methods.blur import region_sigma
from privacy_cli.regions import Region, Regions, load_visual_redactions


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


def _box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    return m


@pytest.mark.parametrize(
    "name,opts", [("blur", {}), ("blur", {"radius": 8}), ("pixelate", {}), ("mask", {"fill": "mean"})]
)
def test_only_regions_change(photo: np.ndarray, name: str, opts: dict) -> None:
    mask = _box_mask(512, 512, (180, 60, 300, 200))
    out = get_method(name)(photo, mask, **opts)
    assert out.shape == photo.shape and out.dtype == np.uint8
    outside = mask == 0
    assert np.array_equal(out[outside], photo[outside])
    diff = np.abs(out.astype(int) - photo.astype(int))[mask > 0].mean()
    assert diff > 5, f"{name} barely changed the region (mean abs diff {diff:.1f})"


def test_blur_radius_matches_pillow_gaussian(photo: np.ndarray) -> None:
    mask = np.ones(photo.shape[:2], np.float32)
    ours = get_method("blur")(photo, mask, radius=8).astype(int)
    pil = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(8))).astype(int)
    inner = (slice(40, -40), slice(40, -40))  # borders differ by padding convention only
    assert np.abs(ours[inner] - pil[inner]).mean() < 1.5


def test_blur_default_scales_with_region_size(photo: np.ndarray) -> None:
    assert region_sigma(400) > region_sigma(100) >= 3.0
    small = _box_mask(512, 512, (10, 10, 50, 50))
    large = _box_mask(512, 512, (100, 100, 400, 400))
    out_s = get_method("blur")(photo, small)
    out_l = get_method("blur")(photo, large)

    # high-frequency energy left inside the region: the large region is smoothed harder
    def hf(img: np.ndarray, m: np.ndarray) -> float:
        g = img.astype(float).mean(axis=2)
        lap = np.abs(np.diff(g, 2, axis=0))[:, :]
        return float(lap[m[1:-1] > 0].mean())

    assert hf(out_l, large) < hf(photo, large) * 0.2
    assert hf(out_s, small) < hf(photo, small)


def test_pixelate_cells_are_uniform(photo: np.ndarray) -> None:
    mask = _box_mask(512, 512, (64, 64, 192, 192))
    out = get_method("pixelate")(photo, mask, block=16)
    cell = out[64:80, 64:80].reshape(-1, 3)
    assert (cell == cell[0]).all()
    assert not (out[64:80, 80:96] == cell[0]).all()


def test_fill_colours(photo: np.ndarray) -> None:
    mask = _box_mask(512, 512, (0, 0, 10, 10))
    assert (get_method("mask")(photo, mask, fill="black")[:10, :10] == 0).all()
    assert (get_method("mask")(photo, mask, fill="#ff8000")[:10, :10] == [255, 128, 0]).all()
    with pytest.raises(UsageError):
        get_method("mask")(photo, mask, fill="purple-ish")


def test_mask_size_mismatch(photo: np.ndarray) -> None:
    with pytest.raises(RegionError, match="does not match"):
        get_method("blur")(photo, np.ones((10, 10), np.float32))


def test_feather_keeps_core_fully_covered() -> None:
    r = Regions((100, 100), [Region("box", (30, 30, 70, 70))])
    hard = r.to_mask()
    soft = r.to_mask(feather=4)
    assert (soft[hard > 0] == 1).all()
    assert ((soft > 0) & (soft < 1)).sum() > 0
    assert soft[0, 0] == 0


def test_face_scale_and_dilate() -> None:
    r = Regions((200, 200), [Region("face", (80, 80, 120, 120)), Region("text", (10, 10, 20, 20))])
    m = r.to_mask(face_scale=1.5, dilate=2)
    assert m[72, 100] == 1 and m[68, 100] == 1  # 1.5x grows the 40px face box by 10px per side, +2 dilation
    assert m[65, 100] == 0
    assert m[9, 15] == 1 and m[5, 15] == 0


def test_visual_redactions_polygons(tmp_path) -> None:  # noqa: ANN001
    import json

    ann = {
        "annotations": {
            "2017_0001": {
                "image_path": "images/val2017/2017_0001.jpg",
                "image_height": 100,
                "image_width": 120,
                "attributes": [
                    {
                        "instance_id": "a",
                        "attr_id": "a105_face_all",
                        "polygons": [[10, 10, 50, 10, 50, 60, 10, 60]],
                    },
                    {"instance_id": "b", "attr_id": "a49_phone", "polygons": [[70, 70, 90, 70, 90, 90]]},
                ],
            }
        }
    }
    p = tmp_path / "val2017.json"
    p.write_text(json.dumps(ann))
    vr = load_visual_redactions(p, ["a105_face_all"])
    regs = vr["2017_0001"]["regions"]
    assert len(regs) == 1 and regs[0].kind == "a105_face_all"
    m = Regions((120, 100), regs).to_mask()
    assert m[30, 30] == 1 and m[80, 80] == 0 and m.sum() == pytest.approx(41 * 51, rel=0.1)


def test_registry_lists_classical_methods() -> None:
    assert {"blur", "pixelate", "mask"} <= set(list_methods())
    with pytest.raises(UsageError):
        get_method("nope")


def test_python_api_on_pil_and_numpy(photo: np.ndarray) -> None:
    import privacy_cli as pp

    pil = Image.fromarray(photo)
    out = pp.blur(pil, [(180, 60, 300, 200)], radius=6)
    assert isinstance(out, Image.Image) and out.size == pil.size
    arr = pp.pixelate(photo, _box_mask(512, 512, (180, 60, 300, 200)), block=12)
    assert isinstance(arr, np.ndarray) and not np.array_equal(arr, photo)
    assert np.array_equal(arr[:50], photo[:50])
    filled = pp.fill(photo.astype(np.float32) / 255, [(0, 0, 8, 8)], fill="white")
    assert (filled[:8, :8] == 255).all()


def test_large_sigma_blur_matches_exact_gaussian(photo: np.ndarray) -> None:
    import cv2

    from privacy_cli.methods.blur import EXACT_MAX_SIGMA, gaussian_blur

    sigma = 5 * EXACT_MAX_SIGMA
    fast = gaussian_blur(photo, sigma).astype(int)
    exact = cv2.GaussianBlur(photo, (0, 0), sigma, borderType=cv2.BORDER_REFLECT).astype(int)
    inner = (slice(100, -100), slice(100, -100))
    assert np.abs(fast[inner] - exact[inner]).mean() < 1.0
    assert np.abs(fast[inner] - exact[inner]).max() <= 6


def _two_box_mask(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> np.ndarray:
    return np.maximum(_box_mask(512, 512, a), _box_mask(512, 512, b))


@pytest.mark.parametrize("name", ["blur", "pixelate", "mask"])
def test_neighbouring_regions_do_not_repaint_each_other(photo: np.ndarray, name: str) -> None:
    """A small region whose padded crop reaches into a large one must not re-blur the large one's
    pixels with its own strength (that left hard-edged sub-rectangles of different strength)."""
    big, small = (100, 100, 300, 300), (306, 150, 326, 170)  # 6 px apart: two components
    opts = {"fill": "mean"} if name == "mask" else {}
    both = get_method(name)(photo, _two_box_mask(big, small), **opts)
    alone = get_method(name)(photo, _box_mask(512, 512, big), **opts)
    x0, y0, x1, y1 = big
    assert np.array_equal(both[y0:y1, x0:x1], alone[y0:y1, x0:x1])


def test_overlapping_regions_get_one_strength(photo: np.ndarray) -> None:
    """Overlapping boxes are one region: one sigma over their union, no seam where they overlap."""
    from privacy_cli.methods.blur import gaussian_blur

    mask = _two_box_mask((100, 100, 300, 300), (250, 250, 420, 400))
    out = get_method("blur")(photo, mask)
    # the union's box is 320 x 300: one sigma from its shorter side, everywhere in the union
    sigma = region_sigma(300)
    ref = gaussian_blur(photo[:, :], sigma)
    sel = mask > 0
    assert np.abs(out[sel].astype(int) - ref[sel].astype(int)).max() <= 2


def test_overlapping_regions_share_one_pixel_grid(photo: np.ndarray) -> None:
    mask = _two_box_mask((96, 96, 224, 224), (200, 200, 328, 328))
    out = get_method("pixelate")(photo, mask, block=16)
    # cells are aligned to the union's box (origin 96, 96): every in-mask cell is uniform
    for y in range(96, 328, 16):
        for x in range(96, 328, 16):
            if mask[y, x] > 0 and mask[y + 15, x + 15] > 0 and mask[y, x + 15] > 0 and mask[y + 15, x] > 0:
                cell = out[y : y + 16, x : x + 16].reshape(-1, 3)
                assert (cell == cell[0]).all(), (x, y)


def _text_line(h: int) -> Region:
    # a 30 degree rotated text line, 400 px long and h px high, centred at (256, 256)
    a = np.deg2rad(30)
    u, v = np.array([np.cos(a), -np.sin(a)]), np.array([np.sin(a), np.cos(a)])
    c = np.array([256.0, 256.0])
    pts = [c + sx * 200 * u + sy * h / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return Region("text", (min(xs), min(ys), max(xs), max(ys)), polygon=[tuple(p) for p in pts])


def test_text_line_height_ignores_rotation() -> None:
    from privacy_cli.methods.compose import text_line_height

    assert text_line_height(_text_line(40)) == pytest.approx(40, abs=1)


@pytest.mark.parametrize("name,option", [("blur", "radius"), ("pixelate", "block")])
def test_text_strength_follows_line_height_and_warns_when_too_weak(
    photo: np.ndarray, name: str, option: str
) -> None:
    from privacy_cli.methods.blur import text_sigma
    from privacy_cli.methods.compose import call_method
    from privacy_cli.methods.pixelate import text_block

    line = _text_line(40)
    regs = Regions((512, 512), [line])
    mask = regs.to_mask()
    as_text = call_method(get_method(name), photo, mask, regs)
    as_box = get_method(name)(photo, mask)  # same pixels, not known to be text
    default = text_sigma(40) if name == "blur" else text_block(40)
    exact = call_method(get_method(name), photo, mask, regs, **{option: default})
    assert isinstance(as_text, np.ndarray) and np.array_equal(as_text, exact)
    assert not np.array_equal(as_text, as_box)
    # an explicit weak setting is applied as given, with a warning (no text in it: none is known)
    weak = call_method(get_method(name), photo, mask, regs, **{option: 2})
    assert (
        isinstance(weak, tuple) and "readable" in weak[1]["warning"] and f"--{option} 2" in weak[1]["warning"]
    )
    assert np.array_equal(weak[0], get_method(name)(photo, mask, **{option: 2}))
    strong = call_method(get_method(name), photo, mask, regs, **{option: default})
    assert isinstance(strong, np.ndarray)
    # faces keep their own scaling
    face = Regions((512, 512), [Region("face", (100, 100, 300, 300))])
    fmask = face.to_mask()
    assert np.array_equal(call_method(get_method(name), photo, fmask, face), get_method(name)(photo, fmask))


def test_cli_record_warns_when_radius_leaves_text_readable(tmp_path) -> None:  # noqa: ANN001
    """An explicit --radius/--block below what a text line needs is applied, with a warning field in
    the image's JSON record (estimated from the line height; no OCR runs, no text is printed)."""
    import json

    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    img = tmp_path / "card.png"
    Image.fromarray(np.full((120, 400, 3), 230, np.uint8)).save(img)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"kind": "text", "box": [20, 30, 380, 90]}]))  # a 60 px line
    runner = CliRunner()
    for cmd, weak, strong in (
        ("blur", ["--radius", "4"], ["--radius", "30"]),
        ("pixelate", ["--block", "6"], []),
    ):
        for opts, warned in ((weak, True), (strong, False)):
            r = runner.invoke(
                app,
                [
                    cmd,
                    str(img),
                    "--boxes",
                    str(boxes),
                    "-o",
                    str(tmp_path / f"o_{cmd}.png"),
                    "--json",
                    "--overwrite",
                    *opts,
                ],
            )
            assert r.exit_code == 0, r.output
            rec = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("{")))
            assert ("warning" in rec) == warned, rec
            if warned:
                assert "1 of 1 text region" in rec["warning"] and "readable" in rec["warning"]

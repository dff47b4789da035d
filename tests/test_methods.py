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

"""Gaussian blur of the sensitive regions (the papers' "Blur" baseline)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import register_method
from .compose import check_inputs, composite, labelled_components, own_mask, padded, readability_warning

#: default sigma as a fraction of a region's shorter side (see docs/performance.md for the
#: measurement that set it: dlib no longer matches the identity on blurred faces).
DEFAULT_SIGMA_FRACTION = 0.16
MIN_SIGMA = 3.0
#: default sigma for text as a fraction of the text line's height (docs/methods.md, "Text"): at
#: this strength Tesseract reads back none of the generated personal strings, also from crops
#: upscaled 2x and sharpened.
TEXT_SIGMA_FRACTION = 0.5
#: below this fraction of the line height, blurred text was read back by Tesseract in the
#: measurement (docs/methods.md): an explicit ``--radius`` under it triggers a warning.
TEXT_READABLE_FRACTION = 0.3


def region_sigma(size: int, fraction: float = DEFAULT_SIGMA_FRACTION) -> float:
    """Default Gaussian sigma (pixels) for a region whose shorter side is ``size`` pixels."""
    return max(MIN_SIGMA, fraction * float(size))


def text_sigma(line_height: float, fraction: float = TEXT_SIGMA_FRACTION) -> float:
    """Default Gaussian sigma (pixels) for a text line ``line_height`` pixels high (0 for no text)."""
    return max(MIN_SIGMA, fraction * float(line_height)) if line_height > 0 else 0.0


#: above this sigma the blur runs on a downscaled copy (same look, cost independent of sigma)
EXACT_MAX_SIGMA = 12.0


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``image`` (h,w,3) uint8 with standard deviation ``sigma`` pixels.

    Up to :data:`EXACT_MAX_SIGMA` the exact separable Gaussian (reflected border). Beyond it the
    image is area-downscaled so the remaining blur is ~4 px, blurred there and upscaled bilinearly:
    the result is as smooth (nothing of the detail survives the downscale), and a face-sized sigma
    of 100+ px costs milliseconds instead of seconds.
    """
    import cv2

    if sigma <= EXACT_MAX_SIGMA:
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    h, w = image.shape[:2]
    factor = sigma / 4.0
    sw, sh = max(1, int(round(w / factor))), max(1, int(round(h / factor)))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=4.0, sigmaY=4.0, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class _Shifted:
    """A region seen from a crop whose top-left corner is (ox, oy): box shifted, all else (polygon,
    kind, so the text line height) unchanged."""

    def __init__(self, region: object, ox: int, oy: int) -> None:
        self._r = region
        x0, y0, x1, y1 = region.box  # type: ignore[attr-defined]
        self.box = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)

    def __getattr__(self, name: str) -> object:
        return getattr(self._r, name)


@register_method(
    "blur", "Gaussian blur; strength scales with region size (text: with its line height) unless --radius"
)
def blur(
    image: np.ndarray,
    mask: np.ndarray,
    radius: float | None = None,
    strength: float = 1.0,
    regions: Iterable[object] | None = None,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Blur ``image`` (H,W,3) uint8 where ``mask`` (H,W) [0,1] is set.

    Each connected component of the mask (overlapping regions merge into one) is blurred with one
    sigma and composited over its own pixels only.

    radius: Gaussian standard deviation in pixels, as Pillow's ``GaussianBlur(radius)`` (the
    papers' baseline is 8). None: per component, ``strength * max(3, 0.16 * shorter side)`` (a face
    is blurred in proportion to its size); where ``regions`` says a component is text lines, the
    tallest ``h`` pixels high, ``strength * max(3, 0.5 * h)`` instead (text is blurred in proportion
    to its glyphs; a component holding a face and text gets the larger of the two).
    regions: the :class:`~privacy_cli.regions.Region` objects the mask was made from (optional).
    Returns the image, or ``(image, {"warning": ...})`` when an explicit radius is below
    ``0.3 x`` the height of some text line (text then likely stays readable).
    """

    import cv2

    image, mask = check_inputs(image, mask)
    if radius is not None and radius < 0:
        raise ValueError("radius must be >= 0")
    out = image.copy()
    # components are labelled inside the box around the mask only (faces cover a small part of a
    # photo; labelling and compositing the whole photo cost more than the blur itself)
    ox, oy, ow, oh = cv2.boundingRect((mask > 0).view(np.uint8))
    if ow == 0 or oh == 0:
        return out
    sub = mask[oy : oy + oh, ox : ox + ow]
    shifted = None if regions is None else [_Shifted(r, ox, oy) for r in regions]
    labels, comps = labelled_components(sub, shifted)
    for comp in comps:
        comp.x0, comp.x1, comp.y0, comp.y1 = comp.x0 + ox, comp.x1 + ox, comp.y0 + oy, comp.y1 + oy
        if radius is not None:
            sigma = float(radius)
        else:
            size_sigma = region_sigma(comp.size) if comp.other or not comp.text_height else 0.0
            sigma = strength * max(size_sigma, text_sigma(comp.text_height))
        if sigma <= 0:
            continue
        pad = int(np.ceil(3 * sigma)) + 1
        box = padded(comp, pad, image.shape)
        x0, y0, x1, y1 = box
        blurred = gaussian_blur(image[y0:y1, x0:x1], sigma)
        # composite over the component's own box: its mask is zero beyond it
        cx0, cy0, cx1, cy1 = comp.x0, comp.y0, comp.x1, comp.y1
        own = own_mask(sub, labels, comp, (cx0 - ox, cy0 - oy, cx1 - ox, cy1 - oy))
        part = blurred[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        out[cy0:cy1, cx0:cx1] = composite(out[cy0:cy1, cx0:cx1], part, own)
    if radius is not None:
        warning = readability_warning(
            comps,
            lambda h: float(radius) < TEXT_READABLE_FRACTION * h,
            f"--radius {radius:g}",
            lambda h: f"--radius {text_sigma(h):.0f}",
        )
        if warning:
            return out, {"warning": warning}
    return out

"""Gaussian blur of the sensitive regions (the papers' "Blur" baseline)."""

from __future__ import annotations

import numpy as np

from . import register_method
from .compose import check_inputs, components, composite, padded

#: default sigma as a fraction of a region's shorter side (see docs/performance.md for the
#: measurement that set it: dlib no longer matches the identity on blurred faces).
DEFAULT_SIGMA_FRACTION = 0.16
MIN_SIGMA = 3.0


def region_sigma(size: int, fraction: float = DEFAULT_SIGMA_FRACTION) -> float:
    """Default Gaussian sigma (pixels) for a region whose shorter side is ``size`` pixels."""
    return max(MIN_SIGMA, fraction * float(size))


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


@register_method("blur", "Gaussian blur; strength scales with region size unless --radius is given")
def blur(
    image: np.ndarray, mask: np.ndarray, radius: float | None = None, strength: float = 1.0
) -> np.ndarray:
    """Blur ``image`` (H,W,3) uint8 where ``mask`` (H,W) [0,1] is set.

    radius: Gaussian standard deviation in pixels, as Pillow's ``GaussianBlur(radius)`` (the
    papers' baseline is radius 8). None: per region, ``strength * max(3, 0.16 * shorter side)``,
    so a face is blurred in proportion to its size.
    """

    image, mask = check_inputs(image, mask)
    if radius is not None and radius < 0:
        raise ValueError("radius must be >= 0")
    out = image.copy()
    for comp in components(mask):
        sigma = float(radius) if radius is not None else strength * region_sigma(comp.size)
        if sigma <= 0:
            continue
        pad = int(np.ceil(3 * sigma)) + 1
        x0, y0, x1, y1 = padded(comp, pad, image.shape)
        crop = image[y0:y1, x0:x1]
        blurred = gaussian_blur(crop, sigma)
        out[y0:y1, x0:x1] = composite(out[y0:y1, x0:x1], blurred, mask[y0:y1, x0:x1])
    return out

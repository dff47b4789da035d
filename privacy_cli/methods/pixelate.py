"""Pixelation (mosaic) of the sensitive regions."""

from __future__ import annotations

import numpy as np

from . import register_method
from .compose import check_inputs, components, composite

#: default block size as a fraction of a region's shorter side: about 8 blocks across a face.
DEFAULT_BLOCK_FRACTION = 1 / 8
MIN_BLOCK = 4


def region_block(size: int, fraction: float = DEFAULT_BLOCK_FRACTION) -> int:
    """Default mosaic block size (pixels) for a region whose shorter side is ``size`` pixels."""
    return max(MIN_BLOCK, int(round(fraction * size)))


@register_method("pixelate", "mosaic with --block pixels (default: about 8 blocks across a region)")
def pixelate(image: np.ndarray, mask: np.ndarray, block: int | None = None) -> np.ndarray:
    """Replace each ``block`` x ``block`` cell of the regions by its mean colour.

    image (H,W,3) uint8, mask (H,W) [0,1]. block: cell size in pixels; None = per region
    ``max(4, shorter side / 8)``. Cells are aligned to the region's box, so each region gets whole cells.
    """
    import cv2

    image, mask = check_inputs(image, mask)
    if block is not None and block < 1:
        raise ValueError("block must be >= 1")
    out = image.copy()
    for comp in components(mask):
        b = int(block) if block is not None else region_block(comp.size)
        x0, y0 = comp.x0, comp.y0
        w, h = comp.x1 - x0, comp.y1 - y0
        nx, ny = max(1, int(np.ceil(w / b))), max(1, int(np.ceil(h / b)))
        x1, y1 = min(image.shape[1], x0 + nx * b), min(image.shape[0], y0 + ny * b)
        crop = image[y0:y1, x0:x1]
        small = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_AREA)
        big = cv2.resize(small, (nx * b, ny * b), interpolation=cv2.INTER_NEAREST)[: y1 - y0, : x1 - x0]
        out[y0:y1, x0:x1] = composite(out[y0:y1, x0:x1], big, mask[y0:y1, x0:x1])
    return out

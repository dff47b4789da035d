"""Pixelation (mosaic) of the sensitive regions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import register_method
from .compose import check_inputs, composite, labelled_components, own_mask, readability_warning

#: default block size as a fraction of a region's shorter side: about 8 blocks across a face.
DEFAULT_BLOCK_FRACTION = 1 / 8
MIN_BLOCK = 4
#: default cell size for text as a fraction of the text line's height (docs/methods.md, "Text"):
#: with cells this big Tesseract reads back none of the generated personal strings.
TEXT_BLOCK_FRACTION = 0.5
#: smaller cells than this fraction of the line height left text readable in the measurement:
#: an explicit ``--block`` under it triggers a warning.
TEXT_READABLE_FRACTION = 0.3


def region_block(size: int, fraction: float = DEFAULT_BLOCK_FRACTION) -> int:
    """Default mosaic block size (pixels) for a region whose shorter side is ``size`` pixels."""
    return max(MIN_BLOCK, int(round(fraction * size)))


def text_block(line_height: float, fraction: float = TEXT_BLOCK_FRACTION) -> int:
    """Default mosaic cell size (pixels) for a text line ``line_height`` pixels high (0 for no text)."""
    return max(MIN_BLOCK, int(np.ceil(fraction * line_height))) if line_height > 0 else 0


@register_method(
    "pixelate", "mosaic with --block pixels (default: about 8 blocks across a region, 2 per text line)"
)
def pixelate(
    image: np.ndarray, mask: np.ndarray, block: int | None = None, regions: Iterable[object] | None = None
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Replace each ``block`` x ``block`` cell of the regions by its mean colour.

    image (H,W,3) uint8, mask (H,W) [0,1]. block: cell size in pixels; None = per connected
    component of the mask ``max(4, shorter side / 8)``; where ``regions`` says a component is
    text lines, the tallest ``h`` pixels high, ``max(4, 0.5 * h)`` instead (two cells per line
    height: no glyph keeps its strokes; a component holding a face and text gets the larger). Cells are aligned to the component's box, so each component gets whole cells, and a
    component is composited over its own pixels only (overlapping regions get one grid).
    Returns the image, or ``(image, {"warning": ...})`` when an explicit block is below
    ``0.3 x`` the height of some text line (text then likely stays readable).
    """
    import cv2

    image, mask = check_inputs(image, mask)
    if block is not None and block < 1:
        raise ValueError("block must be >= 1")
    out = image.copy()
    labels, comps = labelled_components(mask, regions)
    for comp in comps:
        if block is not None:
            b = int(block)
        else:
            size_block = region_block(comp.size) if comp.other or not comp.text_height else 0
            b = max(size_block, text_block(comp.text_height))
        x0, y0 = comp.x0, comp.y0
        w, h = comp.x1 - x0, comp.y1 - y0
        nx, ny = max(1, int(np.ceil(w / b))), max(1, int(np.ceil(h / b)))
        x1, y1 = min(image.shape[1], x0 + nx * b), min(image.shape[0], y0 + ny * b)
        crop = image[y0:y1, x0:x1]
        small = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_AREA)
        big = cv2.resize(small, (nx * b, ny * b), interpolation=cv2.INTER_NEAREST)[: y1 - y0, : x1 - x0]
        box = (x0, y0, x1, y1)
        out[y0:y1, x0:x1] = composite(out[y0:y1, x0:x1], big, own_mask(mask, labels, comp, box))
    if block is not None:
        warning = readability_warning(
            comps,
            lambda h: block < TEXT_READABLE_FRACTION * h,
            f"--block {block}",
            lambda h: f"--block {text_block(h)}",
        )
        if warning:
            return out, {"warning": warning}
    return out

"""Solid fill of the sensitive regions (the papers' "Mask" baseline)."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UsageError
from . import register_method
from .compose import check_inputs, composite, labelled_components

FILLS = ("black", "white", "mean")


def parse_fill(fill: str) -> str | tuple[int, int, int]:
    """``black|white|mean|#rrggbb`` -> a colour tuple or ``"mean"`` (UsageError otherwise)."""
    f = fill.strip().lower()
    if f == "black":
        return (0, 0, 0)
    if f == "white":
        return (255, 255, 255)
    if f == "mean":
        return "mean"
    if re.fullmatch(r"#?[0-9a-f]{6}", f):
        h = f.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    raise UsageError(f"--fill {fill!r}: use black, white, mean or #rrggbb")


@register_method("mask", "fill regions with black, white, their mean colour or #rrggbb")
def fill(
    image: np.ndarray,
    mask: np.ndarray,
    fill: str = "black",
    regions: object = None,
    learned: str | None = None,
    keep: float | None = None,
    soft: bool = False,
    save_mask: str | None = None,
    device: str = "auto",
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Fill the regions of ``image`` (H,W,3) uint8 where ``mask`` (H,W) [0,1] is set.

    fill: "black", "white", "mean" (each connected region gets its own mean colour; overlapping
    regions are one region) or "#rrggbb". A solid fill leaves no glyph at any text size, so it
    needs no per-region strength (``regions`` is accepted and unused).
    learned: a ``privpix train mask`` run folder: reveal only its top ``keep`` percent task pixels
    and fill everything else (see :mod:`privacy_cli.methods.learned_mask`; returns (image, info)).
    """
    if learned is not None:
        from .learned_mask import apply_learned

        return apply_learned(image, mask, learned, keep, soft, fill, save_mask, device)
    image, mask = check_inputs(image, mask)
    colour = parse_fill(fill)
    solid = np.empty_like(image)
    if colour == "mean":
        solid[:] = image
        labels, comps = labelled_components(mask)
        for comp in comps:
            sl = (slice(comp.y0, comp.y1), slice(comp.x0, comp.x1))
            sel = labels[sl] == comp.label
            if sel.any():
                solid[sl][sel] = np.round(image[sl][sel].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    else:
        solid[:] = np.asarray(colour, np.uint8)
    return composite(image, solid, mask)

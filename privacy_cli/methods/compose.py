"""Helpers shared by the classical methods: compositing, per-region iteration and per-region strength.

A method works on the connected components of the mask: regions that overlap or touch form one
component and get one strength (the strongest any of them needs), and each component is composited
only over its own pixels, so overlapping boxes never leave hard-edged sub-rectangles of different
strength. Text regions tell a method their line height (:func:`text_line_height`), which is the
scale that decides whether glyphs stay readable; other regions are scaled by the component's size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import RegionError


def check_inputs(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``image`` (H,W,3) uint8 and ``mask`` (H,W) in [0,1]; returns them (mask as float32)."""
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H,W,3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise RegionError(
            f"mask size {mask.shape[1]}x{mask.shape[0]} does not match image size {image.shape[1]}x{image.shape[0]}"
        )
    return image, np.clip(mask, 0.0, 1.0)


def composite(image: np.ndarray, processed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image*(1-mask) + processed*mask``, rounded to uint8; exactly ``image`` where mask == 0."""
    full = mask >= 1.0
    soft = (mask > 0) & ~full
    out = image.copy()
    np.copyto(out, processed, where=full[..., None])
    if soft.any():  # blend only the soft edge pixels
        m = mask[soft][:, None]
        blend = image[soft].astype(np.float32) * (1.0 - m) + processed[soft].astype(np.float32) * m
        out[soft] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out


@dataclass
class Component:
    """One connected region of a mask: bounding box (x0, y0, x1, y1), x1/y1 exclusive; ``label`` is
    its value in the label image of :func:`labelled_components`; ``text_height`` the line height
    (pixels) of the tallest text region in it, 0 when it holds no text region; ``other`` whether it
    holds anything but text (or nothing is known about it)."""

    x0: int
    y0: int
    x1: int
    y1: int
    label: int = 0
    text_height: float = 0.0
    #: False when every region in the component is text (it then needs no size-based strength)
    other: bool = True

    @property
    def size(self) -> int:
        """The region's characteristic size in pixels: the shorter side of its box."""
        return max(1, min(self.x1 - self.x0, self.y1 - self.y0))


def components(mask: np.ndarray) -> Iterator[Component]:
    """Connected components (8-connected) of ``mask > 0``."""
    yield from labelled_components(mask)[1]


def labelled_components(
    mask: np.ndarray, regions: Iterable[object] | None = None
) -> tuple[np.ndarray, list[Component]]:
    """Label image (H, W) int32 (0 = outside) and the 8-connected components of ``mask > 0``.

    regions: optional :class:`~privacy_cli.regions.Region` objects the mask was made from; every
    component a region of kind "text" touches gets ``text_height`` = the largest line height of
    those text regions, and ``other=False`` when only text regions touch it (a component may hold a
    face and a text line: it then needs both strengths).
    """
    import cv2

    m = (mask > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    comps = []
    for i in range(1, n):
        x, y, w, h, _a = stats[i]
        comps.append(Component(int(x), int(y), int(x + w), int(y + h), label=i))
    if regions is not None and comps:
        hh, ww = labels.shape
        touched = np.zeros(len(comps), bool)
        for r in regions:
            is_text = getattr(r, "kind", None) == "text"
            th = text_line_height(r) if is_text else 0.0
            x0, y0, x1, y1 = r.box  # type: ignore[attr-defined]
            xi0, yi0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            xi1, yi1 = min(ww, int(np.ceil(x1))), min(hh, int(np.ceil(y1)))
            if xi1 <= xi0 or yi1 <= yi0:
                continue
            for lab in np.unique(labels[yi0:yi1, xi0:xi1]):
                if lab > 0:
                    c = comps[int(lab) - 1]
                    if touched[lab - 1]:
                        c.other = c.other or not is_text
                    else:
                        c.other = not is_text
                    touched[lab - 1] = True
                    c.text_height = max(c.text_height, th)
    return labels, comps


def text_line_height(region: object) -> float:
    """Height (pixels) of a text region's line: the shorter side of the minimum-area rectangle around
    its polygon (rotation-free), or of its box. For PP-OCR lines this is about 1.5x the font size."""
    import cv2

    poly = getattr(region, "polygon", None)
    if poly is not None and len(poly) >= 3:
        (_cx, _cy), (w, h), _a = cv2.minAreaRect(np.asarray(poly, np.float32))
        return float(max(1.0, min(w, h)))
    x0, y0, x1, y1 = region.box  # type: ignore[attr-defined]
    return float(max(1.0, min(x1 - x0, y1 - y0)))


def own_mask(
    mask: np.ndarray, labels: np.ndarray, comp: Component, box: tuple[int, int, int, int]
) -> np.ndarray:
    """``mask`` cropped to ``box`` (x0, y0, x1, y1), zero outside component ``comp`` (so a component is
    composited over its own pixels only, never over a neighbour's)."""
    x0, y0, x1, y1 = box
    sub = mask[y0:y1, x0:x1]
    return np.where(labels[y0:y1, x0:x1] == comp.label, sub, 0.0).astype(np.float32)


def call_method(
    fn: Callable[..., np.ndarray], image: np.ndarray, mask: np.ndarray, regions: object = None, **opts: object
) -> object:
    """``fn(image, mask, **opts)``, also passing ``regions=`` when ``fn`` takes it (blur, pixelate and
    mask use the regions' kinds to scale text by its glyph size)."""
    if regions is not None:
        try:
            takes = "regions" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes = False
        if takes:
            opts["regions"] = regions
    return fn(image, mask, **opts)


def padded(c: Component, pad: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return max(0, c.x0 - pad), max(0, c.y0 - pad), min(w, c.x1 + pad), min(h, c.y1 + pad)


def readability_warning(
    comps: list[Component],
    readable: Callable[[float], bool],
    setting: str,
    needed: Callable[[float], str],
) -> str | None:
    """One line saying how many text components an explicit ``setting`` likely leaves readable.

    readable(h): whether the setting leaves a text line ``h`` pixels high readable (an estimate from
    the glyph size, measured with Tesseract; no OCR is run). needed(h): the setting that line needs.
    None when no text component is at risk. The message never contains the text itself.
    """
    texts = [c for c in comps if c.text_height > 0]
    risky = [c for c in texts if readable(c.text_height)]
    if not risky:
        return None
    tallest = max(c.text_height for c in risky)
    return (
        f"{setting} likely leaves {len(risky)} of {len(texts)} text region(s) readable "
        f"(estimated from glyph size; lines {tallest:.0f} px high need {needed(tallest)}; "
        "omit the option to scale it per line)"
    )

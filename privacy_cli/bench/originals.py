"""Bench inputs: each original image (loaded, downscaled to the bench size) with its regions and mask."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..regions import Region, Regions
from .cache import _h
from .datasets import BenchItem
from .results import BenchConfig

# ----------------------------------------------------------------------------------------- per item


@dataclass
class _Original:
    """One dataset item prepared once and shared by every method (decoded lazily, released after use)."""

    item: BenchItem
    file_hash: str
    max_side: int
    regions: Regions | None = None
    regions_sig: str = ""
    mask: np.ndarray | None = None
    #: (w, h) after downscaling, and of the file, once decoded
    size: tuple[int, int] | None = None
    full_size: tuple[int, int] | None = None
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """Content key of the prepared original (file content + downscaling)."""
        return _h("orig", self.file_hash, self.max_side)

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, EXIF orientation applied, longer side <= max_side."""
        if self._rgb is None:
            self._rgb, self.full_size = _load_resized(self.item.image, self.max_side)
            h, w = self._rgb.shape[:2]
            self.size = (w, h)
        return self._rgb

    def release(self) -> None:
        """Forget the decoded pixels and the mask (regions and sizes are kept)."""
        self._rgb = None
        self.mask = None


def _load_resized(
    path: Path, max_side: int, like: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` (EXIF orientation applied) and downscale it so the longer side is at most
    ``max_side`` (INTER_AREA; 0 = native), or to exactly ``like = (w, h)``. Returns (rgb (H, W, 3)
    uint8, the decoded (w, h) before downscaling)."""
    import cv2

    from ..io import load_image

    rgb = load_image(path).rgb
    h, w = rgb.shape[:2]
    if like is not None:
        if (w, h) == like:
            return rgb, (w, h)
        return cv2.resize(rgb, like, interpolation=cv2.INTER_AREA), (w, h)
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), (w, h)
    return rgb, (w, h)


def _scale_regions(regions: Regions, sx: float, sy: float, size: tuple[int, int]) -> Regions:
    """Regions in pixels of an image scaled by (sx, sy) to ``size`` = (w, h)."""
    import cv2

    out = []
    for r in regions:
        raster = None
        if r.raster is not None:
            raster = cv2.resize(r.raster.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        poly = [(x * sx, y * sy) for x, y in r.polygon] if r.polygon is not None else None
        box = (r.box[0] * sx, r.box[1] * sy, r.box[2] * sx, r.box[3] * sy)
        out.append(Region(r.kind, box, poly, r.score, r.label, r.category, raster))
    return Regions(size, out)


def _regions_from_json(data: list[dict], size: tuple[int, int]) -> Regions:
    items = []
    for d in data:
        poly = [tuple(p) for p in d["polygon"]] if d.get("polygon") else None
        items.append(
            Region(d["kind"], tuple(d["box"]), poly, d.get("score", 1.0), d.get("label"), d.get("category"))
        )
    return Regions(size, items)


def _mask_for(regions: Regions, config: BenchConfig) -> np.ndarray:
    """(H, W) float32 mask with the image commands' geometry (face boxes scaled by box_scale)."""
    try:
        from ..pipeline import TEXT_SCALE
    except ImportError:  # pragma: no cover - pipeline always present in a full install
        TEXT_SCALE = None
    kw: dict[str, Any] = {"face_scale": config.box_scale, "dilate": config.dilate}
    if TEXT_SCALE is not None and "text_scale" in inspect.signature(regions.to_mask).parameters:
        kw["text_scale"] = TEXT_SCALE
    return regions.to_mask(**kw)

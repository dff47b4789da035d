"""Helpers shared by the classical methods: compositing and per-region iteration."""

from __future__ import annotations

from collections.abc import Iterator
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
    """One connected region of a mask: bounding box (x0, y0, x1, y1), x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> int:
        """The region's characteristic size in pixels: the shorter side of its box."""
        return max(1, min(self.x1 - self.x0, self.y1 - self.y0))


def components(mask: np.ndarray) -> Iterator[Component]:
    """Connected components (8-connected) of ``mask > 0``."""
    import cv2

    m = (mask > 0).astype(np.uint8)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    for i in range(1, n):
        x, y, w, h, _a = stats[i]
        yield Component(int(x), int(y), int(x + w), int(y + h))


def padded(c: Component, pad: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return max(0, c.x0 - pad), max(0, c.y0 - pad), min(w, c.x1 + pad), min(h, c.y1 + pad)

"""The Python API: the CLI's methods as functions on PIL images or NumPy arrays.

Each function takes an image (PIL image, or NumPy ``(H,W,3)``/``(H,W)`` uint8 or float in [0,1]) and
where to act - a :class:`~privacy_cli.regions.Regions`, a list of Region, a mask array ``(H,W)``
(non-zero = sensitive), boxes ``[(x0,y0,x1,y1), ...]`` - or ``None`` to detect faces and personal
text automatically. It returns the same kind of object it was given (PIL in, PIL out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .io import LoadedImage, from_array, to_pil
from .pipeline import DEFAULT_BOX_SCALE, DEFAULT_DETECT, TEXT_SCALE
from .regions import Region, Regions

RegionsLike = Regions | Sequence[Region] | Sequence[Sequence[float]] | np.ndarray | None


def as_mask(
    image: LoadedImage,
    regions: RegionsLike,
    detect: Sequence[str] = DEFAULT_DETECT,
    box_scale: float = DEFAULT_BOX_SCALE,
    dilate: int = 0,
    feather: float = 0.0,
    **detect_opts: Any,
) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] for ``regions`` (see module docstring) on ``image``."""
    return _mask_and_regions(image, regions, detect, box_scale, dilate, feather, **detect_opts)[0]


def _mask_and_regions(
    image: LoadedImage,
    regions: RegionsLike,
    detect: Sequence[str] = DEFAULT_DETECT,
    box_scale: float = DEFAULT_BOX_SCALE,
    dilate: int = 0,
    feather: float = 0.0,
    **detect_opts: Any,
) -> tuple[np.ndarray, Regions | None]:
    """The mask of :func:`as_mask` and the Regions it was made from (None for a mask array)."""
    w, h = image.size
    if regions is None:
        from .detect import detect as run_detect

        regs = run_detect(image.rgb, kinds=tuple(detect), **detect_opts)
    elif isinstance(regions, Regions):
        regs = regions
    elif isinstance(regions, np.ndarray) and regions.ndim == 2 and regions.shape == (h, w):
        m = regions.astype(np.float32)
        if m.max() > 1.0:
            m = m / 255.0 if m.max() <= 255 else (m > 0).astype(np.float32)
        return (np.clip(m, 0.0, 1.0) if dilate == 0 and feather == 0 else _grow(m, dilate, feather)), None
    else:
        items: list[Region] = []
        for r in regions:
            if isinstance(r, Region):
                items.append(r)
            else:
                x0, y0, x1, y1 = (float(v) for v in r)
                items.append(Region("box", (x0, y0, x1, y1)))
        regs = Regions((w, h), items)
    return regs.to_mask(face_scale=box_scale, text_scale=TEXT_SCALE, dilate=dilate, feather=feather), regs


def _grow(mask: np.ndarray, dilate: int, feather: float) -> np.ndarray:
    from .regions import regions_from_mask

    return Regions((mask.shape[1], mask.shape[0]), regions_from_mask(mask > 0)).to_mask(
        dilate=dilate, feather=feather
    )


def _run(method: str, image: Any, regions: RegionsLike, geometry: dict, **opts: Any) -> Any:
    from .methods import get_method
    from .methods.compose import call_method

    loaded = from_array(image)
    mask, regs = _mask_and_regions(loaded, regions, **geometry)
    out = call_method(get_method(method), loaded.rgb, mask, regs, **opts) if mask.any() else loaded.rgb
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(image, Image.Image):
        return to_pil(out, loaded, mask > 0)
    if isinstance(image, np.ndarray) and image.ndim == 2:
        return np.asarray(Image.fromarray(out).convert("L"))
    return out


def blur(image: Any, regions: RegionsLike = None, radius: float | None = None, **geometry: Any) -> Any:
    """Gaussian-blur the regions; ``radius`` = sigma in pixels (None: scaled to each region)."""
    return _run("blur", image, regions, geometry, radius=radius)


def pixelate(image: Any, regions: RegionsLike = None, block: int | None = None, **geometry: Any) -> Any:
    """Mosaic the regions with ``block``-pixel cells (None: about 8 cells across each region)."""
    return _run("pixelate", image, regions, geometry, block=block)


def fill(image: Any, regions: RegionsLike = None, fill: str = "black", **geometry: Any) -> Any:
    """Fill the regions with black, white, their mean colour or ``#rrggbb``."""
    return _run("mask", image, regions, geometry, fill=fill)


def erase(image: Any, regions: RegionsLike = None, model: str = "auto", **geometry_and_opts: Any) -> Any:
    """Inpaint the regions with different, natural content (ERASER / LaMa / OpenCV; see ``privpix erase``)."""
    geo = {
        k: geometry_and_opts.pop(k)
        for k in ("detect", "box_scale", "dilate", "feather")
        if k in geometry_and_opts
    }
    return _run("erase", image, regions, geo, model=model, **geometry_and_opts)


def detect(image: Any, kinds: Sequence[str] = DEFAULT_DETECT, **opts: Any) -> Regions:
    """Detect sensitive elements (faces, text with PII categories, ...) -> Regions in image pixels."""
    from .detect import detect as run_detect

    return run_detect(from_array(image).rgb, kinds=tuple(kinds), **opts)

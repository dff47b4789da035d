"""Erase: fill sensitive regions with natural content that differs from what was there.

Models (``model=``):

- ``eraser``: ERASER (paper 000) - Prior Transformer priors + prior fusion + LaMa's FFC generator,
  from an ERASER checkpoint (``privpix train eraser``) or, without one, big-lama weights with the
  identity fusion and the coarse prior (then numerically LaMa).
- ``big-lama``: LaMa big-lama (Fast Fourier Convolutions), published weights.
- ``migan``: MI-GAN (small, fast; ONNX).
- ``telea`` / ``ns``: OpenCV's classical inpainting (Telea 2004 / Navier-Stokes), no weights.
- ``auto``: the best of these whose weights are present locally (never downloads), so it runs offline.

Large photos: each region is processed in a context crop (``context`` x the region's size) at the
model's working resolution (``work_size``) and pasted back, so a face in a 24-megapixel photo costs
about what a 512x512 image costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MethodError, UsageError, WeightsError
from . import register_method
from .compose import Component, check_inputs, components, composite

MODELS = ("auto", "eraser", "big-lama", "migan", "telea", "ns")
#: order in which ``auto`` picks a model (first whose weights are present)
AUTO_ORDER = ("eraser", "big-lama", "migan", "telea")
CLASSICAL = ("telea", "ns")

InpaintFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fn(rgb (h,w,3) uint8, hole (h,w) bool) -> (h,w,3) uint8`` for one crop."""


@dataclass
class Inpainter:
    """A loaded inpainting model: ``fn`` works on one crop at ``work_size`` (None = any size)."""

    name: str
    fn: InpaintFn
    work_size: int | None
    device: str = "cpu"
    load_seconds: float = 0.0


_CACHE: dict[tuple, Inpainter] = {}
_LOCK = threading.Lock()


def _classical(flag_name: str) -> Inpainter:
    import cv2

    flag = cv2.INPAINT_TELEA if flag_name == "telea" else cv2.INPAINT_NS

    def fn(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        # cost grows with hole area x radius^2: run at <= 384 px with a small radius
        return cv2.inpaint(np.ascontiguousarray(rgb), hole.astype(np.uint8) * 255, 5, flag)

    return Inpainter(flag_name, fn, 384)


def torch_inpainter(
    name: str, module: Any, device: str, call: Callable[..., Any] | None = None, batchable: bool = False
) -> Inpainter:
    """Wrap a torch inpainting module: ``call(module, image (B,3,h,w) [0,1], mask (B,1,h,w) {0,1})``
    returns the composited ``(B,3,h,w)`` in [0,1] (default: ``lama_inpaint``). Runs in float32 (LaMa's
    Fourier convolutions need it). ``batchable``: each sample's output depends on that sample only,
    so crops of equal size from the images computed together run in one forward pass (on CUDA;
    :func:`privacy_cli.engines.batching.forward`)."""
    import torch

    from ..engines.batching import forward

    if call is None:
        from ..models.lama import lama_inpaint

        call = lama_inpaint

    def run(img: Any, m: Any) -> Any:
        with torch.inference_mode():
            return call(module, img, m)

    key = (name, id(module)) if batchable else None

    def fn(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255).to(device)
        m = torch.from_numpy(hole.astype(np.float32))[None, None].to(device)
        out = forward(key, run, img, m)
        arr = out[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().cpu().numpy()
        return arr

    return Inpainter(name, fn, 512, device)


def _eraser_call(module: Any, img: Any, m: Any) -> Any:
    return module(img, m)


def weights_present(name: str) -> bool:
    """True when a checkpoint for registry model ``name`` (or one of its alternatives) is present
    locally: weights dir or Hugging Face cache. Never downloads, never hashes."""
    try:
        from ..weights import get_weights, locate

        # the erase models' weights entries carry their names: no model registry (torch) import here
        entry = get_weights(_WEIGHTS_OF.get(name) or _model_weights(name))
        cands = [entry, *(get_weights(a) for a in getattr(entry, "alternatives", ()))]
        return any(locate(c) is not None for c in cands)
    except (WeightsError, UsageError, ImportError, KeyError):
        return False


#: weights entry of each learned erase model (as registered in models/)
_WEIGHTS_OF = {"eraser": "eraser", "big-lama": "big-lama", "migan": "migan"}


def _model_weights(name: str) -> str:
    from ..models import get_entry

    return get_entry(name).weights or name


def choose_model(model: str) -> str:
    """Resolve ``auto`` to the best model whose weights are present; validate other names."""
    if model not in MODELS:
        raise UsageError(f"--model {model!r}: use one of {', '.join(MODELS)}")
    if model != "auto":
        return model
    # AUTO_ORDER ends with a classical model, which needs no weights
    return next(c for c in AUTO_ORDER if c in CLASSICAL or weights_present(c))


def load_inpainter(model: str, device: str = "cpu") -> Inpainter:
    """The inpainter for a concrete model name, loaded once per (model, device) per process.

    Raises WeightsError (with the fetch/import command) when a learned model's weights are missing.
    """
    if model not in CLASSICAL:
        from ..runtime import resolve_device

        device = resolve_device(device)
    key = (model, device)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if key in _FAILED:  # resolved once per run: later images fail at once with the same message
            raise WeightsError(str(_FAILED[key]))
        try:
            inp = _load(model, device)
        except WeightsError as e:
            _FAILED[key] = e
            raise
        _CACHE[key] = inp
        return inp


_FAILED: dict[tuple, WeightsError] = {}


def _load(model: str, device: str) -> Inpainter:
    """Build the inpainter for ``model`` (WeightsError when its weights are missing)."""
    t0 = time.perf_counter()
    if model in CLASSICAL:
        inp = _classical(model)
    elif model == "big-lama":
        from ..models import build_model

        inp = torch_inpainter(
            "big-lama", build_model("big-lama", pretrained=True, device=device), device, batchable=True
        )
    elif model == "eraser":
        inp = _load_eraser(device)
    elif model == "migan":
        from ..models import build_model

        migan = build_model("migan", pretrained=True, device=device)
        inp = Inpainter("migan", lambda rgb, hole: migan(rgb, hole), 512, device)
    else:
        raise UsageError(f"--model {model!r}: use one of {', '.join(MODELS)}")
    inp.load_seconds = time.perf_counter() - t0
    return inp


def _load_eraser(device: str) -> Inpainter:
    from ..models import build_model
    from ..models.eraser import Eraser

    if weights_present("eraser"):
        module = build_model("eraser", pretrained=True, device=device)
    else:  # ERASER on big-lama weights: identity fusion + coarse prior
        module = Eraser.from_lama(build_model("big-lama", pretrained=True, device=device)).to(device).eval()
    return torch_inpainter("eraser", module, device, call=_eraser_call)


def clear_cache() -> None:
    """Forget loaded inpainters (frees their memory)."""
    with _LOCK:
        _CACHE.clear()
        _FAILED.clear()


def context_box(
    comp: Component, shape: tuple[int, ...], context: float, min_size: int = 64
) -> tuple[int, int, int, int]:
    """The crop around a region: its box grown to ``context`` x its longer side (at least ``min_size``),
    centred on the region and clipped to the image."""
    h, w = shape[:2]
    cx, cy = (comp.x0 + comp.x1) / 2, (comp.y0 + comp.y1) / 2
    side = max(min_size, context * max(comp.x1 - comp.x0, comp.y1 - comp.y0))
    half = side / 2
    x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
    x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
    return x0, y0, x1, y1


def merged_components(hole: np.ndarray, context: float) -> list[Component]:
    """Connected regions whose context crops overlap are merged into one, so each pixel is filled once."""
    comps = list(components(hole))
    merged = True
    while merged and len(comps) > 1:
        merged = False
        out: list[Component] = []
        for c in comps:
            for i, o in enumerate(out):
                a = context_box(c, hole.shape, context)
                b = context_box(o, hole.shape, context)
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = Component(min(c.x0, o.x0), min(c.y0, o.y0), max(c.x1, o.x1), max(c.y1, o.y1))
                    merged = True
                    break
            else:
                out.append(c)
        comps = out
    return comps


def inpaint_regions(
    image: np.ndarray,
    mask: np.ndarray,
    inpainter: Inpainter,
    context: float = 2.5,
    work_size: int | None = None,
) -> np.ndarray:
    """Fill ``mask > 0`` of ``image`` crop by crop with ``inpainter``; pixels outside the mask are kept.

    Each crop spans ``context`` x its region; when larger than the model's working size it is
    downscaled for the model and the fill upscaled back (only hole pixels are replaced).
    """
    import cv2

    hole = mask > 0
    out = image.copy()
    size = work_size or inpainter.work_size
    for comp in merged_components(hole, context):
        x0, y0, x1, y1 = context_box(comp, image.shape, context)
        crop, ch = out[y0:y1, x0:x1], hole[y0:y1, x0:x1]
        h, w = crop.shape[:2]
        scale = 1.0 if size is None else min(1.0, size / max(h, w))
        if scale < 1.0:
            sw, sh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
            small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
            small_hole = cv2.resize(ch.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_AREA) > 0
            # grow by two pixels so the upscaled fill covers the hole's edge with filled pixels only
            # (no original content interpolated back in)
            small_hole = cv2.dilate(small_hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            filled = inpainter.fn(small, small_hole)
            filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            filled = inpainter.fn(crop, ch)
        if filled.shape != crop.shape:
            raise MethodError(f"{inpainter.name} returned {filled.shape} for a {crop.shape} crop")
        region = out[y0:y1, x0:x1]
        region[ch] = filled[ch]
    return out


@register_method("erase", "inpaint regions with different, natural content")
def erase(
    image: np.ndarray,
    mask: np.ndarray,
    model: str = "auto",
    device: str = "cpu",
    context: float = 2.5,
    work_size: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Erase the regions of ``image`` (H,W,3) uint8 where ``mask`` (H,W) [0,1] is set.

    Returns ``(image, info)`` where info says which model ran (``model_used``), on which device and
    its load time. The whole mask area is regenerated (soft edges are blended afterwards).
    """
    image, mask = check_inputs(image, mask)
    if context < 1.0:
        raise UsageError("--context must be >= 1")
    chosen = choose_model(model)
    inp = load_inpainter(chosen, device)
    filled = inpaint_regions(image, mask, inp, context, work_size)
    out = composite(image, filled, mask)
    return out, {"model_used": chosen, "device": inp.device, "model_load_seconds": round(inp.load_seconds, 3)}

"""Stylize: render a photo in an artistic style so automatic inference does worse on it (paper 002).

Styles (``style=``):

- Offline, OpenCV only (no weights):
  ``cartoon`` (edge-preserving smoothing, colour quantisation, dark edge lines),
  ``watercolor`` (OpenCV's ``stylization``), ``sketch`` (OpenCV's ``pencilSketch``).
- GAN styles, weights through the registry (``privpix weights fetch NAME``):
  ``ukiyoe`` (CycleGAN ``style_ukiyoe``), ``hayao`` (CartoonGAN, BGR input),
  ``face-paint`` (AnimeGANv2 ``face_paint_512_v2``), ``paprika`` (AnimeGANv2 ``paprika``).
  Each runs with its published pre/post-processing (:mod:`privacy_cli.models.stylization`).

Large photos: every style runs at a working resolution (``work_size``: the longer side, per-style
default, so brush strokes and lines keep their size relative to the picture) and the result is
resized back to the photo's size: bilinearly (default), or with a guided upsampling (the fast
guided filter of He & Sun 2015, guide = the photo's luminance) that brings the photo's own edges
back; docs/methods.md compares the two (bilinear keeps the style's strokes crisp, guided softens
them). The GANs run over the working image
in overlapping tiles (``tile`` pixels, ``overlap``) blended with raised-cosine weights, batched on
GPU (also across the images of a batch, :mod:`privacy_cli.engines.batching`; in half precision where
the generator allows it), so their memory is bounded by the tile whatever the photo's size. ``strength`` blends with the
input: 0 returns the input pixels, 1 the full style.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from . import register_method
from .compose import check_inputs, composite


@dataclass(frozen=True)
class Style:
    """One style: ``model`` is the registry model of a GAN style (None = offline OpenCV filter).

    work_size: default longer side (pixels) the style runs at. train_size: the square input size the
    published weights were trained at (GANs), which the default tile covers at least twice.
    """

    name: str
    summary: str
    work_size: int
    model: str | None = None
    train_size: int | None = None


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("cartoon", "edge-preserving smoothing, 8 flat colours, dark edge lines (OpenCV)", 1024),
        Style("watercolor", "OpenCV stylization (edge-preserving smoothing + soft edges)", 640),
        Style("sketch", "OpenCV pencil sketch (grey)", 768),
        # CycleGAN: trained on 256x256 crops of photos loaded at 286; test.py renders at 256.
        Style("ukiyoe", "CycleGAN style_ukiyoe (Ukiyo-e prints)", 512, "cyclegan-ukiyoe", 256),
        # CartoonGAN: trained on 256x256 crops; the reference test.py renders at a longer side of 450.
        Style("hayao", "CartoonGAN Hayao (Miyazaki films)", 450, "cartoongan-hayao", 256),
        # AnimeGANv2 face paint: trained and run (face2paint) at 512x512.
        Style("face-paint", "AnimeGANv2 face_paint_512_v2 (portraits)", 512, "animegan2-face-paint-v2", 512),
        # AnimeGANv2 paprika: trained on 256x256 scene crops; the repo's test.py runs at full size.
        Style("paprika", "AnimeGANv2 paprika (Satoshi Kon's Paprika)", 1024, "animegan2-paprika", 256),
    )
}
OFFLINE = tuple(n for n, s in STYLES.items() if s.model is None)
GAN = tuple(n for n, s in STYLES.items() if s.model is not None)
UPSAMPLE = ("guided", "bilinear")
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


def get_style(name: str) -> Style:
    """The :class:`Style` called ``name`` (UsageError listing the styles otherwise)."""
    try:
        return STYLES[name]
    except KeyError:
        raise UsageError(f"--style {name!r}: use one of {', '.join(STYLES)}") from None


# ---------------------------------------------------------------------------------------------
# Offline styles: (h, w, 3) uint8 RGB -> (h, w, 3) uint8 RGB at the working resolution


def cartoon(rgb: np.ndarray, colors: int = 8) -> np.ndarray:
    """Cartoon: two bilateral passes, k-means colour quantisation (``colors``), dark edge lines.

    Lines come from an adaptive threshold of the median-filtered luminance (OpenCV's classic
    cartoon recipe); they are drawn as a soft alpha so they stay anti-aliased when upsampled.
    Deterministic (k-means seeded).
    """
    import cv2

    smooth = rgb
    for _ in range(3):
        smooth = cv2.bilateralFilter(smooth, 5, 40, 5)
    flat = smooth.reshape(-1, 3)
    sample = flat[:: max(1, flat.shape[0] // 20000)].astype(np.float32)
    cv2.setRNGSeed(0)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centers = cv2.kmeans(sample, colors, None, crit, 2, cv2.KMEANS_PP_CENTERS)
    # nearest centre per pixel through a 32^3 colour table (|x|^2 - 2 x.c + |c|^2 minimised)
    g = np.arange(32, dtype=np.float32) * 8 + 4
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    table = centers[np.argmin((centers * centers).sum(1)[None, :] - 2.0 * grid @ centers.T, axis=1)]
    q = flat >> 3
    idx = (q[:, 0].astype(np.int32) << 10) | (q[:, 1].astype(np.int32) << 5) | q[:, 2]
    quant = table[idx].reshape(rgb.shape)
    grey = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    line = cv2.GaussianBlur(255 - edges, (3, 3), 0).astype(np.float32) / 255.0
    out = quant * (1.0 - 0.85 * line[..., None])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def watercolor(rgb: np.ndarray) -> np.ndarray:
    """Watercolour: OpenCV ``stylization`` (sigma_s 60, sigma_r 0.45)."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45), cv2.COLOR_BGR2RGB)


def sketch(rgb: np.ndarray) -> np.ndarray:
    """Pencil sketch: OpenCV ``pencilSketch`` (sigma_s 60, sigma_r 0.07, shade 0.05), grey."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    grey, _colour = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


OFFLINE_FNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cartoon": cartoon,
    "watercolor": watercolor,
    "sketch": sketch,
}


# ---------------------------------------------------------------------------------------------
# Tiling


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``n`` pixels with at least ``overlap`` overlap."""
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((n - tile) / step) + 1
    return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, ramp_in: int, ramp_out: int) -> np.ndarray:
    """1-D weights: raised-cosine rise over ``ramp_in`` pixels, fall over ``ramp_out``, 1 between.

    Strictly positive, so every pixel covered by a tile has a non-zero weight."""
    w = np.ones(length, np.float32)
    for n, sl in ((ramp_in, slice(0, ramp_in)), (ramp_out, slice(length - ramp_out, length))):
        if n > 0:
            t = (np.arange(n, dtype=np.float32) + 0.5) / n
            r = 0.5 - 0.5 * np.cos(np.pi * t)
            w[sl] = r if sl.start == 0 else r[::-1]
    return w


def tiled_apply(
    fn: Callable[[Any], Any],
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    device: Any = "cpu",
    key: Any = None,
) -> np.ndarray:
    """Run ``fn`` ((B,3,t,t) float RGB [0,1] tensor -> same) over ``image`` (H,W,3) uint8 in tiles.

    Tiles of ``tile`` x ``tile`` pixels (smaller images: one tile) overlap by at least ``overlap``
    pixels; each tile's output is weighted by a separable raised-cosine ramp over the overlaps
    (1 inside, at the image border no ramp) and the weighted sum is normalised, so tile borders
    leave no seam. ``batch_size`` tiles run per call on ``device``. ``key`` (the network's identity):
    when images are computed together (:func:`privacy_cli.engines.batching.run_together`), each call's
    tiles join those of the other images of the batch of equal tile shape in one forward pass (on
    CUDA); None: never. Returns (H,W,3) uint8.
    """
    import torch

    from ..engines.batching import forward

    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w, 1), np.float32)
    boxes = [(y, x) for y in ys for x in xs]

    def weight(y: int, x: int) -> np.ndarray:
        # ramps only where the neighbouring tile overlaps this one
        iy, ix = ys.index(y), xs.index(x)
        up = ys[iy - 1] + th - y if iy > 0 else 0
        down = y + th - ys[iy + 1] if iy + 1 < len(ys) else 0
        left = xs[ix - 1] + tw - x if ix > 0 else 0
        right = x + tw - xs[ix + 1] if ix + 1 < len(xs) else 0
        return _ramp(th, up, down)[:, None] * _ramp(tw, left, right)[None, :]

    for start in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[start : start + batch_size]
        crops = np.stack([image[y : y + th, x : x + tw] for y, x in chunk])
        x_in = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        out = forward(key, fn, x_in).detach().float().clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        for (y, x), o in zip(chunk, out, strict=True):
            wt = weight(y, x)[..., None]
            acc[y : y + th, x : x + tw] += o * 255.0 * wt
            wsum[y : y + th, x : x + tw] += wt
    return np.clip(acc / wsum + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Working resolution and guided upsampling


def work_shape(h: int, w: int, work_size: int | None) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most ``work_size`` (None/0: unchanged)."""
    if not work_size or max(h, w) <= work_size:
        return h, w
    s = work_size / max(h, w)
    return max(8, int(round(h * s))), max(8, int(round(w * s)))


def _luma(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


#: rows per strip when upsampling: the float maps of one strip are all that is held at full size
_STRIP = 512


def guided_upsample(
    styled: np.ndarray,
    small_rgb: np.ndarray,
    full_rgb: np.ndarray,
    radius: int = 2,
    eps: float = 1e-3,
) -> np.ndarray:
    """Upsample ``styled`` (h,w,3) uint8 to ``full_rgb``'s size with the fast guided filter.

    At the working size a local linear model ``styled ~ a * L + b`` per channel is fitted against
    the luminance ``L`` of ``small_rgb`` (the photo at the working size) in boxes of
    ``2 * radius + 1`` pixels, regularised by ``eps`` (on [0,1] values: larger = smoother, less of
    the photo's detail); ``a`` and ``b`` are box-averaged, upsampled bilinearly and applied to the
    full-size luminance. Where the style is flat (``a ~ 0``) nothing of the photo comes back; where
    it follows the photo's edges, they come back sharp. Processed in strips of rows, so only the
    uint8 output is held at full size. Returns (H,W,3) uint8.
    """
    import cv2

    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    lum = _luma(small_rgb)
    lum3 = cv2.merge([lum, lum, lum])
    p = styled.astype(np.float32) / 255.0
    mean_i, mean_p = box(lum3), box(p)
    cov = box(p * lum3) - mean_i * mean_p
    var = box(lum3 * lum3) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    # on the full-size 8-bit luminance L255: out255 = a * L255 + 255 * b
    a, b = box(a), box(b) * 255.0
    big_h, big_w = full_rgb.shape[:2]
    h, w = styled.shape[:2]
    mx = ((np.arange(big_w, dtype=np.float32) + 0.5) * (w / big_w) - 0.5).clip(0, w - 1)
    out = np.empty((big_h, big_w, 3), np.uint8)
    for y0 in range(0, big_h, _STRIP):
        y1 = min(big_h, y0 + _STRIP)
        my = ((np.arange(y0, y1, dtype=np.float32) + 0.5) * (h / big_h) - 0.5).clip(0, h - 1)
        map_x = np.ascontiguousarray(np.broadcast_to(mx[None, :], (y1 - y0, big_w)))
        map_y = np.ascontiguousarray(np.broadcast_to(my[:, None], (y1 - y0, big_w)))
        sa = cv2.remap(a, map_x, map_y, cv2.INTER_LINEAR)
        sb = cv2.remap(b, map_x, map_y, cv2.INTER_LINEAR)
        grey = cv2.cvtColor(full_rgb[y0:y1], cv2.COLOR_RGB2GRAY)
        q = cv2.multiply(sa, cv2.merge([grey, grey, grey]), dtype=cv2.CV_32F)
        cv2.add(q, sb, dst=q)
        out[y0:y1] = cv2.convertScaleAbs(q)  # rounds and saturates to [0, 255]
    return out


def bilinear_upsample(styled: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``styled`` (h,w,3) uint8 resized bilinearly to ``size`` = (H, W)."""
    import cv2

    return cv2.resize(styled, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------
# GAN styles


def gan_runner(style: str, device: Any = "auto") -> Any:
    """The per-process :class:`~privacy_cli.runtime.ModelRunner` of GAN style ``style``.

    Raises WeightsError (naming ``privpix weights fetch NAME`` / ``import``) when its weights are
    missing; nothing is downloaded when offline.
    """
    from ..runtime import model_runner

    st = get_style(style)
    if st.model is None:
        raise UsageError(f"{style} is an offline style (no model)")
    return model_runner(st.model, device=device)


def gan_stylize(
    runner: Any,
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    half: bool = True,
) -> np.ndarray:
    """Run a stylisation generator (runner of :func:`gan_runner`) over ``image`` (H,W,3) uint8 in tiles.

    The generator's published conventions (RGB/BGR order, [-1,1] range, size padding) are applied
    per tile by :func:`privacy_cli.models.stylization.stylize_tensor`. Tiles of the images computed
    together are batched across them (:func:`tiled_apply`). ``half``: on CUDA, run under autocast in
    half precision when the generator allows it (:func:`half_allowed`; a non-finite result is
    recomputed in float32); CPU is always float32. Returns (H,W,3) uint8.
    """
    import torch

    from ..engines.batching import autocast, finite_or_float32
    from ..models.stylization import stylize_tensor

    dev = str(runner.device)
    use_half = half and half_allowed(runner.model)

    def fp32(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return stylize_tensor(runner.model, x)

    def reduced(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(dev):
            return stylize_tensor(runner.model, x).float()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return finite_or_float32(fp32, reduced, x, device=dev) if use_half else fp32(x)

    key = ("stylize", id(runner.model), use_half)
    return tiled_apply(fn, image, tile, overlap, batch_size, runner.device, key=key)


def half_allowed(model: Any) -> bool:
    """Whether a stylisation generator may run in half precision: CycleGAN (InstanceNorm, which
    autocast computes in float32) and AnimeGANv2 (GroupNorm, float32 under autocast) may; CartoonGAN
    may not (its instance norm divides by ``sqrt(var + 1e-9)``, and 1e-9 is zero in float16)."""
    from ..models.stylization import CartoonGANGenerator

    return not isinstance(model, CartoonGANGenerator)


# ---------------------------------------------------------------------------------------------
# The method


def _check_opts(
    strength: float, work_size: int | None, tile: int | None, overlap: int | None, upsample: str
) -> None:
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"--strength {strength}: use a value in [0, 1]")
    if work_size is not None and work_size != 0 and work_size < 64:
        raise UsageError(f"--work-size {work_size}: use 0 (native size) or at least 64")
    if tile is not None and tile < 64:
        raise UsageError(f"--tile {tile}: use at least 64")
    if overlap is not None and (overlap < 0 or overlap >= (tile or DEFAULT_TILE) // 2):
        raise UsageError(f"--overlap {overlap}: use 0 .. tile/2")
    if upsample not in UPSAMPLE:
        raise UsageError(f"--upsample {upsample!r}: use one of {', '.join(UPSAMPLE)}")


def render(
    image: np.ndarray,
    style: str,
    work_size: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    upsample: str = "bilinear",
    device: str = "auto",
    batch_size: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The full-strength rendering of ``image`` (H,W,3) uint8 RGB in ``style``: (H,W,3) uint8 and info.

    work_size: longer side the style runs at (None: the style's default; 0: native size).
    tile/overlap: GAN tile size and minimum overlap (pixels at the working size). upsample:
    ``guided`` or ``bilinear`` back to the photo's size. batch_size: tiles per forward pass
    (default 8 on CUDA, 1 on CPU).
    """
    import cv2

    st = get_style(style)
    ws = st.work_size if work_size is None else work_size
    h, w = image.shape[:2]
    sh, sw = work_shape(h, w, ws)
    small = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    info: dict[str, Any] = {"style": style, "work_size": [sw, sh]}
    if st.model is None:
        styled = OFFLINE_FNS[style](np.ascontiguousarray(small))
    else:
        runner = gan_runner(style, device)
        dev = str(runner.device)
        bs = batch_size or (8 if dev.startswith("cuda") else 1)
        styled = gan_stylize(
            runner, small, tile or DEFAULT_TILE, DEFAULT_OVERLAP if overlap is None else overlap, bs
        )
        info.update(model=st.model, device=dev, model_load_seconds=round(runner.load_s, 3))
        from ..engines.batching import half_dtype

        if half_allowed(runner.model) and (half := half_dtype(dev)) is not None:
            info["precision"] = str(half).removeprefix("torch.")
    if (sh, sw) != (h, w):
        if upsample == "guided":
            styled = guided_upsample(styled, small, image)
        else:
            styled = bilinear_upsample(styled, (h, w))
        info["upsample"] = upsample
    return styled, info


@register_method(
    "stylize", "render in an artistic style (cartoon, watercolor, sketch, GAN styles)", whole_image=True
)
def stylize(
    image: np.ndarray,
    mask: np.ndarray,
    style: str = "cartoon",
    strength: float = 1.0,
    work_size: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    upsample: str = "bilinear",
    device: str = "auto",
    batch_size: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stylize ``image`` (H,W,3) uint8 RGB where ``mask`` (H,W) [0,1] is set (soft edges blended).

    strength in [0, 1]: ``(1 - s) * image + s * styled`` (0 returns the input pixels exactly, 1 the
    full style). See :func:`render` for the other options. Returns ``(image, info)``; info names the
    style, working size, and for GAN styles the model, device and load time.
    """
    image, mask = check_inputs(image, mask)
    get_style(style)
    _check_opts(strength, work_size, tile, overlap, upsample)
    t0 = time.perf_counter()
    if strength == 0.0:
        return image.copy(), {"style": style, "strength": 0.0}
    styled, info = render(image, style, work_size, tile, overlap, upsample, device, batch_size)
    if strength < 1.0:
        blend = image.astype(np.float32) * (1.0 - strength) + styled.astype(np.float32) * strength
        styled = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    info.update(strength=strength, style_seconds=round(time.perf_counter() - t0, 3))
    if float(mask.min()) >= 1.0:  # the whole image (the default): nothing to composite
        return styled, info
    return composite(image, styled, mask), info

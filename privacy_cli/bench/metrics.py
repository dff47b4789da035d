"""Quality, content-difference and classifier-utility metrics (papers 000, 002, 004).

Each metric exists once as a function on tensors and once as a :class:`Metric` with
``update`` / ``compute`` / ``reset`` (torchmetrics style). Inputs: ``preds`` = processed image,
``target`` = original, ``(B, 3, H, W)`` float in [0, 1] (data range 1), same shape; optional
``mask`` ``(B, 1, H, W)`` in {0, 1} (1 = region; values > 0.5 count) restricts a metric to the
region. Per-image values are averaged over images (mean of per-image values, as the papers do).

Libraries: SSIM and PSNR from torchmetrics, LPIPS from lpips (v0.1), FID features from
pytorch-fid's InceptionV3; the Fréchet distance, region reductions and the content-difference
losses (written from LaMa's loss definitions) are computed here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, RegionError, UsageError
from .features import (
    FID_DIMS,
    BackboneUnavailable,
    FeatureCache,
    FIDFeatures,
    build_lpips,
    fetch_command,
    lama_discriminator,
    resnetpl_encoder,
    vgg19_perceptual,
)
from .specs import PIXEL_METRICS  # the names quality_values computes

SSIM_SIGMA = 1.5
SSIM_WIN = 11
SSIM_PAD = (SSIM_WIN - 1) // 2
FID_MIN_RELIABLE = 2048

# --------------------------------------------------------------------------------------------
# results


def _json_float(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


@dataclass
class MetricResult:
    """One measured number.

    value: the aggregate (mean over images unless the metric says otherwise); unit: e.g. "dB",
    "cosine", "fraction", "" for unitless; higher_is_better: direction (None = neither);
    n: images (or pairs) that entered the value; notes: caveats to print with it (library,
    data range, image size, left-out images, reliability); per_item: per-image values in input
    order (NaN = not measurable for that image); extra: secondary numbers.
    """

    name: str
    value: float
    unit: str = ""
    higher_is_better: bool | None = None
    n: int = 0
    notes: list[str] = field(default_factory=list)
    library: str = ""
    per_item: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    available: bool = field(default=True, init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": True,
            "value": _json_float(self.value),
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "n": self.n,
            "notes": list(self.notes),
            "library": self.library,
            "extra": {k: _json_float(v) for k, v in self.extra.items()},
        }


@dataclass
class MetricUnavailable:
    """A metric that could not be measured: never a number, always a reason.

    reason: one line (e.g. the weights error); fetch: the command that makes it available
    (``privpix weights fetch NAME``) or None when no download helps (e.g. a failed control).
    """

    name: str
    reason: str
    fetch: str | None = None
    notes: list[str] = field(default_factory=list)
    n: int = 0
    value: None = field(default=None, init=False)
    available: bool = field(default=False, init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": False,
            "value": None,
            "reason": self.reason,
            "fetch": self.fetch,
            "notes": list(self.notes),
        }


Result = MetricResult | MetricUnavailable


def unavailable_from(name: str, exc: BackboneUnavailable) -> MetricUnavailable:
    """``MetricUnavailable`` carrying the weights error's message and fetch command."""
    fetch = exc.fetch
    reason = str(exc)
    if fetch:
        reason = f"{reason} (run: {fetch})" if fetch not in reason else reason
    return MetricUnavailable(name=name, reason=reason, fetch=fetch)


def _aggregate(
    name: str,
    values: Sequence[float],
    unit: str,
    higher_is_better: bool | None,
    library: str,
    notes: Iterable[str] = (),
    drop_inf: bool = False,
    region: bool = False,
) -> Result:
    arr = np.asarray(values, dtype=np.float64)
    notes = list(notes)
    finite = ~np.isnan(arr)
    if region and (~finite).any():
        notes.append(f"{int((~finite).sum())} image(s) without a region left out")
    if drop_inf:
        inf = np.isinf(arr)
        if inf.any():
            notes.append(f"{int(inf.sum())} identical pair(s) (infinite {name}) left out of the mean")
        finite &= ~inf
    if not finite.any():
        return MetricUnavailable(name, "no image could be measured", notes=notes, n=0)
    return MetricResult(
        name=name,
        value=float(arr[finite].mean()),
        unit=unit,
        higher_is_better=higher_is_better,
        n=int(finite.sum()),
        notes=notes,
        library=library,
        per_item=[float(v) for v in arr],
        extra={"std": float(arr[finite].std())} if finite.sum() > 1 else {},
    )


# --------------------------------------------------------------------------------------------
# input checks


def _check_images(preds: torch.Tensor, target: torch.Tensor, min_size: int = 1) -> None:
    for what, t in (("preds", preds), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{what}: expected a torch.Tensor (B, 3, H, W), got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise InputError(f"{what}: expected shape (B, 3, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise InputError(f"{what}: expected float values in [0, 1], got dtype {t.dtype}")
    if preds.shape != target.shape:
        raise InputError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    if min(preds.shape[-2:]) < min_size:
        raise InputError(
            f"images must be at least {min_size}x{min_size} pixels, got {tuple(preds.shape[-2:])}"
        )
    (p_lo, p_hi), (t_lo, t_hi) = torch.aminmax(preds), torch.aminmax(target)  # one pass each
    lo, hi = min(float(p_lo), float(t_lo)), max(float(p_hi), float(t_hi))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f"image values must lie in [0, 1] (data range 1), got [{lo:.3g}, {hi:.3g}]")


def _check_mask(mask: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor | None:
    """``(B, 1, H, W)`` float mask in {0., 1.} on the images' device/dtype, or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise RegionError(f"mask: expected a torch.Tensor (B, 1, H, W), got {type(mask).__name__}")
    if mask.ndim == 3:
        mask = mask[:, None]
    b, _, h, w = images.shape
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != b or tuple(mask.shape[-2:]) != (h, w):
        raise RegionError(f"mask of shape {tuple(mask.shape)} does not fit images {tuple(images.shape)}")
    return (mask > 0.5).to(device=images.device, dtype=images.dtype)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        finite = torch.isfinite(per_image)
        return per_image[finite].mean() if finite.any() else per_image.new_tensor(float("nan"))
    raise UsageError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _region_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image weighted mean of ``values`` (B,C,h,w) with ``weight`` (B,1,h,w); NaN if empty."""
    c = values.shape[1]
    num = (values * weight).sum(dim=(1, 2, 3))
    den = weight.sum(dim=(1, 2, 3)) * c
    out = num / den.clamp_min(1e-12)
    return torch.where(den > 0, out, torch.full_like(out, float("nan")))


# --------------------------------------------------------------------------------------------
# quality: functional


def _gaussian_1d() -> np.ndarray:
    """The normalised 1-D Gaussian (``SSIM_WIN`` taps, ``SSIM_SIGMA``) whose outer product is
    torchmetrics' 2-D SSIM window, float64 ``(SSIM_WIN,)``."""
    x = np.arange(SSIM_WIN, dtype=np.float64) - (SSIM_WIN - 1) / 2
    g = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _ssim_map_opencv(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """torchmetrics' SSIM map computed with OpenCV's separable filter (CPU tensors)."""
    import cv2

    g = _gaussian_1d()
    c1, c2 = 0.01**2, 0.03**2
    work = torch.float64 if preds.dtype == torch.float64 else torch.float32
    x_all = preds.detach().to(work).contiguous().numpy()
    y_all = target.detach().to(work).contiguous().numpy()
    out = np.empty_like(x_all)

    def blur(z: np.ndarray, dst: np.ndarray) -> np.ndarray:
        # BORDER_REFLECT_101 is torch's "reflect" padding
        return cv2.sepFilter2D(z, -1, g, g, dst=dst, borderType=cv2.BORDER_REFLECT_101)

    # the same operations in the same order as the textbook expression
    #   ((2 mx my + c1)(2 cov + c2)) / ((mx^2 + my^2 + c1)(vx + vy + c2)),
    # written in place into nine buffers reused over channels and images (no temporaries)
    mx, my, mxx, myy, mxy, t, vx, vy, cov = (np.empty(x_all.shape[2:], x_all.dtype) for _ in range(9))
    for i in np.ndindex(x_all.shape[:2]):
        x, y = x_all[i], y_all[i]
        blur(x, mx)
        blur(y, my)
        np.multiply(mx, mx, out=mxx)
        np.multiply(my, my, out=myy)
        np.multiply(mx, my, out=mxy)
        blur(np.multiply(x, x, out=t), vx)
        np.maximum(np.subtract(vx, mxx, out=vx), 0.0, out=vx)
        blur(np.multiply(y, y, out=t), vy)
        np.maximum(np.subtract(vy, myy, out=vy), 0.0, out=vy)
        blur(np.multiply(x, y, out=t), cov)
        np.subtract(cov, mxy, out=cov)
        num = np.multiply(
            np.add(np.multiply(mxy, 2, out=mxy), c1, out=mxy),
            np.add(np.multiply(cov, 2, out=cov), c2, out=cov),
            out=mxy,
        )
        den = np.multiply(
            np.add(np.add(mxx, myy, out=mxx), c1, out=mxx),
            np.add(np.add(vx, vy, out=vx), c2, out=vx),
            out=mxx,
        )
        np.divide(num, den, out=out[i])
    return torch.from_numpy(out).to(preds.dtype)


def ssim_map(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM map ``(B, C, H, W)`` as torchmetrics defines it (Gaussian 11x11, sigma 1.5, K1
    0.01, K2 0.03, data range 1; borders reflect-padded; variances clamped at 0). preds/target
    ``(B, 3, H, W)`` in [0, 1].

    On CPU the Gaussian runs as OpenCV's separable filter (two 11-tap passes instead of torchmetrics'
    11x11 2-D convolution: about 7x faster on a 1024 px photo, equal up to float32 rounding, which a
    test checks against torchmetrics); on other devices torchmetrics itself.
    """
    _check_images(preds, target, min_size=SSIM_WIN)
    return _ssim_map_checked(preds, target)


def _ssim_map_checked(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`ssim_map` of inputs already checked."""
    if preds.device.type == "cpu":
        return _ssim_map_opencv(preds, target)
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(
        preds,
        target,
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_WIN,
        data_range=1.0,
        k1=0.01,
        k2=0.03,
        reduction="none",
        return_full_image=True,
    )
    return full


def _ssim_from_map(full: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    p = SSIM_PAD
    valid = full[..., p:-p, p:-p]
    if m is None:
        return valid.mean(dim=(1, 2, 3))
    per = _region_mean(valid, m[..., p:-p, p:-p])
    empty = torch.isnan(per)
    return torch.where(empty, _region_mean(full, m), per) if empty.any() else per


def ssim(
    preds: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), torchmetrics' Gaussian definition (see :func:`ssim_map`).

    Settings: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1, per channel, then
    averaged over channels and the valid region (pixels whose window lies inside the image, i.e.
    a 5-pixel border excluded) -- the convention of scikit-image (``gaussian_weights=True,
    use_sample_covariance=False``) and of Wang et al.'s ``ssim.m``; torchmetrics' own mean also
    averages the reflect-padded border. With ``mask``: mean of the SSIM map over mask pixels in
    the valid region (all mask pixels if none is). preds/target ``(B, 3, H, W)`` in [0, 1],
    H, W >= 11; returns the mean, or ``(B,)`` with ``reduction="none"``.
    """
    _check_images(preds, target, min_size=SSIM_WIN)
    m = _check_mask(mask, preds)
    return _reduce(_ssim_from_map(_ssim_map_checked(preds, target), m), reduction)


def quality_values(
    preds: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    names: Sequence[str] = PIXEL_METRICS,
) -> dict[str, torch.Tensor]:
    """Per-image ``(B,)`` values of several pixel metrics at once, sharing one input check, the SSIM
    map, the difference image and the region sums: the same numbers, bit for bit, as :func:`ssim`,
    :func:`psnr`, :func:`mae`, :func:`mse` (``*_region`` with ``mask``; ``mae_outside`` = :func:`mae`
    over the pixels outside ``mask``, all pixels without one, NaN when the mask covers everything).
    preds/target ``(B, 3, H, W)`` in [0, 1], mask ``(B, 1, H, W)``."""
    unknown = [n for n in names if n not in PIXEL_METRICS]
    if unknown:
        raise UsageError(f"unknown pixel metrics {unknown}; known: {', '.join(PIXEL_METRICS)}")
    _check_images(preds, target, min_size=SSIM_WIN if any(n.startswith("ssim") for n in names) else 1)
    m = _check_mask(mask, preds)
    if m is None and any(n.endswith("_region") for n in names):
        raise RegionError("region metrics need a mask")
    out: dict[str, torch.Tensor] = {}
    if any(n.startswith("ssim") for n in names):
        full = _ssim_map_checked(preds, target)
        if "ssim" in names:
            out["ssim"] = _ssim_from_map(full, None)
        if "ssim_region" in names:
            out["ssim_region"] = _ssim_from_map(full, m)
    d = preds - target
    sq = d * d
    ad = d.abs() if any(n.startswith("mae") for n in names) else d
    for base, vals in (("mse", sq), ("mae", ad)):
        if base in names:
            out[base] = vals.mean(dim=(1, 2, 3))
        if f"{base}_region" in names or (base == "mse" and "psnr_region" in names):
            out[f"{base}_region"] = _region_mean(vals, m)
    if "mae_outside" in names:
        outside = 1.0 - m if m is not None else torch.ones_like(preds[:, :1])
        out["mae_outside"] = _region_mean(ad, outside)
    if "psnr" in names:
        out["psnr"] = _psnr_from_sse(torch.sum(sq, dim=(1, 2, 3)), preds)
    if "psnr_region" in names:
        out["psnr_region"] = 10.0 * torch.log10(1.0 / out["mse_region"])
    return {n: out[n] for n in names}


def _psnr_from_sse(sse: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """torchmetrics' ``peak_signal_noise_ratio(data_range=1.0, dim=(1, 2, 3), reduction="none")`` from
    its own sum of squared errors ``(B,)`` (the same operations, so the same float32 result: a test
    checks equality), without a second pass over the images."""
    num_obs = torch.tensor(preds.size())[[1, 2, 3]].prod().expand_as(sse)
    base_e = 2 * torch.log(torch.tensor(1.0)) - torch.log(sse / num_obs)
    return base_e * (10 / torch.log(torch.tensor(10.0)))


def mse(
    preds: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Mean squared error per image over channels and pixels (region pixels with ``mask``).

    preds/target ``(B, 3, H, W)`` in [0, 1] (data range 1; values are not rescaled to 255).
    """
    _check_images(preds, target)
    m = _check_mask(mask, preds)
    d = (preds - target) ** 2
    per = d.mean(dim=(1, 2, 3)) if m is None else _region_mean(d, m)
    return _reduce(per, reduction)


def mae(
    preds: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Mean absolute error per image over channels and pixels (region pixels with ``mask``).

    preds/target ``(B, 3, H, W)`` in [0, 1] (data range 1, so MAE is in [0, 1]).
    """
    _check_images(preds, target)
    m = _check_mask(mask, preds)
    d = (preds - target).abs()
    per = d.mean(dim=(1, 2, 3)) if m is None else _region_mean(d, m)
    return _reduce(per, reduction)


def psnr(
    preds: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 log10(1 / MSE)`` (data range 1).

    Whole image via torchmetrics' ``peak_signal_noise_ratio`` (``dim=(1,2,3)``); with ``mask``
    from the region's MSE. Identical images give ``inf``; ``reduction="mean"`` averages the finite
    values (NaN when none), and the :class:`PSNR` Metric says how many it left out.
    preds/target ``(B, 3, H, W)`` in [0, 1].
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_images(preds, target)
    if mask is None:
        per = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    else:
        per = 10.0 * torch.log10(1.0 / mse(preds, target, mask, reduction="none"))
    return _reduce(per, reduction)


_LPIPS_SPATIAL_LOCK = threading.Lock()


def lpips(
    preds: torch.Tensor,
    target: torch.Tensor,
    net: Literal["alex", "vgg"] = "alex",
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
    model: nn.Module | None = None,
) -> torch.Tensor:
    """LPIPS v0.1 distance (lpips package; linear layers v0.1, backbone from our registry).

    preds/target ``(B, 3, H, W)`` in [0, 1] (mapped to [-1, 1] as lpips expects), native size
    (H, W >= 32). With ``mask``: mean of the spatial LPIPS map (lpips ``spatial=True``) inside the
    region. ``model``: an already built :func:`~privacy_cli.bench.features.build_lpips` module
    (default: the registry one for ``net``). Raises ``BackboneUnavailable`` without weights.
    """
    _check_images(preds, target, min_size=32)
    m = _check_mask(mask, preds)
    model = model if model is not None else build_lpips(net, device=preds.device)
    with torch.no_grad():
        if m is None:
            per = model(preds.float(), target.float(), normalize=True).flatten().to(preds.dtype)
        else:
            with _LPIPS_SPATIAL_LOCK:
                model.spatial = True
                try:
                    dmap = model(preds.float(), target.float(), normalize=True)
                finally:
                    model.spatial = False
            per = _region_mean(dmap.to(preds.dtype), m)
    return _reduce(per, reduction)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^1/2)`` with the trace term computed as the sum
    of square roots of the eigenvalues of the symmetric PSD matrix ``s1^1/2 s2 s1^1/2`` (same
    spectrum as ``s1 s2``), so singular covariances (N < dims) need no regulariser.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(
            f"Fréchet distance: shapes do not match ({mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape})"
        )
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ ((s2 + s2.T) / 2) @ root1
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets ``(N, D)`` and ``(M, D)`` (N, M >= 2): sample means and
    covariances (``np.cov``, N-1 normalisation, as pytorch-fid), then :func:`frechet_distance`."""
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise InputError(f"FID: feature arrays must be (N, D) with equal D, got {real.shape}, {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise InputError(f"FID needs at least 2 images per set, got {len(real)} and {len(fake)}")
    return frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )


# --------------------------------------------------------------------------------------------
# Metric classes


class Metric:
    """Accumulating metric: ``update(preds, target, mask=None)`` then ``compute()``.

    Class attributes: ``name``, ``unit``, ``higher_is_better``, ``library``. A metric whose
    network cannot be built returns a :class:`MetricUnavailable` from ``compute`` (the error is
    caught once in ``update``, later updates are skipped).
    """

    name: str = ""
    unit: str = ""
    higher_is_better: bool | None = None
    library: str = ""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []
        self._unavailable: MetricUnavailable | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self._unavailable is not None:
            self._values.extend([float("nan")] * preds.shape[0])
            return
        try:
            vals = self._batch(preds, target, mask)
        except BackboneUnavailable as e:
            self._unavailable = unavailable_from(self.name, e)
            self._values.extend([float("nan")] * preds.shape[0])
            return
        self._values.extend(float(v) for v in vals.detach().cpu().double())

    def _batch(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def compute(self) -> Result:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self._values)})"


class _PerImageMetric(Metric):
    region: bool = False
    drop_inf: bool = False
    notes: tuple[str, ...] = ()

    def __init__(self, region: bool = False) -> None:
        self.region = region
        if region:
            self.name = f"{self.name}_region"
        super().__init__()

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self.region and mask is None:
            raise RegionError(f"{self.name}: a region metric needs a mask")
        super().update(preds, target, mask if self.region else None)

    def compute(self) -> Result:
        if self._unavailable is not None:
            return self._unavailable
        notes = list(self.notes) + (["computed over region pixels only"] if self.region else [])
        return _aggregate(
            self.name,
            self._values,
            self.unit,
            self.higher_is_better,
            self.library,
            notes,
            drop_inf=self.drop_inf,
            region=self.region,
        )


class SSIM(_PerImageMetric):
    """:func:`ssim` accumulated over images (mean of per-image SSIM)."""

    name, unit, higher_is_better, library = "ssim", "", True, "torchmetrics"
    notes = ("Gaussian 11x11, sigma 1.5, data range 1, valid region (as scikit-image), native size",)

    def _batch(self, preds, target, mask):
        return ssim(preds, target, mask, reduction="none")


class PSNR(_PerImageMetric):
    """:func:`psnr` accumulated over images (mean of per-image dB; identical pairs left out)."""

    name, unit, higher_is_better, library = "psnr", "dB", True, "torchmetrics"
    notes = ("data range 1, per image then averaged, native size",)
    drop_inf = True

    def _batch(self, preds, target, mask):
        return psnr(preds, target, mask, reduction="none")


class MAE(_PerImageMetric):
    """:func:`mae` accumulated over images."""

    name, unit, higher_is_better, library = "mae", "", False, "privpix"
    notes = ("values in [0, 1] (data range 1), native size",)

    def _batch(self, preds, target, mask):
        return mae(preds, target, mask, reduction="none")


class MSE(_PerImageMetric):
    """:func:`mse` accumulated over images."""

    name, unit, higher_is_better, library = "mse", "", False, "privpix"
    notes = ("values in [0, 1] (data range 1), native size",)

    def _batch(self, preds, target, mask):
        return mse(preds, target, mask, reduction="none")


class LPIPS(_PerImageMetric):
    """:func:`lpips` accumulated over images; ``net`` "alex" or "vgg" (LaMa reports vgg)."""

    unit, higher_is_better, library = "", False, "lpips 0.1 (v0.1 linear layers)"

    def __init__(
        self, net: Literal["alex", "vgg"] = "alex", region: bool = False, model: nn.Module | None = None
    ):
        if net not in ("alex", "vgg"):
            raise UsageError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.name = f"lpips_{net}"
        self.model = model
        self.notes = (
            f"backbone {'alexnet' if net == 'alex' else 'vgg16'} (ImageNet), inputs scaled to [-1, 1], native size",
        )
        super().__init__(region=region)

    def _batch(self, preds, target, mask):
        if self.model is None:
            self.model = build_lpips(self.net, device=preds.device)
        return lpips(preds, target, self.net, mask, reduction="none", model=self.model)


class FID(Metric):
    """Fréchet Inception Distance between the originals and the processed images.

    pytorch-fid's InceptionV3 (``pt_inception-2015-12-05``, registry ``fid-inception``), pool3
    2048-d features (``dims`` picks pytorch-fid's other blocks: 64, 192, 768) of images resized to 299x299 (bilinear), then :func:`fid_from_features`.
    ``update(preds, target, mask=None, target_keys=None, preds_keys=None)``: keys let a shared
    :class:`FeatureCache` skip recomputing the originals for every method. The result notes that
    FID is biased and unreliable when N < 2048 (the feature dimension).
    """

    name, unit, higher_is_better, library = "fid", "", False, "pytorch-fid 0.3.0 (InceptionV3 pool3)"

    def __init__(
        self,
        device: Any = "cpu",
        batch_size: int = 16,
        cache: FeatureCache | None = None,
        model: nn.Module | None = None,
        dims: int = FID_DIMS,
    ) -> None:
        self.dims = dims
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.model = model
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._real = FIDFeatures(self.model, self.device, self.batch_size, self.cache, "fid", self.dims)
        self._fake = FIDFeatures(self.model, self.device, self.batch_size, self.cache, "fid", self.dims)

    def update(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        target_keys: Sequence[str] | None = None,
        preds_keys: Sequence[str] | None = None,
    ) -> None:
        _check_images(preds, target)
        if self._unavailable is not None:
            return
        try:
            self._real.add(target, target_keys)
            self._fake.add(preds, preds_keys)
        except BackboneUnavailable as e:
            self._unavailable = unavailable_from(self.name, e)

    def compute(self) -> Result:
        if self._unavailable is not None:
            return self._unavailable
        try:
            real, fake = self._real.features(), self._fake.features()
        except BackboneUnavailable as e:
            self._unavailable = unavailable_from(self.name, e)
            return self._unavailable
        n = min(len(real), len(fake))
        if n < 2:
            return MetricUnavailable(self.name, f"FID needs at least 2 images, got {n}", n=n)
        notes = [
            f"InceptionV3 {'pool3 ' if self.dims == FID_DIMS else ''}({self.dims}-d) at 299x299 bilinear, inputs in [0, 1]"
        ]
        if self.dims != FID_DIMS:
            notes.append(f"non-standard FID (dims={self.dims}): not comparable with published FID values")
        reliable = FID_MIN_RELIABLE if self.dims == FID_DIMS else self.dims + 1
        if n < reliable:
            notes.append(
                f"N={n} < {reliable}: covariance is rank-deficient, FID is biased upwards and "
                "only comparable between runs with the same N"
            )
        return MetricResult(
            name=self.name,
            value=fid_from_features(real, fake),
            unit="",
            higher_is_better=False,
            n=n,
            notes=notes,
            library=self.library,
            extra={"n_real": len(real), "n_fake": len(fake)},
        )


QUALITY_METRICS: dict[str, Callable[..., Metric]] = {
    "ssim": lambda **kw: SSIM(),
    "psnr": lambda **kw: PSNR(),
    "mae": lambda **kw: MAE(),
    "mse": lambda **kw: MSE(),
    "lpips_alex": lambda **kw: LPIPS("alex"),
    "lpips_vgg": lambda **kw: LPIPS("vgg"),
    "fid": lambda **kw: FID(device=kw.get("device", "cpu"), cache=kw.get("cache")),
    "ssim_region": lambda **kw: SSIM(region=True),
    "psnr_region": lambda **kw: PSNR(region=True),
    "mae_region": lambda **kw: MAE(region=True),
    "mse_region": lambda **kw: MSE(region=True),
    "lpips_alex_region": lambda **kw: LPIPS("alex", region=True),
    "lpips_vgg_region": lambda **kw: LPIPS("vgg", region=True),
}


def quality_metrics(
    names: Iterable[str] = ("ssim", "psnr", "mae", "mse", "lpips_alex", "lpips_vgg", "fid"),
    device: Any = "cpu",
    cache: FeatureCache | None = None,
) -> dict[str, Metric]:
    """Fresh Metric objects by name (see ``QUALITY_METRICS``); unknown names raise UsageError."""
    out = {}
    for n in names:
        if n not in QUALITY_METRICS:
            raise UsageError(f"unknown quality metric {n!r}; known: {', '.join(QUALITY_METRICS)}")
        out[n] = QUALITY_METRICS[n](device=device, cache=cache)
    return out


# --------------------------------------------------------------------------------------------
# content difference (ERASER Table 3, LaMa's loss definitions)

CONTENT_METRICS = ("mae", "fm", "adv", "pl_v", "pl_r")
#: LaMa (big-lama) training weights, applied with ``lama_weights=True``
LAMA_WEIGHTS = {"mae": 1.0, "fm": 100.0, "adv": 10.0, "pl_v": 1.0, "pl_r": 30.0}
_CONTENT_NOTES = {
    "mae": "mean |processed - original| over region pixels, data range 1",
    "fm": "LaMa discriminator (big-lama-discr) feature matching: mean over its 5 feature maps of the "
    "squared difference, mask resized bilinearly",
    "adv": "non-saturating adversarial loss softplus(-D(processed)) of the LaMa discriminator over logit "
    "cells covering the region (mask resized nearest)",
    "pl_v": "VGG19 (avg-pool) perceptual loss, ImageNet-normalised, sum over 13 ReLU layers up to relu5_1 "
    "of the mean squared difference",
    "pl_r": "ResNet50-dilated ADE20k (LaMa ResNetPL) sum over layer1..4 of the mean squared difference",
}
_CONTENT_WEIGHTS_NAME = {
    "fm": "big-lama-discr",
    "adv": "big-lama-discr",
    "pl_v": "vgg19",
    "pl_r": "lama-resnetpl-ade20k",
}


@dataclass
class ContentNets:
    """Networks for the content-difference metrics; ``None`` = load from the registry.

    discriminator: ``x (B,3,H,W) in [0,1] -> (logits (B,1,h,w), [feature maps])``;
    resnetpl: ``x in [0,1] -> [layer1..layer4]`` (e.g. :class:`features.ResNetPLFeatures`);
    vgg: ``x in [0,1] -> [13 ReLU maps]`` (e.g. :class:`features.VGGPerceptualFeatures`).
    """

    discriminator: nn.Module | None = None
    resnetpl: nn.Module | None = None
    vgg: nn.Module | None = None


def _feature_diff(
    feats_p: Sequence[torch.Tensor],
    feats_t: Sequence[torch.Tensor],
    mask: torch.Tensor | None,
    reduction: str,
) -> list[torch.Tensor]:
    """Per-layer, per-image mean squared difference, weighted by the bilinearly resized mask."""
    out = []
    for fp, ft in zip(feats_p, feats_t, strict=True):
        d = (fp - ft) ** 2
        if mask is None:
            out.append(d.mean(dim=(1, 2, 3)))
            continue
        w = F.interpolate(mask, size=d.shape[-2:], mode="bilinear", align_corners=False)
        out.append(_region_mean(d, w) if reduction == "region" else (d * w).mean(dim=(1, 2, 3)))
    return out


def _adv(logits: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    loss = F.softplus(-logits)
    if mask is None:
        return loss.mean(dim=(1, 2, 3))
    w = F.interpolate(mask, size=logits.shape[-2:], mode="nearest")
    # a region smaller than one logit cell: use the cells it touches
    touched = F.adaptive_max_pool2d(mask, logits.shape[-2:])
    empty = w.sum(dim=(1, 2, 3), keepdim=True) == 0
    w = torch.where(empty, touched, w)
    return _region_mean(loss, w) if reduction == "region" else (loss * w).mean(dim=(1, 2, 3))


def content_difference_values(
    target: torch.Tensor,
    preds: torch.Tensor,
    mask: torch.Tensor | None,
    which: Sequence[str] = CONTENT_METRICS,
    reduction: Literal["region", "image"] = "region",
    lama_weights: bool = False,
    nets: ContentNets | None = None,
) -> dict[str, torch.Tensor | BackboneUnavailable]:
    """Per-image ``(B,)`` content-difference values by name, or the ``BackboneUnavailable`` that
    prevented one. See :func:`content_difference` for the definitions."""
    _check_images(preds, target, min_size=16)
    m = _check_mask(mask, preds)
    if reduction not in ("region", "image"):
        raise UsageError(f"reduction must be 'region' or 'image', got {reduction!r}")
    unknown = [w for w in which if w not in CONTENT_METRICS]
    if unknown:
        raise UsageError(f"unknown content metrics {unknown}; known: {', '.join(CONTENT_METRICS)}")
    nets = nets or ContentNets()
    dev = preds.device
    x_p, x_t = preds.float(), target.float()
    mf = m.float() if m is not None else None
    out: dict[str, torch.Tensor | BackboneUnavailable] = {}
    with torch.no_grad():
        if "mae" in which:
            d = (x_p - x_t).abs()
            out["mae"] = (
                d.mean(dim=(1, 2, 3))
                if mf is None
                else (_region_mean(d, mf) if reduction == "region" else (d * mf).mean(dim=(1, 2, 3)))
            )
        if "fm" in which or "adv" in which:
            try:
                disc = nets.discriminator if nets.discriminator is not None else lama_discriminator(dev)
                logits_p, feats_p = disc(x_p)
                if "fm" in which:
                    _, feats_t = disc(x_t)
                    out["fm"] = torch.stack(_feature_diff(feats_p, feats_t, mf, reduction)).mean(0)
                if "adv" in which:
                    out["adv"] = _adv(logits_p, mf, reduction)
            except BackboneUnavailable as e:
                out.update({k: e for k in ("fm", "adv") if k in which})
        if "pl_v" in which:
            try:
                vgg = nets.vgg if nets.vgg is not None else vgg19_perceptual(dev)
                out["pl_v"] = torch.stack(_feature_diff(vgg(x_p), vgg(x_t), mf, reduction)).sum(0)
            except BackboneUnavailable as e:
                out["pl_v"] = e
        if "pl_r" in which:
            try:
                enc = nets.resnetpl if nets.resnetpl is not None else resnetpl_encoder(dev)
                out["pl_r"] = torch.stack(_feature_diff(enc(x_p), enc(x_t), mf, reduction)).sum(0)
            except BackboneUnavailable as e:
                out["pl_r"] = e
    if lama_weights:
        out = {k: (v * LAMA_WEIGHTS[k] if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    return {k: out[k] for k in which}


def _content_notes(name: str, reduction: str, lama_weights: bool) -> list[str]:
    notes = [_CONTENT_NOTES[name], "native size, inputs in [0, 1]"]
    notes.append(
        "averaged over the region's cells"
        if reduction == "region"
        else "summed over region cells / all cells"
    )
    if lama_weights and LAMA_WEIGHTS[name] != 1.0:
        notes.append(f"x{LAMA_WEIGHTS[name]:g} (LaMa training weight)")
    return notes


def content_difference(
    target: torch.Tensor,
    preds: torch.Tensor,
    mask: torch.Tensor | None,
    which: Sequence[str] = CONTENT_METRICS,
    reduction: Literal["region", "image"] = "region",
    lama_weights: bool = False,
    nets: ContentNets | None = None,
) -> dict[str, Result]:
    """How different the processed region is from the original one (ERASER Table 3; higher =
    more different), as LaMa defines its losses (``LAMA_NOTES.md``), restricted to the region.

    target = original, preds = processed, ``(B, 3, H, W)`` in [0, 1], H, W >= 16, native size;
    mask ``(B, 1, H, W)`` in {0, 1} (None = whole image, LaMa's unmasked losses exactly).

    * ``mae``: mean |preds - target| over region pixels.
    * ``fm``: LaMa discriminator (big-lama) features of both images; per map the squared
      difference weighted by the mask resized bilinearly (align_corners False), averaged; mean
      over the 5 maps.
    * ``adv``: softplus(-D(preds)) (non-saturating generator loss), averaged over logit cells of
      the nearest-resized mask (cells the region touches, when it covers none).
    * ``pl_v``: VGG19 features (max-pool -> avg-pool, ImageNet-normalised), 13 ReLU maps up to
      relu5_1; per map the masked mean squared difference; summed over maps.
    * ``pl_r``: ADE20k ResNet50-dilated encoder (ImageNet-normalised), layer1..4; per map the
      masked mean squared difference; summed.

    reduction: "region" divides by the region's (resized) mask mass, so values do not shrink
    with region size; "image" divides by all cells (LaMa's masked-loss convention). lama_weights:
    multiply by big-lama's loss weights (FM 100, Adv 10, PL-R 30). Returns name ->
    MetricResult (value = mean over images with a region, ``per_item``) or MetricUnavailable.
    """
    vals = content_difference_values(target, preds, mask, which, reduction, lama_weights, nets)
    out: dict[str, Result] = {}
    for name, v in vals.items():
        if isinstance(v, BackboneUnavailable):
            out[name] = unavailable_from(name, v)
        else:
            out[name] = _aggregate(
                name,
                v.cpu().double().tolist(),
                "",
                True,
                "privpix (LaMa loss definitions)",
                _content_notes(name, reduction, lama_weights),
                region=mask is not None,
            )
    return out


class ContentDifference:
    """Accumulating :func:`content_difference`; ``compute()`` returns name -> result.

    ``update(preds, target, mask)`` (same order as the quality Metrics: processed first).
    """

    higher_is_better = True

    def __init__(
        self,
        which: Sequence[str] = CONTENT_METRICS,
        reduction: Literal["region", "image"] = "region",
        lama_weights: bool = False,
        nets: ContentNets | None = None,
    ) -> None:
        self.which = tuple(which)
        self.reduction = reduction
        self.lama_weights = lama_weights
        self.nets = nets
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[float]] = {k: [] for k in self.which}
        self._unavailable: dict[str, MetricUnavailable] = {}

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
        todo = [k for k in self.which if k not in self._unavailable]
        vals = content_difference_values(
            target, preds, mask, todo, self.reduction, self.lama_weights, self.nets
        )
        for k in self.which:
            v = vals.get(k)
            if isinstance(v, torch.Tensor):
                self._values[k].extend(float(x) for x in v.cpu().double())
            else:
                if isinstance(v, BackboneUnavailable):
                    self._unavailable[k] = unavailable_from(k, v)
                self._values[k].extend([float("nan")] * preds.shape[0])

    def compute(self) -> dict[str, Result]:
        out: dict[str, Result] = {}
        for k in self.which:
            if k in self._unavailable:
                out[k] = self._unavailable[k]
            else:
                out[k] = _aggregate(
                    k,
                    self._values[k],
                    "",
                    True,
                    "privpix (LaMa loss definitions)",
                    _content_notes(k, self.reduction, self.lama_weights),
                    region=True,
                )
        return out


# --------------------------------------------------------------------------------------------
# classifier utility (paper 002)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Per-sample top-k hit ``(N,)`` bool: is ``labels[i]`` among the k largest ``logits[i]``.

    logits ``(N, K)`` (any monotone scores, e.g. logits or probabilities), labels ``(N,)`` int.
    """
    if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise InputError(
            f"expected logits (N, K) and labels (N,), got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    if not 1 <= k <= logits.shape[1]:
        raise UsageError(f"top-{k} needs at least {k} classes, the classifier has {logits.shape[1]}")
    top = logits.topk(k, dim=1).indices
    return (top == labels.to(top.device)[:, None]).any(dim=1)


def classifier_topk_change(
    logits_before: torch.Tensor,
    logits_after: torch.Tensor,
    labels: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5),
    classifier: str = "",
) -> dict[str, Result]:
    """Top-k accuracy on originals and processed images and its change (paper 002, Table 1).

    logits ``(N, K)`` of the same classifier on original / processed images; labels ``(N,)``;
    without labels the classifier's own top-1 on the original is the label (accuracy then
    measures agreement). Returns ``top{k}_before``, ``top{k}_after`` (fraction, higher = better
    utility) and ``top{k}_change`` (after - before, fraction; negative = accuracy lost, i.e. the
    inference attack was hindered) for each k; a k larger than the class count is unavailable.
    """
    if logits_before.shape != logits_after.shape:
        raise InputError(
            f"logits differ in shape: {tuple(logits_before.shape)} vs {tuple(logits_after.shape)}"
        )
    notes = [f"classifier {classifier}"] if classifier else []
    if labels is None:
        labels = logits_before.argmax(dim=1)
        notes.append("no labels: the original image's top-1 prediction is the label (agreement)")
    n = int(labels.shape[0])
    out: dict[str, Result] = {}
    for k in ks:
        if k > logits_before.shape[1]:
            for suffix in ("before", "after", "change"):
                out[f"top{k}_{suffix}"] = MetricUnavailable(
                    f"top{k}_{suffix}", f"classifier has only {logits_before.shape[1]} classes"
                )
            continue
        hb = topk_accuracy(logits_before, labels, k).double()
        ha = topk_accuracy(logits_after, labels, k).double()
        for suffix, per, hib in (("before", hb, True), ("after", ha, True), ("change", ha - hb, None)):
            out[f"top{k}_{suffix}"] = MetricResult(
                name=f"top{k}_{suffix}",
                value=float(per.mean()),
                unit="fraction",
                higher_is_better=hib,
                n=n,
                notes=list(notes),
                library="privpix",
                per_item=[float(v) for v in per],
            )
    return out


__all__ = [
    "CONTENT_METRICS",
    "FID",
    "FID_DIMS",
    "LAMA_WEIGHTS",
    "LPIPS",
    "MAE",
    "MSE",
    "PSNR",
    "QUALITY_METRICS",
    "SSIM",
    "ContentDifference",
    "ContentNets",
    "Metric",
    "MetricResult",
    "MetricUnavailable",
    "classifier_topk_change",
    "content_difference",
    "content_difference_values",
    "fetch_command",
    "fid_from_features",
    "frechet_distance",
    "lpips",
    "mae",
    "mse",
    "psnr",
    "quality_metrics",
    "quality_values",
    "PIXEL_METRICS",
    "ssim",
    "ssim_map",
    "topk_accuracy",
    "unavailable_from",
]

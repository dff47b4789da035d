"""What a bench run measures and runs: metric names and groups, ``--metrics`` and ``--methods``
parsing (checked against the methods registry), and applying one method setting to an image."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MethodError, PrivpixError, UsageError

# ------------------------------------------------------------------------------------------- metrics

QUALITY = ("ssim", "psnr", "mae", "mse", "lpips_alex", "lpips_vgg", "fid")
QUALITY_REGION = (
    "ssim_region",
    "psnr_region",
    "mae_region",
    "mse_region",
    "lpips_alex_region",
    "lpips_vgg_region",
    "mae_outside",
)
#: ERASER Table 3 (content difference inside the region); names as in the paper, lower case
CONTENT = ("content_mae", "fm", "adv", "pl_v", "pl_r")
PRIVACY = ("identity_similarity", "deid_rate", "reid_rank1")
#: paper 002's Table 1: views of the image a classifier is scored in ("" = its own preprocessing
#: only; then after extra scaling and cropping, after JPEG q95 and q75; see
#: :mod:`privacy_cli.bench.classifier_scoring`), and the top-1/top-5 change metrics of each view
CLASSIFIER_VIEWS = ("", "rescaled", "jpeg95", "jpeg75")
CLASSIFIER_METRICS: dict[str, tuple[str, str]] = {
    v: (f"top1_change{'_' + v if v else ''}", f"top5_change{'_' + v if v else ''}") for v in CLASSIFIER_VIEWS
}
CLASSIFIER = tuple(n for pair in CLASSIFIER_METRICS.values() for n in pair)
UTILITY = ("detect_rate_dlib", "detect_rate_mtcnn") + CLASSIFIER
ALL_METRICS = QUALITY + QUALITY_REGION + CONTENT + PRIVACY + UTILITY
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "quality": QUALITY + QUALITY_REGION,
    "content": CONTENT,
    "privacy": PRIVACY,
    "utility": UTILITY,
    "all": ALL_METRICS,
    # paper presets
    "eraser": ("ssim", "psnr", "fid", "lpips_vgg") + CONTENT,
    "pixel-privacy": CLASSIFIER,
    "private-encoder": (
        "mse",
        "ssim",
        "fid",
        "mse_region",
        "ssim_region",
        "identity_similarity",
        "deid_rate",
        "detect_rate_dlib",
    ),
}
#: pixel metrics: pure functions of the two images and the region mask, computed in one pass by
#: :func:`privacy_cli.bench.metrics.quality_values` (thread-safe)
PIXEL_METRICS = (
    "ssim",
    "psnr",
    "mae",
    "mse",
    "ssim_region",
    "psnr_region",
    "mae_region",
    "mse_region",
    "mae_outside",
)
#: metrics computed from per-image features at the end (not per-image values)
DATASET_LEVEL = ("fid", "deid_rate", "reid_rank1") + CLASSIFIER
#: metrics whose per-image value needs the region mask
NEEDS_REGION = QUALITY_REGION + CONTENT
#: metrics that need faces / identity labels
NEEDS_FACES = ("identity_similarity", "deid_rate", "reid_rank1", "detect_rate_dlib", "detect_rate_mtcnn")
NEEDS_IDENTITIES = ("deid_rate", "reid_rank1")

#: metrics that share a network: when it cannot be built, all of them are unavailable
_SHARED_NET = (
    ("lpips_alex", "lpips_alex_region"),
    ("lpips_vgg", "lpips_vgg_region"),
    ("fm", "adv"),
    CLASSIFIER,
)
_CONTENT_BASE = {"content_mae": "mae", "fm": "fm", "adv": "adv", "pl_v": "pl_v", "pl_r": "pl_r"}
_DETECTORS = {"detect_rate_dlib": "dlib-hog", "detect_rate_mtcnn": "mtcnn"}

#: bump when a per-image value's definition changes, so cached values are not reused
METRICS_CACHE_VERSION = "1"


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"ssim,psnr,privacy"`` -> metric names (groups expanded, order kept); None/"" = default set.

    Groups: quality, content, privacy, utility, all, eraser (Tables 2-3), private-encoder (Tables 1-5), pixel-privacy (paper 002 Table 1).
    Raises UsageError on an unknown name.
    """
    if spec is None:
        return None
    names = [
        s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()
    ]
    if not names:
        return None
    out: list[str] = []
    for n in names:
        n = n.replace("-", "_") if n not in METRIC_GROUPS else n
        if n in METRIC_GROUPS:
            out.extend(METRIC_GROUPS[n])
        elif n in ALL_METRICS:
            out.append(n)
        elif n in ("lpips",):
            out.extend(("lpips_alex", "lpips_vgg"))
        else:
            raise UsageError(
                f"unknown metric {n!r}; known: {', '.join(ALL_METRICS)} or groups {', '.join(METRIC_GROUPS)}"
            )
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- methods

#: pseudo-method that returns the image unchanged (a control row: SSIM 1, identity similarity 1)
IDENTITY_METHOD = "none"


def _coerce(value: str) -> Any:
    v = value.strip()
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null", "auto"):
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        f = float(v)
        if math.isfinite(f):
            return f
    except ValueError:
        pass
    return v


@dataclass(frozen=True)
class MethodSpec:
    """A method name plus options, e.g. ``blur`` with ``radius=8``: hashable, JSON-able."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def label(self) -> str:
        """``blur`` or ``blur:radius=8`` (the syntax ``--methods`` accepts)."""
        if not self.options:
            return self.name
        return self.name + ":" + ":".join(f"{k}={_fmt_opt(v)}" for k, v in self.options)

    def with_options(self, **kw: Any) -> MethodSpec:
        d = self.kwargs
        d.update(kw)
        return MethodSpec(self.name, tuple(sorted(d.items())))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.name, "options": self.kwargs}


def _fmt_opt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _method_params(name: str) -> tuple[Callable[..., Any], set[str] | None]:
    """The apply function and its accepted option names (None = accepts any keyword)."""
    if name == IDENTITY_METHOD:
        return (lambda image, mask: image), set()
    from ..methods import get_method

    fn = get_method(name)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn, None
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return fn, None
    return fn, {p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_value(method: str, fn: Callable[..., Any], key: str, value: Any) -> Any:
    """``value`` (already coerced) checked against the type hint of ``fn``'s ``key`` parameter.

    Returns the value to pass (a number given where only text is accepted becomes text); raises
    :class:`UsageError` for a value of the wrong kind (``radius=abc``), non-finite numbers included.
    """
    import types
    import typing

    try:
        hint = typing.get_type_hints(fn).get(key)
    except Exception:  # unresolvable annotations: leave the check to the method
        return value
    if hint is None or hint is Any:
        return value
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = {a for a in args if isinstance(a, type)}
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise UsageError(
                f"--methods: {method}:{key} must be one of {typing.get_args(hint)}, got {value!r}"
            )
        return value
    if value is None:
        if type(None) in kinds or not kinds:
            return value
        raise UsageError(f"--methods: {method}:{key} needs a value")
    if isinstance(value, bool):
        if bool in kinds or not kinds & {int, float, str}:
            return value
    elif isinstance(value, (int, float)):
        if int in kinds and isinstance(value, int) or float in kinds:
            return value
        if str in kinds:
            return _fmt_opt(value)
    elif str in kinds or not kinds & {int, float, bool}:
        return value
    wanted = " or ".join(sorted(k.__name__ for k in kinds - {type(None)}))
    raise UsageError(f"--methods: {method}:{key} must be {wanted}, got {value!r}")


def parse_methods(spec: str | Sequence[str]) -> list[MethodSpec]:
    """Parse ``--methods``.

    ``"blur,pixelate:block=16,mask"``; options follow the method after ``:`` (several as
    ``blur:radius=8:strength=2`` or ``blur:radius=8,strength=2``: a comma item holding ``=`` and
    no method belongs to the method before it). ``radius=2/4/8`` expands into one spec per value
    (a strength sweep). ``none`` is the unchanged image. Method names and option names are checked
    against the methods registry, option values against the method's type hints (UsageError
    otherwise, before any image is processed).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    tokens = [t.strip() for s in items for t in str(s).split(",") if t.strip()]
    if not tokens:
        raise UsageError("--methods is empty; give e.g. blur,pixelate,mask")
    raw: list[tuple[str, list[tuple[str, str]]]] = []
    for tok in tokens:
        parts = [p.strip() for p in tok.split(":")]
        if "=" in parts[0]:
            if not raw:
                raise UsageError(f"--methods: option {tok!r} comes before any method")
            opts = parts
        else:
            raw.append((parts[0].lower(), []))
            opts = parts[1:]
        for o in opts:
            if not o:
                continue
            if "=" not in o:
                raise UsageError(f"--methods: option {o!r} of {raw[-1][0]} must be name=value")
            k, v = o.split("=", 1)
            raw[-1][1].append((k.strip().replace("-", "_"), v.strip()))
    out: list[MethodSpec] = []
    for name, opts in raw:
        fn, accepted = _method_params(name)
        for k, _v in opts:
            if accepted is not None and k not in accepted:
                known = ", ".join(sorted(accepted)) or "none"
                raise UsageError(f"--methods: {name} has no option {k!r} (options: {known})")
        combos: list[list[tuple[str, Any]]] = [[]]
        for k, v in opts:
            # a sweep "2/4/8", but a path (learned=runs/hair, /abs/run) stays one value
            sweep = "/" in v and not v.startswith(("#", "/", ".", "~")) and not Path(v).exists()
            values = [_coerce(x) for x in v.split("/")] if sweep else [_coerce(v)]
            values = [_check_value(name, fn, k, x) for x in values]
            combos = [c + [(k, x)] for c in combos for x in values]
        for c in combos:
            spec_ = MethodSpec(name, tuple(sorted(dict(c).items())))
            if spec_ not in out:
                out.append(spec_)
    return out


def apply_method(
    spec: MethodSpec, image: np.ndarray, mask: np.ndarray, regions: Any = None, **extra: Any
) -> np.ndarray:
    """Run ``spec`` on ``image`` (H,W,3) uint8 with ``mask`` (H,W) float32 [0,1]; (H,W,3) uint8.

    ``regions``: the Regions the mask was made from (image pixels), passed to methods that take
    them, as the image commands do: blur, pixelate and mask then size their default strength for
    text lines by glyph height rather than by the face rule.
    ``extra``: options the runner adds that are not part of the spec's label (the bench's default
    k-Same donor folder); the spec's own options win.

    Whole-image methods (stylize) get the whole image as their region, as their command does by
    default; the region metrics still use the dataset's regions. Methods whose command covers the
    whole image without a region source (perturb) get it when there are no regions (``regions`` is
    None: ``--detect none``), and the regions otherwise."""
    fn, _ = _method_params(spec.name)
    if spec.name != IDENTITY_METHOD:
        from ..methods import is_whole_image, is_whole_image_default

        if is_whole_image(spec.name) or (regions is None and is_whole_image_default(spec.name)):
            mask = np.ones_like(mask)
    if not mask.any():
        return image.copy()
    try:
        from ..methods.compose import call_method

        out = call_method(fn, image, mask, regions, **{**extra, **spec.kwargs})
    except PrivpixError:
        raise
    except (TypeError, ValueError) as e:
        raise MethodError(f"{spec.label}: {e}") from None
    if isinstance(out, tuple):
        out = out[0]
    out = np.asarray(out)
    if out.shape != image.shape or out.dtype != np.uint8:
        raise MethodError(f"{spec.label}: returned {out.shape} {out.dtype}, expected {image.shape} uint8")
    return out


def _metric_meta(name: str, recognizer: str) -> dict[str, Any]:
    """unit, higher_is_better, library and notes of a per-image metric (from the metric classes)."""
    base = name.removesuffix("_region")
    if base in ("ssim", "psnr", "mae", "mse", "lpips_alex", "lpips_vgg"):
        from .metrics import QUALITY_METRICS

        m = QUALITY_METRICS[name]()
        notes = list(getattr(m, "notes", ()))
        if name.endswith("_region"):
            notes.append("computed over region pixels only")
        return {"unit": m.unit, "higher_is_better": m.higher_is_better, "library": m.library, "notes": notes}
    if name == "mae_outside":
        return {
            "unit": "",
            "higher_is_better": False,
            "library": "privpix",
            "notes": [
                "mean |processed - original| outside the regions, data range 1: 0 = the rest is untouched"
            ],
        }
    if name in _CONTENT_BASE:
        return {
            "unit": "",
            "higher_is_better": True,
            "library": "privpix (LaMa loss definitions)",
            "notes": [
                "inside the region, native size, inputs in [0, 1]; higher = more different (ERASER Table 3)"
            ],
        }
    if name == "identity_similarity":
        return {
            "unit": "cosine",
            "higher_is_better": False,
            "library": f"privpix ({recognizer} face embeddings)",
            "notes": [
                "cosine of the embeddings of the original face and the processed image at the same box"
            ],
        }
    if name in _DETECTORS:
        return {
            "unit": "fraction",
            "higher_is_better": True,
            "library": _DETECTORS[name],
            "notes": [
                "share of processed images in which a face is still detected (originals with a face only)"
            ],
        }
    return {"unit": "", "higher_is_better": None, "library": "privpix", "notes": []}

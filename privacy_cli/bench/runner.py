"""The bench runner: methods over a dataset, scored with the quality, content-difference, privacy and
utility metrics of :mod:`privacy_cli.bench.metrics` / :mod:`privacy_cli.bench.privacy`.

Flow per image: load (EXIF orientation applied) -> downscale so the longer side is at most
``max_side`` (INTER_AREA) -> regions (the dataset's annotations, or detected faces) -> mask with the
same geometry as the image commands (face boxes scaled by ``box_scale``) -> every method -> per-image
metric values. Dataset-level metrics (FID, de-identification rate, rank-1 re-identification,
classifier top-k change) are computed at the end from cached per-image features.

Everything expensive is cached on disk under ``cache_dir`` (default ``$PRIVPIX_CACHE_DIR/bench`` or
``~/.cache/privpix/bench``), keyed by content: detections by (image file sha256, detectors, size,
privpix version); outputs by (method, options, image sha256, regions, geometry, privpix version);
per-image metric values by output key and metric name; features (Inception, face embeddings,
classifier logits) by image key. A re-run therefore only computes what changed; the counters in
:class:`CacheStats` say what was computed and what was reused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, MethodError, PrivpixError, RegionError, UsageError, WeightsError
from ..regions import Region, Regions
from .datasets import BenchDataset, BenchItem

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
UTILITY = ("detect_rate_dlib", "detect_rate_mtcnn", "top1_change", "top5_change")
ALL_METRICS = QUALITY + QUALITY_REGION + CONTENT + PRIVACY + UTILITY
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "quality": QUALITY + QUALITY_REGION,
    "content": CONTENT,
    "privacy": PRIVACY,
    "utility": UTILITY,
    "all": ALL_METRICS,
    # paper presets
    "eraser": ("ssim", "psnr", "fid", "lpips_vgg") + CONTENT,
    "private-encoder": ("mse", "ssim", "fid", "identity_similarity", "deid_rate", "detect_rate_dlib"),
}
#: metrics computed from per-image features at the end (not per-image values)
DATASET_LEVEL = ("fid", "deid_rate", "reid_rank1", "top1_change", "top5_change")
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
    ("top1_change", "top5_change"),
)
_CONTENT_BASE = {"content_mae": "mae", "fm": "fm", "adv": "adv", "pl_v": "pl_v", "pl_r": "pl_r"}
_DETECTORS = {"detect_rate_dlib": "dlib-hog", "detect_rate_mtcnn": "mtcnn"}

#: bump when a per-image value's definition changes, so cached values are not reused
METRICS_CACHE_VERSION = "1"


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"ssim,psnr,privacy"`` -> metric names (groups expanded, order kept); None/"" = default set.

    Groups: quality, content, privacy, utility, all, eraser (Tables 2-3), private-encoder (Tables 1-5).
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


def parse_methods(spec: str | Sequence[str]) -> list[MethodSpec]:
    """Parse ``--methods``.

    ``"blur,pixelate:block=16,mask"``; options follow the method after ``:`` (several as
    ``blur:radius=8:strength=2`` or ``blur:radius=8,strength=2``: a comma item holding ``=`` and
    no method belongs to the method before it). ``radius=2/4/8`` expands into one spec per value
    (a strength sweep). ``none`` is the unchanged image. Method names and option names are checked
    against the methods registry (UsageError otherwise).
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
        _fn, accepted = _method_params(name)
        for k, _v in opts:
            if accepted is not None and k not in accepted:
                known = ", ".join(sorted(accepted)) or "none"
                raise UsageError(f"--methods: {name} has no option {k!r} (options: {known})")
        combos: list[list[tuple[str, Any]]] = [[]]
        for k, v in opts:
            values = (
                [_coerce(x) for x in v.split("/")] if "/" in v and not v.startswith("#") else [_coerce(v)]
            )
            combos = [c + [(k, x)] for c in combos for x in values]
        for c in combos:
            spec_ = MethodSpec(name, tuple(sorted(dict(c).items())))
            if spec_ not in out:
                out.append(spec_)
    return out


def apply_method(spec: MethodSpec, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Run ``spec`` on ``image`` (H,W,3) uint8 with ``mask`` (H,W) float32 [0,1]; (H,W,3) uint8."""
    fn, _ = _method_params(spec.name)
    if not mask.any():
        return image.copy()
    try:
        out = fn(image, mask, **spec.kwargs)
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


# --------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$PRIVPIX_CACHE_DIR/bench``, else ``$XDG_CACHE_HOME/privpix/bench``, else ``~/.cache/privpix/bench``."""
    env = os.environ.get("PRIVPIX_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "bench"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "privpix" / "bench"


def _h(*parts: Any) -> str:
    """sha256 over the canonical JSON of ``parts`` (24 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DiskCache:
    """Content-addressed store: PNG images, JSON documents and (via ``features``) arrays.

    ``root=None`` keeps everything in memory for this run only. Writes are atomic (tmp + rename).
    """

    def __init__(self, root: Path | None) -> None:
        from .features import FeatureCache

        self.root = Path(root) if root is not None else None
        self._mem_json: dict[str, Any] = {}
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.features = FeatureCache(self.root / "features")
        else:
            self.features = FeatureCache(None)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_json(self, kind: str, key: str) -> Any | None:
        mk = f"{kind}/{key}"
        if mk in self._mem_json:
            return self._mem_json[mk]
        if self.root is None:
            return None
        p = self._path(kind, key, ".json")
        try:
            value = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        self._mem_json[mk] = value
        return value

    def put_json(self, kind: str, key: str, value: Any) -> None:
        self._mem_json[f"{kind}/{key}"] = value
        if self.root is None:
            return
        p = self._path(kind, key, ".json")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, sort_keys=True, default=_json_default))
        tmp.replace(p)

    def has_image(self, key: str) -> bool:
        """True when the output image ``key`` is stored (always True without a cache folder)."""
        return self.root is None or self._path("outputs", key, ".png").is_file()

    def get_image(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        p = self._path("outputs", key, ".png")
        if not p.is_file():
            return None
        import cv2

        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        return np.ascontiguousarray(bgr[..., ::-1])

    def put_image(self, key: str, rgb: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 RGB output losslessly (PNG); a no-op without a cache folder."""
        if self.root is None:
            return
        import cv2

        p = self._path("outputs", key, ".png")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{key}.{os.getpid()}.tmp.png")
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"{tmp}: cannot write cache image")
        tmp.replace(p)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class CacheStats:
    """What a run computed and what it reused (a re-run of an unchanged bench computes nothing)."""

    outputs_computed: int = 0
    outputs_cached: int = 0
    values_computed: int = 0
    values_cached: int = 0
    detections_computed: int = 0
    detections_cached: int = 0

    @property
    def computed(self) -> int:
        return self.outputs_computed + self.values_computed + self.detections_computed

    def add(self, other: CacheStats) -> None:
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_json(self) -> dict[str, int]:
        d = asdict(self)
        d["computed"] = self.computed
        return d


# -------------------------------------------------------------------------------------------- config


@dataclass
class BenchConfig:
    """How to run the bench.

    metrics: names (see :data:`ALL_METRICS`; None = every metric that applies to the dataset).
    max_side: longer image side in pixels after downscaling (0 = native size). detect: detectors
    used when the dataset has no annotated regions. box_scale / dilate: mask geometry as in the image
    commands. recognizer: face recogniser for the privacy metrics (dlib, facenet, arcface).
    classifier: registry classifier for top-1/top-5 (paper 002). cache_dir: None = no disk cache.
    fid_dims: pytorch-fid feature block for FID (2048 = standard pool3; 64/192/768 are cheaper and
    not comparable with published numbers).
    """

    metrics: tuple[str, ...] | None = None
    max_side: int = 1024
    device: str = "cpu"
    detect: tuple[str, ...] = ("faces",)
    box_scale: float = 1.3
    dilate: int = 0
    recognizer: str = "dlib"
    classifier: str = "vgg16"
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    batch_size: int = 16
    #: pytorch-fid feature block: 2048 (pool3, the standard FID), 768, 192 or 64
    fid_dims: int = 2048

    def geometry(self) -> dict[str, Any]:
        return {"box_scale": self.box_scale, "dilate": self.dilate, "max_side": self.max_side}


# ------------------------------------------------------------------------------------------- results


@dataclass
class MethodResult:
    """Scores of one method (or of the processed folder in the pairs format)."""

    spec: MethodSpec
    #: metric name -> MetricResult | MetricUnavailable
    metrics: dict[str, Any] = field(default_factory=dict)
    #: per image: {"key", "image", "identity", metric: value}
    per_image: list[dict[str, Any]] = field(default_factory=list)
    cache: CacheStats = field(default_factory=CacheStats)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.spec.label

    def value(self, name: str) -> float | None:
        r = self.metrics.get(name)
        return None if r is None or not getattr(r, "available", False) else float(r.value)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.spec.to_json(),
            "n_images": len(self.per_image),
            "seconds": round(self.seconds, 3),
            "cache": self.cache.to_json(),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "errors": [{"image": k, "error": e} for k, e in self.errors],
        }


@dataclass
class BenchResult:
    """Everything a bench run produced; :mod:`privacy_cli.bench.report` turns it into files."""

    dataset: BenchDataset
    config: BenchConfig
    methods: list[MethodResult]
    #: identity control on the unprocessed originals (rank-1 re-identification), or None
    control: dict[str, Any] | None = None
    #: region source: "annotations", "detected: faces", ...
    regions_source: str = ""
    image_sizes: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    seconds: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def cache(self) -> CacheStats:
        total = CacheStats()
        for m in self.methods:
            total.add(m.cache)
        total.detections_computed += self._detections[0]
        total.detections_cached += self._detections[1]
        return total

    _detections: tuple[int, int] = (0, 0)

    def unavailable(self) -> dict[str, dict[str, Any]]:
        """metric -> {"reason", "fetch"} for metrics that could not be measured (any method)."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods:
            for name, r in m.metrics.items():
                if not getattr(r, "available", True) and name not in out:
                    out[name] = {"reason": r.reason, "fetch": r.fetch}
        return out

    def method(self, label: str) -> MethodResult:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(label)


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


# ------------------------------------------------------------------------------------------ privacy


class _Faces:
    """Face recogniser state for one run: original faces + embeddings, processed embeddings (all
    cached as arrays: a face is packed as 15 floats, see ``privacy.Face.pack``)."""

    def __init__(self, name: str, device: str, cache: DiskCache) -> None:
        self.name = name
        self.device = device
        self.cache = cache
        self._embedder: Any = None
        self.error: Any = None  # MetricUnavailable when the recogniser cannot load

    def embedder(self) -> Any:
        if self._embedder is None and self.error is None:
            from .metrics import MetricUnavailable
            from .privacy import get_embedder

            try:
                self._embedder = get_embedder(self.name, device=self.device)
            except WeightsError as e:
                fetch = getattr(e, "fetch", None)
                reason = f"face recogniser {self.name}: {e}"
                self.error = MetricUnavailable("identity_similarity", reason, fetch)
        return self._embedder

    def original(self, orig: _Original) -> tuple[Any, np.ndarray | None]:
        """(Face, embedding (D,)) of the largest face of the original, or (None, None)."""
        from .privacy import Face

        kf, ke = f"face:{self.name}:{orig.key}", f"faceemb:{self.name}:{orig.key}"
        packed, emb = self.cache.features.get(kf), self.cache.features.get(ke)
        if packed is None or emb is None:
            emb_ = self.embedder()
            if emb_ is None:
                return None, None
            rgb = orig.rgb()
            found = emb_.detect(rgb)
            e = emb_.embed(rgb, found[0]) if found else None
            if e is None:
                packed, emb = np.full(15, np.nan), np.zeros(0)
            else:
                packed, emb = found[0].pack(), np.asarray(e, np.float64)
            self.cache.features.put(kf, packed)
            self.cache.features.put(ke, emb)
        face = Face.unpack(packed)
        if face is None or emb.size == 0:
            return None, None
        return face, emb

    def processed(self, out_key: str, rgb_fn: Callable[[], np.ndarray], face: Any) -> np.ndarray | None:
        """Embedding of the processed image at its original's face (None when it cannot be embedded)."""
        key = f"faceemb:{self.name}:{out_key}"
        emb = self.cache.features.get(key)
        if emb is None:
            e = self.embedder().embed(rgb_fn(), face)
            emb = np.asarray(e, np.float64) if e is not None else np.zeros(0)
            self.cache.features.put(key, emb)
        return emb if emb.size else None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


# ------------------------------------------------------------------------------------------- runner


def _as_unavailable(name: str, exc: Exception) -> Any:
    """A MetricUnavailable for a metric whose network could not be built (weights missing,
    unregistered, not installed), carrying the fetch command when there is one."""
    from .features import BackboneUnavailable
    from .metrics import MetricUnavailable, unavailable_from

    if isinstance(exc, BackboneUnavailable):
        return unavailable_from(name, exc)
    fetch = getattr(exc, "fetch", None)
    return MetricUnavailable(name, f"{exc} (run: {fetch})" if fetch else str(exc), fetch)


class _Unavailable(Exception):
    def __init__(self, result: Any) -> None:
        super().__init__(getattr(result, "reason", ""))
        self.result = result


class _FidFeatures:
    """Inception pool3 features by image key: queued, computed in batches by
    :class:`~privacy_cli.bench.features.FIDFeatures`, kept in the feature cache."""

    def __init__(self, config: BenchConfig, cache: DiskCache) -> None:
        from .features import FIDFeatures

        self.cache = cache.features
        self.ext = FIDFeatures(
            device=config.device, batch_size=config.batch_size, cache=self.cache, dims=config.fid_dims
        )
        self.queued: set[str] = set()

    def add(self, key: str, rgb_fn: Callable[[], np.ndarray]) -> None:
        from .features import to_tensor

        if key in self.queued or f"{self.ext.prefix}:{key}" in self.cache:
            return
        self.ext.add(to_tensor(rgb_fn()), [key])
        self.queued.add(key)

    def get(self, keys: Sequence[str]) -> list[np.ndarray]:
        self.ext.features()  # computes whatever is still queued (and stores it in the cache)
        out = [self.cache.get(f"{self.ext.prefix}:{k}") for k in keys]
        return [f for f in out if f is not None]


class _FidCollector:
    """FID of one method: originals' features are shared by every method of the run (computed
    once), processed images' features are this method's; both batched and cached."""

    def __init__(self, runner: BenchRunner) -> None:
        if runner._fid_originals is None:
            runner._fid_originals = _FidFeatures(runner.config, runner.cache)
        self.originals = runner._fid_originals
        self.processed = _FidFeatures(runner.config, runner.cache)
        self.dims = runner.config.fid_dims
        self.unavailable = runner._unavailable
        self.okeys: list[str] = []
        self.pkeys: list[str] = []
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []

    def add(
        self, okey: str, orig_rgb: Callable[[], np.ndarray], pkey: str, proc_rgb: Callable[[], np.ndarray]
    ) -> None:
        if "fid" in self.unavailable:
            return
        try:
            self.originals.add(okey, orig_rgb)
            self.processed.add(pkey, proc_rgb)
        except (WeightsError, UsageError) as e:
            self.unavailable["fid"] = _as_unavailable("fid", e)
            return
        self.okeys.append(okey)
        self.pkeys.append(pkey)

    def result(self) -> Any:
        from .metrics import (
            MetricResult,
            MetricUnavailable,
            fid_from_features,
        )

        if "fid" not in self.unavailable:
            try:
                self.real = self.originals.get(self.okeys)
                self.fake = self.processed.get(self.pkeys)
            except (WeightsError, UsageError) as e:
                self.unavailable["fid"] = _as_unavailable("fid", e)
        if "fid" in self.unavailable:
            return self.unavailable["fid"]
        n = min(len(self.real), len(self.fake))
        if n < 2:
            return MetricUnavailable("fid", f"FID needs at least 2 images, got {n}", n=n)
        block = (
            "pool3 (2048-d, the standard FID)"
            if self.dims == 2048
            else f"the {self.dims}-d block (not comparable with papers)"
        )
        notes = [f"pytorch-fid InceptionV3 {block}, images resized to 299x299 (bilinear), inputs in [0, 1]"]
        if n < self.dims:  # rank-deficient covariance
            notes.append(
                f"N={n} < {self.dims}: FID is biased upwards and unreliable; compare only runs with the same N"
            )
        return MetricResult(
            name="fid",
            value=fid_from_features(np.stack(self.real), np.stack(self.fake)),
            higher_is_better=False,
            n=n,
            notes=notes,
            library="pytorch-fid (InceptionV3 pt_inception-2015-12-05)",
            extra={"reliable": n >= self.dims, "dims": self.dims},
        )


class _MethodAcc:
    """What one method accumulates over the images of a run; :meth:`finish` gives its result."""

    def __init__(self, spec: MethodSpec, names: tuple[str, ...], runner: BenchRunner) -> None:
        self.res = MethodResult(spec)
        self.names = names
        self.runner = runner
        self.per_image_names = [n for n in names if n not in DATASET_LEVEL]
        self.values: dict[str, list[float]] = {n: [] for n in self.per_image_names}
        self.fid = _FidCollector(runner) if "fid" in names else None
        self.wants_identity = any(n in names for n in ("deid_rate", "reid_rank1"))
        self.wants_classifier = any(n in names for n in ("top1_change", "top5_change"))
        self.emb_orig: list[np.ndarray | None] = []
        self.emb_proc: list[np.ndarray | None] = []
        self.logits: list[tuple[np.ndarray, np.ndarray] | None] = []
        self.kept: list[_Original] = []

    def finish(self) -> MethodResult:
        r, res = self.runner, self.res
        metrics: dict[str, Any] = {}
        for n in self.per_image_names:
            metrics[n] = r._summarise(n, self.values[n])
        if self.fid is not None:
            metrics["fid"] = self.fid.result()
        if self.wants_identity:
            metrics.update(r._identity_metrics(self.kept, self.emb_orig, self.emb_proc, self.names, res))
        if self.wants_classifier:
            metrics.update(r._classifier_metrics(self.logits, self.names))
        res.metrics = {n: metrics[n] for n in self.names if n in metrics}
        return res


ProgressFactory = Callable[[int, str], AbstractContextManager[Any]]


class BenchRunner:
    """Runs methods over a dataset (see the module docstring). One instance per bench run; the
    disk cache, originals, face embeddings and networks are shared by every method."""

    def __init__(
        self,
        dataset: BenchDataset,
        config: BenchConfig | None = None,
        progress: ProgressFactory | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config or BenchConfig()
        self.cache = DiskCache(self.config.cache_dir)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.faces = _Faces(self.config.recognizer, self.config.device, self.cache)
        self._originals: list[_Original] | None = None
        self.skipped: list[tuple[str, str]] = list(dataset.skipped)
        self._det = [0, 0]
        self._unavailable: dict[str, Any] = {}
        self._classifier: Any = None
        self._fid_originals: _FidFeatures | None = None

    # ---------------------------------------------------------------------------------- metrics

    def metric_names(self) -> tuple[str, ...]:
        """The metrics of this run: the requested ones, or every one that applies to the dataset."""
        if self.config.metrics is not None:
            return self.config.metrics
        names = list(QUALITY + QUALITY_REGION + CONTENT)
        if self.dataset.format in ("faces", "pairs", "folder") or "a105_face_all" in (
            self.dataset.attributes or ("a105_face_all",)
        ):
            names += ["identity_similarity", "detect_rate_dlib", "detect_rate_mtcnn"]
        if self.dataset.has_identities:
            names += ["deid_rate", "reid_rank1"]
        names += ["top1_change", "top5_change"]
        return tuple(names)

    # ------------------------------------------------------------------------------- originals

    def _regions_source(self) -> str:
        if self.dataset.format == "visual-redactions":
            return "annotations (Visual Redactions polygons)"
        return f"detected: {', '.join(self.config.detect)}" if self.config.detect else "none"

    def originals(self) -> list[_Original]:
        """Prepare every item once: file hash and regions (annotated, or detected and cached). Items
        with no region are skipped (except in the pairs format, where whole-image metrics still apply)."""
        if self._originals is not None:
            return self._originals
        out = []
        with self._progress(len(self.dataset.items), "regions") as bar:
            for item in self.dataset.items:
                try:
                    orig = _Original(item, file_sha256(item.image), self.config.max_side)
                    meta = self.cache.get_json("meta", orig.key)
                    if meta is None:
                        orig.rgb()  # decode once to learn the sizes
                        meta = {"size": list(orig.size), "full_size": list(orig.full_size)}
                        self.cache.put_json("meta", orig.key, meta)
                    orig.size, orig.full_size = tuple(meta["size"]), tuple(meta["full_size"])
                    self._prepare_regions(orig)
                except OSError as e:
                    self.skipped.append((item.key, f"{item.image}: cannot read ({e})"))
                    orig = None
                except PrivpixError as e:
                    self.skipped.append((item.key, str(e)))
                    orig = None
                if orig is not None:
                    orig.release()  # decoded again when scored: memory stays flat over large datasets
                    if orig.regions is not None and len(orig.regions) == 0 and self.dataset.format != "pairs":
                        self.skipped.append(
                            (item.key, "no region to process (nothing annotated or detected)")
                        )
                    else:
                        out.append(orig)
                if bar is not None:
                    bar.advance()
        self._originals = out
        return out

    def _prepare_regions(self, orig: _Original) -> None:
        item = orig.item
        if item.regions is not None:
            # annotated regions: scaled from the annotated size to the prepared image size
            if orig.size is None:
                orig.rgb()
            w, h = orig.size
            full_w, full_h = orig.full_size or (w, h)
            aw, ah = item.size or (full_w, full_h)
            if (aw, ah) != (full_w, full_h) and abs(aw / ah - full_w / full_h) > 0.01:
                raise RegionError(
                    f"{item.image}: annotated size {aw}x{ah} does not match image {full_w}x{full_h}"
                )
            orig.regions = _scale_regions(item.regions, w / aw, h / ah, (w, h))
            orig.regions_sig = _h([r.to_json() for r in item.regions], item.size)
            return
        if not self.config.detect:
            orig.regions = None
            return
        key = _h("detect", orig.file_hash, self.config.max_side, sorted(self.config.detect), __version__)
        cached = self.cache.get_json("regions", key)
        if cached is not None:
            self._det[1] += 1
            orig.regions = _regions_from_json(cached["regions"], tuple(cached["size"]))
        else:
            from ..detect import detect

            rgb = orig.rgb()
            found = detect(rgb, kinds=tuple(self.config.detect), device=self.config.device)
            self._det[0] += 1
            h, w = rgb.shape[:2]
            self.cache.put_json("regions", key, {"size": [w, h], "regions": found.to_json()})
            orig.regions = _regions_from_json(found.to_json(), (w, h))
        orig.regions_sig = _h(orig.regions.to_json())

    def _mask(self, orig: _Original) -> np.ndarray:
        if orig.mask is None:
            if orig.regions is None:
                h, w = orig.rgb().shape[:2]
                orig.mask = np.zeros((h, w), np.float32)
            else:
                orig.mask = _mask_for(orig.regions, self.config)
        return orig.mask

    # ---------------------------------------------------------------------------------- running

    def _progress(self, total: int, description: str) -> AbstractContextManager[Any]:
        if self.progress is None or total <= 0:
            return nullcontext(None)
        return self.progress(total, description)

    def run(self, specs: Sequence[MethodSpec] | None = None) -> BenchResult:
        """Score every method of ``specs`` (ignored in the pairs format) over the dataset."""
        t0 = time.perf_counter()
        originals = self.originals()
        if not originals:
            raise InputError(f"{self.dataset.root}: no image left to benchmark ({len(self.skipped)} skipped)")
        if self.dataset.format == "pairs":
            specs = [MethodSpec(f"processed:{self._pairs_label()}")]
        elif not specs:
            raise UsageError("give at least one method (--methods blur,pixelate,mask)")
        results = self.run_methods(specs, originals)
        control = self._control(originals) if self._wants_identity_metrics() else None
        res = BenchResult(
            dataset=self.dataset,
            config=self.config,
            methods=results,
            control=control,
            regions_source=self._regions_source(),
            image_sizes=self._sizes(originals),
            skipped=self.skipped,
            seconds=time.perf_counter() - t0,
        )
        res._detections = (self._det[0], self._det[1])
        return res

    def _pairs_label(self) -> str:
        procs = [str(it.processed) for it in self.dataset.items if it.processed is not None]
        if not procs:
            return "processed"
        root = Path(os.path.commonpath(procs))
        return root.name if root.is_dir() else root.parent.name

    def _sizes(self, originals: list[_Original]) -> dict[str, Any]:
        sizes = [o.size for o in originals if o.size is not None]
        if not sizes:
            return {"max_side": self.config.max_side}
        ws = [s[0] for s in sizes]
        hs = [s[1] for s in sizes]
        return {
            "max_side": self.config.max_side,
            "min": [int(min(ws)), int(min(hs))],
            "max": [int(max(ws)), int(max(hs))],
            "median": [int(np.median(ws)), int(np.median(hs))],
        }

    def _wants_identity_metrics(self) -> bool:
        return any(n in NEEDS_FACES for n in self.metric_names())

    def _output_key(self, spec: MethodSpec, orig: _Original) -> str:
        if orig.item.processed is not None:
            return _h("pair", file_sha256(orig.item.processed), orig.key, __version__)
        return _h(
            "out",
            spec.name,
            spec.options,
            orig.file_hash,
            orig.regions_sig,
            self.config.geometry(),
            __version__,
        )

    def _processed(self, spec: MethodSpec, orig: _Original, out_key: str, stats: CacheStats) -> np.ndarray:
        """The processed image (H, W, 3) uint8 at the prepared original's size: from the pairs
        folder, the cache, or by running the method."""
        if orig.item.processed is not None:
            rgb = orig.rgb()
            h, w = rgb.shape[:2]
            full = _load_resized(orig.item.processed, 0)[0]
            ow, oh = orig.full_size or (w, h)
            if full.shape[:2] != (oh, ow):
                raise InputError(
                    f"{orig.item.processed}: size {full.shape[1]}x{full.shape[0]} differs from its original "
                    f"{orig.item.image} ({ow}x{oh})"
                )
            if (ow, oh) != (w, h):
                import cv2

                return cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
            return full
        cached = self.cache.get_image(out_key)
        if cached is not None and (orig.size is None or cached.shape[:2] == (orig.size[1], orig.size[0])):
            stats.outputs_cached += 1
            return cached
        out = apply_method(spec, orig.rgb(), self._mask(orig))
        stats.outputs_computed += 1
        self.cache.put_image(out_key, out)
        return out

    def run_method(self, spec: MethodSpec, originals: list[_Original] | None = None) -> MethodResult:
        """Apply ``spec`` to every original and score it."""
        return self.run_methods([spec], originals)[0]

    def run_methods(
        self, specs: Sequence[MethodSpec], originals: list[_Original] | None = None
    ) -> list[MethodResult]:
        """Apply every method to every original and score them. Each original is decoded once and
        released after all methods have seen it, so memory does not grow with the dataset."""
        originals = originals if originals is not None else self.originals()
        names = self.metric_names()
        accs = [_MethodAcc(s, names, self) for s in specs]
        label = specs[0].label if len(specs) == 1 else f"{len(specs)} methods"
        with self._progress(len(originals) * len(accs), label) as bar:
            for orig in originals:
                for acc in accs:
                    t0 = time.perf_counter()
                    self._score(acc, orig)
                    acc.res.seconds += time.perf_counter() - t0
                    if bar is not None:
                        bar.advance()
                orig.release()
        return [acc.finish() for acc in accs]

    def _score(self, acc: _MethodAcc, orig: _Original) -> None:
        """Process one original with one method and record its per-image values and features."""
        res, spec = acc.res, acc.res.spec
        try:
            out_key = self._output_key(spec, orig)
            pc: dict[str, np.ndarray] = {}

            def proc_rgb() -> np.ndarray:
                if "rgb" not in pc:
                    pc["rgb"] = self._processed(spec, orig, out_key, res.cache)
                return pc["rgb"]

            row_vals = self._image_values(acc.per_image_names, orig, out_key, proc_rgb, res.cache)
            eo = ep = None
            if acc.wants_identity and self.faces.embedder() is not None:
                face, eo = self.faces.original(orig)
                ep = self.faces.processed(out_key, proc_rgb, face) if face is not None else None
            lg = self._logits(orig, out_key, proc_rgb) if acc.wants_classifier else None
            if acc.fid is not None:
                acc.fid.add(orig.key, orig.rgb, out_key, proc_rgb)
            if orig.item.processed is None and "rgb" not in pc:
                if self.cache.has_image(out_key):
                    # every value was cached: the stored output is reused without being read
                    res.cache.outputs_cached += 1
                else:
                    proc_rgb()  # values cached but the output was not: keep the cache complete
        except PrivpixError as e:
            res.errors.append((orig.item.key, str(e)))
            return
        acc.emb_orig.append(eo)
        acc.emb_proc.append(ep)
        acc.logits.append(lg)
        acc.kept.append(orig)
        row: dict[str, Any] = {
            "key": orig.item.key,
            "image": str(orig.item.image),
            "identity": orig.item.identity,
        }
        for n in acc.per_image_names:
            v = row_vals.get(n, float("nan"))
            acc.values[n].append(v)
            row[n] = v
        res.per_image.append(row)

    # ---------------------------------------------------------------------- per-image values

    def _image_values(
        self,
        names: Sequence[str],
        orig: _Original,
        out_key: str,
        proc_rgb: Callable[[], np.ndarray],
        stats: CacheStats,
    ) -> dict[str, float]:
        """Per-image metric values, from the cache where possible (NaN = not measurable)."""
        vkey = _h("values", out_key, METRICS_CACHE_VERSION, self.config.recognizer)
        cached = self.cache.get_json("values", vkey) or {}
        out: dict[str, float] = {}
        todo = []
        for n in names:
            if n == "fid":
                continue
            if n in self._unavailable:
                out[n] = float("nan")
            elif n in cached:
                out[n] = float("nan") if cached[n] is None else float(cached[n])
                stats.values_cached += 1
            else:
                todo.append(n)
        if not todo:
            return out
        computed = self._compute_values(todo, orig, out_key, proc_rgb)
        for n, v in computed.items():
            out[n] = v
            if n not in self._unavailable:
                cached[n] = None if math.isnan(v) else v
                stats.values_computed += 1
        self.cache.put_json("values", vkey, cached)
        return out

    def _compute_values(
        self, names: Sequence[str], orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray]
    ) -> dict[str, float]:
        from .features import to_tensor
        from .metrics import content_difference_values, lpips, mae, mse, psnr, ssim

        out: dict[str, float] = {}
        t = to_tensor(orig.rgb(), self.config.device)
        p = to_tensor(proc_rgb(), self.config.device)
        mask_np = self._mask(orig) if orig.regions is not None else None
        has_region = mask_np is not None and bool((mask_np > 0).any())
        m = None
        if has_region:
            import torch

            m = torch.from_numpy((mask_np > 0).astype(np.float32))[None, None].to(self.config.device)
        funcs: dict[str, Callable[..., Any]] = {"ssim": ssim, "psnr": psnr, "mae": mae, "mse": mse}
        content_todo = []
        for n in names:
            base = n.removesuffix("_region")
            region = n.endswith("_region")
            try:
                if n in _CONTENT_BASE:
                    content_todo.append(n)
                    continue
                if region and not has_region:
                    out[n] = float("nan")
                    continue
                if n == "mae_outside":
                    import torch

                    outside = (1.0 - m) if m is not None else torch.ones_like(t[:, :1])
                    out[n] = float(mae(p, t, outside, reduction="none")[0]) if outside.any() else float("nan")
                elif base in funcs:
                    out[n] = float(funcs[base](p, t, m if region else None, reduction="none")[0])
                elif base in ("lpips_alex", "lpips_vgg"):
                    if min(t.shape[-2:]) < 32:
                        out[n] = float("nan")
                        continue
                    net = base.split("_")[1]
                    out[n] = float(lpips(p, t, net, m if region else None, reduction="none")[0])
                elif n == "identity_similarity":
                    out[n] = self._identity_similarity(orig, out_key, proc_rgb)
                elif n in _DETECTORS:
                    out[n] = self._detected(n, orig, out_key, proc_rgb)
            except (WeightsError, UsageError) as e:
                self._mark_unavailable(n, e)
                out[n] = float("nan")
            except _Unavailable as e:
                self._mark_unavailable(n, e.result)
                out[n] = float("nan")
        if content_todo:
            if not has_region:
                out.update({n: float("nan") for n in content_todo})
            else:
                # one call per network, so one missing network does not take the others down
                for group in (("content_mae",), ("fm", "adv"), ("pl_v",), ("pl_r",)):
                    todo = [n for n in group if n in content_todo]
                    if not todo:
                        continue
                    try:
                        vals: dict[str, Any] = content_difference_values(
                            t, p, m, [_CONTENT_BASE[n] for n in todo]
                        )
                    except (WeightsError, UsageError) as e:
                        vals = {_CONTENT_BASE[n]: e for n in todo}
                    for n in todo:
                        v = vals[_CONTENT_BASE[n]]
                        if isinstance(v, Exception):
                            self._mark_unavailable(n, v)
                            out[n] = float("nan")
                        else:
                            out[n] = float(v[0])
        return out

    def _mark_unavailable(self, name: str, why: Any) -> None:
        """Record ``name`` (and the metrics sharing its network) as unavailable for this run."""
        from .metrics import MetricUnavailable

        base = why if isinstance(why, MetricUnavailable) else _as_unavailable(name, why)
        names = next((g for g in _SHARED_NET if name in g), (name,))
        for n in names:
            if n not in self._unavailable:
                self._unavailable[n] = MetricUnavailable(n, base.reason, base.fetch, list(base.notes))

    def _identity_similarity(
        self, orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray]
    ) -> float:
        if self.faces.embedder() is None:
            raise _Unavailable(self.faces.error)
        face, eo = self.faces.original(orig)
        if face is None:
            return float("nan")
        ep = self.faces.processed(out_key, proc_rgb, face)
        if ep is None:
            return float("nan")
        return _cosine(eo, ep)

    def _detected(
        self, name: str, orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray]
    ) -> float:
        """Share of the original's faces (found by the same detector) still detected in the processed
        image (IoU >= 0.4, paper 004's utility); NaN when the original has no face."""
        from .privacy import Face, face_detection_rate

        det = _DETECTORS[name]
        ko = f"faces:{det}:{orig.key}"
        packed = self.cache.features.get(ko)
        try:
            if packed is None:
                from .privacy import detect_faces

                found = detect_faces(orig.rgb(), det, device=self.config.device)
                packed = np.stack([f.pack() for f in found]) if found else np.zeros((0, 15))
                self.cache.features.put(ko, packed)
            refs = [f.box for f in (Face.unpack(row) for row in packed) if f is not None]
            if not refs:
                return float("nan")
            r = face_detection_rate([proc_rgb()], det, reference_boxes=[refs], device=self.config.device)
        except WeightsError as e:
            from .metrics import MetricUnavailable

            raise _Unavailable(MetricUnavailable(name, str(e), getattr(e, "fetch", None))) from None
        return float(r.per_item[0]) if getattr(r, "available", False) and r.per_item else float("nan")

    # -------------------------------------------------------------------------- summaries

    def _summarise(self, name: str, vals: list[float]) -> Any:
        """Mean over measurable images as a MetricResult (MetricUnavailable when none could be)."""
        from .metrics import MetricResult, MetricUnavailable

        if name in self._unavailable:
            return self._unavailable[name]
        meta = _metric_meta(name, self.faces.name)
        arr = np.asarray(vals, np.float64)
        ok = ~np.isnan(arr)
        notes = list(meta["notes"])
        if (~ok).any():
            why = (
                "without a region"
                if name in NEEDS_REGION
                else (
                    "without a detectable face in the original" if name in NEEDS_FACES else "not measurable"
                )
            )
            notes.append(f"{int((~ok).sum())} image(s) {why} left out")
        if name.startswith("psnr"):
            inf = np.isinf(arr)
            if inf.any():
                notes.append(f"{int(inf.sum())} unchanged image(s) (infinite PSNR) left out of the mean")
            ok &= ~inf
        if not ok.any():
            if name in NEEDS_FACES:
                why = f"no face found by {self.faces.name if name == 'identity_similarity' else _DETECTORS[name]} in any original"
            elif name in NEEDS_REGION:
                why = "no image has a region"
            else:
                why = "no image could be measured"
            return MetricUnavailable(name, why, notes=notes)
        extra = {"std": float(arr[ok].std())} if ok.sum() > 1 else {}
        return MetricResult(
            name=name,
            value=float(arr[ok].mean()),
            unit=meta["unit"],
            higher_is_better=meta["higher_is_better"],
            n=int(ok.sum()),
            notes=notes,
            library=meta["library"],
            per_item=[float(v) for v in arr],
            extra=extra,
        )

    def _control(self, originals: list[_Original]) -> dict[str, Any] | None:
        """Rank-1 re-identification of the unprocessed originals against the other originals."""
        if not self.dataset.has_identities or self.faces.embedder() is None:
            return None
        from .privacy import reid_control

        embs, ids = self._gallery(originals)
        ctl = reid_control(embs, ids)
        d = ctl.to_dict()
        d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
        d["recognizer"] = self.faces.name
        d["n_originals"] = len(ids)
        d["n_with_face"] = int((~np.isnan(embs).any(axis=1)).sum()) if len(embs) else 0
        return d

    def _gallery(self, originals: Sequence[_Original]) -> tuple[np.ndarray, list[str]]:
        """Embeddings (N, D) of the originals with identities (NaN rows = no face) and their identities."""
        rows, ids = [], []
        dim = 0
        for o in originals:
            if o.item.identity is None:
                continue
            _face, e = self.faces.original(o)
            rows.append(e)
            ids.append(o.item.identity)
            if e is not None:
                dim = len(e)
        dim = dim or getattr(self.faces.embedder(), "dim", 128)
        embs = (
            np.stack([r if r is not None else np.full(dim, np.nan) for r in rows])
            if rows
            else np.zeros((0, dim))
        )
        return embs, ids

    def _identity_metrics(
        self,
        kept: list[_Original],
        emb_orig: list[np.ndarray | None],
        emb_proc: list[np.ndarray | None],
        names: Sequence[str],
        res: MethodResult,
    ) -> dict[str, Any]:
        """De-identification rate (threshold calibrated on the originals' different-identity pairs)
        and rank-1 re-identification against the other originals (refused when the control fails)."""
        from .metrics import MetricUnavailable
        from .privacy import (
            calibrate_threshold,
            deidentification_rate,
            identity_similarity,
            reid_control,
            reidentification_rate,
        )

        wanted = [n for n in ("deid_rate", "reid_rank1") if n in names]
        if self.faces.embedder() is None:
            err = self.faces.error
            return {n: MetricUnavailable(n, err.reason, err.fetch) for n in wanted}
        if not self.dataset.has_identities:
            why = "needs identity labels (faces format: <identity>/<photo> folders or a file,identity CSV)"
            return {n: MetricUnavailable(n, why) for n in wanted}
        rows = [
            (eo, ep, o.item.identity)
            for o, eo, ep in zip(kept, emb_orig, emb_proc, strict=True)
            if o.item.identity is not None
        ]
        dim = next((len(r[0]) for r in rows if r[0] is not None), 0)
        if dim == 0 or len(rows) < 2:
            return {n: MetricUnavailable(n, "fewer than 2 originals with a detectable face") for n in wanted}
        nan = np.full(dim, np.nan)
        eo = np.stack([r[0] if r[0] is not None else nan for r in rows])
        ep = np.stack([r[1] if (r[1] is not None and r[0] is not None) else nan for r in rows])
        ids = [r[2] for r in rows]
        out: dict[str, Any] = {}
        rec = f"{self.faces.name}"
        if "deid_rate" in wanted:
            try:
                thr = calibrate_threshold(eo, ids)
            except InputError as e:
                out["deid_rate"] = MetricUnavailable("deid_rate", f"threshold calibration: {e}")
            else:
                sims = identity_similarity(eo, ep)
                out["deid_rate"] = deidentification_rate(sims, thr, recogniser=rec)
        if "reid_rank1" in wanted:
            ctl = reid_control(eo, ids)
            out["reid_rank1"] = reidentification_rate(eo, ep, ids, control=ctl, recogniser=rec)
        return out

    # ------------------------------------------------------------------------------ classifier

    def _classifier_model(self) -> Any:
        if self._classifier is None:
            from ..models import build_model
            from .features import BackboneUnavailable, fetch_command

            name = self.config.classifier
            try:
                self._classifier = build_model(name, pretrained=True, device=self.config.device)
            except WeightsError as e:
                raise BackboneUnavailable(str(e), fetch_command(name)) from e
            except (UsageError, ImportError) as e:
                raise BackboneUnavailable(f"classifier {name!r} is not available ({e})", None) from e
        return self._classifier

    def _logits(self, orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray]) -> Any:
        if "top1_change" in self._unavailable:
            return None

        name = self.config.classifier
        try:
            pair = []
            for key, rgb_fn in ((orig.key, orig.rgb), (out_key, proc_rgb)):
                ck = f"logits:{name}:{key}"
                v = self.cache.features.get(ck)
                if v is None:
                    v = _classify(self._classifier_model(), rgb_fn(), self.config.device)
                    self.cache.features.put(ck, v)
                pair.append(v)
            return (pair[0], pair[1])
        except (WeightsError, UsageError) as e:
            for n in ("top1_change", "top5_change"):
                self._unavailable[n] = _as_unavailable(n, e)
            return None

    def _classifier_metrics(self, logits: list, names: Sequence[str]) -> dict[str, Any]:
        from .metrics import MetricUnavailable, classifier_topk_change

        wanted = [n for n in ("top1_change", "top5_change") if n in names]
        if any(n in self._unavailable for n in wanted):
            return {n: self._unavailable[n] for n in wanted}
        pairs = [p for p in logits if p is not None]
        if not pairs:
            return {n: MetricUnavailable(n, "no image could be classified") for n in wanted}
        import torch

        before = torch.from_numpy(np.stack([p[0] for p in pairs]))
        after = torch.from_numpy(np.stack([p[1] for p in pairs]))
        r = classifier_topk_change(before, after, ks=(1, 5), classifier=self.config.classifier)
        out = {}
        for n in wanted:
            k = n[:4]
            res = r[n]
            if getattr(res, "available", False):
                res.extra.update(
                    {
                        "before": r[f"{k}_before"].value,
                        "after": r[f"{k}_after"].value,
                    }
                )
            out[n] = res
        return out


def _classify(model: Any, rgb: np.ndarray, device: str) -> np.ndarray:
    """(1000,) float32 logits of an ImageNet classifier: resize shorter side to 256, centre crop 224,
    ImageNet normalisation."""
    import cv2
    import torch

    h, w = rgb.shape[:2]
    s = 256 / min(h, w)
    img = cv2.resize(rgb, (max(224, round(w * s)), max(224, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    y0, x0 = (h - 224) // 2, (w - 224) // 2
    img = img[y0 : y0 + 224, x0 : x0 + 224].astype(np.float32) / 255.0
    img = (img - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
    with torch.no_grad():
        out = model(x)
    if isinstance(out, tuple | list):
        out = out[0]
    return out[0].float().cpu().numpy()


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


def library_versions() -> dict[str, str]:
    """Versions of the libraries the metrics come from (for the report)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "privpix": __version__}
    for dist in (
        "torch",
        "torchvision",
        "torchmetrics",
        "lpips",
        "pytorch-fid",
        "scikit-image",
        "dlib-bin",
        "numpy",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def run_bench(
    dataset: BenchDataset,
    methods: Sequence[MethodSpec] | str | None,
    config: BenchConfig | None = None,
    progress: ProgressFactory | None = None,
) -> BenchResult:
    """One-call API: parse ``methods`` if a string, run every method over ``dataset``, return results."""
    specs = parse_methods(methods) if isinstance(methods, str) else list(methods or [])
    return BenchRunner(dataset, config, progress).run(specs)


def iter_metric_rows(result: BenchResult) -> Iterator[dict[str, Any]]:
    """Flat per-image rows (method, key, image, identity, metrics...) for per_image.csv."""
    for m in result.methods:
        for row in m.per_image:
            yield {"method": m.label, **row}

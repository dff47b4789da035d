"""Metric scheduling: per image and method, which metric values are cached, which to compute (batched
per network), which are unavailable and why; FID features; per-method accumulation and summaries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PrivpixError, UsageError, WeightsError
from .cache import CacheStats, DiskCache, _h
from .originals import _Original
from .results import BenchConfig, MethodResult
from .specs import (
    _CONTENT_BASE,
    _DETECTORS,
    _SHARED_NET,
    DATASET_LEVEL,
    IDENTITY_METHOD,
    METRICS_CACHE_VERSION,
    NEEDS_FACES,
    NEEDS_REGION,
    PIXEL_METRICS,
    MethodSpec,
    _metric_meta,
)

if TYPE_CHECKING:
    from .runner import BenchRunner

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
        from .classifier_scoring import wanted_views

        #: classifier views (paper 002's Table 1) whose metrics are asked for
        self.views = wanted_views(names)
        self.emb_orig: list[np.ndarray | None] = []
        self.emb_proc: list[np.ndarray | None] = []
        #: per kept image: {view: (logits of the original, of the output)}, or None
        self.logits: list[dict[str, tuple[np.ndarray, np.ndarray]] | None] = []
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
        if self.views:
            keys = [o.item.key for o in self.kept]
            metrics.update(r._classifier_metrics(self.logits, keys, self.names, r._class_labels))
        res.metrics = {n: metrics[n] for n in self.names if n in metrics}
        return res


#: methods whose outputs a worker thread may compute: no torch model, no state shared between images
#: (the image commands run the same ones two images at once: ``cli.batch.auto_workers``)
AHEAD_METHODS = ("blur", "pixelate", "mask", IDENTITY_METHOD)


@dataclass
class _Ahead:
    """What :meth:`MetricScheduling._compute_ahead` computed for one (original, method), possibly in a
    worker thread: the output key, the processed image (H, W, 3) uint8 when it was needed, the pixel
    metric values by name, the cache counters of that work and its seconds (wall, of that thread)."""

    out_key: str
    rgb: np.ndarray | None = None
    values: dict[str, float] = field(default_factory=dict)
    stats: CacheStats = field(default_factory=CacheStats)
    seconds: float = 0.0


def can_compute_ahead(spec: MethodSpec, processed_given: bool = False) -> bool:
    """True when ``spec``'s outputs and pixel metrics may be computed in a worker thread: a classical
    method (:data:`AHEAD_METHODS`, no learned model) or a given processed image (pairs format)."""
    return processed_given or (spec.name in AHEAD_METHODS and not spec.kwargs.get("learned"))


class MetricScheduling:
    """Per-image metric scheduling of :class:`~privacy_cli.bench.runner.BenchRunner` (a mixin): which
    metrics apply, cached values, computing what is missing, dataset-level summaries."""

    def _compute_ahead(self, accs: Sequence[_MethodAcc], orig: _Original) -> list[_Ahead | None]:
        """The thread-safe part of :meth:`_score` for one original and every method: for methods that
        :func:`can_compute_ahead`, the output (from the cache or by running the method) and its
        :data:`PIXEL_METRICS` values that the value cache does not hold. None for the other methods, and
        for a method that failed here (:meth:`_score` meets the same error again and records it).
        Touches only ``orig`` and the cache, so the runner calls it for several originals at once."""
        out: list[_Ahead | None] = []
        for acc in accs:
            spec = acc.res.spec
            if not can_compute_ahead(spec, orig.item.processed is not None):
                out.append(None)
                continue
            t0 = time.perf_counter()
            try:
                ahead = _Ahead(self._output_key(spec, orig))
                cached = self.cache.get_json("values", self._values_key(ahead.out_key)) or {}
                todo = [n for n in acc.per_image_names if n in PIXEL_METRICS and n not in cached]
                if todo:
                    ahead.rgb = self._processed(spec, orig, ahead.out_key, ahead.stats)
                    ahead.values = self._pixel_values(todo, orig, ahead.rgb)
            except PrivpixError:
                out.append(None)
                continue
            ahead.seconds = time.perf_counter() - t0
            out.append(ahead)
        return out

    def _score(self, acc: _MethodAcc, orig: _Original, ahead: _Ahead | None = None) -> None:
        """Process one original with one method and record its per-image values and features
        (``ahead``: what :meth:`_compute_ahead` already computed for them)."""
        res, spec = acc.res, acc.res.spec
        try:
            pc: dict[str, np.ndarray] = {}
            if ahead is not None:
                out_key = ahead.out_key
                res.cache.add(ahead.stats)
                if ahead.rgb is not None:
                    pc["rgb"] = ahead.rgb
            else:
                out_key = self._output_key(spec, orig)

            def proc_rgb() -> np.ndarray:
                if "rgb" not in pc:
                    pc["rgb"] = self._processed(spec, orig, out_key, res.cache)
                return pc["rgb"]

            row_vals = self._image_values(
                acc.per_image_names, orig, out_key, proc_rgb, res.cache, ahead.values if ahead else None
            )
            eo = ep = None
            if acc.wants_identity and self.faces.embedder() is not None:
                face, eo = self.faces.original(orig)
                ep = self.faces.processed(out_key, proc_rgb, face) if face is not None else None
            lg = self._logits(orig, out_key, proc_rgb, acc.views) if acc.views else None
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
        ahead: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Per-image metric values, from the cache where possible, else from ``ahead`` (values computed
        by :meth:`_compute_ahead`), else computed now (NaN = not measurable)."""
        vkey = self._values_key(out_key)
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
        computed = {n: ahead[n] for n in todo if ahead and n in ahead}
        rest = [n for n in todo if n not in computed]
        if rest:
            computed.update(self._compute_values(rest, orig, out_key, proc_rgb))
        for n, v in computed.items():
            out[n] = v
            if n not in self._unavailable:
                cached[n] = None if math.isnan(v) else v
                stats.values_computed += 1
        self.cache.put_json("values", vkey, cached)
        return out

    def _values_key(self, out_key: str) -> str:
        return _h("values", out_key, METRICS_CACHE_VERSION, self.config.recognizer)

    def _region_tensor(self, orig: _Original) -> Any:
        """The region mask as a ``(1, 1, H, W)`` {0, 1} float32 tensor, None without a region."""
        mask_np = self._mask(orig) if orig.regions is not None else None
        if mask_np is None or not bool((mask_np > 0).any()):
            return None
        import torch

        return torch.from_numpy((mask_np > 0).astype(np.float32))[None, None].to(self.config.device)

    def _pixel_values(self, names: Sequence[str], orig: _Original, proc: np.ndarray) -> dict[str, float]:
        """SSIM/PSNR/MAE/MSE, their region variants and MAE outside the regions in one pass (one SSIM
        map, one difference image); region metrics are NaN for an image without a region. Thread-safe."""
        from .features import to_tensor
        from .metrics import quality_values

        m = self._region_tensor(orig)
        pixel = [n for n in names if n in PIXEL_METRICS and (m is not None or not n.endswith("_region"))]
        out = {n: float("nan") for n in names if n in PIXEL_METRICS}
        if pixel:
            t = to_tensor(orig.rgb(), self.config.device)
            p = to_tensor(proc, self.config.device)
            out.update({n: float(v[0]) for n, v in quality_values(p, t, m, pixel).items()})
        return out

    def _compute_values(
        self, names: Sequence[str], orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray]
    ) -> dict[str, float]:
        from .features import to_tensor
        from .metrics import content_difference_values, lpips

        out = self._pixel_values(names, orig, proc_rgb()) if any(n in PIXEL_METRICS for n in names) else {}
        m = self._region_tensor(orig)
        has_region = m is not None
        tensors: list[Any] = []

        def images() -> tuple[Any, Any]:
            """(original, processed) as (1, 3, H, W) tensors, converted once when first needed."""
            if not tensors:
                tensors.extend(
                    (to_tensor(orig.rgb(), self.config.device), to_tensor(proc_rgb(), self.config.device))
                )
            return tensors[0], tensors[1]

        content_todo = []
        for n in names:
            if n in out:
                continue
            base = n.removesuffix("_region")
            region = n.endswith("_region")
            try:
                if n in _CONTENT_BASE:
                    content_todo.append(n)
                    continue
                if region and not has_region:
                    out[n] = float("nan")
                    continue
                if base in ("lpips_alex", "lpips_vgg"):
                    t, p = images()
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
                        t, p = images()
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

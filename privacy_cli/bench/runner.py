"""The bench runner: methods over a dataset, scored with the quality, content-difference, privacy and
utility metrics of :mod:`privacy_cli.bench.metrics` / :mod:`privacy_cli.bench.privacy`.

Flow per image: load (EXIF orientation applied) -> downscale so the longer side is at most
``max_side`` (INTER_AREA) -> regions (the dataset's annotations, or detected faces) -> mask with the
same geometry as the image commands (face boxes scaled by ``box_scale``) -> every method -> per-image
metric values. Dataset-level metrics (FID, de-identification rate, rank-1 re-identification,
classifier top-k change) are computed at the end from cached per-image features. The outputs and
pixel metrics of the next originals are computed in worker threads (``BenchConfig.workers``) while the
current one is scored in input order; method application (output keys, donors, processed images) is
:mod:`~privacy_cli.bench.outputs`, per-image metric scheduling :mod:`~privacy_cli.bench.scheduling`.

Everything expensive is cached on disk under ``cache_dir`` (default ``$PRIVPIX_CACHE_DIR/bench`` or
``~/.cache/privpix/bench``), keyed by content: detections by (image file sha256, detectors, size,
privpix version); outputs by (method, options, image sha256, regions, geometry, privpix version);
per-image metric values by output key and metric name; features (Inception, face embeddings,
classifier logits) by image key. ``deidentify`` outputs also depend on the donor set (k-Same): their
key holds the donor folder's content (names and sha256 of its images) for ``donors=DIR`` or
``$PRIVPIX_DONORS``; without either, the donors are the faces of the bench's own prepared images (as
the command uses the other faces of its run), analysed once and reused when each image is
de-identified, and the key holds those images' keys. A re-run therefore only computes what changed;
the counters in :class:`CacheStats` say what was computed and what was reused.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, PrivpixError, RegionError, UsageError
from .cache import DiskCache, _h, file_sha256
from .classifier_scoring import ClassifierScoring
from .datasets import BenchDataset
from .identity_scoring import IdentityScoring, _Faces
from .originals import _mask_for, _Original, _regions_from_json, _scale_regions
from .outputs import MethodOutputs
from .results import BenchConfig, BenchResult, MethodResult
from .scheduling import MetricScheduling, _Ahead, _FidFeatures, _MethodAcc, can_compute_ahead
from .specs import CONTENT, NEEDS_FACES, QUALITY, QUALITY_REGION, MethodSpec, parse_methods

ProgressFactory = Callable[[int, str], AbstractContextManager[Any]]


class BenchRunner(MethodOutputs, MetricScheduling, IdentityScoring, ClassifierScoring):
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
        #: class index by item key (``config.class_labels``), None = agreement with the original
        self._class_labels: dict[str, int] | None = None
        if self.config.class_labels:
            from .classifier_scoring import label_indices
            from .datasets import load_class_labels

            labels, source = load_class_labels(self.config.class_labels, dataset)
            self._class_labels = label_indices(labels, self.config.classifier, source)
        self._fid_originals: _FidFeatures | None = None
        self._donor_digests: dict[str, str] = {}
        self._dataset_pool: Any = None

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

    def run_method(self, spec: MethodSpec, originals: list[_Original] | None = None) -> MethodResult:
        """Apply ``spec`` to every original and score it."""
        return self.run_methods([spec], originals)[0]

    def run_methods(
        self, specs: Sequence[MethodSpec], originals: list[_Original] | None = None
    ) -> list[MethodResult]:
        """Apply every method to every original and score them. Each original is decoded once and
        released after all methods have seen it, so memory does not grow with the dataset. Outputs and
        pixel metrics of the next originals are computed in worker threads (:meth:`workers`) while
        the current one is scored; scoring and accumulation stay in input order in this thread."""
        originals = originals if originals is not None else self.originals()
        names = self.metric_names()
        accs = [_MethodAcc(s, names, self) for s in specs]
        label = specs[0].label if len(specs) == 1 else f"{len(specs)} methods"
        with self._progress(len(originals) * len(accs), label) as bar:
            for orig, ahead in self._computed_ahead(accs, originals, self.workers(specs, originals)):
                for acc, a in zip(accs, ahead, strict=True):
                    t0 = time.perf_counter()
                    self._score(acc, orig, a)
                    acc.res.seconds += time.perf_counter() - t0 + (a.seconds if a is not None else 0.0)
                    if bar is not None:
                        bar.advance()
                orig.release()
        return [acc.finish() for acc in accs]

    def workers(self, specs: Sequence[MethodSpec], originals: Sequence[_Original]) -> int:
        """Originals computed ahead at once: ``config.workers`` (0 = 2 on a CPU run with 2+ cores), 1
        when a method cannot run in a worker thread (:func:`can_compute_ahead`) for some original."""
        n = self.config.workers or (2 if self.config.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
        if not all(can_compute_ahead(s, o.item.processed is not None) for s in specs for o in originals):
            return 1
        return max(1, n)

    def _computed_ahead(
        self, accs: list[_MethodAcc], originals: list[_Original], workers: int
    ) -> Iterator[tuple[_Original, list[_Ahead | None]]]:
        """(original, :meth:`_compute_ahead` of it) in input order: in this thread with one worker, else
        from ``workers`` threads with at most ``workers + 1`` originals in flight."""
        if workers <= 1 or len(originals) < 2:
            for orig in originals:
                yield orig, self._compute_ahead(accs, orig)
            return
        todo = iter(originals)
        flight: deque[tuple[_Original, Future[list[_Ahead | None]]]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="privpix-bench") as pool:
            try:
                for orig in todo:
                    flight.append((orig, pool.submit(self._compute_ahead, accs, orig)))
                    if len(flight) > workers:
                        break
                while flight:
                    orig, fut = flight.popleft()
                    ahead = fut.result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        flight.append((nxt, pool.submit(self._compute_ahead, accs, nxt)))
                    yield orig, ahead
            finally:
                for _, fut in flight:
                    fut.cancel()


def run_bench(
    dataset: BenchDataset,
    methods: Sequence[MethodSpec] | str | None,
    config: BenchConfig | None = None,
    progress: ProgressFactory | None = None,
) -> BenchResult:
    """One-call API: parse ``methods`` if a string, run every method over ``dataset``, return results."""
    specs = parse_methods(methods) if isinstance(methods, str) else list(methods or [])
    return BenchRunner(dataset, config, progress).run(specs)

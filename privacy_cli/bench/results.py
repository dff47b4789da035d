"""Bench configuration and results: what was asked (:class:`BenchConfig`) and what came out
(:class:`MethodResult`, :class:`BenchResult`, flat per-image rows, library versions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .cache import CacheStats, default_cache_dir
from .datasets import BenchDataset
from .specs import MethodSpec

# -------------------------------------------------------------------------------------------- config


@dataclass
class BenchConfig:
    """How to run the bench.

    metrics: names (see :data:`ALL_METRICS`; None = every metric that applies to the dataset).
    max_side: longer image side in pixels after downscaling (0 = native size). detect: detectors
    used when the dataset has no annotated regions. box_scale / dilate: mask geometry as in the image
    commands. recognizer: face recogniser for the privacy metrics (dlib, facenet, arcface, curricularface).
    classifier: registry classifier for top-1/top-5 (paper 002). class_labels: where the true classes
    come from (:func:`~privacy_cli.bench.datasets.load_class_labels`). cache_dir: None = no disk cache.
    fid_dims: pytorch-fid feature block for FID (2048 = standard pool3; 64/192/768 are cheaper and
    not comparable with published numbers). workers: originals whose outputs and pixel metrics
    (:data:`~privacy_cli.bench.specs.PIXEL_METRICS`) are computed at once in threads, ahead of the
    in-order scoring (0 = auto: 2 on a CPU run with 2+ cores; 1 whenever a method has a torch model or
    shared state, see :func:`~privacy_cli.bench.scheduling.can_compute_ahead`); values do not depend on it.
    """

    metrics: tuple[str, ...] | None = None
    max_side: int = 1024
    device: str = "cpu"
    detect: tuple[str, ...] = ("faces",)
    box_scale: float = 1.3
    dilate: int = 0
    recognizer: str = "dlib"
    classifier: str = "vgg16"
    #: class labels for top-k accuracy: a ``file,label`` CSV, "folders", or None (agreement)
    class_labels: str | None = None
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    batch_size: int = 16
    #: pytorch-fid feature block: 2048 (pool3, the standard FID), 768, 192 or 64
    fid_dims: int = 2048
    workers: int = 0

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


def iter_metric_rows(result: BenchResult) -> Iterator[dict[str, Any]]:
    """Flat per-image rows (method, key, image, identity, metrics...) for per_image.csv."""
    for m in result.methods:
        for row in m.per_image:
            yield {"method": m.label, **row}

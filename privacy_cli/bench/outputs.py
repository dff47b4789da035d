"""Method application for the bench runner: the content key of each output, the k-Same donors of
``deidentify`` (a donor folder, or the faces of the bench's own prepared images) and the processed
image of one original (from the pairs folder, the output cache, or by running the method)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from .cache import CacheStats, _h, file_sha256
from .originals import _load_resized, _Original
from .specs import MethodSpec, apply_method

#: deidentify's donors when none are given: the faces of the bench's own prepared images
OWN_DONORS = "<dataset>"


class MethodOutputs:
    """Outputs of :class:`~privacy_cli.bench.runner.BenchRunner` (a mixin): output keys, donors and
    processed images. Thread-safe for the methods of :func:`~privacy_cli.bench.scheduling.can_compute_ahead`
    (no donors, no model), which the runner computes for several originals at once."""

    def _output_key(self, spec: MethodSpec, orig: _Original) -> str:
        if orig.item.processed is not None:
            return _h("pair", file_sha256(orig.item.processed), orig.key, __version__)
        parts: tuple[Any, ...] = ()
        donors = self._donors(spec)
        if donors == OWN_DONORS:
            if OWN_DONORS not in self._donor_digests:
                self._donor_digests[OWN_DONORS] = _h(sorted(o.key for o in self.originals()))
            parts = ("donors", "dataset", self._donor_digests[OWN_DONORS])
        elif donors is not None:
            parts = ("donors", self._donor_digest(donors))
        return _h(
            "out",
            spec.name,
            spec.options,
            orig.file_hash,
            orig.regions_sig,
            self.config.geometry(),
            __version__,
            "regions-passed",  # methods get the regions (text strength by glyph size)
            *parts,
        )

    # ------------------------------------------------------------------------- k-Same donors

    def _donors(self, spec: MethodSpec) -> str | None:
        """The donors of a ``deidentify`` setting: its ``donors=DIR``, else ``$PRIVPIX_DONORS``, else
        :data:`OWN_DONORS` (the faces of the prepared originals); None for other methods and the pairs format."""
        if spec.name != "deidentify" or self.dataset.format == "pairs":
            return None
        from ..methods.deidentify import DONORS_ENV

        given = spec.kwargs.get("donors") or os.environ.get(DONORS_ENV)
        return str(given) if given else OWN_DONORS

    def _donor_pool(self) -> Any:
        """k-Same donors from the faces of every prepared original (built once per run; each image's
        analysis is reused when it is de-identified)."""
        if self._dataset_pool is None:
            from ..methods.deidentify import DonorPool

            pool = DonorPool()
            originals = self.originals()
            with self._progress(len(originals), "donor faces") as bar:
                for o in originals:
                    mask = self._mask(o)
                    if mask.any():
                        pool.add_image(o.rgb(), mask, box_scale=self.config.box_scale, source=o.key)
                    o.release()
                    if bar is not None:
                        bar.advance()
            self._dataset_pool = pool
        return self._dataset_pool

    def _donor_digest(self, folder: str) -> str:
        """Content key of a donor folder: names and sha256 of its images (once per run)."""
        if folder not in self._donor_digests:
            from ..io import iter_images

            root = Path(folder)
            files = sorted(iter_images([root])) if root.is_dir() else []
            self._donor_digests[folder] = _h(
                [(str(f.relative_to(root)), file_sha256(f)) for f in files] or ["missing", folder]
            )
        return self._donor_digests[folder]

    def _method_kwargs(self, spec: MethodSpec) -> dict[str, Any]:
        """Options passed to the method beyond the spec's own: the bench's donor folder for deidentify."""
        donors: Any = self._donors(spec)
        if donors is None:
            return {}
        if donors == OWN_DONORS:
            donors = self._donor_pool()
        return {"donors": donors, "box_scale": self.config.box_scale}

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
        extra = self._method_kwargs(spec)
        out = apply_method(spec, orig.rgb(), self._mask(orig), orig.regions, **extra)
        stats.outputs_computed += 1
        self.cache.put_image(out_key, out)
        return out

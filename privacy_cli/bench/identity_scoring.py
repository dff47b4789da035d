"""Privacy scoring: face embeddings of originals and outputs, identity similarity, detection after
processing, de-identification rate and rank-1 re-identification (with the control on originals)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, WeightsError
from .cache import DiskCache
from .originals import _Original
from .results import MethodResult
from .scheduling import _Unavailable
from .specs import _DETECTORS

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


class IdentityScoring:
    """Privacy and face-utility scoring of :class:`~privacy_cli.bench.runner.BenchRunner` (a mixin):
    identity similarity, face detection after processing, re-identification with its control."""

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
        """De-identification rate (threshold: paper 004's 0.19 for CurricularFace / ArcFace, else
        calibrated on the originals' different-identity pairs, see ``privacy.deid_threshold``)
        and rank-1 re-identification against the other originals (refused when the control fails)."""
        from .metrics import MetricUnavailable
        from .privacy import (
            deid_threshold,
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
                thr = deid_threshold(eo, ids, self.faces.name)
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

"""Utility scoring with a registry classifier: logits of originals and outputs, top-k change."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError, WeightsError
from .originals import _Original
from .scheduling import _as_unavailable


class ClassifierScoring:
    """Classifier top-1/top-5 change (paper 002) for :class:`~privacy_cli.bench.runner.BenchRunner` (a mixin)."""

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

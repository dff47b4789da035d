"""Utility scoring with a registry classifier (paper 002, Table 1): top-1/top-5 accuracy before and
after, in four views of the image.

A *view* is what happens to a photo between sharing and the classifier, applied to the original and
to the output alike, so the change isolates what the method did:

=================  ==============================================================================
metric suffix      the classifier sees
=================  ==============================================================================
(none)             the image through the classifier's own preprocessing only
``_rescaled``      paper 002's "additional scaling and cropping" first: the image scaled to 0.8x
                   (Pillow bilinear, antialiased) and its centre 90% x 90% cut out (the paper gives
                   no figures; these are ours)
``_jpeg95``        a JPEG re-encode at quality 95 first (Pillow, 4:2:0 chroma, as a sharing site)
``_jpeg75``        the same at quality 75
=================  ==============================================================================

The classifier's own preprocessing is the attack target's (:func:`privacy_cli.attack.targets.
pil_resize_short_crop`: short side 256, centre crop 224, ImageNet mean/std), so ``perturb`` is
judged by the bench exactly as it judges itself. With class labels (``--class-labels``: a
``file,label`` CSV or the photos' class folders, see :func:`privacy_cli.bench.datasets.
load_class_labels`) the numbers are accuracies; without, the classifier's top-1 on the original
(in the same view) is the label and they measure agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, UsageError, WeightsError
from .originals import _Original
from .scheduling import _as_unavailable
from .specs import CLASSIFIER_METRICS
from .specs import CLASSIFIER_VIEWS as VIEWS

#: extra scaling and cropping of the ``rescaled`` view: scale factor, kept centre fraction per side
RESCALE, CROP_KEEP = 0.8, 0.9
#: how reports name each view
VIEW_LABELS = {"": "plain", "rescaled": "rescaled+cropped", "jpeg95": "JPEG q95", "jpeg75": "JPEG q75"}


def classifier_view(rgb: np.ndarray, view: str) -> np.ndarray:
    """What a classifier receives of ``rgb`` (H, W, 3) uint8 in ``view`` (see the module table),
    before its own resize and crop: (h, w, 3) uint8."""
    from PIL import Image

    if view == "":
        return rgb
    if view == "rescaled":
        im = Image.fromarray(rgb)
        w, h = im.size
        im = im.resize((max(1, round(w * RESCALE)), max(1, round(h * RESCALE))), Image.BILINEAR)
        w, h = im.size
        cw, ch = max(1, round(w * CROP_KEEP)), max(1, round(h * CROP_KEEP))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return np.asarray(im.crop((x0, y0, x0 + cw, y0 + ch)))
    if view.startswith("jpeg"):
        from ..methods.perturb import jpeg_roundtrip

        return jpeg_roundtrip(rgb, int(view[4:]), subsampling=2)
    raise UsageError(f"unknown classifier view {view!r}; known: {', '.join(v or 'plain' for v in VIEWS)}")


def wanted_views(names: Sequence[str]) -> tuple[str, ...]:
    """The views whose metrics are among ``names``."""
    return tuple(v for v, ms in CLASSIFIER_METRICS.items() if any(m in names for m in ms))


def classifier_classes(name: str) -> list[str] | None:
    """Class names of a registry classifier in output order, or None when it has none registered
    (labels must then be class indices)."""
    from ..models.classifiers import imagenet_categories, places365_categories

    if name == "places365-resnet50":
        return places365_categories()
    if name in ("imagenet-resnet50", "vgg16", "vgg19"):
        return imagenet_categories()
    return None


def label_indices(labels: dict[str, str], classifier: str, source: str) -> dict[str, int]:
    """Class labels by image key -> class indices of ``classifier`` (names or numbers); an
    InputError naming ``source`` and the label for one it does not have."""
    classes = classifier_classes(classifier)
    lookup = {c: i for i, c in enumerate(classes or [])}
    out = {}
    for key, label in labels.items():
        if label in lookup:
            out[key] = lookup[label]
        elif label.isdigit() and (classes is None or int(label) < len(classes)):
            out[key] = int(label)
        else:
            raise InputError(f"{source}: {key}: {label!r} is not a class of {classifier}")
    return out


class ClassifierScoring:
    """Classifier top-1/top-5 in every view (paper 002) for :class:`~privacy_cli.bench.runner.BenchRunner` (a mixin)."""

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

    def _logits(
        self, orig: _Original, out_key: str, proc_rgb: Callable[[], np.ndarray], views: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """{view: ((K,) logits of the original, (K,) of the output)}; None when the classifier is
        unavailable."""
        if any(m in self._unavailable for v in views for m in CLASSIFIER_METRICS[v]):
            return None
        name = self.config.classifier
        try:
            out = {}
            for view in views:
                pair = []
                for key, rgb_fn in ((orig.key, orig.rgb), (out_key, proc_rgb)):
                    ck = f"logits2:{name}:{view or 'plain'}:{key}"
                    v = self.cache.features.get(ck)
                    if v is None:
                        v = _classify(
                            self._classifier_model(), classifier_view(rgb_fn(), view), self.config.device
                        )
                        self.cache.features.put(ck, v)
                    pair.append(v)
                out[view] = (pair[0], pair[1])
            return out
        except (WeightsError, UsageError) as e:
            for v in views:
                for n in CLASSIFIER_METRICS[v]:
                    self._unavailable[n] = _as_unavailable(n, e)
            return None

    def _classifier_metrics(
        self, logits: list, keys: Sequence[str], names: Sequence[str], labels: dict[str, int] | None
    ) -> dict[str, Any]:
        """Top-1/top-5 metrics of ``names`` from per-image ``logits`` ({view: (before, after)} or
        None, in the order of ``keys``); ``labels``: class index by image key, or None (agreement)."""
        import torch

        from .metrics import MetricUnavailable, classifier_topk_change

        out: dict[str, Any] = {}
        for view in wanted_views(names):
            wanted = [n for n in CLASSIFIER_METRICS[view] if n in names]
            if any(n in self._unavailable for n in wanted):
                out.update({n: self._unavailable[n] for n in wanted})
                continue
            rows = [(k, p[view]) for k, p in zip(keys, logits, strict=True) if p is not None and view in p]
            if not rows:
                out.update({n: MetricUnavailable(n, "no image could be classified") for n in wanted})
                continue
            before = torch.from_numpy(np.stack([p[0] for _, p in rows]))
            after = torch.from_numpy(np.stack([p[1] for _, p in rows]))
            y = None if labels is None else torch.tensor([labels[k] for k, _ in rows])
            r = classifier_topk_change(before, after, labels=y, ks=(1, 5), classifier=self.config.classifier)
            for n in wanted:
                k = n[:4]
                res = r[f"{k}_change"]
                res.name = n
                if getattr(res, "available", False):
                    res.extra.update(
                        {
                            "before": r[f"{k}_before"].value,
                            "after": r[f"{k}_after"].value,
                            "view": view or "plain",
                            "labels": "class labels" if labels is not None else "agreement",
                        }
                    )
                    if view:
                        res.notes = [*res.notes, _VIEW_NOTES[view]]
                out[n] = res
        return out


_VIEW_NOTES = {
    "rescaled": f"after extra scaling ({RESCALE}x) and a centre crop ({CROP_KEEP:.0%} per side)",
    "jpeg95": "after a JPEG re-encode at q95 (4:2:0)",
    "jpeg75": "after a JPEG re-encode at q75 (4:2:0)",
}


def _classify(model: Any, rgb: np.ndarray, device: str) -> np.ndarray:
    """(K,) float32 logits of an ImageNet-normalised classifier, through the attack targets'
    preprocessing: short side resized to 256 (Pillow bilinear), centre crop 224."""
    import torch

    from ..attack.targets import pil_resize_short_crop
    from ..models.classifiers import PREPROCESS

    crop = pil_resize_short_crop(rgb, PREPROCESS["resize"], PREPROCESS["crop"])
    x = torch.from_numpy(np.array(crop, np.float32)).permute(2, 0, 1)[None].to(device) / 255.0
    mean = torch.tensor(PREPROCESS["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model((x - mean) / std)
    if isinstance(out, tuple | list):
        out = out[0]
    return out[0].float().cpu().numpy()

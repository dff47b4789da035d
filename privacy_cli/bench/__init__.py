"""Bench metrics: quality, content difference, privacy and utility, as the four papers measure them.

This package docstring is the contract between the metrics library (``metrics``, ``privacy``,
``features``) and the bench runner (``datasets``; ``specs`` what to run; ``runner`` the run over the
dataset, originals computed ahead in threads; ``outputs`` method application: output keys, donors,
processed images; ``cache``; ``scheduling`` of metrics; ``identity_scoring`` and ``classifier_scoring``; ``results``; ``report``;
``calibrate``; ``paper004``: paper 004's tables next to ours).
Importing ``privacy_cli.bench`` is cheap; torch and models load on first use of a name below.

Conventions
-----------
* Images: ``torch.Tensor`` ``(B, 3, H, W)`` float32/float64 RGB in ``[0, 1]`` (data range 1).
  ``preds`` = processed image, ``target`` = original. Images keep their native size unless a
  docstring says otherwise (FID resizes to 299x299 inside pytorch-fid's InceptionV3).
* Region masks: ``(B, 1, H, W)`` in ``{0, 1}`` (1 = sensitive region; values > 0.5 count).
  An image whose mask is empty gets ``NaN`` for a region metric and is left out of the mean
  (the result's ``notes`` say how many).
* Faces (privacy): ``np.ndarray`` ``(H, W, 3)`` uint8 RGB, any size; boxes ``(x0, y0, x1, y1)``
  pixels, x1/y1 exclusive (as :mod:`privacy_cli.regions`).
* NumPy uint8 images -> tensors: :func:`to_tensor` (``(H,W,3)`` uint8 or a list of them).

Results (``metrics``)
---------------------
* ``MetricResult(name, value, unit, higher_is_better, n, notes, library, per_item, extra)``:
  ``available = True``; ``per_item`` = per-image values (``NaN`` = not measurable) in input order,
  for ``per_image.csv``; ``extra`` = dict of secondary numbers (e.g. threshold, control rate).
* ``MetricUnavailable(name, reason, fetch)``: ``available = False``, ``value = None``. Returned
  (never raised) when a metric's weights are missing (``fetch`` is the exact command, e.g.
  ``privpix weights fetch vgg16``), its architecture module is not installed, or its control
  refuses to grade. Report it as unavailable, never as 0.
* Both have ``to_dict()`` (JSON-ready; NaN/inf become ``None``/strings).

Quality (``metrics``; functional + Metric class; Metric: ``update(preds, target, mask=None)``,
``compute() -> MetricResult | MetricUnavailable``, ``reset()``)
---------------------------------------------------------------------------------------------
* ``ssim`` / ``SSIM``: torchmetrics' Gaussian SSIM (11x11, sigma 1.5, K1 0.01, K2 0.03, data
  range 1), averaged over the valid region (5-pixel border excluded, as scikit-image and Wang et
  al.); region variant = mean of the SSIM map inside the mask. Images need H, W >= 11.
* ``psnr`` / ``PSNR`` (dB, per image then averaged; identical images give ``inf``), ``mae`` /
  ``MAE``, ``mse`` / ``MSE`` (per image, then averaged); region variants over mask pixels.
* ``quality_values(preds, target, mask=None, names=PIXEL_METRICS) -> dict[name, (B,)]``: the
  pixel metrics and their ``_region`` variants in one pass (the SSIM map, about 1.3 s for a
  1024x768 image on one CPU core, is computed once).
* ``lpips`` / ``LPIPS(net="alex"|"vgg")``: lpips v0.1 linear layers (shipped with the `lpips`
  package) on backbones from our weights registry (``alexnet``, ``vgg16``); optional mask =
  mean of the spatial LPIPS map inside it.
* ``FID(device, batch_size, cache, dims=2048)``: pytorch-fid InceptionV3 pool3 features (weights
  ``fid-inception``), Fréchet distance; ``fid_from_features(real, fake)``;
  ``frechet_distance(mu1, s1, mu2, s2)``; notes warn when N < 2048.
  ``FID.update(preds, target, target_keys=None, preds_keys=None)`` caches features by key
  (cache key ``"fid:<key>"``).
* ``quality_metrics(names, device=...) -> dict[name, Metric]`` for names in ``QUALITY_METRICS``:
  ``ssim, psnr, mae, mse, lpips_alex, lpips_vgg, fid, ssim_region, psnr_region, mae_region,
  mse_region, lpips_alex_region, lpips_vgg_region``.

Content difference inside the region (ERASER Table 3; ``metrics``)
------------------------------------------------------------------
* ``content_difference(target, preds, mask, which=CONTENT_METRICS, reduction="region",
  lama_weights=False, nets=None) -> dict[name, MetricResult | MetricUnavailable]`` (note: original
  first), ``content_difference_values(...)`` (per-image ``(B,)`` tensors, or the
  ``BackboneUnavailable`` that stopped one) and the ``ContentDifference`` Metric
  (``update(preds, target, mask)``), names ``mae, fm, adv, pl_v, pl_r`` (all higher = more different):
  MAE in region; FM = mean over LaMa discriminator's 5 feature maps of the squared difference
  inside the region (mask resized bilinearly); Adv = non-saturating generator loss
  softplus(-D(processed)) over logit cells covering the region; PL-V = VGG19 (avg-pool) ImageNet-
  normalised perceptual loss over 13 ReLUs up to relu5_1; PL-R = ResNet50-dilated ADE20k encoder
  squared differences over layer1..4. ``lama_weights=True`` multiplies by LaMa's training weights
  (FM x100, Adv x10, PL-R x30). ``reduction="image"`` divides by all feature cells (LaMa's masked
  loss convention) instead of the region's cells.

Utility (``metrics`` / ``privacy``)
-----------------------------------
* ``topk_accuracy(logits, labels, k)``; ``classifier_topk_change(logits_before, logits_after,
  labels=None, ks=(1, 5)) -> dict`` (``top1_before``, ``top1_after``, ``top1_change``, ...).
* ``privacy.face_detection_rate(images, detector="dlib-hog"|"mtcnn", reference_boxes=None,
  iou=0.4)``; ``privacy.detect_faces(image, detector) -> list[Face]`` (largest first).

Privacy (``privacy``)
---------------------
* ``Face(box, landmarks=None, score=1.0)``; ``.pack()`` -> 15 floats / ``Face.unpack(a)`` for caches.
* ``FaceEmbedder`` interface: ``name``, ``dim``, ``library``, ``detector``,
  ``detect(image) -> list[Face]`` (largest first), ``embed(image, face_or_box=None) ->
  np.ndarray (dim,) float64 L2-normalised | None``, ``embed_many(images, faces)``, and
  ``prepare(image, face)`` / ``embed_prepared(items)`` for batching without keeping full images.
  ``get_embedder("dlib"|"facenet"|"arcface"|"curricularface", device="cpu")`` (raises ``BackboneUnavailable``, a
  ``WeightsError`` with ``.fetch``, when weights are missing; ``available_embedders()`` gives
  ``{name: None | reason}``). ``identity_metrics(originals, processed, identities, recogniser)``
  is the one-call form.
* ``IdentityGallery.build(originals, identities, embedder, keys=None, cache=None)``: detects the
  largest face of each original once, embeds it, calibrates the threshold on the dataset's own
  different-identity pairs (paper 004: mean cosine similarity = its 0.19) and runs
  ``reid_control``. ``gallery.score(processed) -> {"identity_similarity", "deid_rate",
  "reid_rank1"}``: each processed image is embedded at its original's face box (a method
  does not move faces); rank-1 uses the *other* originals as gallery; ``reid_rank1`` is
  ``MetricUnavailable`` when the control failed.
* Functional: ``identity_similarity(orig_emb, proc_emb)``, ``calibrate_threshold(emb, ids)``,
  ``deidentification_rate(sims, threshold)``, ``reid_control(orig_emb, ids, min_rate=0.8)``
  (``.passed``, ``.rate``, ``.require()`` raises ``ControlFailed``),
  ``reidentification_rate(orig_emb, proc_emb, ids, control=None)``.

Features (``features``)
-----------------------
* ``FeatureCache(directory=None)``: per-image feature arrays by string key (memory, and ``.npy``
  files when a directory is given); pass the same cache across methods so originals are
  embedded once.
* ``FIDFeatures(model=None, device, batch_size, cache, dims=2048)``: ``add(images, keys)``,
  ``features() -> (N, dims)``.
* ``build_lpips(net, backbone_state=None)``, ``build_fid_inception(state_dict=None, dims=2048)``,
  ``lama_discriminator()``, ``resnetpl_encoder()``, ``vgg19_perceptual()``: one instance per
  process and device; ``clear_caches()`` forgets them (``privacy.clear_caches()`` for the
  recognisers). ``BackboneUnavailable(WeightsError)`` carries ``.fetch``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetricResult": "metrics",
    "MetricUnavailable": "metrics",
    "Metric": "metrics",
    "to_tensor": "features",
    "ssim": "metrics",
    "psnr": "metrics",
    "mae": "metrics",
    "mse": "metrics",
    "lpips": "metrics",
    "SSIM": "metrics",
    "PSNR": "metrics",
    "MAE": "metrics",
    "MSE": "metrics",
    "LPIPS": "metrics",
    "FID": "metrics",
    "fid_from_features": "metrics",
    "frechet_distance": "metrics",
    "quality_metrics": "metrics",
    "quality_values": "metrics",
    "PIXEL_METRICS": "metrics",
    "QUALITY_METRICS": "metrics",
    "content_difference": "metrics",
    "ContentDifference": "metrics",
    "ContentNets": "metrics",
    "CONTENT_METRICS": "metrics",
    "topk_accuracy": "metrics",
    "classifier_topk_change": "metrics",
    "FaceEmbedder": "privacy",
    "get_embedder": "privacy",
    "available_embedders": "privacy",
    "IdentityGallery": "privacy",
    "identity_similarity": "privacy",
    "calibrate_threshold": "privacy",
    "deid_threshold": "privacy",
    "resolve_recogniser": "privacy",
    "deidentification_rate": "privacy",
    "reid_control": "privacy",
    "reidentification_rate": "privacy",
    "ControlFailed": "privacy",
    "face_detection_rate": "privacy",
    "detect_faces": "privacy",
    "identity_metrics": "privacy",
    "Face": "privacy",
    "FeatureCache": "features",
    "FIDFeatures": "features",
    "BackboneUnavailable": "features",
    "content_difference_values": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Universal Adversarial Perturbation (Moosavi-Dezfooli et al., CVPR 2017) with DeepFool (CVPR 2016)
as its inner step, as Pixel Privacy (paper 002) computes it against a Places365 ResNet-50.

One perturbation ``v`` (3, crop, crop) in grey levels is trained for a classifier target: every
image is resized to a short side of ``resize`` (256) and centre-cropped to ``crop`` (224), as in
paper 002; for each image still classified as without ``v``, DeepFool finds the smallest
L-infinity step that moves ``image + v`` across the nearest decision boundary, ``v`` takes that
step and is projected back onto ``|v| <= xi``. Passes over the images repeat until the fooling
rate (share of images whose top-1 label differs with ``v``) reaches the requested one or
``max_epochs`` is spent.

Resumable: every ``checkpoint_every`` images the state (``v``, pass, position) is written to
``<out>.partial.safetensors``; a later call with the same settings continues from it and gives
the same ``v`` as an uninterrupted run (the image order of each pass comes from ``seed``).
The result is a safetensors file: tensor ``uap`` plus metadata (target, xi, norm, resize, crop,
fooling rate, images, passes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError

FORMAT = "privpix-uap-1"


@dataclass
class UapResult:
    """What :func:`train_uap` produced."""

    path: Path
    fooling_rate: float
    epochs: int
    images: int
    seconds: float
    images_per_second: float
    resumed: bool


def load_images(paths: list[Path], resize: int, crop: int, max_images: int | None = None) -> Any:
    """(N, 3, crop, crop) float tensor in [0, 255]: short side -> ``resize`` (Pillow bilinear), centre crop."""
    import torch

    from ..attack.targets import pil_resize_short_crop
    from ..io import load_image

    out = []
    for p in paths[: max_images or None]:
        rgb = load_image(p).rgb
        out.append(np.asarray(pil_resize_short_crop(rgb, resize, crop), np.float32))
    if not out:
        raise InputError("no images to train the universal perturbation on")
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def deepfool_linf(
    logits_fn: Callable[[Any], Any],
    x: Any,
    label: int,
    num_classes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
) -> Any:
    """DeepFool's smallest L-infinity perturbation moving ``x`` (1, 3, H, W, grey levels) out of
    class ``label``; ``logits_fn`` maps such an image to (1, K) logits. Only the ``num_classes``
    most likely other classes are considered (the paper's speed-up). Returns r (1, 3, H, W)."""
    import torch

    with torch.no_grad():
        z0 = logits_fn(x)[0]
    candidates = [int(k) for k in z0.topk(min(num_classes + 1, z0.numel())).indices if int(k) != label]
    r_tot = torch.zeros_like(x)
    for _ in range(max_iter):
        xi = (x + (1 + overshoot) * r_tot).requires_grad_(True)
        z = logits_fn(xi)[0]
        if int(z.argmax()) != label:
            break
        g_label = torch.autograd.grad(z[label], xi, retain_graph=True)[0]
        best, best_r = None, None
        for k in candidates:
            g_k = torch.autograd.grad(z[k], xi, retain_graph=True)[0]
            w = g_k - g_label
            f = float((z[k] - z[label]).detach())
            dist = abs(f) / (float(w.abs().sum()) + 1e-12)
            if best is None or dist < best:
                best, best_r = dist, (abs(f) + 1e-4) / (float(w.abs().sum()) + 1e-12) * w.sign()
        r_tot = r_tot + best_r
    return (1 + overshoot) * r_tot


def fooling_rate(logits_fn: Callable[[Any], Any], images: Any, v: Any, labels: Any, batch: int = 16) -> float:
    """Share of ``images`` whose top-1 label with ``v`` added differs from ``labels``."""
    import torch

    changed = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            pred = logits_fn((images[i : i + batch].to(v.device) + v).clamp(0, 255)).argmax(1)
            changed += int((pred.cpu() != labels[i : i + batch]).sum())
    return changed / max(1, len(images))


def _meta(**kw: Any) -> dict[str, str]:
    return {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in kw.items()}


def _save(path: Path, v: Any, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"uap": v.detach().cpu().contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_uap(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a perturbation saved by :func:`train_uap`: ((3, crop, crop) grey levels, metadata)."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            v = f.get_tensor("uap").float()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except Exception as e:  # safetensors raises its own error types for bad files
        raise InputError(f"{p}: not a privpix UAP file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{p}: not a privpix UAP file (format {meta.get('format')!r})")
    out: dict[str, Any] = {}
    for k, val in meta.items():
        try:
            out[k] = json.loads(val)
        except ValueError:
            out[k] = val
    return v, out


def train_uap(
    image_paths: list[Path],
    target: str,
    out: str | Path,
    xi: float = 10.0,
    fooling: float = 0.8,
    max_images: int | None = 3000,
    max_epochs: int = 10,
    resize: int | None = None,
    crop: int | None = None,
    device: str = "auto",
    seed: int = 0,
    checkpoint_every: int = 50,
    stop_after: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> UapResult | None:
    """Train a universal perturbation against classifier ``target`` (see the module docstring).

    resize, crop: the geometry (default: the classifier's own, 256 / 224 for the ResNet-50s, as in
    paper 002). xi: L-infinity bound in grey levels. fooling: fooling rate to reach, in (0, 1]. stop_after:
    stop (as if interrupted) after this many DeepFool visits, leaving the checkpoint (tests,
    time-boxed runs); returns None then. progress(done, total, fooling_rate) is called per image.
    """
    import torch

    from ..attack import get_target

    if not 0 < xi <= 255:
        raise UsageError(f"--xi {xi}: must be in (0, 255] grey levels")
    if not 0 < fooling <= 1:
        raise UsageError(f"--fooling-rate {fooling}: must be in (0, 1]")
    t = get_target(target, device)
    if getattr(t, "kind", "") != "classifier":
        raise UsageError(f"--target {target}: a universal perturbation needs a classifier target")
    resize = int(resize or t.resize)
    crop = int(crop or t.crop)
    out = Path(out)
    partial = out.with_name(out.stem + ".partial.safetensors")
    dev = t.device

    def logits(x: Any) -> Any:
        return t.logits(x.to(dev) / 255.0)

    t0 = time.perf_counter()
    images = load_images(sorted(image_paths), resize, crop, max_images)
    n = len(images)
    with torch.no_grad():
        labels = torch.cat([logits(images[i : i + 16]).argmax(1).cpu() for i in range(0, n, 16)])
    settings = {"target": target, "xi": float(xi), "resize": resize, "crop": crop, "images": n, "seed": seed}
    v = torch.zeros(1, 3, crop, crop)
    epoch, pos, resumed = 0, 0, False
    if partial.is_file():
        pv, pmeta = load_uap(partial)
        if all(pmeta.get(k) == val for k, val in settings.items()):
            v, epoch, pos, resumed = pv[None], int(pmeta["epoch"]), int(pmeta["position"]), True
    visits = 0
    rate = fooling_rate(logits, images, v.to(dev), labels)
    epochs_done = epoch
    while rate < fooling and epoch < max_epochs:
        order = np.random.default_rng(seed + epoch).permutation(n)
        while pos < n:
            i = int(order[pos])
            x = images[i : i + 1]
            with torch.no_grad():
                pred = int(logits((x + v).clamp(0, 255)).argmax(1))
            if pred == int(labels[i]):
                r = deepfool_linf(lambda z: logits(z.clamp(0, 255)), (x + v).to(dev), int(labels[i]))
                v = (v + r.detach().cpu()).clamp(-xi, xi)
            pos += 1
            visits += 1
            if progress:
                progress(epoch * n + pos, max_epochs * n, rate)
            if pos % checkpoint_every == 0 or pos == n:
                _save(partial, v[0], _meta(format=FORMAT, epoch=epoch, position=pos, **settings))
            if stop_after is not None and visits >= stop_after:
                return None
        epoch, pos = epoch + 1, 0
        epochs_done = epoch
        rate = fooling_rate(logits, images, v.to(dev), labels)
        _save(partial, v[0], _meta(format=FORMAT, epoch=epoch, position=0, **settings))
    seconds = time.perf_counter() - t0
    meta = _meta(
        format=FORMAT,
        norm="linf",
        fooling_rate=round(rate, 4),
        epochs=epochs_done,
        geometry=f"short side {resize}, centre crop {crop}",
        **settings,
    )
    _save(out, v[0], meta)
    partial.unlink(missing_ok=True)
    return UapResult(out, rate, epochs_done, n, seconds, (epochs_done * n) / max(seconds, 1e-9), resumed)


__all__ = ["FORMAT", "UapResult", "deepfool_linf", "fooling_rate", "load_images", "load_uap", "train_uap"]

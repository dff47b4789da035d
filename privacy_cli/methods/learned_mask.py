"""Learned adversarial task masks at full photo resolution (paper 003; ``privpix mask --learned``).

A run folder written by ``privpix train mask`` holds the masker (``masker.safetensors``) and
``config.json`` (K, model size, classes, task, input kind, normalisation, face geometry).

* ``input = "image"``: the whole photo is resized to the model size, its soft mask computed and
  upsampled (bilinear) back to the photo; the top K% of the photo's pixels are revealed.
* ``input = "face"``: every detected face is cropped in the training geometry (a square of side
  ``face_scale`` x the detector box's longer side, centred on the box), its mask computed at model
  size and warped back (bilinear) onto the photo; in each face's crop area the top K% of pixels are
  revealed. Everything else, including all of the photo outside faces, is filled. A photo where no
  face is found fails (no output is written): privacy fails closed.

Revealed pixels keep their original values (a binary reveal); ``soft=True`` multiplies them by the
soft mask instead, as ``x_p = m_topK * x`` is formed in training. K defaults to the trained K.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RegionError, UsageError, WeightsError
from .compose import check_inputs

CONFIG_FILE = "config.json"


@dataclass
class RunInfo:
    """The parts of a run folder's ``config.json`` that applying a mask needs."""

    path: Path
    keep: float
    size: int
    input: str
    classes: list[str]
    task: str
    mean: list[float]
    std: list[float]
    face_scale: float | None
    base: int
    depth: int
    gate: str = "sigmoid"


def read_run(run_dir: str | Path) -> RunInfo:
    """Read and check ``RUN_DIR/config.json`` (UsageError when the folder is not a mask run)."""
    p = Path(run_dir)
    cfg_file = p / CONFIG_FILE
    if not cfg_file.is_file() or not (p / "masker.safetensors").is_file():
        raise UsageError(
            f"--learned {p}: not a run folder of `privpix train mask` (config.json, masker.safetensors)"
        )
    try:
        c = json.loads(cfg_file.read_text())
        info = RunInfo(
            path=p,
            keep=float(c["keep"]),
            size=int(c["size"]),
            input=str(c["input"]),
            classes=list(c["classes"]),
            task=str(c.get("task", "")),
            mean=[float(v) for v in c["normalisation"]["mean"]],
            std=[float(v) for v in c["normalisation"]["std"]],
            face_scale=float(c["face_scale"]) if c.get("face_scale") else None,
            base=int(c["masker"]["base"]),
            depth=int(c["masker"]["depth"]),
            gate=str(c["masker"].get("gate", "sigmoid")),  # runs from before the gate option: sigmoid
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--learned {p}: unreadable config.json ({type(e).__name__}: {e})") from None
    if info.input not in ("image", "face") or (info.input == "face" and not info.face_scale):
        raise UsageError(f"--learned {p}: config.json has input {info.input!r} without a face geometry")
    return info


class LearnedMasker:
    """A loaded masker: ``soft(crops)`` gives soft masks at model size."""

    def __init__(self, run: RunInfo, device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file

        from ..models import build_model

        self.run, self.device = run, device
        self.net = build_model(
            "mask-unet", pretrained=False, device=device, base=run.base, depth=run.depth, gate=run.gate
        )
        try:
            self.net.load_state_dict(load_file(str(run.path / "masker.safetensors")))
        except (OSError, RuntimeError, ValueError) as e:
            raise WeightsError(
                f"{run.path / 'masker.safetensors'}: cannot load ({type(e).__name__}: {e})"
            ) from None
        self.net.eval()
        self._mean = torch.tensor(run.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(run.std, device=device).view(1, 3, 1, 1)

    def soft(self, crops: np.ndarray) -> np.ndarray:
        """Soft masks ``(N, S, S)`` float32 in [0, 1] for crops ``(N, S, S, 3)`` uint8 RGB."""
        return self.scores(crops)[0]

    def scores(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(soft, rank)`` for crops ``(N, S, S, 3)`` uint8 RGB, both ``(N, S, S)`` float32 in [0, 1]:
        the soft masks, and ``sigmoid(z)`` of their logits, which orders the pixels as ``soft`` does
        and also those where a stretched-gate mask is exactly 0 (for the sigmoid gate they are equal)."""
        import torch

        from ..models.masker import mask_gate

        with torch.no_grad():
            x = (
                torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float()
                / 255.0
            )
            z = self.net.logits((x - self._mean) / self._std)[:, 0].float()
            return mask_gate(z, self.run.gate).cpu().numpy(), torch.sigmoid(z).cpu().numpy()


def load_masker(run_dir: str | Path, device: str = "auto") -> LearnedMasker:
    """The masker of ``run_dir`` on ``device``, loaded once per process (keyed by folder + mtime)."""
    from ..runtime import get_runner, resolve_device

    run = read_run(run_dir)
    dev = resolve_device(device)
    stamp = os.stat(run.path / "masker.safetensors").st_mtime_ns
    return get_runner(("learned-mask", str(run.path.resolve()), stamp, dev), lambda: LearnedMasker(run, dev))


def detect_faces(rgb: np.ndarray, device: str = "cpu") -> list[tuple[float, float, float, float]]:
    """Face boxes ``(x0, y0, x1, y1)`` in pixels from the project's face detector (MTCNN)."""
    from ..detect import detect

    return [tuple(map(float, r.box)) for r in detect(rgb, kinds=("faces",), device=device).items]


def face_crop(
    rgb: np.ndarray, box: tuple[float, float, float, float], scale: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training geometry: a square of side ``scale`` x the box's longer side, centred on the box,
    resized to ``size``. Returns the crop ``(size, size, 3)`` uint8 and the 2x3 affine matrix mapping
    photo pixels to crop pixels (outside the photo: black)."""
    import cv2

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0) * scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    s = size / side
    mat = np.array([[s, 0.0, (side / 2 - cx) * s], [0.0, s, (side / 2 - cy) * s]], np.float64)
    crop = cv2.warpAffine(
        rgb,
        mat,
        (size, size),
        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop, mat


def top_share(soft: np.ndarray, keep: float, where: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``keep`` percent largest values of ``soft`` (H, W) among ``where`` (all
    pixels when None): exactly ``round(keep/100 * count)`` pixels (at least one)."""
    flat = soft.reshape(-1)
    cand = np.flatnonzero(where.reshape(-1)) if where is not None else np.arange(flat.size)
    out = np.zeros(flat.size, bool)
    if cand.size == 0:
        return out.reshape(soft.shape)
    k = max(1, min(cand.size, round(keep / 100.0 * cand.size)))
    vals = flat[cand]
    top = cand[np.argpartition(-vals, k - 1)[:k]] if k < cand.size else cand
    out[top] = True
    return out.reshape(soft.shape)


def learned_reveal(
    image: np.ndarray, run_dir: str | Path, keep: float | None = None, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Where to reveal ``image`` (H, W, 3) uint8: ``(revealed (H, W) bool, soft (H, W) float32 in
    [0, 1], info)``; ``keep`` percent (default: the trained K) of the photo (image models) or of each
    face's crop area (face models). RegionError when a face model finds no face."""
    import cv2

    lm = load_masker(run_dir, device)
    run = lm.run
    k = run.keep if keep is None else float(keep)
    if not 0 < k <= 100:
        raise UsageError(f"keep {k}: a percentage in (0, 100]")
    h, w = image.shape[:2]
    info: dict[str, Any] = {"run": str(run.path), "task": run.task, "input": run.input, "keep": k}
    if run.input == "image":
        small = cv2.resize(image, (run.size, run.size), interpolation=cv2.INTER_AREA)
        sm, rank = (cv2.resize(a[0], (w, h), interpolation=cv2.INTER_LINEAR) for a in lm.scores(small[None]))
        soft, revealed = sm, top_share(rank, k)
    else:
        boxes = detect_faces(image, lm.device)
        if not boxes:
            raise RegionError("no face found for the face-trained learned mask (nothing written)")
        assert run.face_scale is not None
        crops, mats = zip(*(face_crop(image, b, run.face_scale, run.size) for b in boxes), strict=True)
        masks, ranks = lm.scores(np.stack(crops))
        soft = np.zeros((h, w), np.float32)
        revealed = np.zeros((h, w), bool)
        ones = np.ones((run.size, run.size), np.float32)
        inv = cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR
        n_area = 0
        for m, r, mat in zip(masks, ranks, mats, strict=True):
            back = cv2.warpAffine(m, mat, (w, h), flags=inv, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            rank = cv2.warpAffine(r, mat, (w, h), flags=inv, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            area = (
                cv2.warpAffine(ones, mat, (w, h), flags=inv, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                > 0.5
            )
            revealed |= top_share(rank, k, area)
            n_area += int(area.sum())
            soft = np.maximum(soft, back)
        info["faces"] = len(boxes)
        info["face_area_pixels"] = n_area  # summed over faces (overlaps counted per face)
    info["revealed_share"] = round(float(revealed.mean()), 6)
    return revealed, np.clip(soft, 0.0, 1.0).astype(np.float32), info


def _save_mask(path: str | Path, revealed: np.ndarray, soft: np.ndarray) -> None:
    """8-bit PNG: 0 = hidden, elsewhere the soft mask x 255 (at least 1); atomic write."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    v = np.where(revealed, np.clip(np.round(soft * 255), 1, 255), 0).astype(np.uint8)
    tmp = p.with_name(f".{p.stem}.tmp.png")
    Image.fromarray(v, "L").save(tmp)
    tmp.replace(p)


def apply_learned(
    image: np.ndarray,
    mask: np.ndarray,
    learned: str | Path,
    keep: float | None = None,
    soft: bool = False,
    fill: str = "black",
    save_mask: str | Path | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reveal only the task pixels of ``image`` (H, W, 3) uint8 and fill the rest.

    ``mask`` (H, W) is checked for shape only: a learned mask decides what to hide itself (the
    whole photo for image models, everything but each face's top K% for face models). ``fill``
    as in ``privpix mask`` (black, white, mean, #rrggbb). Returns ``(image, {"learned": info})``.
    """
    from .fill import fill as fill_regions

    image, _ = check_inputs(image, mask)
    revealed, sm, info = learned_reveal(image, learned, keep, device)
    out = fill_regions(image, (~revealed).astype(np.float32), fill=fill)
    if soft:
        out[revealed] = np.round(image[revealed].astype(np.float32) * sm[revealed][:, None]).astype(np.uint8)
    if save_mask:
        _save_mask(save_mask, revealed, sm)
    return out, {"learned": info}


__all__ = [
    "LearnedMasker",
    "apply_learned",
    "detect_faces",
    "face_crop",
    "learned_reveal",
    "load_masker",
    "read_run",
    "top_share",
]

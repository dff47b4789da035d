"""Training data for ERASER: image + sensitive-region mask pairs, cropped to a square training size.

Two layouts are recognised by :func:`open_dataset`:

* **Folders**: ``DATA/images/<name>.<ext>`` and ``DATA/masks/<name>.<ext>`` (or ``<name>_mask.*``),
  matched by stem; any image mode, non-zero = sensitive (the CLI's ``--mask`` convention).
* **Visual Redactions** (Orekondy et al. 2018): ``DATA/annotations/2017_v1/<split>.json`` and
  ``DATA/images/<split>/<image_id>.jpg``; the annotation polygons are rasterised with
  :func:`privacy_cli.regions.load_visual_redactions`.

Sampling is deterministic and resumable: :class:`StepBatchSampler` yields, for every training
step, the batch's ``(index, augmentation_seed)`` keys from ``(seed, step)`` alone, so resuming at
step ``s`` sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, RegionError, UsageError

VR_ANNOTATION_DIR = Path("annotations") / "2017_v1"


@dataclass
class Item:
    """One training image: its path and where its mask comes from (a mask file or polygons)."""

    name: str
    image: Path
    mask: Path | None = None
    regions: list | None = None  # list[privacy_cli.regions.Region] (Visual Redactions)


def _image_files(folder: Path) -> list[Path]:
    from ..io import is_image_path

    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def folder_items(root: Path) -> list[Item]:
    """``root/images`` + ``root/masks`` pairs matched by stem (masks may be ``<stem>_mask.*``).
    Raises :class:`InputError` when a folder is missing or no image has a mask."""
    from ..pipeline import find_mask

    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise InputError(f"{root}: expected images/ and masks/ folders (or a Visual Redactions tree)")
    items = []
    for p in _image_files(img_dir):
        rel = p.relative_to(img_dir)
        try:
            m = find_mask(mask_dir, p, rel)
        except RegionError:
            continue
        items.append(Item(str(rel.with_suffix("")), p, mask=m))
    if not items:
        raise InputError(f"{root}: no image in images/ has a mask in masks/ with the same stem")
    return items


def visual_redactions_items(
    root: Path, split: str = "train", attributes: Sequence[str] | None = None, skip_empty: bool = True
) -> list[Item]:
    """Items of a Visual Redactions tree for ``split`` (``train``/``val``/``test``): one per annotated
    image whose file exists under ``images/<split>/`` (``<id>.jpg``, any extension, or the
    annotation's ``image_path`` relative to ``root``). Images without polygons are skipped
    unless ``skip_empty`` is False."""
    from ..regions import load_visual_redactions

    ann = root / VR_ANNOTATION_DIR / f"{split}.json"
    if not ann.is_file():
        raise InputError(f"{root}: no Visual Redactions annotations {ann.relative_to(root)}")
    records = load_visual_redactions(ann, attributes)
    img_dir = root / "images" / split
    by_stem: dict[str, Path] = {}
    if img_dir.is_dir():
        for p in _image_files(img_dir):
            by_stem.setdefault(p.stem, p)
    items = []
    for image_id, rec in sorted(records.items()):
        if skip_empty and not rec["regions"]:
            continue
        path = by_stem.get(image_id)
        if path is None and rec.get("image_path"):
            cand = root / rec["image_path"]
            path = cand if cand.is_file() else None
        if path is None:
            continue
        items.append(Item(image_id, path, regions=rec["regions"]))
    if not items:
        raise InputError(f"{root}: no {split} image with sensitive regions found under images/{split}/")
    return items


def is_visual_redactions(root: Path) -> bool:
    """True when ``root`` holds ``annotations/2017_v1/*.json``."""
    d = root / VR_ANNOTATION_DIR
    return d.is_dir() and any(d.glob("*.json"))


def _crop_box(
    h: int, w: int, size: int, mask: np.ndarray, rng: np.random.Generator | None
) -> tuple[int, int]:
    """Top-left corner of a ``size`` x ``size`` crop. Random (``rng``): the window contains a
    random mask pixel when there is one. Deterministic (``rng`` None): centred on the mask's
    bounding box (or the image)."""
    ys, xs = np.nonzero(mask)
    if rng is None:
        cy, cx = (
            (int((ys.min() + ys.max()) // 2), int((xs.min() + xs.max()) // 2))
            if len(ys)
            else (h // 2, w // 2)
        )
        y0, x0 = cy - size // 2, cx - size // 2
    elif len(ys):
        i = int(rng.integers(len(ys)))
        y0 = int(ys[i]) - int(rng.integers(size))
        x0 = int(xs[i]) - int(rng.integers(size))
    else:
        y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return int(np.clip(y0, 0, h - size)), int(np.clip(x0, 0, w - size))


class EraserDataset:
    """Image/mask pairs as tensors, cropped to ``size`` x ``size``.

    ``dataset[(index, aug_seed)]`` (or ``dataset[index]`` for the deterministic eval view) returns
    ``{"image": (3,S,S) float32 [0,1], "mask": (1,S,S) float32 {0,1}, "name": str}``. Images whose
    short side is below ``size`` are first scaled up (bicubic; masks nearest). Training view
    (``train=True``): random crop containing a mask pixel when possible, random horizontal flip
    (as in the paper). Eval view: centre crop on the mask's bounding box, no flip.
    With ``resize=True`` the whole image is resized to ``size`` x ``size`` instead of cropped
    (the paper's 256x256 setting).
    """

    def __init__(self, items: list[Item], size: int = 256, train: bool = True, resize: bool = False) -> None:
        if size < 8 or size % 8:
            raise UsageError(f"training size must be a positive multiple of 8, got {size}")
        self.items = items
        self.size = size
        self.train = train
        self.resize = resize

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Full-size ``(H,W,3)`` uint8 RGB and ``(H,W)`` bool mask of item ``index``."""
        from ..io import load_image
        from ..pipeline import read_mask
        from ..regions import Regions

        it = self.items[index]
        rgb = load_image(it.image).rgb
        h, w = rgb.shape[:2]
        if it.mask is not None:
            mask = read_mask(it.mask, (w, h), resize=True)
        else:
            mask = Regions((w, h), list(it.regions or [])).to_mask() > 0
        return rgb, mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        import cv2
        import torch

        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = np.random.default_rng(seed) if (self.train and seed is not None) else None
        rgb, mask = self.load(index)
        s = self.size
        h, w = mask.shape
        m8 = mask.astype(np.uint8)
        if self.resize:
            rgb = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA if min(h, w) >= s else cv2.INTER_CUBIC)
            m8 = cv2.resize(m8, (s, s), interpolation=cv2.INTER_NEAREST)
        else:
            if min(h, w) < s:
                f = s / min(h, w)
                nw, nh = max(s, int(round(w * f))), max(s, int(round(h * f)))
                rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_CUBIC)
                m8 = cv2.resize(m8, (nw, nh), interpolation=cv2.INTER_NEAREST)
                h, w = nh, nw
            y0, x0 = _crop_box(h, w, s, m8, rng)
            rgb, m8 = rgb[y0 : y0 + s, x0 : x0 + s], m8[y0 : y0 + s, x0 : x0 + s]
        if rng is not None and rng.random() < 0.5:
            rgb, m8 = rgb[:, ::-1], m8[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
        m = torch.from_numpy((np.ascontiguousarray(m8) > 0).astype(np.float32))[None]
        return {"image": image, "mask": m, "name": self.items[index].name}


def open_dataset(
    data: Path,
    split: str = "train",
    size: int = 256,
    train: bool = True,
    attributes: Sequence[str] | None = None,
    resize: bool = False,
) -> EraserDataset:
    """The dataset at ``data``: a Visual Redactions tree (``split`` selects the annotation file) or
    an ``images/`` + ``masks/`` folder pair (``split`` ignored)."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"{data}: not a folder")
    if is_visual_redactions(data):
        items = visual_redactions_items(data, split, attributes)
    else:
        items = folder_items(data)
    return EraserDataset(items, size=size, train=train, resize=resize)


def collate(samples: list[dict]) -> dict:
    """Stack samples into ``{"image": (B,3,S,S), "mask": (B,1,S,S), "name": [str]}``."""
    import torch

    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "name": [s["name"] for s in samples],
    }


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SeedSequence hashing)."""
    return int(
        np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values])
        .generate_state(2, np.uint32)
        .view(np.uint64)[0]
        >> 1
    )


class StepBatchSampler:
    """Batches of ``(index, aug_seed)`` keys for steps ``start_step .. start_step+num_steps-1``.

    Global sample ``p = step*batch_size + j`` takes position ``p % n`` of the permutation of epoch
    ``p // n`` (seeded by ``(seed, epoch)``), and its augmentation seed is derived from
    ``(seed, step, j)``: a batch depends only on ``(seed, step)``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, num_steps: int) -> None:
        if n < 1:
            raise UsageError("no training samples")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.num_steps = start_step, num_steps
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng(_mix(self.seed, epoch, 1)).permutation(self.n)}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        keys = []
        for j in range(self.batch_size):
            p = step * self.batch_size + j
            keys.append((int(self._perm(p // self.n)[p % self.n]), _mix(self.seed, step, j, 2)))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.start_step + self.num_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.num_steps


__all__ = [
    "EraserDataset",
    "Item",
    "StepBatchSampler",
    "collate",
    "folder_items",
    "is_visual_redactions",
    "open_dataset",
    "visual_redactions_items",
]

"""Task-labelled image datasets for learned task masks (``privpix train mask``).

Layouts read by :func:`open_task_data` (``kind="auto"`` picks by the files present):

* ``csv``: ``--labels FILE.csv`` with a header ``file,label``; ``file`` relative to DATA.
* ``folders``: ``DATA/<class>/<image>`` (one folder per class, any depth below it).
* ``celeba-hair``: CelebA (Liu et al. 2015) ``img_align_celeba/``, ``list_attr_celeba.txt`` (line 1:
  image count, line 2: the 40 attribute names, then ``<file> <±1 x 40>``) and
  ``list_eval_partition.txt`` (``<file> <0|1|2>`` = train/val/test). Label: hair colour, only images
  with exactly one of Black_Hair, Blond_Hair, Brown_Hair, Gray_Hair set (paper 003, Table II).
* ``ferplus``: FER2013 ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 grey pixels as
  space-separated integers) plus FER+ ``fer2013new.csv`` (``Usage,Image name,neutral,happiness,
  surprise,sadness,anger,disgust,fear,contempt,unknown,NF``, one row per fer2013.csv row, in the
  same order). Label: the majority vote, kept when it is neutral, happiness or surprise (a tie for
  the top count drops the image, as does an empty "Image name" row that FER+ excluded).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError

HAIR_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
HAIR_CLASSES = ("black", "blond", "brown", "gray")
FERPLUS_EMOTIONS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_KEEP = ("neutral", "happiness", "surprise")
_SPLITS = {
    "0": "train",
    "1": "val",
    "2": "test",
    "Training": "train",
    "PublicTest": "val",
    "PrivateTest": "test",
}
KINDS = ("auto", "csv", "folders", "celeba-hair", "ferplus")


@dataclass
class TaskSample:
    """One labelled image: a file, or pixels held in memory (FER+: (48, 48) uint8)."""

    name: str
    label: int
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)
    split: str | None = None  # "train" | "val" | "test" from a published partition

    def rgb(self) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB (InputError naming the file when unreadable)."""
        if self.pixels is not None:
            p = self.pixels
            return np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p
        from ..io import load_image

        assert self.path is not None
        return load_image(self.path).rgb


@dataclass
class TaskData:
    """Samples, class names (label i = classes[i]), the task's name and the layout read."""

    samples: list[TaskSample]
    classes: list[str]
    task: str
    kind: str

    def split(self, name: str) -> list[TaskSample]:
        return [s for s in self.samples if s.split == name]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{path}: missing ({what})")
    return path


def read_label_csv(data: Path, labels: Path) -> TaskData:
    """``file,label`` CSV, files relative to ``data``; classes sorted by name."""
    rows: list[tuple[str, str]] = []
    try:
        with open(labels, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise InputError(f"{labels}: needs a header with the columns file,label")
            for i, row in enumerate(reader, start=2):
                f, lab = (row.get("file") or "").strip(), (row.get("label") or "").strip()
                if not f or not lab:
                    raise InputError(f"{labels}: line {i}: empty file or label")
                rows.append((f, lab))
    except OSError as e:
        raise InputError(f"{labels}: cannot read ({e.strerror or e})") from None
    if not rows:
        raise InputError(f"{labels}: no rows")
    classes = sorted({lab for _, lab in rows})
    idx = {c: i for i, c in enumerate(classes)}
    samples = []
    for f, lab in rows:
        p = data / f
        if not p.is_file():
            raise InputError(f"{p}: listed in {labels.name} but not found")
        samples.append(TaskSample(f, idx[lab], path=p))
    return TaskData(samples, classes, labels.stem, "csv")


def read_class_folders(data: Path) -> TaskData:
    """One sub-folder per class (sorted names); images anywhere below it."""
    from ..io import is_image_path

    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = []
    for i, c in enumerate(classes):
        for p in sorted((data / c).rglob("*")):
            if p.is_file() and is_image_path(p):
                samples.append(TaskSample(str(p.relative_to(data)), i, path=p))
    if len(classes) < 2 or not samples:
        raise InputError(f"{data}: expected at least two class folders with images (or give --labels)")
    return TaskData(samples, classes, data.name, "folders")


def read_celeba_hair(root: Path) -> TaskData:
    """CelebA hair colour (see module docstring)."""
    attr_file = _need(root / "list_attr_celeba.txt", "CelebA attributes")
    part_file = _need(root / "list_eval_partition.txt", "CelebA partition")
    img_dir = _need(root / "img_align_celeba", "CelebA aligned images")
    lines = attr_file.read_text().splitlines()
    if len(lines) < 2:
        raise InputError(f"{attr_file}: too short for CelebA's format")
    names = lines[1].split()
    try:
        cols = [names.index(a) for a in HAIR_ATTRS]
    except ValueError:
        raise InputError(f"{attr_file}: no {'/'.join(HAIR_ATTRS)} columns") from None
    split_of = {}
    for ln in part_file.read_text().splitlines():
        parts = ln.split()
        if len(parts) == 2:
            split_of[parts[0]] = _SPLITS.get(parts[1])
    samples = []
    for n, ln in enumerate(lines[2:], start=3):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise InputError(f"{attr_file}: line {n}: {len(parts) - 1} values for {len(names)} attributes")
        on = [j for j, c in enumerate(cols) if parts[1 + c] == "1"]
        if len(on) != 1:
            continue
        samples.append(TaskSample(parts[0], on[0], path=img_dir / parts[0], split=split_of.get(parts[0])))
    if not samples:
        raise InputError(f"{attr_file}: no image has exactly one hair colour")
    return TaskData(samples, list(HAIR_CLASSES), "celeba-hair", "celeba-hair")


def read_ferplus(root: Path) -> TaskData:
    """FER+ majority-vote emotions over FER2013 pixels (see module docstring)."""
    fer = _need(root / "fer2013.csv", "FER2013 pixels")
    new = _need(root / "fer2013new.csv", "FER+ votes")
    with open(fer, newline="") as fh_a, open(new, newline="") as fh_b:
        ra, rb = csv.DictReader(fh_a), csv.DictReader(fh_b)
        for r, need, f in (
            (ra, {"pixels", "Usage"}, fer),
            (rb, {"Usage", "Image name", *FERPLUS_EMOTIONS}, new),
        ):
            if not r.fieldnames or not need <= {c.strip() for c in r.fieldnames}:
                raise InputError(f"{f}: header lacks {', '.join(sorted(need))}")
        samples = []
        for i, (a, b) in enumerate(zip(ra, rb, strict=False)):
            b = {k.strip(): (v or "").strip() for k, v in b.items()}
            if not b["Image name"]:
                continue
            votes = np.array([int(b[e] or 0) for e in FERPLUS_EMOTIONS])
            top = int(votes.argmax())
            if votes[top] == 0 or (votes == votes[top]).sum() > 1:
                continue
            emo = FERPLUS_EMOTIONS[top]
            if emo not in FERPLUS_KEEP:
                continue
            px = np.array(a["pixels"].split(), dtype=np.int64)
            if px.size != 48 * 48 or px.min() < 0 or px.max() > 255:
                raise InputError(f"{fer}: row {i + 2}: pixels are not 48x48 values in 0..255")
            samples.append(
                TaskSample(
                    b["Image name"],
                    FERPLUS_KEEP.index(emo),
                    pixels=px.astype(np.uint8).reshape(48, 48),
                    split=_SPLITS.get(a["Usage"].strip()),
                )
            )
    if not samples:
        raise InputError(f"{new}: no image with a neutral/happiness/surprise majority")
    return TaskData(samples, list(FERPLUS_KEEP), "ferplus-emotion", "ferplus")


def open_task_data(data: Path, labels: Path | None = None, kind: str = "auto") -> TaskData:
    """Read a task-labelled dataset in one of :data:`KINDS` (auto: by the files present)."""
    data = Path(data)
    if kind not in KINDS:
        raise UsageError(f"--dataset {kind!r}: use one of {', '.join(KINDS)}")
    if not data.is_dir():
        raise InputError(f"{data}: not a folder")
    if kind == "auto":
        if labels is not None:
            kind = "csv"
        elif (data / "list_attr_celeba.txt").is_file():
            kind = "celeba-hair"
        elif (data / "fer2013new.csv").is_file():
            kind = "ferplus"
        else:
            kind = "folders"
    if kind == "csv":
        if labels is None:
            raise UsageError("--dataset csv needs --labels FILE.csv")
        return read_label_csv(data, Path(labels))
    if kind == "folders":
        return read_class_folders(data)
    if kind == "celeba-hair":
        return read_celeba_hair(data)
    return read_ferplus(data)

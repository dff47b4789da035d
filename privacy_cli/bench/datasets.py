"""Bench datasets: what ``privpix bench`` reads.

Four layouts, auto-detected by :func:`detect_format` (or named with ``--format``):

``visual-redactions``
    The Visual Redactions set (Orekondy et al. 2018, the ERASER evaluation set):
    ``annotations/2017_v1/{train2017,val2017,test2017}.json`` and ``images/<split>/<image_id>.jpg``.
    Regions are the annotated *polygons* (the RLE ``segmentation`` is not read); an instance whose
    rasterised polygons cover fewer than ``25 * 25`` pixels is ignored, as ``MIN_PIXELS`` in the
    authors' ``config.py``.
``faces``
    Photos with identity labels (Private-Encoder, Adversarial masks): ``<identity>/<photo>`` folders,
    or a CSV with ``file,identity`` columns (the CSV itself, or a folder holding exactly one such CSV).
    Regions are detected faces.
``pairs``
    ``--original DIR --processed DIR``: outputs of any tool scored against their originals, matched by
    relative path (and, failing that, by relative path without the suffix).
``folder``
    Any folder of images without labels: regions are detected.

Every layout yields :class:`BenchItem` objects; nothing here decodes pixels except the rasterisation
that measures an instance's area.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, RegionError, UsageError
from ..regions import Region, Regions, polygon_box

#: Image suffixes the bench reads (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif")

#: Visual Redactions: an instance covering fewer pixels than this is ignored (``MIN_PIXELS = 25**2``).
VR_MIN_PIXELS = 25 * 25

#: The 24 Visual Redactions attribute ids (``ATTR_IDS`` in tribhuvanesh/visual_redactions ``config.py``,
#: grouped textual / visual / multimodal) with their names from ``resources/attr_id_to_question.tsv``.
VR_ATTRIBUTES: dict[str, str] = {
    # textual
    "a106_address_current_all": "Current address",
    "a107_address_home_all": "Home address",
    "a111_name_all": "Name",
    "a24_birth_date": "Date of birth",
    "a49_phone": "Phone number",
    "a73_landmark": "Visited landmark or street sign",
    "a82_date_time": "Date/time of activity",
    "a90_email": "Email address",
    # visual
    "a105_face_all": "Face",
    "a108_license_plate_all": "License plate",
    "a109_person_body": "Person body",
    "a110_nudity_all": "Brief or full nudity",
    "a26_handwriting": "Handwriting",
    "a39_disability_physical": "Physical disability",
    "a43_medicine": "Medical history",
    "a7_fingerprint": "Fingerprint",
    "a8_signature": "Signature",
    # multimodal
    "a30_credit_card": "Credit card",
    "a31_passport": "Passport",
    "a32_drivers_license": "Driver's license",
    "a33_student_id": "Student ID",
    "a35_mail": "Mail",
    "a37_receipt": "Receipt",
    "a38_ticket": "Ticket",
}

#: Attribute groups of ``config.py`` (``MODE_TO_ATTR_ID``), accepted by ``--attributes``.
VR_GROUPS: dict[str, tuple[str, ...]] = {
    "textual": tuple(list(VR_ATTRIBUTES)[0:8]),
    "visual": tuple(list(VR_ATTRIBUTES)[8:17]),
    "multimodal": tuple(list(VR_ATTRIBUTES)[17:24]),
}

VR_SPLITS = ("train2017", "val2017", "test2017")
FORMATS = ("auto", "visual-redactions", "faces", "pairs", "folder")


@dataclass
class BenchItem:
    """One image to benchmark.

    key: stable unique id (relative path without suffix, or the Visual Redactions image id).
    image: the original photo. processed: the already-processed photo (``pairs`` only).
    identity: person label (``faces`` only). regions: annotated regions in the pixels of the
    annotated image (``visual-redactions``), None when regions must be detected.
    size: ``(w, h)`` the annotations refer to, or None.
    """

    key: str
    image: Path
    identity: str | None = None
    processed: Path | None = None
    regions: Regions | None = None
    size: tuple[int, int] | None = None
    attributes: tuple[str, ...] = ()


@dataclass
class BenchDataset:
    """A list of :class:`BenchItem` plus how it was read (for the report)."""

    format: str
    root: Path
    items: list[BenchItem]
    split: str | None = None
    attributes: tuple[str, ...] | None = None
    #: (key or path, reason) for entries that were left out (missing image, tiny instances only, ...)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: instances dropped for being smaller than :data:`VR_MIN_PIXELS`
    small_instances: int = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_identities(self) -> bool:
        return any(it.identity is not None for it in self.items)

    @property
    def n_identities(self) -> int:
        return len({it.identity for it in self.items if it.identity is not None})

    def describe(self) -> dict:
        """JSON-ready summary for results.json and the report."""
        return {
            "format": self.format,
            "root": str(self.root),
            "split": self.split,
            "attributes": list(self.attributes) if self.attributes else None,
            "n_items": len(self.items),
            "n_identities": self.n_identities,
            "skipped": len(self.skipped),
            "small_instances_ignored": self.small_instances,
        }


# --------------------------------------------------------------------------------------------- helpers


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` sorted by relative path (hidden files and folders skipped)."""
    it = root.rglob("*") if recursive else root.iterdir()
    out = []
    for p in it:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if is_image(p):
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def parse_attributes(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a105_face_all,a49_phone"``, group names (``textual``, ``visual``, ``multimodal``), short
    prefixes (``a105``) or ``all`` -> tuple of attribute ids (None = all). Raises UsageError on an
    unknown name."""
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names or "all" in names:
        return None
    out: list[str] = []
    for n in names:
        if n in VR_GROUPS:
            out.extend(VR_GROUPS[n])
        elif n in VR_ATTRIBUTES:
            out.append(n)
        else:
            hits = [a for a in VR_ATTRIBUTES if a.split("_", 1)[0] == n or a.startswith(n + "_")]
            if len(hits) != 1:
                known = ", ".join(VR_ATTRIBUTES)
                raise UsageError(
                    f"unknown Visual Redactions attribute {n!r} (known: {known}, or textual/visual/multimodal)"
                )
            out.append(hits[0])
    return tuple(dict.fromkeys(out))


def _find_identity_csv(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if not root.is_dir():
        return None
    found = []
    for p in sorted(root.glob("*.csv")):
        try:
            with p.open(newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            continue
        cols = [h.strip().lower() for h in header]
        if "file" in cols and "identity" in cols:
            found.append(p)
    return found[0] if len(found) == 1 else None


def detect_format(root: Path | None, original: Path | None = None, processed: Path | None = None) -> str:
    """Guess the layout of ``root`` (see the module docstring). Raises InputError when nothing fits."""
    if original is not None or processed is not None:
        return "pairs"
    if root is None:
        raise UsageError("give a dataset folder, or --original DIR --processed DIR")
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_dir() and (root / "annotations" / "2017_v1").is_dir():
        return "visual-redactions"
    if _find_identity_csv(root) is not None:
        return "faces"
    if root.is_dir():
        top_images = [p for p in root.iterdir() if is_image(p)]
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not top_images and subdirs and all(any(is_image(q) for q in d.iterdir()) for d in subdirs):
            return "faces"
        if top_images or subdirs:
            return "folder"
    raise InputError(f"{root}: not a dataset (no images, no annotations/2017_v1, no file,identity CSV)")


def _limit(items: list[BenchItem], limit: int | None) -> list[BenchItem]:
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be >= 0, got {limit}")
    return items[:limit] if limit else items


# ---------------------------------------------------------------------------------- visual redactions


def _instance_area(polys: list[list[tuple[float, float]]], size: tuple[int, int] | None) -> int:
    """Pixels covered by the union of an instance's polygons (rasterised like Regions.to_mask)."""
    import cv2

    pts = [np.round(np.asarray(p, np.float64)).astype(np.int32) for p in polys]
    x0 = min(int(p[:, 0].min()) for p in pts)
    y0 = min(int(p[:, 1].min()) for p in pts)
    x1 = max(int(p[:, 0].max()) for p in pts)
    y1 = max(int(p[:, 1].max()) for p in pts)
    if size is not None:  # clip to the image, like the rasterised mask would be
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, size[0] - 1), min(y1, size[1] - 1)
    if x1 < x0 or y1 < y0:
        return 0
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(canvas, [p - np.array([x0, y0], np.int32) for p in pts], 1)
    return int(canvas.sum())


def vr_regions(
    entry: dict, attributes: Iterable[str] | None = None, min_pixels: int = VR_MIN_PIXELS
) -> tuple[list[Region], int]:
    """Regions of one Visual Redactions image entry: one polygon Region per polygon of every kept
    instance (kind = attr id, label = attribute name). Returns (regions, number of instances dropped
    for covering fewer than ``min_pixels`` pixels)."""
    want = set(attributes) if attributes else None
    size = None
    if entry.get("image_width") and entry.get("image_height"):
        size = (int(entry["image_width"]), int(entry["image_height"]))
    out: list[Region] = []
    small = 0
    for att in entry.get("attributes", []) or []:
        attr = str(att.get("attr_id"))
        if want is not None and attr not in want:
            continue
        polys = []
        for flat in att.get("polygons", []) or []:
            if not isinstance(flat, list) or len(flat) < 6:
                continue
            try:
                pts = [(float(x), float(y)) for x, y in zip(flat[0::2], flat[1::2], strict=False)]
            except (TypeError, ValueError):
                raise RegionError(
                    f"instance {att.get('instance_id')}: polygon has non-numeric points"
                ) from None
            polys.append(pts)
        if not polys:
            continue
        if _instance_area(polys, size) < min_pixels:
            small += 1
            continue
        name = VR_ATTRIBUTES.get(attr, attr)
        for pts in polys:
            out.append(Region(attr, polygon_box(pts), pts, 1.0, name))
    return out, small


def load_visual_redactions_dataset(
    root: Path,
    split: str = "val2017",
    attributes: Sequence[str] | None = None,
    limit: int | None = None,
    keep_empty: bool = False,
) -> BenchDataset:
    """Read ``root/annotations/2017_v1/<split>.json`` and pair each entry with
    ``root/images/<split>/<image_id>.jpg`` (or its ``image_path`` relative to ``root``).

    Images without any kept instance are left out unless ``keep_empty``; images whose file is missing
    are listed in ``skipped``. ``limit`` applies after filtering, in sorted image-id order.
    """
    root = Path(root)
    if split in ("train", "val", "test"):
        split = f"{split}2017"
    if split not in VR_SPLITS:
        raise UsageError(f"--split must be one of {', '.join(VR_SPLITS)}, got {split!r}")
    ann_path = root / "annotations" / "2017_v1" / f"{split}.json"
    if not ann_path.is_file():
        have = sorted(p.stem for p in (root / "annotations" / "2017_v1").glob("*.json"))
        raise InputError(f"{ann_path}: annotation file missing (found: {', '.join(have) or 'none'})")
    try:
        data = json.loads(ann_path.read_text())
        anns = data["annotations"]
        if not isinstance(anns, dict):
            raise TypeError("'annotations' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{ann_path}: not a Visual Redactions annotation file ({e})") from None
    attrs = parse_attributes(attributes) if attributes is not None else None
    ds = BenchDataset("visual-redactions", root, [], split=split, attributes=attrs)
    for image_id in sorted(anns):
        entry = anns[image_id]
        candidates = [root / "images" / split / f"{image_id}.jpg"]
        if entry.get("image_path"):
            candidates.append(root / str(entry["image_path"]))
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            ds.skipped.append((str(image_id), f"image missing: {candidates[0]}"))
            continue
        try:
            regions, small = vr_regions(entry, attrs)
        except RegionError as e:
            raise RegionError(f"{ann_path}: image {image_id}: {e}") from None
        ds.small_instances += small
        if not regions and not keep_empty:
            ds.skipped.append((str(image_id), "no instance of the selected attributes"))
            continue
        size = None
        if entry.get("image_width") and entry.get("image_height"):
            size = (int(entry["image_width"]), int(entry["image_height"]))
        kinds = tuple(dict.fromkeys(r.kind for r in regions))
        ds.items.append(
            BenchItem(
                key=str(image_id),
                image=path,
                regions=Regions(size or (0, 0), regions),
                size=size,
                attributes=kinds,
            )
        )
    ds.items = _limit(ds.items, limit)
    return ds


# --------------------------------------------------------------------------------------------- faces


def load_faces_dataset(root: Path, limit: int | None = None) -> BenchDataset:
    """Photos with identities: a ``file,identity`` CSV (``root`` is the CSV or a folder holding one;
    ``file`` is relative to the CSV's folder) or ``root/<identity>/<photo>`` folders."""
    root = Path(root)
    csv_path = _find_identity_csv(root)
    items: list[BenchItem] = []
    skipped: list[tuple[str, str]] = []
    if csv_path is not None:
        base = csv_path.parent
        try:
            with csv_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"{csv_path}: cannot read identities CSV ({e})") from None
        seen: set[str] = set()
        for i, row in enumerate(rows, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            name, ident = row.get("file", ""), row.get("identity", "")
            if not name or not ident:
                raise InputError(f"{csv_path}: line {i}: needs both 'file' and 'identity'")
            path = (base / name).resolve() if not Path(name).is_absolute() else Path(name)
            key = Path(name).with_suffix("").as_posix()
            if key in seen:
                raise InputError(f"{csv_path}: line {i}: {name} listed twice")
            seen.add(key)
            if not path.is_file():
                skipped.append((key, f"image missing: {path}"))
                continue
            items.append(BenchItem(key=key, image=path, identity=ident))
        root = base
    else:
        if not root.is_dir():
            raise InputError(f"{root}: not a folder of <identity>/<photo> nor a file,identity CSV")
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for img in list_images(d):
                items.append(BenchItem(key=_key(img, root), image=img, identity=d.name))
    if not items:
        raise InputError(f"{root}: no photos with identities found")
    ds = BenchDataset("faces", root, _limit(items, limit), skipped=skipped)
    return ds


# --------------------------------------------------------------------------------------------- pairs


def load_pairs_dataset(original: Path, processed: Path, limit: int | None = None) -> BenchDataset:
    """Match every image under ``original`` with the one under ``processed`` at the same relative
    path, else the same relative path without suffix (``a/b.jpg`` <-> ``a/b.png``). Originals without
    a match are listed in ``skipped``; no match at all raises InputError."""
    original, processed = Path(original), Path(processed)
    for d, opt in ((original, "--original"), (processed, "--processed")):
        if not d.is_dir():
            raise InputError(f"{d}: {opt} must be a folder")
    proc = list_images(processed)
    by_rel = {p.relative_to(processed).as_posix(): p for p in proc}
    by_stem: dict[str, list[Path]] = {}
    for p in proc:
        by_stem.setdefault(_key(p, processed), []).append(p)
    items, skipped = [], []
    for o in list_images(original):
        rel = o.relative_to(original).as_posix()
        key = _key(o, original)
        match = by_rel.get(rel)
        if match is None:
            cands = by_stem.get(key, [])
            if len(cands) > 1:
                raise InputError(
                    f"{processed}: {len(cands)} files match {rel} by stem: {', '.join(c.name for c in cands)}"
                )
            match = cands[0] if cands else None
        if match is None:
            skipped.append((key, f"no processed file for {rel}"))
            continue
        items.append(BenchItem(key=key, image=o, processed=match))
    if not items:
        raise InputError(f"{processed}: no file matches an image in {original} by relative path or stem")
    return BenchDataset("pairs", original, _limit(items, limit), skipped=skipped)


# -------------------------------------------------------------------------------------------- folder


def load_folder_dataset(root: Path, limit: int | None = None) -> BenchDataset:
    """Every image under ``root`` (recursive), no labels; regions are detected."""
    root = Path(root)
    if root.is_file() and is_image(root):
        return BenchDataset("folder", root.parent, [BenchItem(key=root.stem, image=root)])
    items = [BenchItem(key=_key(p, root), image=p) for p in list_images(root)]
    if not items:
        raise InputError(f"{root}: no images found")
    return BenchDataset("folder", root, _limit(items, limit))


# ------------------------------------------------------------------------------------- class labels


def load_class_labels(spec: str, ds: BenchDataset) -> tuple[dict[str, str], str]:
    """True classes of the dataset's photos for top-k accuracy (paper 002, Table 1): (label by item
    key, where they came from).

    ``spec``: ``"folders"`` (a photo's class is its folder under the dataset root, e.g.
    ``kitchen/a.jpg`` -> ``kitchen``, ``arena/hockey/b.jpg`` -> ``arena/hockey``), or a CSV with
    ``file`` and ``label`` columns (``file`` relative to the CSV's folder). Every photo needs a
    label; InputError otherwise, naming the first one without.
    """
    labels: dict[str, str] = {}
    if spec == "folders":
        source = f"{ds.root} (class folders)"
        for it in ds.items:
            try:
                parent = it.image.parent.relative_to(ds.root).as_posix()
            except ValueError:
                parent = ""
            if parent in ("", "."):
                raise InputError(f"{it.image}: --class-labels folders: the photo is in no class folder")
            labels[it.key] = parent
        return labels, source
    path = Path(spec)
    source = str(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read class labels ({e})") from None
    by_path: dict[Path, str] = {}
    for i, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        name, label = row.get("file", ""), row.get("label", "")
        if not name or not label:
            raise InputError(f"{path}: line {i}: needs both 'file' and 'label'")
        by_path[(path.parent / name).resolve()] = label
    for it in ds.items:
        label = by_path.get(Path(it.image).resolve())
        if label is None:
            missing = sum(Path(x.image).resolve() not in by_path for x in ds.items)
            raise InputError(f"{path}: no label for {it.image} ({missing} photo(s) without one)")
        labels[it.key] = label
    return labels, source


def open_dataset(
    root: Path | None = None,
    format: str = "auto",
    split: str = "val2017",
    attributes: str | Sequence[str] | None = None,
    limit: int | None = None,
    original: Path | None = None,
    processed: Path | None = None,
) -> BenchDataset:
    """Open a bench dataset in any supported layout (see the module docstring).

    format: ``auto`` (default), ``visual-redactions``, ``faces``, ``pairs`` or ``folder``.
    split / attributes apply to Visual Redactions only; limit keeps the first N items (0/None = all).
    """
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    fmt = detect_format(root, original, processed) if format == "auto" else format
    if fmt == "pairs":
        if original is None or processed is None:
            raise UsageError("the pairs format needs both --original DIR and --processed DIR")
        return load_pairs_dataset(original, processed, limit)
    if original is not None or processed is not None:
        raise UsageError(f"--original/--processed only go with the pairs format, not {fmt}")
    if root is None:
        raise UsageError("give a dataset folder")
    if attributes is not None and fmt != "visual-redactions":
        raise UsageError("--attributes only applies to the Visual Redactions format")
    if fmt == "visual-redactions":
        return load_visual_redactions_dataset(Path(root), split, attributes, limit)
    if fmt == "faces":
        return load_faces_dataset(Path(root), limit)
    return load_folder_dataset(Path(root), limit)

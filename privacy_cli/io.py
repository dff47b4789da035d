"""Image input/output: safe loading, atomic metadata-free saving, input walking and output naming.

Internally every image is ``(H, W, 3)`` uint8 RGB with EXIF orientation applied; alpha, 16-bit
data and the ICC profile are carried beside it in :class:`LoadedImage` so that saving can give the
output the same kind of file the input was.
"""

from __future__ import annotations

import glob
import io as _io
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, UsageError

#: Default pixel limit: images with more pixels are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 200_000_000

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
FORMAT_BY_EXT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
_HEIF_REGISTERED = False


def _register_heif() -> bool:
    global _HEIF_REGISTERED
    if not _HEIF_REGISTERED:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _HEIF_REGISTERED = True
        except ImportError:  # pragma: no cover - optional plugin
            return False
    return True


@dataclass
class LoadedImage:
    """A decoded image.

    rgb: (H, W, 3) uint8 RGB, EXIF orientation applied (what methods work on).
    alpha: (H, W) uint8 or None. high: (H, W) uint16 grey data for 16-bit inputs (mode I;16/I), else None.
    mode: the source PIL mode. format: the source PIL format. icc: ICC profile bytes or None.
    exif: EXIF bytes with orientation reset (only written back with keep_metadata).
    """

    path: Path | None
    rgb: np.ndarray
    alpha: np.ndarray | None = None
    high: np.ndarray | None = None
    mode: str = "RGB"
    format: str | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (int(self.rgb.shape[1]), int(self.rgb.shape[0]))

    @property
    def is_grey(self) -> bool:
        return self.mode in ("L", "LA", "I;16", "I;16B", "I;16L", "I", "1")


def _name(path: Path | str | None) -> str:
    return str(path) if path is not None else "<image>"


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file safely.

    Raises :class:`InputError` with a one-line reason for unreadable paths, non-images, unsupported
    formats, truncated or corrupt data, and images over ``max_pixels`` (checked from the header,
    before decoding).
    """
    p = Path(path)
    if p.suffix.lower() in (".heic", ".heif"):
        _register_heif()
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, p, max_pixels)


def decode_image(data: bytes, path: Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode image bytes (see :func:`load_image`)."""
    name = _name(path)
    if not data:
        raise InputError(f"{name}: empty file")
    _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(
                    f"{name}: image too large ({w}x{h} = {w * h / 1e6:.1f} MP > limit {max_pixels / 1e6:.1f} MP;"
                    " raise it with --max-pixels)"
                )
            fmt = im.format
            icc = im.info.get("icc_profile")
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
            exif_obj = im.getexif()
            im.load()
            im = ImageOps.exif_transpose(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image or unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name}: image too large (decompression bomb guard)") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "premature" in msg.lower():
            raise InputError(f"{name}: truncated image data") from None
        raise InputError(f"{name}: corrupt image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, struct_error) as e:
        raise InputError(f"{name}: corrupt image ({e})") from None
    exif = None
    if exif_obj:
        exif_obj[0x0112] = 1  # orientation has been applied
        exif = exif_obj.tobytes()
    if isinstance(xmp, str):
        xmp = xmp.encode()
    mode = im.mode
    alpha = high = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        if mode == "I":
            arr = np.clip(arr, 0, 65535)
        high = arr.astype(np.uint16)
        grey8 = (high.astype(np.uint32) * 255 + 32767) // 65535
        rgb = np.repeat(grey8.astype(np.uint8)[..., None], 3, axis=2)
    else:
        if mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            alpha = np.asarray(im.getchannel("A")).copy()
        if mode == "CMYK" and icc:
            try:
                from PIL import ImageCms

                src = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
                im = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
                icc = None  # now plain sRGB
            except Exception:
                im = im.convert("RGB")
        rgb = np.asarray(im.convert("RGB")).copy()
    return LoadedImage(path, rgb, alpha, high, mode, fmt, icc, exif, xmp)


def from_array(image: np.ndarray | Image.Image) -> LoadedImage:
    """Wrap a PIL image or a NumPy array ((H,W) or (H,W,3|4), uint8 or float in [0,1]) for the API."""
    if isinstance(image, Image.Image):
        buf = _io.BytesIO()
        image.save(buf, format="PNG")
        return decode_image(buf.getvalue())
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        else:
            raise InputError(f"array of dtype {arr.dtype}: expected uint8 or float in [0, 1]")
    if arr.ndim == 2:
        return LoadedImage(None, np.repeat(arr[..., None], 3, axis=2), mode="L")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return LoadedImage(None, arr[..., :3].copy(), alpha=arr[..., 3].copy(), mode="RGBA")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return LoadedImage(None, arr.copy(), mode="RGB")
    raise InputError(f"array of shape {arr.shape}: expected (H,W), (H,W,3) or (H,W,4)")


def to_pil(
    rgb: np.ndarray, like: LoadedImage | None = None, changed: np.ndarray | None = None
) -> Image.Image:
    """Build the output PIL image in the kind of mode the input had (grey stays grey, alpha is kept,
    16-bit stays 16-bit with the original values outside ``changed`` (H,W) bool)."""
    if like is None:
        return Image.fromarray(rgb)
    if like.high is not None:
        grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
        if changed is None:  # pixels the method did not touch keep their 16-bit values
            changed = (
                (rgb != like.rgb).any(axis=2) if rgb.shape == like.rgb.shape else np.ones(rgb.shape[:2], bool)
            )
        out = np.where(changed, grey, like.high)
        return Image.fromarray(out.astype(np.uint16))
    base = Image.fromarray(rgb)
    if like.is_grey:
        base = base.convert("L")
    if like.alpha is not None:
        base.putalpha(Image.fromarray(like.alpha))
    return base


def save_image(
    rgb: np.ndarray,
    path: str | Path,
    like: LoadedImage | None = None,
    quality: int = 95,
    keep_metadata: bool = False,
    changed: np.ndarray | None = None,
) -> Path:
    """Write ``rgb`` (H,W,3) uint8 to ``path`` atomically (temp file in the same folder + rename).

    The format follows the extension. Metadata (EXIF incl. GPS, XMP, IPTC, comments) is dropped
    unless ``keep_metadata``; the ICC profile is kept so colours display as in the input.
    """
    p = Path(path)
    fmt = FORMAT_BY_EXT.get(p.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{p}: unsupported output extension {p.suffix!r} (use one of {sorted(IMAGE_EXTENSIONS)})"
        )
    if fmt == "HEIF" and not _register_heif():  # pragma: no cover
        raise UsageError(f"{p}: HEIC output needs pillow-heif")
    im = to_pil(rgb, like, changed)
    if fmt in ("JPEG", "BMP") and im.mode in ("RGBA", "LA"):
        # no alpha in these formats: flatten on white
        bg = Image.new("RGB" if im.mode == "RGBA" else "L", im.size, "white")
        bg.paste(im, mask=im.getchannel("A"))
        im = bg
    if fmt in ("JPEG", "WEBP", "HEIF", "BMP") and im.mode == "I;16":
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) // 257).astype(np.uint8))
    params: dict = {}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        params["quality"] = int(quality)
    if fmt == "JPEG":
        params["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        params["compression"] = "tiff_lzw"
    if like is not None and like.icc and fmt != "BMP":
        params["icc_profile"] = like.icc
    if keep_metadata and like is not None:
        if like.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "HEIF"):
            params["exif"] = like.exif
        if like.xmp and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
            params["xmp"] = like.xmp
    with atomic_file(p) as f:
        im.save(f, format=fmt, **params)
    return p


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success it is fsynced and renamed onto
    ``path`` (atomic on POSIX), on any failure or interrupt it is removed and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".part" + p.suffix, dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Write bytes atomically (see :func:`atomic_file`), for JSON/mask side outputs."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Input walking and output naming


@dataclass
class Job:
    """One input file and where its output goes. ``rel`` is the path relative to the walked root."""

    input: Path
    output: Path | None
    rel: Path
    error: str | None = None  # set when the input itself is unusable (missing path, ...)


def is_image_path(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(
    inputs: Iterable[str | Path], skip_suffix: str | None = None
) -> list[tuple[Path, Path, Path | None]]:
    """Expand files, directories (recursive) and globs into ``(file, rel, root)`` triples.

    Files inside directories are kept only with an image extension, and (when ``skip_suffix``
    is given, e.g. ``"_blur"``) not when their stem ends with it (our own earlier outputs).
    A path that matches nothing is returned as ``(path, name, None)`` so the caller can report it.
    """
    out: list[tuple[Path, Path, Path | None]] = []
    for raw in inputs:
        s = str(raw)
        p = Path(s)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and is_image_path(f) and not f.name.startswith("."):
                    if skip_suffix and f.stem.endswith(skip_suffix):
                        continue
                    out.append((f, f.relative_to(p), p))
        elif p.exists() or not glob.has_magic(s):
            out.append((p, Path(p.name), None))
        else:
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            if not files:
                out.append((p, Path(p.name), None))
            for m in files:
                out.append((m, Path(m.name), None))
    return out


def plan_outputs(
    inputs: Iterable[str | Path],
    command: str,
    output: str | Path | None = None,
    ext: str | None = None,
) -> list[Job]:
    """Map inputs to outputs.

    Default: next to the input as ``<stem>_<command><ext>``. ``output`` may be a file (single input
    only, or when it has an image extension) or a directory (created; directory inputs mirror their
    tree under it). ``ext`` forces the output extension (e.g. ``".png"``). Never maps an output onto
    an input: such a job gets an error.
    """
    expanded = expand_inputs(inputs, skip_suffix=f"_{command}")
    out_path = Path(output) if output is not None else None
    single_file_out = out_path is not None and is_image_path(out_path) and not out_path.is_dir()
    if single_file_out and len(expanded) > 1:
        raise UsageError(f"-o {out_path}: a single output file needs a single input ({len(expanded)} given)")
    jobs: list[Job] = []
    input_set = {f.resolve() for f, _, _ in expanded if f.exists()}
    for f, rel, root in expanded:
        suffix = ext or f.suffix
        if out_path is None:
            dst = f.with_name(f"{f.stem}_{command}{suffix}")
        elif single_file_out:
            dst = out_path
        else:
            sub = rel.parent if root is not None else Path()
            dst = (
                out_path / sub / f"{f.stem}{suffix}"
                if root is not None
                else out_path / f"{f.stem}_{command}{suffix}"
            )
        job = Job(f, dst, rel)
        if not f.exists():
            job.error = f"{f}: no such file or directory"
        elif dst.resolve() in input_set:
            job.error = f"{f}: output {dst} would overwrite an input; choose another -o"
        jobs.append(job)
    return jobs


def iter_images(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Image files under the given paths (files, directories, globs)."""
    for f, _rel, _root in expand_inputs(paths):
        if f.exists():
            yield f

"""Image input/output: safe loading, atomic metadata-free saving, input walking and output naming.

Internally every image is ``(H, W, 3)`` uint8 RGB with EXIF orientation applied; alpha, 16-bit
data and the ICC profile are carried beside it in :class:`LoadedImage` so that saving can give the
output the same kind of file the input was.

Colour kinds, exactly: grey (L, 1-bit becomes L) stays grey; alpha (RGBA, LA, palette with
transparency -> RGBA) is kept; a palette image is written as RGB (RGBA with transparency): obfuscated
pixels need colours its palette lacks, and snapping them back to a small palette could re-sharpen
blurred text (GIF output is palette-based again, quantised by Pillow); 16-bit grey keeps its 16-bit values outside the obfuscated pixels;
16-bit RGB(A) PNG/TIFF is decoded at 8 bits per channel by Pillow and written as 8-bit; CMYK
becomes RGB (through its ICC profile to sRGB when it has one, Pillow's plain conversion otherwise).
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

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
FORMAT_BY_EXT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
#: the extension an output gets for an input whose name has none (by the format read from its header)
EXT_BY_FORMAT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tiff",
    "BMP": ".bmp",
    "GIF": ".gif",
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
    #: the later frames of an animated GIF/WebP or pages of a multi-page TIFF (each a LoadedImage;
    #: empty for still images). ``extra`` of the first frame holds ``durations`` (ms) and ``loop``.
    frames: list[LoadedImage] = field(default_factory=list)

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
    """Decode image bytes (see :func:`load_image`).

    Every frame of an animated GIF/WebP and every page of a multi-page TIFF is decoded (into
    ``LoadedImage.frames``): faces in later frames are faces too. ``max_pixels`` bounds the pixels of
    all frames together, checked from the header before decoding; it is the only limit (Pillow's own
    decompression-bomb guard is raised to it).
    """
    name = _name(path)
    if not data:
        raise InputError(f"{name}: empty file")
    _register_heif()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels  # ours is the limit: Pillow errors only past 2x its value
    try:
        with warnings.catch_warnings():
            # past Pillow's guard (raised to max_pixels) is past ours: refused below, in our words
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data))
        w, h = im.size
        n = int(getattr(im, "n_frames", 1) or 1)
        if w * h * n > max_pixels:
            what = f"{w}x{h}" + (f" x {n} frames" if n > 1 else "")
            raise InputError(
                f"{name}: image too large ({what} = {w * h * n / 1e6:.1f} MP > limit {max_pixels / 1e6:.1f} MP;"
                " raise it with --max-pixels)"
            )
        fmt = im.format
        first = _decode_frame(im, name)
        if n > 1:
            durations = [int(im.info.get("duration") or 0)]
            for i in range(1, n):
                im.seek(i)
                first.frames.append(_decode_frame(im, name))
                durations.append(int(im.info.get("duration") or 0))
            first.extra["durations"] = durations
            first.extra["loop"] = im.info.get("loop", 0)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image or unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name}: image too large (over the limit of {max_pixels / 1e6:.1f} MP; raise it with --max-pixels)"
        ) from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "premature" in msg.lower():
            raise InputError(f"{name}: truncated image data") from None
        raise InputError(f"{name}: corrupt image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, struct_error) as e:
        raise InputError(f"{name}: corrupt image ({e})") from None
    for fr in (first, *first.frames):
        fr.path, fr.format = path, fmt
    return first


def _decode_frame(im: Image.Image, name: str) -> LoadedImage:
    """The current frame of an open image as a LoadedImage (orientation applied, colour kind kept)."""
    icc = im.info.get("icc_profile")
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    exif_obj = im.getexif()
    im.load()
    if exif_obj.get(0x0112) in (2, 3, 4, 5, 6, 7, 8):  # else exif_transpose only copies the pixels
        im = ImageOps.exif_transpose(im)
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
                icc = None  # the CMYK profile does not describe the RGB data
        rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB")).copy()
    return LoadedImage(None, rgb, alpha, high, mode, None, icc, exif, xmp)


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


def _frame_pil(
    rgb: np.ndarray, like: LoadedImage | None, changed: np.ndarray | None, fmt: str
) -> Image.Image:
    """One output frame as a PIL image in the kind of mode the format can hold."""
    im = to_pil(rgb, like, changed)
    if fmt in ("JPEG", "BMP") and im.mode in ("RGBA", "LA"):
        # no alpha in these formats: flatten on white
        bg = Image.new("RGB" if im.mode == "RGBA" else "L", im.size, "white")
        bg.paste(im, mask=im.getchannel("A"))
        im = bg
    if fmt in ("JPEG", "WEBP", "HEIF", "BMP", "GIF") and im.mode == "I;16":
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) // 257).astype(np.uint8))
    return im


def save_image(
    rgb: np.ndarray,
    path: str | Path,
    like: LoadedImage | None = None,
    quality: int = 95,
    keep_metadata: bool = False,
    changed: np.ndarray | None = None,
    frames: list[tuple[np.ndarray, LoadedImage | None, np.ndarray | None]] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write ``rgb`` (H,W,3) uint8 to ``path`` atomically (temp file in the same folder + rename).

    The format follows the extension. Metadata (EXIF incl. GPS, XMP, IPTC, comments) is dropped
    unless ``keep_metadata``; the ICC profile is kept so colours display as in the input.
    ``frames``: later frames ``(rgb, like, changed)`` of an animation / pages of a multi-page TIFF,
    written after the first (GIF, WebP and TIFF keep them; other formats refuse). ``notes`` collects
    what could not be kept (e.g. EXIF tags TIFF cannot store) as one-line messages.
    """
    p = Path(path)
    fmt = FORMAT_BY_EXT.get(p.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{p}: unsupported output extension {p.suffix!r} (use one of {sorted(IMAGE_EXTENSIONS)})"
        )
    if fmt == "HEIF" and not _register_heif():  # pragma: no cover
        raise UsageError(f"{p}: HEIC output needs pillow-heif")
    if frames and fmt not in ("GIF", "WEBP", "TIFF"):
        raise UsageError(
            f"{p}: {len(frames) + 1} frames cannot be written as {fmt}; use .gif, .webp or .tiff"
        )
    im = _frame_pil(rgb, like, changed, fmt)
    params: dict = {}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        params["quality"] = int(quality)
    if fmt == "JPEG":
        params["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        params["compression"] = "tiff_lzw"
    if frames:
        params["save_all"] = True
        params["append_images"] = [_frame_pil(r, lk, ch, fmt) for r, lk, ch in frames]
        if fmt in ("GIF", "WEBP") and like is not None:
            if like.extra.get("durations"):
                params["duration"] = like.extra["durations"]
            params["loop"] = like.extra.get("loop", 0)
        if fmt == "GIF":
            params["disposal"] = 2  # every frame is a full picture
    if like is not None and like.icc and fmt not in ("BMP", "GIF"):
        params["icc_profile"] = like.icc
    if keep_metadata and like is not None:
        if like.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "HEIF"):
            params["exif"] = like.exif
        if like.xmp and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
            params["xmp"] = like.xmp
    with atomic_file(p) as f:
        if fmt == "TIFF" and "exif" in params:
            _save_tiff_with_exif(im, f, params, p, notes)
        else:
            im.save(f, format=fmt, **params)
    return p


#: TIFF tags that describe a file's layout (size, strips, compression...), not metadata
_TIFF_LAYOUT_TAGS = {
    254,
    255,
    256,
    257,
    258,
    259,
    262,
    266,
    273,
    274,
    277,
    278,
    279,
    284,
    317,
    320,
    322,
    323,
    324,
    325,
    338,
    339,
    530,
    531,
    532,
}


def _save_tiff_with_exif(
    im: Image.Image, f: BinaryIO, params: dict, p: Path, notes: list[str] | None
) -> None:
    """TIFF stores EXIF as tags of its own directory, and libtiff refuses some (sub-directories such
    as GPS, maker notes, undefined types). Keep the main-directory tags it accepts, drop the rest
    with a note (never a raw libtiff error)."""
    exif = Image.Exif()
    exif.load(params.pop("exif"))
    kept = Image.Exif()
    dropped = []
    for tag, value in exif.items():
        if tag in _TIFF_LAYOUT_TAGS:
            continue  # the layout of the input file, not metadata: written anew
        if tag in (0x8769, 0x8825, 0xA005) or isinstance(value, (bytes, dict)):  # sub-IFD pointers, blobs
            dropped.append(tag)
        else:
            kept[tag] = value
    for tag in (0x8769, 0x8825):
        if exif.get_ifd(tag):
            dropped.append(tag)
    start = f.tell()
    try:
        im.save(f, format="TIFF", exif=kept, **params)
    except (RuntimeError, OSError, ValueError, TypeError):
        f.seek(start)
        f.truncate()
        im.save(f, format="TIFF", **params)
        dropped, kept = list(exif), Image.Exif()
    if dropped and notes is not None:
        notes.append(
            f"{p}: --keep-metadata: TIFF cannot store {len(set(dropped))} EXIF entr"
            f"{'y' if len(set(dropped)) == 1 else 'ies'} (GPS/Exif sub-directories, binary tags); "
            f"kept {len(kept)}"
        )


#: temporary files are ``.<output name>.privpix-<pid>-<random>.part``: a later run recognises its own
#: stale ones (the writing process is gone) by this name and removes them, and nothing else
_TMP_MARK = ".privpix-"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary files a killed privpix run left for ``path`` (``.<name>.privpix-<pid>-*.part``
    whose process no longer runs). Files of running processes and any other file are left alone."""
    removed = []
    prefix = f".{path.name}{_TMP_MARK}"
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".part")]
    except OSError:
        return removed
    for n in names:
        pid_s = n[len(prefix) :].split("-", 1)[0]
        if not pid_s.isdigit() or int(pid_s) == os.getpid() or _pid_alive(int(pid_s)):
            continue
        try:
            os.unlink(path.parent / n)
            removed.append(path.parent / n)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success it is fsynced and renamed onto
    ``path`` (atomic on POSIX), on any failure or interrupt it is removed and ``path`` is untouched.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask), not
    the temporary file's 0600. Stale temporary files of killed runs for the same ``path`` are removed.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}{_TMP_MARK}{os.getpid()}-", suffix=".part", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w+b") as f:  # readable too: multi-page TIFF writing reads back
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
    """One unit of work for an engine: an input file and where its output goes.

    ``rel`` is the path relative to the walked root (the input's name for file inputs). ``error``:
    the input is unusable (missing, unreadable folder, would overwrite an input): report it, exit 1.
    ``skip``: not processed on purpose (e.g. a file in a folder that is not an image): report it.
    """

    input: Path
    output: Path | None
    rel: Path
    error: str | None = None
    skip: str | None = None


def is_image_path(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def sniff_format(p: Path) -> str | None:
    """The image format PIL reads from ``p``'s header (``"JPEG"``, ...), or None (not an image)."""
    try:
        with Image.open(p) as im:
            return im.format
    except Exception:  # any failure to identify: not an image we can read
        return None


@dataclass
class Found:
    """One entry of an input expansion: a file (with its path below the walked ``root``), or a
    problem (``error``: unreadable folder, missing path) or a file left out (``skip``)."""

    path: Path
    rel: Path
    root: Path | None
    error: str | None = None
    skip: str | None = None


def _walk(root: Path, skip_suffix: str | None) -> Iterator[Found]:
    """Files under ``root`` (sorted, recursive). Unreadable folders are reported, never skipped silently;
    files without an image extension are read by header: images are kept, the rest reported as skipped.
    Hidden files (our own temporary files among them) are left out."""
    errors: list[OSError] = []
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        entries.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    for e in errors:
        where = Path(e.filename) if e.filename else root
        yield Found(
            where,
            where.relative_to(root) if where != root else Path(),
            root,
            error=f"{where}: cannot read folder ({e.strerror or e})",
        )
    for f in sorted(entries):
        if not f.is_file():
            continue
        if skip_suffix and f.stem.endswith(skip_suffix):
            continue  # our own earlier output
        if is_image_path(f) or sniff_format(f) is not None:
            yield Found(f, f.relative_to(root), root)
        else:
            yield Found(f, f.relative_to(root), root, skip="not an image")


def expand_inputs(inputs: Iterable[str | Path], skip_suffix: str | None = None) -> list[Found]:
    """Expand files, directories (recursive) and globs into :class:`Found` entries.

    Files inside directories are kept when they are images (by extension, else by header) and (when
    ``skip_suffix`` is given, e.g. ``"_blur"``) not when their stem ends with it (our own earlier
    outputs); other files come back with ``skip`` set, unreadable folders with ``error``. A path that
    matches nothing comes back with ``error`` so the caller can report it. The same file given twice
    is listed once.
    """
    out: list[Found] = []
    seen: set[Path] = set()

    def add(item: Found) -> None:
        key = item.path.resolve() if item.error is None else None
        if key is not None and key in seen:
            return
        if key is not None:
            seen.add(key)
        out.append(item)

    for raw in inputs:
        s = str(raw)
        p = Path(s)
        if p.is_dir():
            for item in _walk(p, skip_suffix):
                add(item)
        elif p.exists() or not glob.has_magic(s):
            add(Found(p, Path(p.name), None, error=None if p.exists() else f"{p}: no such file or directory"))
        else:
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            if not files:
                add(Found(p, Path(p.name), None, error=f"{p}: no such file or directory"))
            for m in files:
                add(Found(m, Path(m.name), None))
    return out


def _unique(dst: Path, taken: set[Path]) -> Path:
    """``dst``, or ``<stem>-2<ext>``, ``<stem>-3<ext>``... : the first name no earlier job of this run uses."""
    cand, n = dst, 1
    while cand.resolve() in taken:
        n += 1
        cand = dst.with_name(f"{dst.stem}-{n}{dst.suffix}")
    return cand


def plan_outputs(
    inputs: Iterable[str | Path],
    command: str,
    output: str | Path | None = None,
    ext: str | None = None,
) -> list[Job]:
    """Map inputs to outputs, before anything runs (the job list any engine executes).

    Default: next to the input as ``<stem>_<command><ext>``. ``output`` may be a file (single input
    only, or when it has an image extension) or a directory (created): there every output keeps its
    input's name, and directory inputs mirror their tree under it. ``ext`` forces the output extension (e.g. ``".png"``); inputs without an image
    extension get the one of their format. Outputs are unique within the run: when two inputs map
    to the same name (``a/x.jpg b/x.jpg -o out/`` -> ``out/x.jpg``, ``out/x-2.jpg``) the later ones get ``-2``, ``-3``... (in input
    order, so reruns map the same way). Never maps an output onto an input: such a job gets an error.
    """
    expanded = expand_inputs(inputs, skip_suffix=f"_{command}")
    files = [e for e in expanded if e.error is None and e.skip is None]
    out_path = Path(output) if output is not None else None
    single_file_out = out_path is not None and is_image_path(out_path) and not out_path.is_dir()
    if single_file_out and len(files) > 1:
        raise UsageError(f"-o {out_path}: a single output file needs a single input ({len(files)} given)")
    jobs: list[Job] = []
    input_set = {e.path.resolve() for e in files}
    taken: set[Path] = set()
    for e in expanded:
        f, rel, root = e.path, e.rel, e.root
        if e.error is not None or e.skip is not None:
            jobs.append(Job(f, None, rel, error=e.error, skip=e.skip))
            continue
        suffix = ext or f.suffix
        if suffix.lower() not in FORMAT_BY_EXT:
            fmt = sniff_format(f)
            suffix = EXT_BY_FORMAT.get(fmt or "", ".png")
        if out_path is None:
            dst = f.with_name(f"{f.stem}_{command}{suffix}")
        elif single_file_out:
            dst = out_path
        else:
            # one rule for -o DIR: every output keeps its input's name (the folder is the marker),
            # files given one by one and folder trees (mirrored) alike
            sub = rel.parent if root is not None else Path()
            dst = out_path / sub / f"{f.stem}{suffix}"
        dst = _unique(dst, taken)
        job = Job(f, dst, rel)
        if dst.resolve() in input_set:
            job.error = f"{f}: output {dst} would overwrite an input; choose another -o"
        else:
            taken.add(dst.resolve())
        jobs.append(job)
    return jobs


def iter_images(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Image files under the given paths (files, directories, globs)."""
    for e in expand_inputs(paths):
        if e.error is None and e.skip is None:
            yield e.path

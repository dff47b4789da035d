"""Safe checkpoint loading per format, and loading weights into registered architectures.

Readers (never an arbitrary unpickle):

* ``state_dict`` / ``lightning-ckpt``: ``torch.load(weights_only=True)``. Classes the checkpoint
  merely names (Lightning callbacks, OmegaConf configs, ``argparse.Namespace`` ...) are replaced by
  inert stand-ins that run no code, so training checkpoints load; a file whose top level is a
  pickled Python object (``torch.save(model)``) is refused.
* ``torchscript``: ``torch.jit.load(...).state_dict()`` (or the scripted module,
  :func:`load_torchscript`).
* ``safetensors``: ``safetensors.torch.load_file``.
* ``onnx``: an ``onnxruntime.InferenceSession``.

The container actually on disk is sniffed from the file's first bytes, so a wrong-format file gets a
clear error, and a file in another safe container (e.g. a state_dict saved for a TorchScript entry)
still loads. After reading, the entry's ``container`` (``"state_dict"`` for Lightning) is unwrapped
and, when present, only keys under ``key_prefix`` are kept with the prefix stripped. The model's key
filter then maps the result onto the architecture, which is loaded with ``strict=True``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from .registry import WeightsEntry, get_weights, primary_of
from .resolve import (
    DigestBook,
    Resolved,
    get_weights_dir,
    mismatch_error,
    resolve_any,
    sha256_file,
    weights_dir_path,
)

log = logging.getLogger("privacy_cli.weights")

_SNIFF_NAMES = {
    "torchscript": "a TorchScript archive",
    "torch-pickle": "a PyTorch checkpoint (torch.save)",
    "torch-legacy": "a legacy PyTorch checkpoint",
    "safetensors": "a safetensors file",
    "onnx": "an ONNX model",
    "zip": "a zip archive that is not a PyTorch checkpoint",
    "unknown": "not a checkpoint format privpix can read",
}
_EXPECTED = {
    "state_dict": "a PyTorch state_dict (.pth/.pt)",
    "lightning-ckpt": "a PyTorch-Lightning checkpoint (.ckpt)",
    "torchscript": "a TorchScript archive (.pt)",
    "safetensors": "a safetensors file",
    "onnx": "an ONNX model",
}
_TORCH_KINDS = ("torchscript", "torch-pickle", "torch-legacy", "safetensors")


def sniff_format(path: str | Path) -> str:
    """Container of the file at ``path`` from its first bytes.

    Returns one of ``torchscript``, ``torch-pickle``, ``torch-legacy``, ``safetensors``, ``onnx``,
    ``zip`` or ``unknown``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror or e}") from None
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-pickle"
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "torch-legacy"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    # ONNX ModelProto: field 1 (ir_version, varint) first, then another low-numbered field.
    if (
        len(head) >= 3
        and head[0] == 0x08
        and head[1] < 0x80
        and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)
    ):
        return "onnx"
    return "unknown"


class _Opaque:
    """Inert stand-in for a class or function a checkpoint names but privpix does not import."""

    _privpix_global = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<opaque {self._privpix_global}>"


def _stand_ins(names: list[str]) -> list[tuple[type, str]]:
    out = []
    for n in names:
        cls = type(
            n.rsplit(".", 1)[-1],
            (_Opaque,),
            {"_privpix_global": n, "__module__": "privacy_cli.weights.opaque"},
        )
        out.append((cls, n))
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _torch_load_safe(path: Path) -> Any:
    """``torch.load(weights_only=True)``; unknown globals become inert stand-ins (see module docstring)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as e:
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})"
        ) from None
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as e:
        raise WeightsError(
            f"{path} needs a full unpickle to load, which privpix refuses ({type(e).__name__}: {_first_line(e)})"
        ) from None
    log.info(
        "%s names Python globals privpix does not import; loaded as inert stand-ins: %s",
        path,
        ", ".join(names[:8]),
    )
    try:
        with torch.serialization.safe_globals(_stand_ins(names)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{path} cannot be loaded without unpickling arbitrary objects ({type(e).__name__}: {_first_line(e)})"
        ) from None


def load_torchscript(path: str | Path, map_location: str = "cpu") -> Any:
    """The scripted module of a TorchScript archive (``torch.jit.load``)."""
    import torch

    try:
        return torch.jit.load(str(path), map_location=map_location)
    except Exception as e:
        raise WeightsError(
            f"{path} is not a loadable TorchScript archive ({type(e).__name__}: {_first_line(e)})"
        ) from None


def open_onnx(path: str | Path, providers: list[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` (CPU unless ``providers`` says otherwise)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as e:
        raise WeightsError(
            f"{path} could not be opened by onnxruntime ({type(e).__name__}: {_first_line(e)})"
        ) from None


def read_checkpoint(path: str | Path, entry: WeightsEntry) -> Any:
    """Read ``path`` safely as the container it actually is (checked against ``entry.format``).

    Returns a dict-like of tensors (state_dict, Lightning dict, TorchScript state_dict, safetensors)
    or an ``onnxruntime.InferenceSession`` for ONNX entries.
    """
    path = Path(path)
    kind = sniff_format(path)
    want = _EXPECTED[entry.format]
    if kind in ("unknown", "zip"):
        raise WeightsError(f"{path} is {_SNIFF_NAMES[kind]}; {entry.name} expects {want}")
    if (entry.format == "onnx") != (kind == "onnx"):
        raise WeightsError(f"{path} is {_SNIFF_NAMES[kind]}; {entry.name} expects {want}")
    if kind == "onnx":
        return open_onnx(path)
    declared = {"state_dict": "torch-pickle", "lightning-ckpt": "torch-pickle"}.get(
        entry.format, entry.format
    )
    if kind != declared and not (declared == "torch-pickle" and kind == "torch-legacy"):
        log.info(
            "%s: %s is %s (registry says %s); loading it as what it is",
            entry.name,
            path,
            _SNIFF_NAMES[kind],
            want,
        )
    if kind == "torchscript":
        return dict(load_torchscript(path).state_dict())
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsError(
                f"{path} is not a valid safetensors file ({type(e).__name__}: {_first_line(e)})"
            ) from None
    return _torch_load_safe(path)


def extract_state_dict(obj: Any, entry: WeightsEntry, path: str | Path = "") -> dict[str, Any]:
    """Unwrap the entry's ``container`` and select/strip its ``key_prefix`` (see module docstring)."""
    import torch

    where = f"{path}" if path else entry.name
    if isinstance(obj, _Opaque):
        raise WeightsError(
            f"{where} holds a pickled Python object ({obj._privpix_global}), not a state_dict; privpix does not "
            "unpickle arbitrary objects - save model.state_dict() instead"
        )
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{where} holds a {type(obj).__name__}, not a state_dict; {entry.name} expects {_EXPECTED[entry.format]}"
        )
    container = entry.container or ("state_dict" if entry.format == "lightning-ckpt" else "")
    sd: Mapping = obj
    if container:
        inner = obj.get(container)
        if isinstance(inner, Mapping):
            sd = inner
        elif not (obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
            keys = ", ".join(sorted(str(k) for k in obj)[:8])
            raise WeightsError(
                f"{where} has no {container!r} dict (top-level keys: {keys}); {entry.name} expects {_EXPECTED[entry.format]}"
            )
    if entry.key_prefix:
        p = entry.key_prefix
        sub = {k[len(p) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(p)}
        if sub:
            sd = sub
    return dict(sd)


def load_weights_file(path: str | Path, entry: WeightsEntry) -> dict[str, Any]:
    """Read a torch-format checkpoint of ``entry`` and return its (unwrapped) state_dict."""
    if entry.format == "onnx":
        raise WeightsError(f"{entry.name} is an ONNX model; it has no state_dict (use open_onnx)")
    return extract_state_dict(read_checkpoint(path, entry), entry, path)


def fit_state_dict(model: Any, state_dict: Mapping[str, Any], *, what: str, arch: str) -> None:
    """Load ``state_dict`` into ``model`` with ``strict=True`` after a readable key/shape comparison.

    Missing ``num_batches_tracked`` counters (checkpoints older than PyTorch 0.4.1) are taken from
    the model; any other difference raises :class:`WeightsError` naming counts and examples.
    """
    import torch

    expected = model.state_dict()
    sd = dict(state_dict)
    for k, v in expected.items():
        if k not in sd and k.endswith("num_batches_tracked"):
            sd[k] = v.clone()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    not_tensor = [k for k in expected if k in sd and not isinstance(sd[k], torch.Tensor)]
    shapes = [
        f"{k} file {tuple(sd[k].shape)} model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and isinstance(sd[k], torch.Tensor) and tuple(sd[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if not_tensor:
        problems.append(f"{len(not_tensor)} non-tensor value(s), e.g. {', '.join(not_tensor[:3])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:2])}")
    if problems:
        raise WeightsError(f"{what} does not fit architecture {arch}: {'; '.join(problems)}")
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:  # dtype problems and the like
        raise WeightsError(
            f"{what} could not be loaded into {arch} ({type(e).__name__}: {_first_line(e)})"
        ) from None


# ---------------------------------------------------------------------------------------------
# Model registry lookups (tolerant of family modules that are not written yet)


def registered_models() -> dict[str, Any]:
    """``{name: ModelEntry}`` of every architecture whose family module imports.

    A family module that does not exist (yet) is skipped; any other import error propagates.
    """
    from ..models import registry as mreg

    for mod in list(mreg._ARCH_MODULES):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            log.debug("architecture family %s is not available", mod)
    return dict(mreg._REGISTRY)


def model_for(entry: WeightsEntry) -> Any | None:
    """The registered architecture ``entry`` loads into (``arch``, else weights-name match), or None."""
    models = registered_models()
    if entry.arch and entry.arch in models:
        return models[entry.arch]
    names = {entry.name, primary_of(entry.name)}
    for m in models.values():
        if m.weights in names:
            return m
    return None


# ---------------------------------------------------------------------------------------------
# load_into


def _split_entry(entry: Any) -> tuple[str, str, Any]:
    """(architecture name, weights name, key filter) from a ModelEntry, WeightsEntry or name."""
    if isinstance(entry, str):
        return entry, entry, None
    if isinstance(entry, WeightsEntry):
        return entry.arch or entry.name, entry.name, None
    return entry.name, entry.weights or entry.name, getattr(entry, "key_filter", None)


def apply_weights(
    model: Any, path: str | Path, wentry: WeightsEntry, *, arch: str, key_filter: Any = None
) -> None:
    """Load the file at ``path`` (a checkpoint of ``wentry``) into ``model``: read, filter, strict load.

    ONNX entries go to ``model.load_onnx(path)`` (wrapper objects such as ``MiganInpainter``).
    """
    path = Path(path)
    what = f"{wentry.name} ({path.name})"
    if wentry.format == "onnx":
        loader = getattr(model, "load_onnx", None)
        if loader is None:
            raise WeightsError(
                f"{what} is an ONNX model; architecture {arch} is a torch module and cannot load it"
            )
        loader(path)
        return
    if getattr(model, "load_onnx", None) is not None and not hasattr(model, "load_state_dict"):
        raise WeightsError(f"{what} is {_EXPECTED[wentry.format]}; architecture {arch} runs ONNX models only")
    sd = load_weights_file(path, wentry)
    if key_filter is not None:
        try:
            sd = key_filter(sd, model)
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(
                f"{what}: the {arch} key filter could not map this file ({type(e).__name__}: {_first_line(e)})"
            ) from None
    fit_state_dict(model, sd, what=what, arch=arch)


def load_into(
    model: Any,
    entry: Any,
    *,
    weights_dir: str | Path | None = None,
    offline: bool | None = None,
    accept_license: bool = False,
) -> Any:
    """Resolve, verify and load the published weights of ``entry`` into ``model`` (returned).

    ``entry`` is a model-registry ``ModelEntry`` (its ``weights`` name and ``key_filter`` are used),
    a :class:`WeightsEntry` or a weights name. A local copy of one of the entry's ``alternatives``
    is used when the primary file is absent. Load time, file and digest status are logged and stored
    on the model as ``model.privpix_weights`` (a dict; reported by runners in ``--json``).
    """
    t0 = time.perf_counter()
    arch, weights_name, key_filter = _split_entry(entry)
    res: Resolved = resolve_any(
        weights_name, weights_dir=weights_dir, offline=offline, accept_license=accept_license
    )
    apply_weights(model, res.path, res.entry, arch=arch, key_filter=key_filter)
    dt = time.perf_counter() - t0
    info = {
        "weights": res.entry.name,
        "path": str(res.path),
        "where": res.where,
        "sha256": res.digest.sha256 if res.digest else None,
        "digest": res.digest.status if res.digest else None,
        "load_s": round(dt, 3),
    }
    try:
        model.privpix_weights = info
    except Exception:  # pragma: no cover - objects that refuse attributes
        pass
    log.info("loaded %s into %s from %s in %.2fs", res.entry.name, arch, res.path, dt)
    return model


# ---------------------------------------------------------------------------------------------
# Import of a user's file


def check_file(entry: WeightsEntry, path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a usable checkpoint of ``entry`` (loads into its architecture when available).

    Returns ``{"checked": "architecture"|"format", "arch": name|None, "container": sniffed, "tensors": n}``;
    raises :class:`WeightsError` when the file is in the wrong format or does not fit.
    """
    path = Path(path)
    kind = sniff_format(path)
    mentry = model_for(entry)
    arch = mentry.name if mentry is not None else (entry.arch or None)
    if entry.format == "onnx":
        read_checkpoint(path, entry)  # opens an InferenceSession: format check
        n = 0
        if mentry is not None:
            apply_weights(mentry.builder(), path, entry, arch=mentry.name)
    else:
        sd = load_weights_file(path, entry)
        import torch

        n = sum(isinstance(v, torch.Tensor) for v in sd.values())
        if n == 0:
            raise WeightsError(f"{path} holds no tensors; {entry.name} expects {_EXPECTED[entry.format]}")
        if mentry is not None:
            model = mentry.builder()
            apply_weights(model, path, entry, arch=mentry.name, key_filter=mentry.key_filter)
    return {
        "checked": "architecture" if mentry is not None else "format",
        "arch": arch,
        "container": kind,
        "tensors": n,
    }


def import_weights(
    name: str,
    file: str | Path,
    *,
    weights_dir: str | Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check ``file`` and copy it (atomically) to ``<weights dir>/<name><ext>``, where resolution finds it.

    Checks, in order: the file loads into the entry's architecture (or, when that architecture is
    not available in this build, at least reads as the entry's format), the size and the pinned
    sha256 (or prefix). Any failure raises :class:`WeightsError` and stores nothing. An existing,
    different file in the weights dir is only replaced with ``force=True``.
    """
    entry = get_weights(name)
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src}: no such file to import as {name}")
    t0 = time.perf_counter()
    check = check_file(entry, src)
    size = src.stat().st_size
    if entry.size and size != entry.size:
        raise WeightsError(f"{entry.name}: {src} has {size} bytes, expected {entry.size}; nothing was stored")
    actual = sha256_file(src)
    if entry.sha256 and actual != entry.sha256:
        raise mismatch_error(entry, src, entry.sha256, actual, "pinned in weights.toml; nothing was stored")
    if not entry.sha256 and entry.sha256_prefix and not actual.startswith(entry.sha256_prefix):
        raise mismatch_error(
            entry, src, entry.sha256_prefix + "...", actual, "prefix pinned; nothing was stored"
        )
    wdir = get_weights_dir(weights_dir)
    dest = weights_dir_path(entry, wdir)
    status = "imported"
    if dest.exists():
        same = dest.is_file() and sha256_file(dest) == actual
        if same:
            status = "unchanged"
        elif not force:
            raise WeightsError(f"{dest} already exists and differs from {src}; pass --force to replace it")
    if status == "imported":
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 20)
                fo.flush()
                os.fsync(fo.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    DigestBook(wdir).record(dest, entry.name, actual, "import")
    return {
        "name": entry.name,
        "status": status,
        "path": str(dest),
        "sha256": actual,
        "pinned": bool(entry.sha256),
        "digest": "verified" if entry.sha256 else ("prefix-verified" if entry.sha256_prefix else "recorded"),
        "seconds": round(time.perf_counter() - t0, 3),
        **check,
    }


__all__ = [
    "apply_weights",
    "check_file",
    "extract_state_dict",
    "fit_state_dict",
    "import_weights",
    "load_into",
    "load_torchscript",
    "load_weights_file",
    "model_for",
    "open_onnx",
    "read_checkpoint",
    "registered_models",
    "sniff_format",
]

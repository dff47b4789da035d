"""Runtime helpers: device choice, lazy one-per-process runners, batched inference.

* :func:`choose_device` maps ``--device auto|cpu|cuda[:N]|mps`` to a ``torch.device``
  (auto: CUDA > MPS > CPU) and raises :class:`UsageError` when an explicit device is missing.
* :func:`get_runner` keeps one instance per key per process, built on first use (thread-safe).
* :func:`model_runner` is the usual entry: a :class:`ModelRunner` around
  ``build_model(name, pretrained=True)`` on the chosen device, with its load time and device for
  ``--json`` reports, run under ``torch.inference_mode``. Half precision is used only when asked,
  on CUDA, and for models registered with ``half_safe=True`` (FFT-based models such as LaMa stay
  float32).

torch is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import UsageError

log = logging.getLogger("privacy_cli.runtime")

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Devices


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(device: Any = "auto") -> Any:
    """``torch.device`` for ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a device).

    ``auto`` picks CUDA, then Apple MPS, then CPU. An explicit device that is not available raises
    :class:`UsageError` with a one-line explanation.
    """
    import torch

    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = str(device or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "gpu":
        spec = "cuda"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            built = torch.version.cuda or "none"
            raise UsageError(
                f"--device {spec} was requested but CUDA is not available (torch {torch.__version__}, "
                f"CUDA build {built}); use --device auto or --device cpu"
            )
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise UsageError(f"bad device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise UsageError(
                "--device mps was requested but Apple MPS is not available; use --device auto or cpu"
            )
        return torch.device("mps")
    raise UsageError(f"bad device {spec!r}; use auto, cpu, cuda, cuda:N or mps")


def device_description(device: Any) -> str:
    """Human description, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu"``."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)


# ---------------------------------------------------------------------------------------------
# One instance per process


_RUNNERS: dict[Hashable, Any] = {}
_LOCKS: dict[Hashable, threading.Lock] = {}
_GUARD = threading.Lock()


def get_runner(key: Hashable, factory: Callable[[], T]) -> T:
    """The instance cached under ``key``, built by ``factory()`` on first use (one per process).

    Concurrent first calls with the same key build it once; a factory that raises caches nothing.
    """
    try:
        return _RUNNERS[key]
    except KeyError:
        pass
    with _GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _RUNNERS:
            _RUNNERS[key] = factory()
        return _RUNNERS[key]


def cached_runners() -> list[Hashable]:
    """Keys of the runners built so far."""
    return list(_RUNNERS)


def clear_runners() -> None:
    """Forget every cached runner (tests; freeing memory between jobs)."""
    with _GUARD:
        _RUNNERS.clear()
        _LOCKS.clear()


# ---------------------------------------------------------------------------------------------
# Model runners


@dataclass
class ModelRunner:
    """A loaded model on a device, called under ``torch.inference_mode``.

    ``__call__`` moves tensor arguments to the runner's device (and to half precision when the
    runner uses it), runs the model and returns its output unchanged (on the device).
    """

    name: str
    model: Any
    device: Any
    dtype: Any
    load_s: float
    weights: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def _move(self, x: Any) -> Any:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.to(self.device, non_blocking=True)
            return x.to(self.dtype) if x.is_floating_point() else x
        return x

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            args = tuple(self._move(a) for a in args)
            kwargs = {k: self._move(v) for k, v in kwargs.items()}
            return self.model(*args, **kwargs)

    def map_batches(self, inputs: Any, batch_size: int = 8, fn: Callable[..., Any] | None = None) -> Any:
        """Run ``fn`` (default: the runner) over ``inputs`` (B,...) in slices of ``batch_size``.

        Returns the outputs concatenated along dim 0 on the CPU, in float32.
        """
        import torch

        call = fn or self
        outs = []
        for start in range(0, int(inputs.shape[0]), max(1, batch_size)):
            out = call(inputs[start : start + batch_size])
            outs.append(out.detach().float().cpu())
        return torch.cat(outs, dim=0) if outs else inputs.new_zeros((0,))

    def info(self) -> dict[str, Any]:
        """For ``--json``: model, device, dtype, load seconds and the weights file used."""
        return {
            "model": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "load_s": round(self.load_s, 3),
            "weights": self.weights,
            **self.extra,
        }


def _build_runner(name: str, device: Any, half: bool, pretrained: bool) -> ModelRunner:
    import torch

    from .models import build_model, get_entry

    t0 = time.perf_counter()
    entry = get_entry(name)
    model = build_model(name, pretrained=pretrained, device=device)
    dtype = torch.float32
    if half and device.type == "cuda" and entry.tags.get("half_safe", False):
        model = model.half()
        dtype = torch.float16
    elif half:
        log.info("%s stays in float32 (half precision needs CUDA and a half-safe model)", name)
    load_s = time.perf_counter() - t0
    log.info("%s ready on %s (%s) in %.2fs", name, device_description(device), dtype, load_s)
    return ModelRunner(name, model, device, dtype, load_s, getattr(model, "privpix_weights", None))


def model_runner(
    name: str, *, device: Any = "auto", half: bool = False, pretrained: bool = True
) -> ModelRunner:
    """The per-process :class:`ModelRunner` for registry model ``name`` on ``device`` (built on first use)."""
    dev = choose_device(device)
    return get_runner(
        ("model", name, str(dev), bool(half), bool(pretrained)),
        lambda: _build_runner(name, dev, half, pretrained),
    )


# ---------------------------------------------------------------------------------------------
# Batching helpers


def iter_batches(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to ``batch_size`` items."""
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def group_by_size(images: Sequence[Any]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``images`` ((H,W,...) arrays) grouped by (H, W), so each group stacks into one batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault((int(img.shape[0]), int(img.shape[1])), []).append(i)
    return groups


def images_to_tensor(images: Sequence[Any]) -> Any:
    """Stack (H,W,3) uint8 RGB arrays of one size into a (B,3,H,W) float32 tensor in [0, 1]."""
    import numpy as np
    import torch

    if not images:
        raise UsageError("no images to stack")
    arr = np.stack([np.asarray(im) for im in images])
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise UsageError(f"expected (H,W,3) uint8 images of one size, got {arr.dtype} {arr.shape[1:]}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_images(batch: Any) -> list[Any]:
    """(B,3,H,W) float tensor in [0, 1] -> list of (H,W,3) uint8 arrays (rounded, clipped)."""
    x = batch.detach().float().clamp(0, 1).mul(255).round().to("cpu")
    arr = x.permute(0, 2, 3, 1).numpy().astype("uint8")
    return [a for a in arr]


__all__ = [
    "ModelRunner",
    "cached_runners",
    "choose_device",
    "clear_runners",
    "device_description",
    "get_runner",
    "group_by_size",
    "images_to_tensor",
    "iter_batches",
    "model_runner",
    "tensor_to_images",
]


def resolve_device(device: Any = "auto") -> str:
    """:func:`choose_device` as a string (``"cpu"``, ``"cuda:0"``, ``"mps"``) for options and reports."""
    return str(choose_device(device))

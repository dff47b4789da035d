"""Detector protocol and registry.

A detector turns an image into :class:`~privacy_cli.regions.Region` objects in original-image
pixels. Detectors register a factory under a name (``"faces"``, ``"text"``, ...);
:func:`get_detector` builds one instance per ``(name, options)`` per process, lazily, so models
load once. Detector modules are imported on the first registry lookup, which keeps
``privpix --help`` free of torch/onnxruntime imports. Later detectors (plates, persons) plug in
with :func:`register_detector` and :func:`add_detector_module`.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError, UsageError
from ..regions import Region


@runtime_checkable
class Detector(Protocol):
    """What every detector offers.

    name: registry name. kinds: the Region kinds it produces (e.g. ``("face",)``).
    ``detect(image)`` takes ``(H, W, 3)`` uint8 RGB and returns a list of Regions in
    original-image pixels: an empty list when nothing is found, never None. A failure raises
    (the caller turns it into :class:`~privacy_cli.errors.DetectorError`).
    """

    name: str
    kinds: tuple[str, ...]

    def detect(self, image: np.ndarray) -> list[Region]: ...


DetectorFactory = Callable[..., Detector]

# Modules that register detectors; imported on first lookup.
_DETECTOR_MODULES: list[str] = [
    "privacy_cli.detect.faces",
    "privacy_cli.detect.centerface",
    "privacy_cli.detect.text",
]
_FACTORIES: dict[str, DetectorFactory] = {}
_INSTANCES: dict[tuple[str, tuple[tuple[str, Hashable], ...]], Detector] = {}
_KEY_LOCKS: dict[tuple[str, tuple[tuple[str, Hashable], ...]], threading.Lock] = {}
_LOCK = threading.RLock()


def register_detector(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Decorator registering ``factory(**options) -> Detector`` under ``name``."""

    def deco(factory: DetectorFactory) -> DetectorFactory:
        old = _FACTORIES.get(name)
        if old is not None and old is not factory and _qualname(old) != _qualname(factory):
            raise ValueError(f"detector {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return deco


def _qualname(f: Callable[..., Any]) -> str:
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', repr(f))}"


def add_detector_module(module: str) -> None:
    """Declare a module (dotted path) that registers detectors when imported."""
    if module not in _DETECTOR_MODULES:
        _DETECTOR_MODULES.append(module)


def _import_all() -> None:
    for mod in list(_DETECTOR_MODULES):
        importlib.import_module(mod)


def list_detectors() -> list[str]:
    """All registered detector names, sorted."""
    _import_all()
    return sorted(_FACTORIES)


def get_factory(name: str) -> DetectorFactory:
    """The factory registered as ``name``; UsageError listing the known names otherwise."""
    _import_all()
    try:
        return _FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise UsageError(f"unknown detector {name!r}; known: {known}") from None


def detector_options(name: str) -> list[str]:
    """Keyword options the detector ``name`` accepts (from its factory signature)."""
    sig = inspect.signature(get_factory(name))
    return [p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def get_detector(name: str, **options: Any) -> Detector:
    """The detector ``name`` built with ``options``: one shared instance per (name, options) per process.

    Unknown names or options raise :class:`~privacy_cli.errors.UsageError`.
    """
    factory = get_factory(name)
    allowed = detector_options(name)
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise UsageError(
            f"detector {name!r} has no option {', '.join(bad)}; options: {', '.join(allowed) or 'none'}"
        )
    key = (name, tuple(sorted((k, _freeze(v)) for k, v in options.items())))
    inst = _INSTANCES.get(key)
    if inst is not None:
        return inst
    # one lock per (name, options): two detectors load their models at the same time (faces and
    # text on 2 cores), the same one is built once
    with _LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        inst = _INSTANCES.get(key)
        if inst is None:
            inst = factory(**options)
            _INSTANCES[key] = inst
    return inst


def clear_detector_cache() -> None:
    """Forget every built detector instance (frees their models)."""
    with _LOCK:
        _INSTANCES.clear()
        _KEY_LOCKS.clear()


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a detector input: ``(H, W, 3)`` uint8 RGB, H and W >= 1. Returns it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"detector input must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"detector input must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"detector input must be uint8, got {image.dtype}")
    return np.ascontiguousarray(image)


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> CUDA > MPS > CPU; an unavailable explicit device is a UsageError
    (see :func:`privacy_cli.runtime.choose_device`)."""
    from ..runtime import resolve_device as _resolve

    return _resolve(device or "auto")

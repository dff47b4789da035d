"""Obfuscation methods: ``apply(image, mask, **opts) -> image`` registered by name.

Contract: image ``(H, W, 3)`` uint8 RGB, mask ``(H, W)`` float32 in [0, 1] (1 = sensitive, soft
edges allowed); the result is ``(H, W, 3)`` uint8 equal to the input wherever ``mask == 0``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

MethodFn = Callable[..., np.ndarray]


@dataclass
class MethodEntry:
    name: str
    fn: MethodFn
    summary: str
    #: True for methods made for the whole image (stylize): the bench applies them to the whole image
    whole_image: bool = False
    #: True for methods whose command covers the whole image when it has no region source (perturb):
    #: the bench does the same when it has no regions (``--detect none``), else applies them inside
    whole_image_default: bool = False


_METHODS: dict[str, MethodEntry] = {}
_METHOD_MODULES = {
    "blur": "privacy_cli.methods.blur",
    "pixelate": "privacy_cli.methods.pixelate",
    "mask": "privacy_cli.methods.fill",
    "erase": "privacy_cli.methods.erase",
    "stylize": "privacy_cli.methods.stylize",
    "perturb": "privacy_cli.methods.perturb",
    "deidentify": "privacy_cli.methods.deidentify",
}


def register_method(
    name: str, summary: str = "", whole_image: bool = False, whole_image_default: bool = False
) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(image, mask, **opts)`` under ``name`` (``whole_image``, ``whole_image_default``:
    see :class:`MethodEntry`)."""

    def deco(fn: MethodFn) -> MethodFn:
        doc = summary or (fn.__doc__ or "").strip().split("\n")[0]
        _METHODS[name] = MethodEntry(name, fn, doc, whole_image, whole_image_default)
        return fn

    return deco


def get_method(name: str) -> MethodFn:
    """The apply function registered as ``name`` (UsageError listing known methods otherwise)."""
    if name not in _METHODS and name in _METHOD_MODULES:
        importlib.import_module(_METHOD_MODULES[name])
    if name not in _METHODS:
        raise UsageError(f"unknown method {name!r}; known: {', '.join(list_methods())}")
    return _METHODS[name].fn


def is_whole_image(name: str) -> bool:
    """True when method ``name`` is made for the whole image (registered with ``whole_image=True``)."""
    get_method(name)
    return _METHODS[name].whole_image


def is_whole_image_default(name: str) -> bool:
    """True when method ``name`` covers the whole image without a region source (``whole_image_default``)."""
    get_method(name)
    return _METHODS[name].whole_image_default


def list_methods() -> list[str]:
    for mod in _METHOD_MODULES.values():
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    return sorted(_METHODS)

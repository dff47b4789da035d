"""Model registry: one name -> (architecture builder, pretrained-weights entry), as in timm.

Architecture modules register a builder with :func:`register_model`; `build_model(name)` only
looks things up. Architecture code never downloads: ``pretrained=True`` goes through
:mod:`privacy_cli.weights` (resolution, sha256, safe loading) and the family's key filter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

# Modules that register architectures; imported lazily on the first lookup so that
# `privpix --help` does not import torch.
_ARCH_MODULES: list[str] = []


@dataclass
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., Any]
    #: name of the weights.toml entry whose checkpoint this architecture loads (defaults to `name`)
    weights: str | None = None
    #: converts a raw checkpoint state_dict into this module's key names (prefix strip, renames)
    key_filter: Callable[[dict, Any], dict] | None = None
    #: reference file in ../shared/reference this architecture must reproduce (without extension)
    reference: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    weights: str | None = None,
    key_filter: Callable[[dict, Any], dict] | None = None,
    reference: str | None = None,
    **tags: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, weights or name, key_filter, reference, dict(tags))
        return builder

    return deco


def add_arch_module(module: str) -> None:
    """Declare a module (dotted path) that registers architectures when imported."""
    if module not in _ARCH_MODULES:
        _ARCH_MODULES.append(module)


def _import_all() -> None:
    for mod in list(_ARCH_MODULES):
        importlib.import_module(mod)


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _import_all()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a clear error listing the known names otherwise.

    Family modules are imported in order only until ``name`` is registered, so a lookup does not
    pay for importing every architecture.
    """
    for mod in list(_ARCH_MODULES):
        if name in _REGISTRY:
            break
        importlib.import_module(mod)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None

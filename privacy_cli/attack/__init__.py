"""Adversarial targets: the machines ``privpix perturb`` attacks, each differentiable and each with
its own success test.

A target (see :class:`Target`) knows three things:

* ``setup(image)``: what the machine sees in the original (its label, its faces, its identities),
  as a state object; this is what the attack must change.
* ``loss(x, state)``: a differentiable loss on the candidate image ``x`` (1, 3, H, W) float RGB in
  [0, 255], with the machine's preprocessing inside; 0 once the attack has succeeded with margin.
* ``judge(image, state)``: the real machine, with its own (non-differentiable) preprocessing, run
  on an (H, W, 3) uint8 image -> ``{"success": bool, "margin": float, ...}``. ``privpix perturb``
  judges the re-decoded saved file with it.

Targets register by name (:func:`register_target`); :func:`get_target` builds one per (name,
device) per process. torch is imported only when a target is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError


class Target(Protocol):
    """A differentiable model under attack (see the module docstring)."""

    name: str
    #: "classifier" (has classes, --targeted allowed), "detector" or "identity"
    kind: str

    def setup(self, image: np.ndarray) -> Any: ...

    def loss(self, x: Any, state: Any) -> Any: ...

    def judge(self, image: np.ndarray, state: Any) -> dict[str, Any]: ...


TargetFactory = Callable[..., Target]
_FACTORIES: dict[str, tuple[TargetFactory, str]] = {}
_TARGET_MODULES = ["privacy_cli.attack.targets", "privacy_cli.attack.recognisers"]
_INSTANCES: dict[tuple, Target] = {}


def register_target(name: str, summary: str = "") -> Callable[[TargetFactory], TargetFactory]:
    """Register ``factory(device=...) -> Target`` under ``name``."""

    def deco(factory: TargetFactory) -> TargetFactory:
        _FACTORIES[name] = (factory, summary or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def _import_all() -> None:
    for mod in _TARGET_MODULES:
        importlib.import_module(mod)


def list_targets() -> dict[str, str]:
    """Registered target names -> one-line summaries."""
    _import_all()
    return {k: v[1] for k, v in sorted(_FACTORIES.items())}


def check_targets(names: list[str]) -> list[str]:
    """Validate target names (UsageError naming the known ones); returns them de-duplicated."""
    known = list_targets()
    if not names:
        raise UsageError(f"--target: give at least one of {', '.join(known)}")
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"--target {','.join(bad)}: unknown target; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def get_target(name: str, device: Any = "auto") -> Target:
    """The target ``name`` on ``device`` (one instance per process; weights load on first use)."""
    check_targets([name])
    from ..runtime import choose_device

    dev = choose_device(device)
    key = (name, str(dev))
    if key not in _INSTANCES:
        _INSTANCES[key] = _FACTORIES[name][0](device=dev)
    return _INSTANCES[key]


def judge_all(
    original: np.ndarray, output: np.ndarray, names: list[str], device: Any = "auto"
) -> dict[str, dict[str, Any]]:
    """Judge ``output`` against ``original`` (both (H, W, 3) uint8) with every target in ``names``.

    Returns {name: {"success": bool, "margin": float, ...}}: success means the machine no longer
    sees what it saw in the original (label changed, face not detected, identity not matched).
    """
    out = {}
    for name in names:
        t = get_target(name, device)
        out[name] = t.judge(output, t.setup(original))
    return out


__all__ = ["Target", "check_targets", "get_target", "judge_all", "list_targets", "register_target"]

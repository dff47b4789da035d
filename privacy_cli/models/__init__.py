"""Model factory: ``build_model(name, pretrained=True|False, device=...)``.

Architectures live one family per file (``lama.py``, ``irse.py``, ...) and register themselves
with :func:`privacy_cli.models.registry.register_model`.
"""

from __future__ import annotations

from typing import Any

from .registry import ModelEntry, add_arch_module, get_entry, list_models, register_model

# Every architecture family module; imported on first registry lookup.
for _m in (
    "privacy_cli.models.lama",
    "privacy_cli.models.eraser",
    "privacy_cli.models.zoo",
    "privacy_cli.models.irse",
    "privacy_cli.models.stylization",
    "privacy_cli.models.stylegan2",
    "privacy_cli.models.psp",
    "privacy_cli.models.classifiers",
    "privacy_cli.models.masker",
):
    add_arch_module(_m)


def build_model(name: str, pretrained: bool = True, device: Any = "cpu", **kwargs: Any):
    """Build the torch module registered as ``name``.

    With ``pretrained=False`` the bare architecture (deterministic default init) is returned;
    with ``pretrained=True`` the checkpoint named by the entry's ``weights`` is resolved
    (weights dir -> Hugging Face cache -> download), sha256-verified, loaded safely and passed
    through the family's key filter, then loaded with ``strict=True``. The module is returned in
    eval mode on ``device``.
    """
    entry = get_entry(name)
    model = entry.builder(**kwargs)
    if pretrained:
        from ..weights.loading import load_into

        load_into(model, entry)
    model.eval()
    return model.to(device)


__all__ = ["ModelEntry", "build_model", "get_entry", "list_models", "register_model"]

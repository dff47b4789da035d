"""Pretrained weights: ``weights.toml`` registry, resolution (weights dir -> HF cache -> download),
sha256 verification and safe loading into registered architectures.

``resolve_weights(name)`` returns a verified local file (the submodules ``registry``, ``resolve``
and ``loading`` hold the details). Typical use goes through the model factory: ``privacy_cli.models.build_model(name, pretrained=True)``
calls :func:`load_into`. Command-line front end: ``privpix weights ...``
(:mod:`privacy_cli.cli.weights_cmd`). Importing this package does not import torch.
"""

from __future__ import annotations

from .loading import check_file, import_weights, load_into, load_weights_file, read_checkpoint, sniff_format
from .registry import FORMATS, WeightsEntry, get_weights, list_weights, load_registry, registry_path
from .resolve import (
    DigestCheck,
    Resolved,
    check_digest,
    configure,
    get_weights_dir,
    hf_cache_dir,
    local_status,
    locate,
    offline_mode,
    resolve_any,
    verify_local,
)
from .resolve import resolve as resolve_weights

__all__ = [
    "FORMATS",
    "DigestCheck",
    "Resolved",
    "WeightsEntry",
    "check_digest",
    "check_file",
    "configure",
    "get_weights",
    "get_weights_dir",
    "hf_cache_dir",
    "import_weights",
    "list_weights",
    "load_into",
    "load_registry",
    "load_weights_file",
    "local_status",
    "locate",
    "offline_mode",
    "read_checkpoint",
    "registry_path",
    "resolve_any",
    "resolve_weights",
    "sniff_format",
    "verify_local",
]

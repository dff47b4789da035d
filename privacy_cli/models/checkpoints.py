"""Helpers shared by the architecture families' checkpoint key filters."""

from __future__ import annotations

import torch


def plain_state_dict(checkpoint: dict) -> dict:
    """Unwrap ``{"state_dict": ...}`` containers, drop ``_metadata`` and a DataParallel ``module.`` prefix."""
    sd = checkpoint
    for wrapper in ("state_dict", "model"):
        inner = sd.get(wrapper) if isinstance(sd, dict) else None
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            sd = inner
            break
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in sd.items()
        if k != "_metadata" and isinstance(v, torch.Tensor)
    }

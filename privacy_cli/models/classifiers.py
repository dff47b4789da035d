"""Scene and object classifiers that ``privpix perturb`` attacks and ``bench`` scores.

=======================  ============================  ===========================================
name                     architecture                  weights (weights.toml)
=======================  ============================  ===========================================
``places365-resnet50``   torchvision ResNet-50, 365    CSAIL ``resnet50_places365.pth.tar``
                         outputs (Places365-Standard)  (paper 002's classifier)
``imagenet-resnet50``    torchvision ResNet-50, 1000   timm ``resnet50.tv_in1k`` (torchvision's
                         outputs (ImageNet-1k)         original ImageNet weights)
=======================  ============================  ===========================================

The CSAIL file is ``torch.save({"epoch", "arch", "state_dict", "best_prec1"})`` of a
``DataParallel`` model: the weights sit under ``state_dict`` behind a ``module.`` prefix (the
weights entry declares ``container`` and ``key_prefix``; :func:`csail_key_filter` also strips
it). Both sets expect the same preprocessing (:data:`PREPROCESS`): RGB in [0, 1] normalised with
the ImageNet mean/std, the short side resized to 256 and a 224 centre crop (paper 002 uses this
geometry too). The 365 Places category names ship as data (``privacy_cli/data``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from torch import nn

from .registry import register_model

#: What both classifiers expect: ImageNet mean/std on RGB in [0, 1], short side 256, centre 224.
PREPROCESS: dict[str, Any] = {
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "resize": 256,
    "crop": 224,
}


@lru_cache(maxsize=1)
def places365_categories() -> list[str]:
    """The 365 Places365-Standard category names in output order (e.g. ``"bedroom"``, ``"arena/hockey"``)."""
    text = resources.files("privacy_cli.data").joinpath("places365_categories.txt").read_text()
    names = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(names) == 365
    return names


def csail_key_filter(state_dict: dict, model: nn.Module) -> dict:
    """CSAIL Places365 checkpoint -> torchvision ResNet-50 keys (``module.`` prefix stripped)."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


@register_model("places365-resnet50", weights="places365-resnet50", key_filter=csail_key_filter)
def places365_resnet50(**kwargs: Any) -> nn.Module:
    """ResNet-50 with 365 outputs; input (B, 3, 224, 224) ImageNet-normalised RGB -> (B, 365) logits."""
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=365, **kwargs).eval()


@register_model("imagenet-resnet50", weights="imagenet-resnet50", key_filter=csail_key_filter)
def imagenet_resnet50(**kwargs: Any) -> nn.Module:
    """ResNet-50 with 1000 outputs; input (B, 3, 224, 224) ImageNet-normalised RGB -> (B, 1000) logits."""
    from torchvision.models import resnet50

    return resnet50(weights=None, **kwargs).eval()


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """ImageNet-1k class names in output order (torchvision's metadata)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


__all__ = [
    "PREPROCESS",
    "csail_key_filter",
    "imagenet_categories",
    "imagenet_resnet50",
    "places365_categories",
    "places365_resnet50",
]

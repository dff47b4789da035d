"""Feature extractors for the bench metrics: built once per process, batched, cached by key.

Every network here is built without any download: architectures come from the installed
packages (`lpips`, `pytorch-fid`, torchvision) or from :func:`privacy_cli.models.build_model`,
and weights come from the privpix weights registry (``privpix weights fetch NAME``). A missing
checkpoint or architecture raises :class:`BackboneUnavailable` (a ``WeightsError``) carrying the
fetch command; the metrics turn it into a ``MetricUnavailable`` result.

Registry names used: ``vgg16`` and ``alexnet`` (LPIPS backbones), ``vgg19`` (PL-V),
``fid-inception`` (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``), ``big-lama-discr``
(FM, Adv), ``lama-resnetpl-ade20k`` (PL-R).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, UsageError, WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FID_DIMS = 2048
FID_SIZE = 299


class BackboneUnavailable(WeightsError):
    """A metric's network cannot be built: weights missing or architecture not installed.

    ``fetch`` is the command that makes it available (``None`` when no command can).
    """

    def __init__(self, message: str, fetch: str | None = None) -> None:
        super().__init__(message)
        self.fetch = fetch


def fetch_command(weights_name: str) -> str:
    """The CLI command that downloads the checkpoint registered as ``weights_name``."""
    return f"privpix weights fetch {weights_name}"


# --------------------------------------------------------------------------------------------
# images


def to_tensor(images: np.ndarray | Sequence[np.ndarray], device: Any = "cpu") -> torch.Tensor:
    """NumPy RGB image(s) -> ``(B, 3, H, W)`` float32 tensor in [0, 1].

    Accepts one ``(H, W, 3)`` array or a sequence of same-size arrays, dtype uint8 (divided by
    255) or float in [0, 1]. Raises ``InputError`` on other shapes or sizes.
    """
    arrs = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    if not arrs:
        raise InputError("no images given")
    out = []
    for a in arrs:
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
        if a.shape != arrs[0].shape:
            raise InputError(f"images in one batch must share a size: {a.shape} vs {arrs[0].shape}")
        a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)  # torch needs writable memory
        t = torch.from_numpy(a).permute(2, 0, 1).contiguous()  # planar while 1 byte per value
        t = t.float().div_(255.0) if a.dtype == np.uint8 else t.float()
        out.append(t)
    # one image: a view, not the copy torch.stack makes
    return (out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)).to(device)


def image_key(image: torch.Tensor | np.ndarray) -> str:
    """A content hash (sha1 of shape + bytes) usable as a cache key for one image."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    h = hashlib.sha1(str(arr.shape).encode() + str(arr.dtype).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# cache


class FeatureCache:
    """Per-image feature arrays by string key, in memory and optionally on disk.

    Keys are free-form (e.g. ``"fid:/data/img1.jpg:1718000000"`` or :func:`image_key`). With a
    ``directory``, each entry is also stored as ``<sha1(key)>.npy`` (plain arrays, loaded with
    ``allow_pickle=False``), so a re-run of the bench does not recompute the originals.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._mem: dict[str, np.ndarray] = {}
        self._dir = Path(directory) if directory is not None else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self._dir is not None
        return self._dir / (hashlib.sha1(key.encode()).hexdigest() + ".npy")

    def get(self, key: str) -> np.ndarray | None:
        """The stored array for ``key`` or ``None``."""
        with self._lock:
            if key in self._mem:
                self.hits += 1
                return self._mem[key]
        if self._dir is not None:
            p = self._path(key)
            if p.exists():
                arr = np.load(p, allow_pickle=False)
                with self._lock:
                    self._mem[key] = arr
                    self.hits += 1
                return arr
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        """Store ``value`` (a numeric array) under ``key``."""
        value = np.asarray(value)
        with self._lock:
            self._mem[key] = value
        if self._dir is not None:
            p = self._path(key)
            tmp = p.with_suffix(".tmp.npy")
            np.save(tmp, value, allow_pickle=False)
            tmp.replace(p)

    def __contains__(self, key: str) -> bool:
        return key in self._mem or (self._dir is not None and self._path(key).exists())

    def __len__(self) -> int:
        return len(self._mem)


# --------------------------------------------------------------------------------------------
# registry access


def _registered(name: str) -> Any | None:
    """The model-registry entry for ``name`` or None (tolerates family modules not installed)."""
    try:
        from ..weights.loading import registered_models
    except ImportError as e:
        raise BackboneUnavailable(f"model {name!r}: weights support is not installed ({e})", None) from e
    return registered_models().get(name)


def _registry_model(name: str, device: Any = "cpu") -> nn.Module:
    """What ``build_model(name, pretrained=True, device)`` returns, built the same way (registry
    builder, then ``load_into`` with the entry's key filter) but tolerant of architecture family
    modules that are not installed. Every failure becomes ``BackboneUnavailable``."""
    entry = _registered(name)
    if entry is None:
        raise BackboneUnavailable(f"model {name!r} is not registered in this install", None)
    fetch = fetch_command(entry.weights or name)
    from ..weights.loading import load_into

    model = entry.builder()
    try:
        load_into(model, entry)
    except WeightsError as e:
        raise BackboneUnavailable(str(e), fetch=fetch) from e
    return model.eval().to(device)


def _keep_features(state_dict: dict, model: nn.Module) -> dict:
    """Key filter: keep ``features.<i>.*`` of a torchvision/timm VGG or AlexNet checkpoint."""
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


class _FeaturesOnly(nn.Module):
    """Holder of a torchvision ``features`` trunk, so a checkpoint's classifier can be dropped."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features


def _load_weights_entry(
    module: nn.Module, weights_name: str, key_filter: Callable[[dict, nn.Module], dict] | None = None
) -> nn.Module:
    """Load the checkpoint of weights entry ``weights_name`` into ``module`` (strict, verified)."""
    try:
        from ..models.registry import ModelEntry
        from ..weights.loading import load_into
    except ImportError as e:
        raise BackboneUnavailable(
            f"weights {weights_name!r}: weights support is not installed ({e})", fetch_command(weights_name)
        ) from e
    entry = ModelEntry(name=weights_name, builder=lambda: module, weights=weights_name, key_filter=key_filter)
    try:
        load_into(module, entry)
    except WeightsError as e:
        raise BackboneUnavailable(str(e), fetch=fetch_command(weights_name)) from e
    except UsageError as e:  # no such entry in weights.toml
        raise BackboneUnavailable(
            f"weights {weights_name!r} are not in this install's weights registry ({e})".split("; known")[0]
            + ")",
            fetch=fetch_command(weights_name),
        ) from e
    return module.eval()


def _features_state(state: dict[str, torch.Tensor], what: str) -> dict[int, dict[str, torch.Tensor]]:
    """``features.<i>.<param>`` entries of a VGG/AlexNet state_dict, grouped by layer index."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"^(?:.*\.)?features\.(\d+)\.(weight|bias)$", key)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if not out:
        raise BackboneUnavailable(f"{what}: the checkpoint has no 'features.<i>.weight' entries", None)
    return out


_BACKBONE_CACHE: dict[str, dict[int, dict[str, torch.Tensor]]] = {}


def _backbone_features(name: str) -> dict[int, dict[str, torch.Tensor]]:
    """Convolution weights of registry backbone ``name`` (vgg16, vgg19, alexnet) by layer index.

    Uses the registered architecture when there is one, else torchvision's ``features`` trunk
    loaded from the weights entry of the same name (classifier keys dropped).
    """
    import torchvision

    if name in _BACKBONE_CACHE:
        return _BACKBONE_CACHE[name]
    if _registered(name) is not None:
        model = _registry_model(name)
    else:
        from torchvision.models.vgg import cfgs, make_layers

        builders: dict[str, Callable[[], nn.Module]] = {
            "alexnet": lambda: torchvision.models.alexnet(weights=None).features,
            "vgg16": lambda: make_layers(cfgs["D"]),
            "vgg19": lambda: make_layers(cfgs["E"]),
        }
        if name not in builders:
            raise BackboneUnavailable(f"model {name!r} is not registered", None)
        trunk = _FeaturesOnly(builders[name]())
        model = _load_weights_entry(trunk, name, key_filter=_keep_features)
    layers = {
        i: {k: v.detach().cpu().clone() for k, v in p.items()}
        for i, p in _features_state(model.state_dict(), name).items()
    }
    _BACKBONE_CACHE[name] = layers
    return layers


# --------------------------------------------------------------------------------------------
# LPIPS


LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}
_LPIPS_CACHE: dict[tuple[str, str], nn.Module] = {}
_LPIPS_LOCK = threading.Lock()


def build_lpips(
    net: str = "alex",
    backbone_state: dict[str, torch.Tensor] | None = None,
    device: Any = "cpu",
) -> nn.Module:
    """An ``lpips.LPIPS`` v0.1 module (library: lpips 0.1.4) with weights from our registry.

    net: ``"alex"`` or ``"vgg"``. The linear calibration layers are the v0.1 files shipped inside
    the `lpips` package (loaded with ``weights_only=True``); the backbone is built with
    ``pnet_rand=True`` (no torchvision download) and filled from ``backbone_state`` (a torchvision
    / timm state_dict with ``features.<i>.*`` keys) or, when ``None``, from the registry
    (``alexnet`` / ``vgg16``). Inputs to the returned module: ``(B, 3, H, W)`` in [-1, 1]
    (or [0, 1] with ``normalize=True``). Registry-backed modules are built once per device.
    Raises ``BackboneUnavailable`` when the backbone weights are missing.
    """
    if net not in LPIPS_BACKBONES:
        raise UsageError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    key = (net, str(device))
    if backbone_state is None:
        with _LPIPS_LOCK:
            if key in _LPIPS_CACHE:
                return _LPIPS_CACHE[key]
    import lpips as lpips_pkg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notice
        model = lpips_pkg.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    lin_path = Path(lpips_pkg.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    res = model.load_state_dict(lin_state, strict=False)
    if res.unexpected_keys or any(re.match(r"^lin\d+\.", k) for k in res.missing_keys):
        raise WeightsError(f"{lin_path}: LPIPS linear layers do not fit ({res})")

    layers = (
        _features_state(backbone_state, f"LPIPS {net} backbone")
        if backbone_state is not None
        else _backbone_features(LPIPS_BACKBONES[net])
    )
    mapped: dict[str, torch.Tensor] = {}
    for slice_name, slice_mod in model.net.named_children():
        for idx_name, layer in slice_mod.named_children():
            if isinstance(layer, nn.Conv2d):
                idx = int(idx_name)
                if idx not in layers:
                    raise BackboneUnavailable(f"LPIPS {net}: backbone has no conv at features.{idx}", None)
                for p, v in layers[idx].items():
                    mapped[f"{slice_name}.{idx_name}.{p}"] = v
    model.net.load_state_dict(mapped, strict=True)
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    if backbone_state is None:
        with _LPIPS_LOCK:
            _LPIPS_CACHE[key] = model
    return model


# --------------------------------------------------------------------------------------------
# FID Inception


def _fid_core() -> nn.Module:
    """pytorch-fid's FID Inception (torchvision Inception3 + its FID blocks), untrained."""
    import pytorch_fid.inception as pfi

    core = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    blocks: dict[str, nn.Module] = {
        "Mixed_5b": pfi.FIDInceptionA(192, pool_features=32),
        "Mixed_5c": pfi.FIDInceptionA(256, pool_features=64),
        "Mixed_5d": pfi.FIDInceptionA(288, pool_features=64),
        "Mixed_6b": pfi.FIDInceptionC(768, channels_7x7=128),
        "Mixed_6c": pfi.FIDInceptionC(768, channels_7x7=160),
        "Mixed_6d": pfi.FIDInceptionC(768, channels_7x7=160),
        "Mixed_6e": pfi.FIDInceptionC(768, channels_7x7=192),
        "Mixed_7b": pfi.FIDInceptionE_1(1280),
        "Mixed_7c": pfi.FIDInceptionE_2(2048),
    }
    for name, block in blocks.items():
        setattr(core, name, block)
    return core


_FID_CACHE: dict[str, nn.Module] = {}


def build_fid_inception(
    state_dict: dict[str, torch.Tensor] | None = None, device: Any = "cpu", dims: int = FID_DIMS
) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (library: pytorch-fid 0.3.0) without any download.

    Weights: ``state_dict`` (keys of ``pt_inception-2015-12-05-6726825d.pth``) or, when ``None``,
    the registry entry ``fid-inception``. Input ``(B, 3, H, W)`` in [0, 1]; the module resizes to
    299x299 (bilinear) and scales to [-1, 1] itself; output ``[ (B, dims, h, w) ]`` from the block
    pytorch-fid uses for ``dims`` (2048: final average pool, the standard FID; 64 / 192 / 768:
    earlier blocks, as pytorch-fid's ``--dims``).
    """
    import pytorch_fid.inception as pfi

    if dims not in pfi.InceptionV3.BLOCK_INDEX_BY_DIM:
        raise UsageError(f"FID dims must be one of {sorted(pfi.InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    cache_key = f"{device}:{dims}"
    if state_dict is None and cache_key in _FID_CACHE:
        return _FID_CACHE[cache_key]
    core = _fid_core()
    if state_dict is not None:
        core.load_state_dict(state_dict, strict=True)
    elif _registered("fid-inception") is not None:
        built = _registry_model("fid-inception")
        if isinstance(built, pfi.InceptionV3) and dims == FID_DIMS:
            built = built.eval().to(device)
            _FID_CACHE[cache_key] = built
            return built
        if isinstance(built, pfi.InceptionV3):
            raise BackboneUnavailable("registry 'fid-inception' is an InceptionV3 fixed to 2048 dims", None)
        core.load_state_dict(built.state_dict(), strict=True)
    else:
        _load_weights_entry(core, "fid-inception")
    original = pfi.fid_inception_v3
    pfi.fid_inception_v3 = lambda: core  # InceptionV3 would otherwise download the weights
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    finally:
        pfi.fid_inception_v3 = original
    model = model.eval().to(device)
    if state_dict is None:
        _FID_CACHE[cache_key] = model
    return model


def resize_for_fid(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, 299, 299)``, exactly InceptionV3's own resize."""
    import torch.nn.functional as F

    if images.shape[-2:] == (FID_SIZE, FID_SIZE):
        return images
    return F.interpolate(images, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)


class FIDFeatures:
    """Batched, cached pool3 features (``dims``-d, float64) of pytorch-fid's InceptionV3.

    ``add(images, keys=None)`` queues ``(B, 3, H, W)`` images in [0, 1] (any size; resized to
    299x299 as InceptionV3 does, so mixed sizes batch together); ``features()`` runs the queued
    ones in batches of ``batch_size`` and returns ``(N, dims)`` in insertion order. Keys found in
    ``cache`` (per ``dims``) are not recomputed.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        device: Any = "cpu",
        batch_size: int = 16,
        cache: FeatureCache | None = None,
        cache_prefix: str = "fid",
        dims: int = FID_DIMS,
    ) -> None:
        self.model = model
        self.dims = dims
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.prefix = cache_prefix if dims == FID_DIMS else f"{cache_prefix}{dims}"
        self._done: list[np.ndarray | None] = []
        self._pending: list[tuple[int, torch.Tensor, str | None]] = []

    def __len__(self) -> int:
        return len(self._done)

    def add(self, images: torch.Tensor, keys: Sequence[str] | None = None) -> None:
        if keys is not None and len(keys) != images.shape[0]:
            raise InputError(f"{len(keys)} keys for {images.shape[0]} images")
        for i in range(images.shape[0]):
            key = f"{self.prefix}:{keys[i]}" if keys is not None else None
            hit = self.cache.get(key) if (self.cache is not None and key is not None) else None
            self._done.append(hit)
            if hit is None:
                small = resize_for_fid(images[i : i + 1].float()).cpu()
                self._pending.append((len(self._done) - 1, small, key))
        if len(self._pending) >= self.batch_size:
            self._flush()

    @torch.no_grad()
    def _flush(self) -> None:
        if not self._pending:
            return
        if self.model is None:
            self.model = build_fid_inception(device=self.device, dims=self.dims)
        for start in range(0, len(self._pending), self.batch_size):
            chunk = self._pending[start : start + self.batch_size]
            batch = torch.cat([t for _, t, _ in chunk]).to(self.device)
            feats = self.model(batch)[0]
            if feats.shape[-1] != 1 or feats.shape[-2] != 1:
                feats = torch.nn.functional.adaptive_avg_pool2d(feats, (1, 1))
            feats = feats.flatten(1).cpu().double().numpy()
            for (idx, _, key), f in zip(chunk, feats, strict=True):
                self._done[idx] = f
                if self.cache is not None and key is not None:
                    self.cache.put(key, f)
        self._pending.clear()

    def features(self) -> np.ndarray:
        self._flush()
        if not self._done:
            return np.zeros((0, self.dims))
        return np.stack([f for f in self._done if f is not None])

    def reset(self) -> None:
        self._done.clear()
        self._pending.clear()


# --------------------------------------------------------------------------------------------
# LaMa losses' networks (content difference, ERASER Table 3)


class VGGPerceptualFeatures(nn.Module):
    """LaMa's PerceptualLoss trunk: VGG19 ``features[:30]`` with max-pools replaced by 2x2/2
    average pools; input ``(B, 3, H, W)`` in [0, 1] (ImageNet-normalised inside); returns the
    13 post-ReLU maps (relu1_1 ... relu5_1)."""

    def __init__(self, layers: dict[int, dict[str, torch.Tensor]] | None = None) -> None:
        super().__init__()

        from torchvision.models.vgg import cfgs, make_layers

        ref = make_layers(cfgs["E"])[:30]  # VGG19 trunk, torchvision layer indices
        mods: list[nn.Module] = []
        for i, m in enumerate(ref):
            if isinstance(m, nn.MaxPool2d):
                mods.append(nn.AvgPool2d(kernel_size=2, stride=2))
            elif isinstance(m, nn.ReLU):
                mods.append(nn.ReLU(inplace=False))
            else:
                if layers is not None:
                    if i not in layers:
                        raise BackboneUnavailable(f"VGG19 checkpoint has no conv at features.{i}", None)
                    with torch.no_grad():
                        m.weight.copy_(layers[i]["weight"])
                        m.bias.copy_(layers[i]["bias"])
                mods.append(m)
        self.features = nn.Sequential(*mods)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        outs = []
        for m in self.features:
            x = m(x)
            if isinstance(m, nn.ReLU):
                outs.append(x)
        return outs


class ResNetPLFeatures(nn.Module):
    """LaMa's ResNetPL front end: ImageNet normalisation, then the ADE20k ResNet50-dilated
    encoder; input ``(B, 3, H, W)`` in [0, 1]; returns [layer1, layer2, layer3, layer4] maps."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = self.encoder(x)
        if isinstance(out, torch.Tensor) or len(out) < 4:
            raise BackboneUnavailable("ResNetPL encoder must return the 4 layer feature maps", None)
        return list(out)[-4:]


def _cached_per_device(fn: Callable[[str], nn.Module]) -> Callable[..., nn.Module]:
    cache: dict[str, nn.Module] = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def wrapper(device: Any = "cpu") -> nn.Module:
        key = str(device)
        with lock:
            if key in cache:
                return cache[key]
        model = fn(key)
        for p in model.parameters():
            p.requires_grad_(False)
        with lock:
            cache[key] = model.eval()
        return cache[key]

    wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
    return wrapper


@_cached_per_device
def lama_discriminator(device: Any = "cpu") -> nn.Module:
    """LaMa NLayerDiscriminator with big-lama weights (registry ``big-lama-discr``).

    Input ``(B, 3, H, W)`` in [0, 1] (as LaMa feeds it); ``forward`` returns
    ``(logits (B,1,h,w), [5 feature maps])``.
    """
    return _registry_model("big-lama-discr", device)


@_cached_per_device
def resnetpl_encoder(device: Any = "cpu") -> nn.Module:
    """:class:`ResNetPLFeatures` over the ADE20k encoder (registry ``lama-resnetpl-ade20k``)."""
    return ResNetPLFeatures(_registry_model("lama-resnetpl-ade20k", device)).to(device)


@_cached_per_device
def vgg19_perceptual(device: Any = "cpu") -> nn.Module:
    """:class:`VGGPerceptualFeatures` with ImageNet VGG19 weights (registry ``vgg19``)."""
    return VGGPerceptualFeatures(_backbone_features("vgg19")).to(device)


def clear_caches() -> None:
    """Forget every network built so far (e.g. after pointing the weights directory elsewhere)."""
    _BACKBONE_CACHE.clear()
    with _LPIPS_LOCK:
        _LPIPS_CACHE.clear()
    _FID_CACHE.clear()
    for fn in (lama_discriminator, resnetpl_encoder, vgg19_perceptual):
        fn.cache_clear()  # type: ignore[attr-defined]

"""Generic checks over the model registry, so every architecture gets them by registering.

* every registered model builds with ``pretrained=False`` (families whose module does not exist
  yet are skipped);
* every model registered with ``reference=`` has the manifest's keys and shapes
  (``tests/reference.py``: ``load_ref`` + ``detfill.check_keys``);
* every model names a ``weights.toml`` entry, and entries name registered architectures;
* for light architectures, a checkpoint written in the entry's documented on-disk layout
  (container, key prefix, extra keys) loads back through the family's key filter exactly.
"""

from __future__ import annotations

import importlib
import importlib.util
import math

import pytest
import torch
from reference import detfill, load_ref

from privacy_cli.models import build_model
from privacy_cli.models import registry as mreg
from privacy_cli.weights import registry as wreg
from privacy_cli.weights.loading import apply_weights

FAMILIES = list(mreg._ARCH_MODULES)
AVAILABLE = [m for m in FAMILIES if importlib.util.find_spec(m) is not None]
for _m in AVAILABLE:
    importlib.import_module(_m)
MODELS = sorted(n for n, e in mreg._REGISTRY.items() if e.builder.__module__ in AVAILABLE)
REFERENCED = [n for n in MODELS if mreg._REGISTRY[n].reference]
WEIGHTS = wreg.load_registry()

#: architectures above this many parameters are skipped by the layout round trip (CPU budget)
ROUNDTRIP_MAX_PARAMS = 35_000_000


@pytest.fixture(autouse=True)
def _available_families_only(monkeypatch):
    """build_model imports every family; limit it to the ones that exist in this checkout."""
    monkeypatch.setattr(mreg, "_ARCH_MODULES", AVAILABLE)


@pytest.mark.parametrize("module", FAMILIES)
def test_family_module_registers_models(module):
    if module not in AVAILABLE:
        pytest.skip(f"architecture family {module} is not written yet")
    assert any(e.builder.__module__ == module for e in mreg._REGISTRY.values()), f"{module} registers nothing"


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    """(name, bare model): each architecture is built once and shared by the checks below."""
    monkey = pytest.MonkeyPatch()
    monkey.setattr(mreg, "_ARCH_MODULES", AVAILABLE)
    try:
        yield request.param, build_model(request.param, pretrained=False)
    finally:
        monkey.undo()


def test_builds_without_weights(built):
    name, model = built
    if isinstance(model, torch.nn.Module):
        assert not model.training, f"{name}: build_model must return eval mode"
        params = list(model.parameters())
        assert params and model.state_dict(), f"{name}: no parameters"
        peaks = [float(p.detach().abs().amax()) for p in params if p.numel()]  # NaN/inf propagate
        assert all(math.isfinite(v) for v in peaks), f"{name}: non-finite initial parameters"
    else:
        assert callable(getattr(model, "load_onnx", None)), (
            f"{name}: neither a torch module nor an ONNX wrapper"
        )


def test_matches_its_reference_manifest(built):
    name, model = built
    entry = mreg._REGISTRY[name]
    if not entry.reference:
        pytest.skip(f"{name} is registered without reference=")
    ref = load_ref(entry.reference)
    problems = detfill().check_keys(model.state_dict(), ref)
    assert not problems, f"{name} vs {entry.reference}: {problems[:10]} (+{max(0, len(problems) - 10)} more)"


@pytest.mark.parametrize("name", MODELS)
def test_model_names_a_weights_entry(name):
    w = mreg._REGISTRY[name].weights
    assert w in WEIGHTS, f"model {name} loads weights {w!r}, which weights.toml does not list"


def test_weights_entries_name_registered_architectures():
    bad = []
    for e in WEIGHTS.values():
        if not e.arch:
            continue
        if e.arch not in mreg._REGISTRY:
            bad.append(f"{e.name}: arch {e.arch!r} is not registered")
        elif mreg._REGISTRY[e.arch].weights != wreg.primary_of(e.name):
            bad.append(f"{e.name}: arch {e.arch!r} loads {mreg._REGISTRY[e.arch].weights!r}")
    unregistered = [b for b in bad if b.endswith("is not registered")]
    assert not [b for b in bad if b not in unregistered]
    if unregistered:
        pytest.skip(f"architectures not registered by the families in privacy_cli.models: {unregistered}")


def _distinct_fill(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    out = {}
    for k, v in sd.items():
        if v.is_floating_point():
            out[k] = (torch.rand(v.shape, generator=g, dtype=torch.float64) + 0.25).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def _published_layout(entry: wreg.WeightsEntry, sd: dict[str, torch.Tensor]) -> object:
    """``sd`` wrapped the way the published file of ``entry`` stores it."""
    if entry.name == "stylegan2-ffhq":  # rosinality convert_weight.py
        return {"g_ema": sd, "latent_avg": torch.zeros(512)}
    if entry.format == "lightning-ckpt":
        inner = {entry.key_prefix + k: v for k, v in sd.items()}
        inner["loss_resnet_pl.impl.conv1.weight"] = torch.ones(1)  # other modules of the training run
        inner["val_evaluator.dummy"] = torch.ones(1)
        return {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.2.9", "state_dict": inner}
    if entry.container:
        return {entry.container: sd}
    return sd


def _roundtrip_entries(arch: str) -> list[wreg.WeightsEntry]:
    """Weights entries loading into ``arch`` whose published layout this test can write."""
    skip = ("psp-ffhq-encode", "e4e-ffhq", "eraser", "ict-places2-nature", "facenet-vggface2")
    return [
        e
        for e in WEIGHTS.values()
        if (e.arch or e.name) == arch and e.format in ("state_dict", "lightning-ckpt") and e.name not in skip
    ]  # skipped ones: multi-network / own-format files, covered by their family tests (facenet: test_weights_loading)


def test_published_layouts_load_back_through_the_key_filter(built, tmp_path):
    name, model = built
    entries = _roundtrip_entries(name)
    if not entries:
        pytest.skip(f"no state_dict / lightning-ckpt weights entry loads into {name}")
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > ROUNDTRIP_MAX_PARAMS:
        pytest.skip(f"{name} has {n_params / 1e6:.1f}M parameters (layout covered by its family tests)")
    for entry in entries:
        filled = _distinct_fill(model.state_dict())
        path = tmp_path / entry.local_filename
        torch.save(_published_layout(entry, filled), path)
        apply_weights(model, path, entry, arch=name, key_filter=mreg._REGISTRY[name].key_filter)
        got = model.state_dict()
        wrong = [k for k, v in filled.items() if not torch.equal(got[k], v)]
        assert not wrong, (
            f"{entry.name} -> {name}: {len(wrong)} tensors differ after loading, e.g. {wrong[:3]}"
        )

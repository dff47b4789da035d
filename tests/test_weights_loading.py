"""Checkpoint formats, safe loading, load_into, import, and the package-backed architectures.

Every checkpoint is made here in the on-disk layout of the published files (containers, key
prefixes, extra keys); nothing touches the network. Helpers at the top are shared with the other
``test_weights_*`` files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privacy_cli.errors import InputError, RegionError, WeightsError
from privacy_cli.models import registry as mreg
from privacy_cli.weights import loading, registry, resolve
from privacy_cli.weights.loading import (
    apply_weights,
    check_file,
    import_weights,
    load_into,
    load_weights_file,
    sniff_format,
)

# ---------------------------------------------------------------------------------------------
# Shared helpers


class Tiny(nn.Module):
    """Small architecture for container tests: conv + BN + linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


class TinyWrapper(nn.Module):
    """What LaMa's to_jit.py does: the network under a ``model`` attribute (keys ``model.*``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A Tiny state_dict with distinctive values (BN statistics included)."""
    g = torch.Generator().manual_seed(seed)
    m = Tiny()
    return {
        k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v + 7)
        for k, v in m.state_dict().items()
    }


def assert_state_equal(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def write_registry(path: Path, tables: dict[str, dict]) -> Path:
    """Write a weights.toml with ``[weights.<name>]`` tables of strings, ints, bools and string lists."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = []
    for name, fields in tables.items():
        lines.append(f"[weights.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in fields.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    registry._CACHE.clear()
    return path


def put_in_hf_cache(
    cache: Path, repo_id: str, filename: str, src: Path, revision: str = "main", commit: str | None = None
) -> Path:
    """Place ``src`` in a Hugging Face cache exactly as hf_hub_download leaves it.

    ``models--owner--name/blobs/<sha256>``, ``snapshots/<commit>/<filename>`` (relative symlink to
    the blob) and ``refs/<revision>`` holding the commit (unless the revision is the commit itself).
    """
    commit = commit or hashlib.sha1(f"{repo_id}/{filename}".encode()).hexdigest()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    data = src.read_bytes()
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo_dir / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    if revision != commit:
        ref = repo_dir / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return snap


# Minimal ONNX writer (protobuf wire format) so tests can make real ONNX graphs without the onnx package.
_FLOAT, _UINT8, _INT64 = 1, 2, 7


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fv(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _fb(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _fs(field: int, s: str) -> bytes:
    return _fb(field, s.encode())


def _value_info(name: str, elem: int, dims: list) -> bytes:
    dim_msgs = b"".join(_fb(1, _fs(2, d) if isinstance(d, str) else _fv(1, d)) for d in dims)
    return _fs(1, name) + _fb(2, _fb(1, _fv(1, elem) + _fb(2, dim_msgs)))


def _tensor(name: str, arr: np.ndarray) -> bytes:
    elem = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64, np.dtype(np.uint8): _UINT8}[arr.dtype]
    return (
        b"".join(_fv(1, d) for d in arr.shape)
        + _fv(2, elem)
        + _fs(8, name)
        + _fb(9, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    )


def _node(op: str, inputs: list[str], outputs: list[str], **int_attrs: int) -> bytes:
    msg = b"".join(_fs(1, i) for i in inputs) + b"".join(_fs(2, o) for o in outputs) + _fs(4, op)
    for k, v in int_attrs.items():
        msg += _fb(5, _fs(1, k) + _fv(3, v) + _fv(20, 2))
    return msg


def write_onnx(
    path: Path, nodes: list[bytes], inputs: list[bytes], outputs: list[bytes], inits: list[bytes]
) -> Path:
    graph = (
        b"".join(_fb(1, n) for n in nodes)
        + _fs(2, "g")
        + b"".join(_fb(5, t) for t in inits)
        + b"".join(_fb(11, v) for v in inputs)
        + b"".join(_fb(12, v) for v in outputs)
    )
    model = _fv(1, 8) + _fs(2, "privpix-tests") + _fb(7, graph) + _fb(8, _fs(1, "") + _fv(2, 13))
    path.write_bytes(model)
    return path


def migan_pipeline_onnx(path: Path) -> Path:
    """MI-GAN pipeline I/O (uint8 image + mask, 255 = known); fills holes with 255 - image."""
    nodes = [
        _node("Cast", ["image"], ["imgf"], to=_FLOAT),
        _node("Cast", ["mask"], ["mf"], to=_FLOAT),
        _node("Div", ["mf", "c255"], ["known"]),
        _node("Sub", ["c255", "imgf"], ["inv"]),
        _node("Mul", ["imgf", "known"], ["a"]),
        _node("Sub", ["c1", "known"], ["holef"]),
        _node("Mul", ["inv", "holef"], ["b"]),
        _node("Add", ["a", "b"], ["outf"]),
        _node("Cast", ["outf"], ["result"], to=_UINT8),
    ]
    inputs = [
        _value_info("image", _UINT8, ["b", 3, "h", "w"]),
        _value_info("mask", _UINT8, ["b", 1, "h", "w"]),
    ]
    outputs = [_value_info("result", _UINT8, ["b", 3, "h", "w"])]
    inits = [_tensor("c255", np.array(255.0, np.float32)), _tensor("c1", np.array(1.0, np.float32))]
    return write_onnx(path, nodes, inputs, outputs, inits)


def migan_generator_onnx(path: Path, side: int = 16) -> Path:
    """Bare-generator I/O: float (1,4,R,R) -> (1,3,R,R); returns channels 1..3 (the masked image)."""
    nodes = [_node("Slice", ["input", "starts", "ends", "axes"], ["output"])]
    inputs = [_value_info("input", _FLOAT, [1, 4, side, side])]
    outputs = [_value_info("output", _FLOAT, [1, 3, side, side])]
    inits = [
        _tensor("starts", np.array([1], np.int64)),
        _tensor("ends", np.array([4], np.int64)),
        _tensor("axes", np.array([1], np.int64)),
    ]
    return write_onnx(path, nodes, inputs, outputs, inits)


def other_onnx(path: Path) -> Path:
    """A valid ONNX graph that is not MI-GAN (one float (1,3,8,8) input)."""
    nodes = [_node("Relu", ["x"], ["y"])]
    return write_onnx(
        path, nodes, [_value_info("x", _FLOAT, [1, 3, 8, 8])], [_value_info("y", _FLOAT, [1, 3, 8, 8])], []
    )


TINY_TABLES: dict[str, dict] = {
    "tiny-sd": {
        "repo_id": "privpix-test/tiny",
        "filename": "tiny.pth",
        "format": "state_dict",
        "licence": "MIT",
        "arch": "test-tiny",
    },
    "tiny-ckpt": {
        "repo_id": "privpix-test/tiny-lightning",
        "filename": "run/models/best.ckpt",
        "format": "lightning-ckpt",
        "key_prefix": "generator.",
        "licence": "Apache-2.0",
        "arch": "test-tiny",
    },
    "tiny-ts": {
        "repo_id": "privpix-test/tiny-jit",
        "filename": "tiny.pt",
        "format": "torchscript",
        "key_prefix": "model.",
        "arch": "test-tiny",
    },
    "tiny-st": {
        "repo_id": "privpix-test/tiny-st",
        "filename": "model.safetensors",
        "format": "safetensors",
        "arch": "test-tiny",
    },
    "tiny-onnx": {
        "repo_id": "privpix-test/tiny-migan",
        "filename": "migan.onnx",
        "format": "onnx",
        "arch": "test-migan",
    },
    "tiny-nc": {
        "repo_id": "privpix-test/tiny-nc",
        "filename": "nc.pth",
        "format": "state_dict",
        "licence": "Test Licence-NC (non-commercial)",
        "licence_url": "https://example.invalid/licence",
        "restricted": True,
        "arch": "test-tiny",
    },
    "tiny-manual": {
        "manual_url": "https://example.invalid/get-it",
        "filename": "Manual.pth",
        "format": "state_dict",
        "arch": "test-tiny",
    },
}


def setup_weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Isolated weights dir / HF cache; downloads raise (no network) unless a test swaps them in."""
    wdir, hf = tmp_path / "weights", tmp_path / "hf"
    monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    for var in ("HF_HUB_OFFLINE", "PRIVPIX_OFFLINE", "PRIVPIX_WEIGHTS_TOML", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(resolve._SETTINGS, "weights_dir", None)
    monkeypatch.setitem(resolve._SETTINGS, "offline", None)

    def no_network(entry, *a, **k):
        raise AssertionError(f"test tried to download {entry.name}")

    monkeypatch.setattr(resolve, "_hub_download", no_network)
    monkeypatch.setattr(resolve, "_url_download", no_network)
    registry._CACHE.clear()
    return argparse.Namespace(root=tmp_path, wdir=wdir, hf=hf)


def setup_tiny_registry(env: argparse.Namespace, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """A test registry of tiny entries, with ``test-tiny`` / ``test-migan`` registered as architectures."""
    from privacy_cli.models.zoo import MiganInpainter

    path = write_registry(env.root / "weights.toml", TINY_TABLES)
    monkeypatch.setenv("PRIVPIX_WEIGHTS_TOML", str(path))
    monkeypatch.setitem(
        mreg._REGISTRY, "test-tiny", mreg.ModelEntry("test-tiny", Tiny, "tiny-sd", None, None, {})
    )
    monkeypatch.setitem(
        mreg._REGISTRY,
        "test-migan",
        mreg.ModelEntry("test-migan", MiganInpainter, "tiny-onnx", None, None, {}),
    )
    env.toml = path
    return env


def model_entry(weights: str, key_filter=None, name: str = "test-tiny") -> mreg.ModelEntry:
    return mreg.ModelEntry(name, Tiny, weights, key_filter, None, {})


# ---------------------------------------------------------------------------------------------
# Sniffing and readers


def test_sniff_recognises_every_container(tmp_path):
    sd = tiny_state()
    torch.save(sd, tmp_path / "a.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.jit.script(TinyWrapper(Tiny())).save(str(tmp_path / "ts.pt"))
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "m.safetensors"))
    migan_pipeline_onnx(tmp_path / "m.onnx")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (tmp_path / "notes.txt").write_text("not weights at all\n")
    got = {
        p: sniff_format(tmp_path / p)
        for p in ("a.pth", "legacy.pth", "ts.pt", "m.safetensors", "m.onnx", "img.png", "notes.txt")
    }
    assert got == {
        "a.pth": "torch-pickle",
        "legacy.pth": "torch-legacy",
        "ts.pt": "torchscript",
        "m.safetensors": "safetensors",
        "m.onnx": "onnx",
        "img.png": "unknown",
        "notes.txt": "unknown",
    }


def test_state_dict_and_legacy_file_load_exactly(tiny_reg):
    entry = registry.get_weights("tiny-sd")
    sd = tiny_state(1)
    for legacy in (False, True):
        p = tiny_reg.root / f"sd-{legacy}.pth"
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        m = Tiny()
        apply_weights(m, p, entry, arch="test-tiny")
        assert_state_equal(m, sd)


_EXECUTED: list[str] = []


def _side_effect(tag: str) -> str:
    _EXECUTED.append(tag)
    return tag


class ModelCheckpoint:
    """Stands for a Lightning callback class stored as a dict key in old checkpoints."""

    def __init__(self) -> None:
        self.best_model_path = "/somewhere/best.ckpt"


class Exploding:
    """Unpickling this would call _side_effect: a stand-in for code a checkpoint could run."""

    def __reduce__(self):
        return (_side_effect, ("code ran",))


def test_lightning_checkpoint_with_training_objects_loads_without_running_code(tiny_reg):
    entry = registry.get_weights("tiny-ckpt")
    gen = tiny_state(2)
    ckpt = {
        "epoch": 39,
        "global_step": 123456,
        "pytorch-lightning_version": "1.2.9",
        "state_dict": {
            **{f"generator.{k}": v for k, v in gen.items()},
            "discriminator.model0.0.weight": torch.ones(2, 3, 4, 4),
            "loss_resnet_pl.impl.conv1.weight": torch.ones(2),
            "val_evaluator.scores.ssim.weight": torch.ones(1),
        },
        "callbacks": {
            ModelCheckpoint: {"best_model_score": torch.tensor(0.25), "best_model_path": "best.ckpt"}
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
        "hyper_parameters": argparse.Namespace(config="big-lama.yaml"),
        "hook": Exploding(),
    }
    p = tiny_reg.root / "best.ckpt"
    torch.save(ckpt, p)
    _EXECUTED.clear()
    sd = load_weights_file(p, entry)
    assert _EXECUTED == [], "a checkpoint could run code while loading"
    assert set(sd) == set(gen)  # generator keys only, prefix stripped
    m = Tiny()
    apply_weights(m, p, entry, arch="test-tiny")
    assert_state_equal(m, gen)


def test_pickled_module_is_refused(tiny_reg):
    p = tiny_reg.root / "whole_model.pth"
    torch.save(Tiny(), p)  # torch.save(model): a pickled nn.Module, not a state_dict
    with pytest.raises(WeightsError, match=r"pickled Python object .*Tiny.* not a state_dict"):
        load_weights_file(p, registry.get_weights("tiny-sd"))


def test_torchscript_wrapper_prefix_and_scripted_module(tiny_reg):
    inner = Tiny()
    inner.load_state_dict(tiny_state(3))
    p = tiny_reg.root / "tiny.pt"
    torch.jit.script(TinyWrapper(inner).eval()).save(str(p))
    m = Tiny()
    apply_weights(m, p, registry.get_weights("tiny-ts"), arch="test-tiny")
    assert_state_equal(m, tiny_state(3))
    scripted = loading.load_torchscript(p)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), m.eval()(x))


def test_safetensors_loads(tiny_reg):
    from safetensors.torch import save_file

    p = tiny_reg.root / "model.safetensors"
    save_file(tiny_state(4), str(p))
    m = Tiny()
    apply_weights(m, p, registry.get_weights("tiny-st"), arch="test-tiny")
    assert_state_equal(m, tiny_state(4))


def test_wrong_format_files_give_clear_errors(tiny_reg):
    sd_entry, onnx_entry = registry.get_weights("tiny-sd"), registry.get_weights("tiny-onnx")
    junk = tiny_reg.root / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(
        WeightsError,
        match=r"junk.pth is not a checkpoint format privpix can read; tiny-sd expects a PyTorch state_dict",
    ):
        load_weights_file(junk, sd_entry)
    onnx_file = migan_pipeline_onnx(tiny_reg.root / "m.onnx")
    with pytest.raises(WeightsError, match=r"is an ONNX model; tiny-sd expects a PyTorch state_dict"):
        load_weights_file(onnx_file, sd_entry)
    torch.save(tiny_state(), tiny_reg.root / "t.pth")
    with pytest.raises(
        WeightsError, match=r"is a PyTorch checkpoint \(torch.save\); tiny-onnx expects an ONNX model"
    ):
        check_file(onnx_entry, tiny_reg.root / "t.pth")
    trunc = tiny_reg.root / "trunc.pth"
    trunc.write_bytes((tiny_reg.root / "t.pth").read_bytes()[:300])
    with pytest.raises(WeightsError, match="trunc.pth"):
        load_weights_file(trunc, sd_entry)


def test_lightning_file_without_state_dict_is_rejected(tiny_reg):
    p = tiny_reg.root / "odd.ckpt"
    torch.save({"epoch": 1, "weights": {"generator.conv.weight": torch.ones(1)}}, p)
    with pytest.raises(WeightsError, match=r"has no 'state_dict' dict \(top-level keys: epoch, weights\)"):
        load_weights_file(p, registry.get_weights("tiny-ckpt"))


def test_fit_reports_missing_unexpected_and_shape_problems():
    sd = tiny_state()
    del sd["head.bias"]
    sd["extra.weight"] = torch.ones(3)
    sd["conv.weight"] = torch.ones(4, 3, 5, 5)
    with pytest.raises(WeightsError) as err:
        loading.fit_state_dict(Tiny(), sd, what="tiny-sd (tiny.pth)", arch="test-tiny")
    msg = str(err.value)
    assert "tiny-sd (tiny.pth) does not fit architecture test-tiny" in msg
    assert "1 missing key(s), e.g. head.bias" in msg
    assert "1 unexpected key(s), e.g. extra.weight" in msg
    assert "conv.weight file (4, 3, 5, 5) model (4, 3, 3, 3)" in msg


def test_old_checkpoint_without_num_batches_tracked_loads():
    sd = tiny_state()
    del sd["bn.num_batches_tracked"]
    m = Tiny()
    loading.fit_state_dict(m, sd, what="old", arch="test-tiny")
    torch.testing.assert_close(m.bn.running_var, sd["bn.running_var"])


# ---------------------------------------------------------------------------------------------
# load_into through every resolution path


def test_load_into_from_weights_dir_reports_load_info(tiny_reg):
    tiny_reg.wdir.mkdir(parents=True)
    torch.save(tiny_state(5), tiny_reg.wdir / "tiny-sd.pth")
    m = load_into(Tiny(), model_entry("tiny-sd"))
    assert_state_equal(m, tiny_state(5))
    info = m.privpix_weights
    assert info["weights"] == "tiny-sd" and info["where"] == "weights-dir"
    assert info["path"] == str(tiny_reg.wdir / "tiny-sd.pth")
    assert info["digest"] == "unpinned" and len(info["sha256"]) == 64 and info["load_s"] >= 0


def test_load_into_from_hf_cache_main_ref_and_pinned_commit(tiny_reg):
    src = tiny_reg.root / "src.pth"
    torch.save(tiny_state(6), src)
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    m = load_into(Tiny(), model_entry("tiny-sd"))
    assert_state_equal(m, tiny_state(6))
    assert m.privpix_weights["where"] == "hf-cache"
    assert "/snapshots/" in m.privpix_weights["path"]

    # A pinned 40-hex revision and a nested file name (like camenduru/big-lama's big-lama/models/best.ckpt).
    commit = "0123456789abcdef0123456789abcdef01234567"
    ckpt = tiny_reg.root / "best.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in tiny_state(7).items()}, "epoch": 1}, ckpt)
    put_in_hf_cache(
        tiny_reg.hf,
        "privpix-test/tiny-lightning",
        "run/models/best.ckpt",
        ckpt,
        revision=commit,
        commit=commit,
    )
    tables = dict(TINY_TABLES, **{"tiny-ckpt": dict(TINY_TABLES["tiny-ckpt"], revision=commit)})
    write_registry(tiny_reg.toml, tables)
    m2 = load_into(Tiny(), model_entry("tiny-ckpt"))
    assert_state_equal(m2, tiny_state(7))
    assert m2.privpix_weights["path"].endswith(f"snapshots/{commit}/run/models/best.ckpt")


def test_weights_dir_copy_wins_over_hf_cache(tiny_reg):
    src = tiny_reg.root / "hub.pth"
    torch.save(tiny_state(8), src)
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    tiny_reg.wdir.mkdir(parents=True)
    torch.save(tiny_state(9), tiny_reg.wdir / "tiny-sd.pth")
    m = load_into(Tiny(), model_entry("tiny-sd"))
    assert_state_equal(m, tiny_state(9))


def test_key_filter_errors_become_weights_errors(tiny_reg):
    tiny_reg.wdir.mkdir(parents=True)
    torch.save(tiny_state(), tiny_reg.wdir / "tiny-sd.pth")

    def broken_filter(sd, model):
        return sd["no-such-key"]

    with pytest.raises(
        WeightsError,
        match=r"tiny-sd \(tiny-sd.pth\): the test-tiny key filter could not map this file \(KeyError",
    ):
        load_into(Tiny(), model_entry("tiny-sd", key_filter=broken_filter))


# ---------------------------------------------------------------------------------------------
# MI-GAN through onnxruntime


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_migan_pipeline_layout_fills_only_the_hole(tmp_path):
    from privacy_cli.models.zoo import MiganInpainter

    inp = MiganInpainter().load_onnx(migan_pipeline_onnx(tmp_path / "m.onnx"))
    assert inp.layout == "pipeline"
    img = _photo(20, 28)
    mask = np.zeros((20, 28), np.float32)
    mask[5:12, 8:20] = 1.0
    mask[4, 8] = 0.3  # feathered edge: still a hole
    out = inp(img, mask)
    hole = mask > 0
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out[~hole], img[~hole])
    np.testing.assert_array_equal(out[hole], 255 - img[hole])  # the graph's fill, so mask polarity is right
    np.testing.assert_array_equal(inp(img, np.zeros((20, 28), bool)), img)


def test_migan_generator_layout_resizes_and_composites(tmp_path):
    from privacy_cli.models.zoo import MiganInpainter

    inp = MiganInpainter().load_onnx(migan_generator_onnx(tmp_path / "g.onnx", side=16))
    assert inp.layout == "generator" and inp.resolution == 16
    img = _photo(16, 16, 1)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    out = inp(img, mask)
    # The graph returns img*m in [-1, 1]: zero inside the hole -> mid-grey 128 after de-normalisation.
    assert (out[4:12, 4:12] == 128).all()
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    big = _photo(40, 36, 2)
    bmask = np.zeros((40, 36), bool)
    bmask[8:32, 6:30] = True
    bout = inp(big, bmask)
    np.testing.assert_array_equal(bout[~bmask], big[~bmask])
    assert np.abs(bout[14:26, 12:24].astype(int) - 128).max() <= 1


def test_migan_rejects_other_graphs_and_bad_inputs(tmp_path):
    from privacy_cli.models.zoo import MiganInpainter

    with pytest.raises(WeightsError, match="match neither MI-GAN layout"):
        MiganInpainter().load_onnx(other_onnx(tmp_path / "x.onnx"))
    with pytest.raises(WeightsError, match="no weights loaded"):
        MiganInpainter()(_photo(8, 8), np.ones((8, 8)))
    inp = MiganInpainter().load_onnx(migan_pipeline_onnx(tmp_path / "m.onnx"))
    with pytest.raises(RegionError, match="does not match image"):
        inp(_photo(8, 8), np.ones((8, 9)))
    with pytest.raises(InputError, match="uint8 RGB"):
        inp(np.zeros((8, 8, 3), np.float32), np.ones((8, 8)))


def test_migan_loads_through_registry_and_hf_cache(tiny_reg):
    from privacy_cli.models.zoo import MiganInpainter

    src = migan_pipeline_onnx(tiny_reg.root / "m.onnx")
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny-migan", "migan.onnx", src)
    inp = load_into(MiganInpainter(), mreg._REGISTRY["test-migan"])
    assert inp.layout == "pipeline" and inp.privpix_weights["where"] == "hf-cache"
    with pytest.raises(WeightsError, match="is an ONNX model; architecture test-tiny is a torch module"):
        load_into(Tiny(), model_entry("tiny-onnx"))


# ---------------------------------------------------------------------------------------------
# import


def test_import_checks_architecture_then_stores_atomically(tiny_reg):
    src = tiny_reg.root / "downloaded.pth"
    torch.save(tiny_state(10), src)
    res = import_weights("tiny-sd", src)
    dest = tiny_reg.wdir / "tiny-sd.pth"
    assert res["status"] == "imported" and res["path"] == str(dest)
    assert res["checked"] == "architecture" and res["arch"] == "test-tiny"
    assert res["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert dest.read_bytes() == src.read_bytes()
    assert {p.name for p in tiny_reg.wdir.iterdir()} == {"tiny-sd.pth", "verified-digests.json"}
    # Resolution finds it, and its digest is the one recorded at import.
    m = load_into(Tiny(), model_entry("tiny-sd"))
    assert_state_equal(m, tiny_state(10))
    assert m.privpix_weights["digest"] == "recorded"
    assert import_weights("tiny-sd", src)["status"] == "unchanged"
    other = tiny_reg.root / "other.pth"
    torch.save(tiny_state(11), other)
    with pytest.raises(WeightsError, match="already exists and differs.*--force"):
        import_weights("tiny-sd", other)
    assert import_weights("tiny-sd", other, force=True)["status"] == "imported"
    assert dest.read_bytes() == other.read_bytes()


@pytest.mark.parametrize("kind", ["random-bytes", "wrong-keys", "pickled-module", "onnx", "shape"])
def test_import_of_a_wrong_file_stores_nothing(tiny_reg, kind):
    from safetensors.torch import save_file

    bad = tiny_reg.root / f"bad-{kind}.pth"
    if kind == "random-bytes":
        bad.write_bytes(os.urandom(2048))
    elif kind == "wrong-keys":
        save_file({"features.0.weight": torch.ones(64, 3, 3, 3)}, str(bad))
    elif kind == "pickled-module":
        torch.save(Tiny(), bad)
    elif kind == "onnx":
        migan_pipeline_onnx(bad)
    else:
        sd = tiny_state()
        sd["head.weight"] = torch.ones(5, 4)
        torch.save(sd, bad)
    with pytest.raises(WeightsError):
        import_weights("tiny-sd", bad)
    assert not (tiny_reg.wdir / "tiny-sd.pth").exists()
    assert not tiny_reg.wdir.exists() or not any(p.name.endswith(".part") for p in tiny_reg.wdir.iterdir())


def test_import_with_pinned_digest_mismatch_stores_nothing(tiny_reg):
    src = tiny_reg.root / "copy.pth"
    torch.save(tiny_state(12), src)
    pinned = "ab" * 32
    write_registry(
        tiny_reg.toml, dict(TINY_TABLES, **{"tiny-sd": dict(TINY_TABLES["tiny-sd"], sha256=pinned)})
    )
    actual = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match=f"expected {pinned}.*got {actual}"):
        import_weights("tiny-sd", src)
    assert not (tiny_reg.wdir / "tiny-sd.pth").exists()


def test_import_onnx_checks_the_migan_contract(tiny_reg):
    with pytest.raises(WeightsError, match="match neither MI-GAN layout"):
        import_weights("tiny-onnx", other_onnx(tiny_reg.root / "other.onnx"))
    assert not (tiny_reg.wdir / "tiny-onnx.onnx").exists()
    res = import_weights("tiny-onnx", migan_pipeline_onnx(tiny_reg.root / "good.onnx"))
    assert res["checked"] == "architecture" and (tiny_reg.wdir / "tiny-onnx.onnx").is_file()


def test_import_checks_format_only_when_the_architecture_is_not_available(tiny_reg, monkeypatch):
    monkeypatch.delitem(mreg._REGISTRY, "test-tiny")
    src = tiny_reg.root / "sd.pth"
    torch.save(tiny_state(), src)
    res = import_weights("tiny-sd", src)
    assert res["checked"] == "format" and res["arch"] == "test-tiny" and res["tensors"] == len(tiny_state())


# ---------------------------------------------------------------------------------------------
# Package-backed architectures with files in their published layouts


def _entry_unpinned(name: str):
    return dataclasses.replace(registry.get_weights(name), sha256="", sha256_prefix="", size=0)


def test_facenet_py_feat_checkpoint_layout(tmp_path):
    from privacy_cli.models.zoo import facenet_key_filter, facenet_standardize, facenet_vggface2

    torch.manual_seed(0)
    src = facenet_vggface2()
    sd = {
        k: (v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v)
        for k, v in src.state_dict().items()
    }
    sd["logits.weight"] = torch.randn(8631, 512)  # py-feat's file keeps the VGGFace2 classifier
    sd["logits.bias"] = torch.randn(8631)
    p = tmp_path / "facenet_20180402_114759_vggface2.pth"
    torch.save(sd, p)
    entry = _entry_unpinned("facenet-vggface2")
    m = src  # the strict check fails before anything is copied, so the same module is reused
    with pytest.raises(WeightsError, match="2 unexpected key.*logits"):
        apply_weights(m, p, entry, arch="facenet-vggface2")
    apply_weights(m, p, entry, arch="facenet-vggface2", key_filter=facenet_key_filter)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with torch.no_grad():
        emb = m.eval()(facenet_standardize(torch.rand(2, 3, 160, 160)))
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_fid_inception_matches_pytorch_fid_with_the_same_file(tmp_path, monkeypatch):
    import pytorch_fid.inception as pfi

    from privacy_cli.models.zoo import FIDInceptionV3

    torch.manual_seed(1)
    src = FIDInceptionV3()
    sd = {}
    for k, v in src.state_dict().items():
        if k.endswith("running_var"):
            v = 0.5 + torch.rand_like(v)
        elif k.endswith("running_mean"):
            v = 0.1 * torch.randn_like(v)
        elif v.is_floating_point():
            v = v + 0.01 * torch.randn_like(v)
        sd[k] = v
    p = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, p)
    ours = FIDInceptionV3()
    apply_weights(ours, p, _entry_unpinned("fid-inception"), arch="fid-inception")
    # pytorch-fid itself, given the same file instead of its download. All four blocks are compared
    # on a 96x96 input without resizing (cheap); the 299x299 resize + [-1, 1] scaling on block 0.
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(p, weights_only=True))
    ref = pfi.InceptionV3(output_blocks=[0, 1, 2, 3], resize_input=False).eval()
    ref0 = pfi.InceptionV3(output_blocks=[0]).eval()
    ours.eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        want = ref(x)
        got = ours.forward_blocks(x, (0, 1, 2, 3), resize_input=False)
        small = torch.rand(1, 3, 40, 52)
        got0, want0 = ours.forward_blocks(small, (0,))[0], ref0(small)[0]
    assert len(got) == 4 and got[3].shape == (1, 2048, 1, 1)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got0, want0, atol=1e-5, rtol=1e-5)


def test_fid_inception_pins_reject_a_foreign_file(wenv):
    wenv.wdir.mkdir(parents=True)
    (wenv.wdir / "fid-inception.pth").write_bytes(b"x" * 1000)
    with pytest.raises(WeightsError, match="has 1000 bytes, expected 95628359; nothing was deleted"):
        resolve.resolve("fid-inception")
    assert (wenv.wdir / "fid-inception.pth").exists()


def test_vgg16_timm_safetensors_key_map(tmp_path):
    from safetensors.torch import save_file

    from privacy_cli.models.zoo import timm_vgg_key_filter, vgg16

    model = vgg16()
    tv = {k: v.half() for k, v in model.state_dict().items()}
    # timm's vgg16.tv_in1k names: features.* unchanged, classifier as conv pre_logits + head.fc
    timm_sd = {k: v for k, v in tv.items() if k.startswith("features.")}
    timm_sd["pre_logits.fc1.weight"] = tv["classifier.0.weight"].reshape(4096, 512, 7, 7)
    timm_sd["pre_logits.fc1.bias"] = tv["classifier.0.bias"]
    timm_sd["pre_logits.fc2.weight"] = tv["classifier.3.weight"].reshape(4096, 4096, 1, 1)
    timm_sd["pre_logits.fc2.bias"] = tv["classifier.3.bias"]
    timm_sd["head.fc.weight"] = tv["classifier.6.weight"]
    timm_sd["head.fc.bias"] = tv["classifier.6.bias"]
    p = tmp_path / "model.safetensors"
    save_file(timm_sd, str(p))
    del timm_sd
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
    apply_weights(model, p, _entry_unpinned("vgg16"), arch="vgg16", key_filter=timm_vgg_key_filter)
    got = model.state_dict()
    for k in (
        "features.0.weight",
        "features.28.bias",
        "classifier.0.weight",
        "classifier.3.weight",
        "classifier.6.bias",
    ):
        assert torch.equal(got[k], tv[k].float()), k
    # The flatten order of classifier.0 is torchvision's channel-major (c*49 + h*7 + w).
    assert torch.equal(
        got["classifier.0.weight"][5, 2 * 49 + 3 * 7 + 4],
        tv["classifier.0.weight"][5, 2 * 49 + 3 * 7 + 4].float(),
    )

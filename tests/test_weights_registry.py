"""weights.toml: the shipped registry's content and the reader's validation."""

from __future__ import annotations

import pytest
from test_weights_loading import write_registry

from privacy_cli.errors import UsageError, WeightsError
from privacy_cli.weights import registry

ISSUE_NAMES = [
    "big-lama",
    "big-lama-discr",
    "migan",
    "facenet-vggface2",
    "arcface-ir-se50",
    "fid-inception",
    "vgg16",
    "vgg19",
    "stylegan2-ffhq",
    "e4e-ffhq",
    "animegan2-face-paint-v2",
    "cartoongan-hayao",
    "ade20k-resnet50dilated",
    "curricularface-ir101",
]


@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.delenv("PRIVPIX_WEIGHTS_TOML", raising=False)
    registry._CACHE.clear()
    return registry.load_registry()


def test_shipped_registry_has_every_name_with_complete_fields(shipped):
    assert registry.registry_path().name == "weights.toml"
    for name in ISSUE_NAMES:
        assert name in shipped, name
    for e in shipped.values():
        assert e.format in registry.FORMATS
        assert e.licence and e.paper and e.source and e.used_by, e.name
        if e.source_kind == "hub":
            assert "/" in e.repo_id and e.revision, e.name


def test_shipped_registry_facts_from_the_issue(shipped):
    lama = shipped["big-lama"]
    assert (lama.repo_id, lama.filename, lama.size, lama.format) == (
        "JosephCatrambone/big-lama-torchscript",
        "lama.pt",
        206134115,
        "torchscript",
    )
    assert lama.alternatives == ("big-lama-fashn", "big-lama-ckpt")
    assert (
        shipped["big-lama-fashn"].repo_id == "fashn-ai/LaMa"
        and shipped["big-lama-fashn"].filename == "big-lama.pt"
    )
    ckpt = shipped["big-lama-ckpt"]
    assert (ckpt.repo_id, ckpt.filename, ckpt.format, ckpt.key_prefix) == (
        "camenduru/big-lama",
        "big-lama/models/best.ckpt",
        "lightning-ckpt",
        "generator.",
    )
    assert shipped["big-lama-discr"].filename == "big-lama-with-discr/models/best.ckpt"
    assert shipped["big-lama-discr"].key_prefix == "discriminator."
    fid = shipped["fid-inception"]
    assert fid.size == 95628359 and fid.sha256_prefix == "6726825d" and fid.filename.endswith("6726825d.pth")
    assert shipped["vgg16"].repo_id == "timm/vgg16.tv_in1k" and shipped["vgg16"].format == "safetensors"
    assert shipped["migan"].format == "onnx" and shipped["migan"].licence == "MIT"
    assert shipped["ade20k-resnet50dilated"].source_kind == "url"
    assert shipped["curricularface-ir101"].source_kind == "manual"
    restricted = {e.name for e in shipped.values() if e.restricted}
    assert restricted == {"stylegan2-ffhq", "e4e-ffhq", "psp-ffhq-encode"}
    assert "Non-commercial".lower() in shipped["stylegan2-ffhq"].licence.lower()
    assert shipped["big-lama"].local_filename == "big-lama.pt"
    assert shipped["big-lama-ckpt"].local_filename == "big-lama-ckpt.ckpt"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"repo_id": "a/b", "filename": "f.pth", "format": "pickle"}, "format 'pickle' is not one of"),
        (
            {"repo_id": "a/b", "url": "https://x/f.pth", "filename": "f.pth", "format": "state_dict"},
            "exactly one of repo_id, url, manual_url",
        ),
        ({"filename": "f.pth", "format": "state_dict"}, "exactly one of repo_id, url, manual_url"),
        ({"repo_id": "a/b", "filename": "f.pth", "format": "state_dict", "sha256": "abc"}, "64 hex digits"),
        (
            {"repo_id": "a/b", "filename": "f.pth", "format": "state_dict", "sha256": "Z" * 64},
            "lower-case hex",
        ),
        ({"repo_id": "a/b", "filename": "f.pth", "format": "state_dict", "sizee": 3}, "unknown field"),
        (
            {"repo_id": "a/b", "filename": "f.pth", "format": "state_dict", "size": "3 MB"},
            "size must be a byte count",
        ),
        ({"repo_id": "a/b", "format": "state_dict"}, "missing filename"),
        ({"url": "ftp://x/f.pth", "filename": "f.pth", "format": "state_dict"}, "url must start with"),
        (
            {"repo_id": "a/b", "filename": "f.pth", "format": "state_dict", "alternatives": ["nope"]},
            "alternative 'nope' is not another entry",
        ),
    ],
)
def test_invalid_tables_are_rejected_with_the_table_named(tmp_path, fields, message):
    path = write_registry(tmp_path / "weights.toml", {"broken": fields})
    with pytest.raises(WeightsError, match=message) as err:
        registry.load_registry(path)
    assert "broken" in str(err.value)


def test_registry_override_lookup_and_unknown_names(tmp_path, monkeypatch):
    path = write_registry(
        tmp_path / "w.toml",
        {
            "one": {
                "repo_id": "o/one",
                "filename": "x.safetensors",
                "format": "safetensors",
                "alternatives": ["two"],
            },
            "two": {
                "url": "https://example.invalid/two.pth",
                "filename": "two.pth",
                "format": "state_dict",
                "size": 10,
            },
        },
    )
    monkeypatch.setenv("PRIVPIX_WEIGHTS_TOML", str(path))
    assert registry.registry_path() == path
    assert [e.name for e in registry.list_weights()] == ["one", "two"]
    assert registry.get_weights("one").origin == "hf://o/one/x.safetensors@main"
    assert registry.get_weights("two").origin == "https://example.invalid/two.pth"
    assert registry.get_weights("two").size_text == "10 B"
    assert registry.primary_of("two") == "one" and registry.primary_of("one") == "one"
    with pytest.raises(UsageError, match="unknown weights 'three'; known: one, two"):
        registry.get_weights("three")
    (tmp_path / "bad.toml").write_text("[weights.x\n")
    monkeypatch.setenv("PRIVPIX_WEIGHTS_TOML", str(tmp_path / "bad.toml"))
    with pytest.raises(WeightsError, match="is not valid TOML"):
        registry.load_registry()
    monkeypatch.setenv("PRIVPIX_WEIGHTS_TOML", str(tmp_path / "absent.toml"))
    with pytest.raises(WeightsError, match="weights registry not found"):
        registry.load_registry()


def test_human_sizes():
    assert registry.human_size(206134115) == "206.1 MB"
    assert registry.human_size(999) == "999 B"
    assert registry.human_size(1_500_000_000) == "1.5 GB"

"""Resolution order, offline errors, digest pinning/recording, licence gate, downloads (no network:
Hub downloads are replaced by a function that fills the HF cache; url downloads use a local HTTP
server on 127.0.0.1)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from test_weights_loading import (
    TINY_TABLES,
    Tiny,
    assert_state_equal,
    put_in_hf_cache,
    tiny_state,
    write_registry,
)

from privacy_cli.errors import WeightsError
from privacy_cli.models import registry as mreg
from privacy_cli.weights import loading, registry, resolve

ORIGINAL_URL_DOWNLOAD = resolve._url_download


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def retable(env, **changes: dict) -> None:
    """Rewrite the test registry with some tables changed or added."""
    tables = {k: dict(v) for k, v in TINY_TABLES.items()}
    for name, fields in changes.items():
        tables[name] = {**tables.get(name, {}), **fields}
    write_registry(env.toml, tables)


def fake_hub(env, calls: list, payload: Path):
    """Stand-in for the network: 'downloads' ``payload`` into the HF cache as hf_hub_download would."""

    def download(entry, cache_dir):
        calls.append(entry.name)
        assert Path(cache_dir) == env.hf
        return put_in_hf_cache(env.hf, entry.repo_id, entry.filename, payload)

    return download


# ---------------------------------------------------------------------------------------------
# Missing weights


def test_offline_and_missing_error_names_model_size_licence_and_commands(wenv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        resolve.resolve("big-lama")
    msg = str(err.value)
    for part in (
        "big-lama weights are not available locally",
        "206.1 MB",
        "licence: Apache-2.0",
        "downloads are off (--offline / HF_HUB_OFFLINE=1)",
        "`privpix weights fetch big-lama`",
        "`privpix weights import big-lama FILE`",
        "lama.pt",
    ):
        assert part in msg
    assert "\n" not in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsError, match="downloads are off"):
        resolve.resolve("big-lama", offline=True)
    resolve.configure(offline=True)
    with pytest.raises(WeightsError, match="downloads are off"):
        resolve.resolve("vgg19")


def test_build_model_offline_missing_goes_through_the_same_error(wenv, monkeypatch):
    import importlib.util

    from privacy_cli.models import build_model

    available = [m for m in mreg._ARCH_MODULES if importlib.util.find_spec(m) is not None]
    monkeypatch.setattr(mreg, "_ARCH_MODULES", available)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        WeightsError, match=r"facenet-vggface2 weights are not available locally \(112 MB, licence: MIT\)"
    ):
        build_model("facenet-vggface2", pretrained=True)


def test_import_only_entry_explains_where_to_get_it(wenv):
    with pytest.raises(WeightsError) as err:
        resolve.resolve("curricularface-ir101")  # online, but there is nothing privpix may download
    msg = str(err.value)
    assert "privpix cannot download them" in msg
    assert "get CurricularFace_Backbone.pth from https://github.com/HuangYG123/CurricularFace#model" in msg
    assert "`privpix weights import curricularface-ir101 FILE`" in msg


# ---------------------------------------------------------------------------------------------
# Digests


def _put(env, name: str, seed: int, ext: str = ".pth") -> Path:
    env.wdir.mkdir(parents=True, exist_ok=True)
    p = env.wdir / f"{name}{ext}"
    torch.save(tiny_state(seed), p)
    return p


def test_pinned_digest_mismatch_names_both_digests_and_deletes_nothing(tiny_reg):
    p = _put(tiny_reg, "tiny-sd", 1)
    pinned = "0" * 64
    retable(tiny_reg, **{"tiny-sd": {"sha256": pinned}})
    with pytest.raises(WeightsError) as err:
        resolve.resolve("tiny-sd")
    msg = str(err.value)
    assert f"expected {pinned} (pinned in weights.toml), got {sha(p)}" in msg
    assert "nothing was deleted" in msg and str(p) in msg
    assert p.exists()
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        loading.load_into(Tiny(), mreg.ModelEntry("test-tiny", Tiny, "tiny-sd", None, None, {}))


def test_prefix_and_size_pins(tiny_reg):
    p = _put(tiny_reg, "tiny-sd", 2)
    retable(
        tiny_reg,
        **{"tiny-sd": {"sha256_prefix": "ffffffff" if not sha(p).startswith("ffffffff") else "00000000"}},
    )
    with pytest.raises(
        WeightsError,
        match=r"expected (ffffffff|00000000)\.\.\. \(prefix pinned in weights.toml\), got " + sha(p),
    ):
        resolve.resolve("tiny-sd")
    retable(tiny_reg, **{"tiny-sd": {"sha256_prefix": sha(p)[:8]}})
    assert resolve.resolve("tiny-sd").digest.status == "prefix-verified"
    retable(tiny_reg, **{"tiny-sd": {"size": p.stat().st_size + 1}})
    with pytest.raises(WeightsError, match=f"has {p.stat().st_size} bytes, expected {p.stat().st_size + 1}"):
        resolve.resolve("tiny-sd")


def test_pinned_digest_verifies_and_is_hashed_once(tiny_reg):
    p = _put(tiny_reg, "tiny-sd", 3)
    retable(tiny_reg, **{"tiny-sd": {"sha256": sha(p)}})
    first = resolve.resolve("tiny-sd")
    assert first.digest.status == "verified" and first.digest.hashed
    second = resolve.resolve("tiny-sd")
    assert second.digest.status == "verified" and not second.digest.hashed  # from the fresh record
    assert resolve.local_status(registry.get_weights("tiny-sd"))["status"] == "verified"


def test_unpinned_digest_is_printed_recorded_and_then_enforced(tiny_reg):
    p = _put(tiny_reg, "tiny-sd", 4)
    notes: list[str] = []
    res = resolve.resolve("tiny-sd", notify=notes.append)
    assert res.digest.status == "unpinned" and res.digest.sha256 == sha(p)
    assert len(notes) == 1 and f'sha256 = "{sha(p)}"' in notes[0] and "[weights.tiny-sd]" in notes[0]
    book = json.loads((tiny_reg.wdir / "verified-digests.json").read_text())
    assert book["files"][str(p)]["sha256"] == sha(p)
    notes.clear()
    again = resolve.resolve("tiny-sd", notify=notes.append)
    assert again.digest.status == "recorded" and not again.digest.hashed and notes == []
    st = resolve.local_status(registry.get_weights("tiny-sd"))
    assert st["status"] == "cached" and st["digest"] == "recorded" and st["sha256"] == sha(p)
    # The file changes behind privpix's back: the recorded digest now catches it.
    old = sha(p)
    torch.save(tiny_state(5), p)
    with pytest.raises(WeightsError, match=f"expected {old} \\(recorded at first-use .*\\), got {sha(p)}"):
        resolve.resolve("tiny-sd")
    assert p.exists()


def test_verify_local_rehashes_every_copy_and_reports_mismatch(tiny_reg):
    src = tiny_reg.root / "hub.pth"
    torch.save(tiny_state(6), src)
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    p = _put(tiny_reg, "tiny-sd", 16)  # a different file in the weights dir
    retable(tiny_reg, **{"tiny-sd": {"sha256": sha(src)}})
    results = resolve.verify_local("tiny-sd")
    by_where = {r["where"]: r for r in results}
    assert by_where["hf-cache"]["status"] == "verified" and by_where["hf-cache"]["sha256"] == sha(src)
    assert by_where["weights-dir"]["status"] == "mismatch"
    assert (
        f"expected {sha(src)}" in by_where["weights-dir"]["error"]
        and sha(p) in by_where["weights-dir"]["error"]
    )
    assert resolve.verify_local("tiny-st") == [
        {
            "name": "tiny-st",
            "status": "missing",
            "path": None,
            "where": None,
            "hint": resolve.fetch_hint(registry.get_weights("tiny-st")),
        }
    ]


# ---------------------------------------------------------------------------------------------
# Downloads


def test_licence_gate_comes_before_any_download(tiny_reg, monkeypatch):
    calls: list[str] = []
    payload = tiny_reg.root / "nc.pth"
    torch.save(tiny_state(7), payload)
    monkeypatch.setattr(resolve, "_hub_download", fake_hub(tiny_reg, calls, payload))
    with pytest.raises(WeightsError) as err:
        resolve.resolve("tiny-nc")
    assert "Test Licence-NC (non-commercial)" in str(err.value)
    assert "`privpix weights fetch tiny-nc --accept-license`" in str(err.value)
    asked = []
    with pytest.raises(WeightsError, match="accept those terms"):
        resolve.resolve("tiny-nc", confirm=lambda e: asked.append(e.name) or False)
    assert asked == ["tiny-nc"] and calls == []
    notes: list[str] = []
    res = resolve.resolve("tiny-nc", accept_license=True, notify=notes.append)
    assert calls == ["tiny-nc"] and res.downloaded and res.where == "hf-cache"
    assert any(sha(payload) in n for n in notes) and any("downloading tiny-nc" in n for n in notes)
    book = json.loads((tiny_reg.wdir / "verified-digests.json").read_text())
    assert book["files"][str(res.path)]["source"] == "download"
    # Now cached: no acceptance needed to use it, no second download.
    assert resolve.resolve("tiny-nc").where == "hf-cache" and calls == ["tiny-nc"]


def test_offline_never_calls_the_downloader(tiny_reg, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(resolve, "_hub_download", fake_hub(tiny_reg, calls, tiny_reg.toml))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="downloads are off"):
        resolve.resolve("tiny-sd")
    assert calls == []


def test_download_with_wrong_pin_is_a_hard_error_that_keeps_the_file(tiny_reg, monkeypatch):
    calls: list[str] = []
    payload = tiny_reg.root / "payload.pth"
    torch.save(tiny_state(8), payload)
    monkeypatch.setattr(resolve, "_hub_download", fake_hub(tiny_reg, calls, payload))
    retable(tiny_reg, **{"tiny-sd": {"sha256": "1" * 64}})
    with pytest.raises(WeightsError, match=f"expected {'1' * 64} .*got {sha(payload)}"):
        resolve.resolve("tiny-sd")
    cached = resolve.locate(registry.get_weights("tiny-sd"))
    assert calls == ["tiny-sd"] and cached is not None and cached.path.exists()


def test_download_failure_is_one_line_with_the_import_hint(tiny_reg, monkeypatch):
    def broken(entry, cache_dir):
        raise OSError("Name or service not known\nmore detail")

    monkeypatch.setattr(resolve, "_hub_download", broken)
    with pytest.raises(WeightsError) as err:
        resolve.resolve("tiny-sd", notify=lambda m: None)
    msg = str(err.value)
    assert (
        "download from hf://privpix-test/tiny/tiny.pth@main failed (OSError: Name or service not known)"
        in msg
    )
    assert "`privpix weights import tiny-sd FILE`" in msg and "\n" not in msg


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """A directory served on 127.0.0.1 (local server, no external network)."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_source_downloads_atomically_and_verifies(tiny_reg, monkeypatch, http_dir):
    served, base = http_dir
    monkeypatch.setattr(resolve, "_url_download", ORIGINAL_URL_DOWNLOAD)
    torch.save(tiny_state(9), served / "encoder_epoch_20.pth")
    good = {
        "url": f"{base}/encoder_epoch_20.pth",
        "filename": "encoder_epoch_20.pth",
        "format": "state_dict",
        "arch": "test-tiny",
    }
    retable(
        tiny_reg,
        **{
            "tiny-url": good,
            "tiny-url-bad": {**good, "sha256": "2" * 64},
            "tiny-404": {**good, "url": f"{base}/nope.pth"},
        },
    )
    notes: list[str] = []
    res = resolve.resolve("tiny-url", notify=notes.append)
    assert res.downloaded and res.where == "weights-dir" and res.path == tiny_reg.wdir / "tiny-url.pth"
    assert res.path.read_bytes() == (served / "encoder_epoch_20.pth").read_bytes()
    assert any(f'sha256 = "{sha(res.path)}"' in n for n in notes)
    m = loading.load_into(Tiny(), mreg.ModelEntry("test-tiny", Tiny, "tiny-url", None, None, {}))
    assert_state_equal(m, tiny_state(9))
    with pytest.raises(
        WeightsError,
        match=f"expected {'2' * 64} .*the download was discarded.*got {sha(served / 'encoder_epoch_20.pth')}",
    ):
        resolve.resolve("tiny-url-bad", notify=lambda m: None)
    with pytest.raises(WeightsError, match=r"download from .*/nope.pth failed \(HTTPError"):
        resolve.resolve("tiny-404", notify=lambda m: None)
    names = {p.name for p in tiny_reg.wdir.iterdir()}
    assert names == {"tiny-url.pth", "verified-digests.json"}  # nothing half-written, nothing bad kept


def test_local_alternative_is_used_before_downloading_the_primary(tiny_reg, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(resolve, "_hub_download", fake_hub(tiny_reg, calls, tiny_reg.toml))
    retable(
        tiny_reg,
        **{
            "tiny-primary": {
                "repo_id": "privpix-test/primary",
                "filename": "p.pt",
                "format": "torchscript",
                "alternatives": ["tiny-ckpt"],
            }
        },
    )
    tiny_reg.wdir.mkdir(parents=True)
    torch.save(
        {"state_dict": {f"generator.{k}": v for k, v in tiny_state(10).items()}},
        tiny_reg.wdir / "tiny-ckpt.ckpt",
    )
    res = resolve.resolve_any("tiny-primary")
    assert res.entry.name == "tiny-ckpt" and res.where == "weights-dir" and calls == []
    m = loading.load_into(Tiny(), mreg.ModelEntry("test-tiny", Tiny, "tiny-primary", None, None, {}))
    assert_state_equal(m, tiny_state(10))
    assert m.privpix_weights["weights"] == "tiny-ckpt"
    assert registry.primary_of("tiny-ckpt") == "tiny-primary"


# ---------------------------------------------------------------------------------------------
# Settings


def test_directories_and_offline_switches(tmp_path, monkeypatch):
    for var in (
        "PRIVPIX_WEIGHTS_DIR",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
        "HF_HUB_OFFLINE",
        "PRIVPIX_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    resolve.configure(None, None)
    try:
        assert resolve.get_weights_dir() == tmp_path / ".cache" / "privpix" / "weights"
        assert resolve.hf_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
        assert resolve.hf_cache_dir() == tmp_path / "hfhome" / "hub"
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
        assert resolve.hf_cache_dir() == tmp_path / "hubcache"
        monkeypatch.setenv("PRIVPIX_WEIGHTS_DIR", str(tmp_path / "env"))
        assert resolve.get_weights_dir() == tmp_path / "env"
        resolve.configure(weights_dir=tmp_path / "cli")
        assert resolve.get_weights_dir() == tmp_path / "cli"
        assert resolve.get_weights_dir(tmp_path / "arg") == tmp_path / "arg"
        assert not resolve.offline_mode()
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert resolve.offline_mode() and not resolve.offline_mode(False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        assert not resolve.offline_mode()
        resolve.configure(offline=True)
        assert resolve.offline_mode()
    finally:
        resolve.configure(None, None)


def test_unreachable_host_fails_fast_once_per_run(tiny_reg, monkeypatch):
    # a Hub endpoint that refuses connections (port 9, discard): the real reachability check fails
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    calls: list[str] = []

    def hub(entry, cache_dir):  # the download's first step, as in resolve._hub_download
        calls.append(entry.name)
        resolve.check_reachable(entry)
        raise AssertionError("127.0.0.1:9 answered")

    monkeypatch.setattr(resolve, "_hub_download", hub)
    notes: list[str] = []
    with pytest.raises(WeightsError) as first:
        resolve.resolve("tiny-sd", notify=notes.append)
    msg = str(first.value)
    assert "127.0.0.1 cannot be reached" in msg and "no download was tried" in msg
    assert "privpix weights import tiny-sd FILE" in msg and "\n" not in msg
    # later images needing the same file: the same message at once, no second attempt
    with pytest.raises(WeightsError) as again:
        resolve.resolve("tiny-sd", notify=notes.append)
    assert str(again.value) == msg and calls == ["tiny-sd"] and len(notes) == 1
    # a copy imported meanwhile is used (the remembered failure is only for a still-missing file)
    src = tiny_reg.root / "hub.pth"
    torch.save(tiny_state(3), src)
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    assert resolve.resolve("tiny-sd").where == "hf-cache"


def test_auto_model_choice_offline_imports_neither_torch_nor_the_hub_client():
    import subprocess
    import sys

    code = (
        "import sys; from privacy_cli.weights import configure; configure(offline=True); "
        "from privacy_cli.methods.erase import choose_model; choose_model('auto'); "
        "print(sorted(m for m in ('torch', 'huggingface_hub') if m in sys.modules))"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

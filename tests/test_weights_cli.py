"""``privpix weights`` through typer's CliRunner on the command group (``--json`` parsed)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from test_weights_loading import (
    TINY_TABLES,
    migan_pipeline_onnx,
    put_in_hf_cache,
    tiny_state,
    write_registry,
)
from typer.testing import CliRunner

from privacy_cli.cli.weights_cmd import app
from privacy_cli.weights import resolve

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def as_json(result) -> object:
    return json.loads(result.stdout)


def test_list_json_covers_the_shipped_registry(wenv):
    r = run("list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in as_json(r)}
    assert {"big-lama", "vgg16", "stylegan2-ffhq", "curricularface-ir101"} <= set(rows)
    assert all(row["status"] == "missing" for row in rows.values())
    assert rows["big-lama"]["size"] == 206134115 and rows["big-lama"]["licence"] == "Apache-2.0"
    assert rows["stylegan2-ffhq"]["restricted"] is True
    human = run("list")
    assert human.exit_code == 0 and "big-lama" in human.stdout and "missing" in human.stdout


def test_list_info_path_follow_a_file_through_its_states(tiny_reg):
    src = tiny_reg.root / "hub.pth"
    torch.save(tiny_state(1), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    r = run("path", "tiny-sd")
    assert r.exit_code == 1 and r.stdout == ""
    assert (
        "`privpix weights fetch tiny-sd`" in r.stderr and "`privpix weights import tiny-sd FILE`" in r.stderr
    )
    snap = put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    assert run("path", "tiny-sd").stdout.strip() == str(snap)
    assert as_json(run("path", "tiny-sd", "--json")) == {
        "name": "tiny-sd",
        "path": str(snap),
        "where": "hf-cache",
    }
    rows = {row["name"]: row for row in as_json(run("list", "--json"))}
    assert rows["tiny-sd"]["status"] == "cached" and rows["tiny-sd"]["sha256"] is None
    v = run("verify", "tiny-sd", "--json")
    assert v.exit_code == 0, v.output
    assert as_json(v)[0]["status"] == "unpinned" and as_json(v)[0]["sha256"] == digest
    rows = {row["name"]: row for row in as_json(run("list", "--json"))}
    assert rows["tiny-sd"]["digest"] == "recorded" and rows["tiny-sd"]["sha256"] == digest
    write_registry(
        tiny_reg.toml, dict(TINY_TABLES, **{"tiny-sd": dict(TINY_TABLES["tiny-sd"], sha256=digest)})
    )
    rows = {row["name"]: row for row in as_json(run("list", "--json"))}
    assert rows["tiny-sd"]["status"] == "verified"
    info = as_json(run("info", "tiny-sd", "--json"))
    assert info["repo_id"] == "privpix-test/tiny" and info["sha256"] == digest
    assert info["local"]["status"] == "verified" and info["local"]["path"] == str(snap)
    assert info["weights_dir_file"] == str(tiny_reg.wdir / "tiny-sd.pth")
    human = run("info", "tiny-sd")
    assert human.exit_code == 0 and "privpix-test/tiny" in human.stdout


def test_verify_exit_code_and_both_digests_on_mismatch(tiny_reg):
    tiny_reg.wdir.mkdir(parents=True)
    p = tiny_reg.wdir / "tiny-sd.pth"
    torch.save(tiny_state(2), p)
    actual = hashlib.sha256(p.read_bytes()).hexdigest()
    write_registry(
        tiny_reg.toml, dict(TINY_TABLES, **{"tiny-sd": dict(TINY_TABLES["tiny-sd"], sha256="9" * 64)})
    )
    r = run("verify", "--json")
    assert r.exit_code == 1
    rec = as_json(r)[0]
    assert rec["status"] == "mismatch" and rec["path"] == str(p)
    assert f"expected {'9' * 64}" in r.stderr and actual in r.stderr
    assert p.exists()
    missing = run("verify", "tiny-st")
    assert missing.exit_code == 1 and "tiny-st is missing" in missing.stderr
    assert run("verify", "no-such").exit_code == 2


def test_fetch_offline_present_and_usage(tiny_reg):
    r = run("fetch", "tiny-sd", "--offline", "--json")
    assert r.exit_code == 1
    rec = as_json(r)[0]
    assert rec["status"] == "error" and "downloads are off" in rec["error"]
    # advice that works offline: import a copy, or fetch where the Hub is reachable (not "run fetch")
    assert "privpix weights import tiny-sd FILE" in rec["error"] and "without --offline" in rec["error"]
    assert "run `privpix weights fetch tiny-sd`, or" not in rec["error"]
    src = tiny_reg.root / "hub.pth"
    torch.save(tiny_state(3), src)
    put_in_hf_cache(tiny_reg.hf, "privpix-test/tiny", "tiny.pth", src)
    ok = run("fetch", "tiny-sd", "--offline", "--json")
    assert ok.exit_code == 0, ok.output
    rec = as_json(ok)[0]
    assert rec["status"] == "present" and rec["where"] == "hf-cache" and rec["pinned"] is False
    assert rec["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    human = run("fetch", "tiny-sd")
    assert human.exit_code == 0 and "tiny-sd: present" in human.stdout
    assert run("fetch").exit_code == 2
    both = run("fetch", "tiny-sd", "--all")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_fetch_shows_restricted_licence_and_needs_acceptance(tiny_reg, monkeypatch):
    calls: list[str] = []
    payload = tiny_reg.root / "nc.pth"
    torch.save(tiny_state(4), payload)

    def download(entry, cache_dir):
        calls.append(entry.name)
        return put_in_hf_cache(tiny_reg.hf, entry.repo_id, entry.filename, payload)

    monkeypatch.setattr(resolve, "_hub_download", download)
    r = run("fetch", "tiny-nc")
    assert r.exit_code == 1 and calls == []
    assert (
        "licence: tiny-nc (hf://privpix-test/tiny-nc/nc.pth@main) is released under: Test Licence-NC"
        in r.stderr
    )
    assert "--accept-license" in r.stderr
    ok = run("fetch", "tiny-nc", "--accept-license", "--json")
    assert ok.exit_code == 0, ok.output
    assert calls == ["tiny-nc"] and "Test Licence-NC" in ok.stderr
    rec = as_json(ok)[0]
    assert rec["status"] == "downloaded" and rec["digest"] == "unpinned"
    assert f'sha256 = "{rec["sha256"]}"' in ok.stderr  # printed so it can be pinned


def test_fetch_all_reports_import_only_entries(tiny_reg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run("fetch", "--all", "--json")
    recs = {x["name"]: x for x in as_json(r)}
    assert r.exit_code == 1  # offline: the downloadable ones are missing
    assert recs["tiny-manual"] == {
        "name": "tiny-manual",
        "status": "import-only",
        "hint": "privpix weights import tiny-manual FILE",
    }
    assert recs["tiny-sd"]["status"] == "error"


def test_import_good_and_wrong_files(tiny_reg):
    good = tiny_reg.root / "mine.pth"
    torch.save(tiny_state(5), good)
    r = run("import", "tiny-sd", str(good), "--json")
    assert r.exit_code == 0, r.output
    rec = as_json(r)
    assert rec["status"] == "imported" and rec["checked"] == "architecture" and rec["arch"] == "test-tiny"
    assert run("path", "tiny-sd").stdout.strip() == str(tiny_reg.wdir / "tiny-sd.pth")
    onnx = migan_pipeline_onnx(tiny_reg.root / "m.onnx")
    bad = run("import", "tiny-st", str(onnx))
    assert bad.exit_code == 1
    assert "is an ONNX model; tiny-st expects a safetensors file" in bad.stderr
    assert not (tiny_reg.wdir / "tiny-st.safetensors").exists()
    human = run("import", "tiny-onnx", str(onnx))
    assert human.exit_code == 0 and "loads into test-migan" in human.stdout
    missing = run("import", "tiny-sd", str(tiny_reg.root / "nope.pth"))
    assert missing.exit_code == 1 and "no such file" in missing.stderr


@pytest.mark.parametrize("name", ["vgg16", "facenet-vggface2", "big-lama-ckpt"])
def test_import_rejects_a_non_checkpoint_for_shipped_entries(wenv, name):
    junk = wenv.root / "download.html"
    junk.write_text("<html>rate limited</html>")
    r = run("import", name, str(junk))
    assert r.exit_code == 1
    assert "download.html is not a checkpoint format privpix can read" in r.stderr
    assert not wenv.wdir.exists() or not any(wenv.wdir.iterdir())


def test_import_then_build_model_offline_for_a_shipped_entry(wenv, monkeypatch):
    """py-feat FaceNet layout -> `privpix weights import` -> build_model(pretrained=True) offline."""
    import importlib.util

    from privacy_cli.models import build_model
    from privacy_cli.models import registry as mreg
    from privacy_cli.models.zoo import facenet_vggface2

    monkeypatch.setattr(mreg, "_ARCH_MODULES", [m for m in mreg._ARCH_MODULES if importlib.util.find_spec(m)])
    torch.manual_seed(5)
    src = facenet_vggface2()
    sd = {
        k: (v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v)
        for k, v in src.state_dict().items()
    }
    src.load_state_dict(sd)
    sd["logits.weight"], sd["logits.bias"] = torch.randn(8631, 512), torch.randn(8631)
    file = wenv.root / "facenet_20180402_114759_vggface2.pth"
    torch.save(sd, file)
    r = run("import", "facenet-vggface2", str(file), "--json")
    assert r.exit_code == 0, r.output
    assert as_json(r)["checked"] == "architecture" and as_json(r)["arch"] == "facenet-vggface2"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_model("facenet-vggface2", pretrained=True)
    assert model.privpix_weights["where"] == "weights-dir" and model.privpix_weights["digest"] == "recorded"
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.eval()(x))
    rows = {row["name"]: row for row in as_json(run("list", "--json"))}
    assert rows["facenet-vggface2"]["status"] == "cached" and rows["facenet-vggface2"]["digest"] == "recorded"

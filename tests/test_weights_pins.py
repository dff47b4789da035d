"""Pins in the shipped ``weights.toml`` (revision + digest) and how ``weights list|verify`` show them."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from privacy_cli.cli.weights_cmd import app
from privacy_cli.weights import list_weights

runner = CliRunner()

#: facts checked against the Hub's commit pages and Git LFS pointers (issue: pinned weights)
VERIFIED_PINS = {
    "big-lama": (
        "7dfbdc6dc27602d370909e8688f8f84404a1f995",
        "79ed9fa18680ca19a269eb88fc4f708fb6580197b2220a51d3e000eb0ffdf33b",
        206134115,
    ),
    "fid-inception": (
        "6040b4d40fdcde446a0cf753b0527585b6b77c54",
        "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        95628359,
    ),
    "migan-pipeline-v2": ("1538c135034b8cfe7a8472f34d09c8a5a45b17a7", "", 28079181),
}


def test_every_pinned_entry_is_well_formed():
    entries = {e.name: e for e in list_weights()}
    for e in entries.values():
        if e.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        if e.sha256_prefix:
            assert re.fullmatch(r"[0-9a-f]+", e.sha256_prefix)
            assert not e.sha256 or e.sha256.startswith(e.sha256_prefix)
        if e.source_kind == "hub" and e.revision != "main":
            assert e.revision_pinned, f"{e.name}: revision {e.revision!r} is neither a branch nor a commit"
    for name, (rev, sha, size) in VERIFIED_PINS.items():
        e = entries[name]
        assert (e.revision, e.sha256, e.size) == (rev, sha, size), name
        assert e.revision_pinned


def test_hayao_needs_a_recent_revision_and_discr_is_import_only():
    entries = {e.name: e for e in list_weights()}
    assert entries["cartoongan-hayao"].min_revision == "a37a3be"
    assert "a37a3be" in entries["cartoongan-hayao"].pin_text
    discr = entries["big-lama-discr"]
    assert discr.source_kind == "manual" and "LaMa_models.zip" in discr.manual_url


def test_list_never_wraps_names_in_80_columns(wenv):
    r = runner.invoke(app, ["list"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    first_cells = {line.split("│")[1].strip() for line in lines if line.startswith("│")}
    for e in list_weights():
        assert e.name in first_cells, f"{e.name} wrapped or missing in an 80-column table"


def test_verify_reports_pins_for_every_entry(wenv):
    r = runner.invoke(app, ["verify", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {e.name for e in list_weights()}
    assert rows["big-lama"]["revision_pinned"] and rows["big-lama"]["sha256_pinned"]
    assert not rows["big-lama-fashn"]["revision_pinned"] and not rows["big-lama-fashn"]["sha256_pinned"]
    r = runner.invoke(app, ["verify"])
    assert "big-lama: not present (revision 7dfbdc6dc276; sha256 pinned)" in r.output


def test_min_revision_is_checked_and_the_resolved_commit_recorded(tmp_path, monkeypatch):
    """A branch fetch of an entry with min_revision: an LFS pointer or an older commit is refused, a
    newer one is recorded in the weights dir (the Hub's commit list is the one network stand-in)."""
    from test_weights_loading import put_in_hf_cache

    from privacy_cli.errors import WeightsError
    from privacy_cli.weights import resolve
    from privacy_cli.weights.registry import get_weights

    entry = get_weights("cartoongan-hayao")
    new, old, base = "c" * 40, "b" * 40, "a37a3be" + "0" * 33
    history = {new: [new, base, old], old: [old]}
    monkeypatch.setattr(resolve, "_commit_history", lambda e, commit: history.get(commit, []))
    weights = tmp_path / "w"
    real = tmp_path / "real.pth"
    real.write_bytes(b"\x80\x02weights" * 100)
    pointer = tmp_path / "pointer"
    pointer.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:8ab0\nsize 44529096\n")

    path = put_in_hf_cache(tmp_path / "hf", entry.repo_id, entry.filename, real, commit=new)
    assert resolve.check_min_revision(entry, path, weights) == new
    recorded = json.loads((weights / resolve.RESOLVED_REVISIONS).read_text())
    assert recorded["cartoongan-hayao"]["commit"] == new
    old_path = put_in_hf_cache(tmp_path / "hf2", entry.repo_id, entry.filename, real, commit=old)
    with pytest.raises(WeightsError, match="older than a37a3be"):
        resolve.check_min_revision(entry, old_path, weights)
    lfs = put_in_hf_cache(tmp_path / "hf3", entry.repo_id, entry.filename, pointer, commit=old)
    with pytest.raises(WeightsError, match="Git LFS pointer"):
        resolve.check_min_revision(entry, lfs, weights)

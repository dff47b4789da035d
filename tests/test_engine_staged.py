"""The staged run (decode -> model -> encode, as the Ray engine runs it) without Ray: each stage's
items are pickled to bytes and back between stages, as between Ray Data operators.

Real faces-id photos (downscaled), the real face detector, real files and fsspec's in-memory
filesystem for remote URIs. What is checked: the bytes equal the local engine's; a file that cannot
be decoded is an error row naming it and the rest are written; a step that fails (a missing mask)
writes nothing; an existing output is skipped; a remote input and output go through temporary local
copies that are all removed, with one upload per output and URIs (never temporary paths) in the rows.
"""

from __future__ import annotations

import tempfile
import uuid
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"
pytestmark = pytest.mark.skipif(
    not (FACES_ID / "identities.csv").exists(), reason=f"faces-id dataset not found at {FACES_ID}"
)
NAMES = ["img1.jpg", "img3.jpg", "img8.jpg"]


def _thumbs(dst: Path, side: int = 320) -> Path:
    from PIL import Image

    dst.mkdir(parents=True)
    for name in NAMES:
        im = Image.open(FACES_ID / name)
        im.thumbnail((side, side))
        im.save(dst / name, quality=95, exif=im.getexif())
    (dst / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return dst


def _common(inputs: list[str], output: str, **spec_kw):  # noqa: ANN202
    from privacy_cli.cli.options import CommonArgs
    from privacy_cli.pipeline import RegionSpec

    return CommonArgs(
        inputs=inputs,
        output=Path(output),
        overwrite=False,
        json=True,
        quiet=True,
        device="cpu",
        workers=1,
        quality=95,
        keep_metadata=False,
        max_pixels=200_000_000,
        spec=RegionSpec(**{"detect": ("faces",), "device": "cpu", **spec_kw}),
    )


def _staged_run(inputs: list[str], output: str, **spec_kw) -> list[dict]:
    """Every planned image through the three stages, pickled between them as Ray does."""
    from privacy_cli import engines
    from privacy_cli.cli.image_cmds import method_fn
    from privacy_cli.engines.staged import compute_items, decode_items, encode_items, pack, stages_for, unpack
    from privacy_cli.engines.tasks import as_tasks

    common = _common(inputs, output, **spec_kw)
    tasks = as_tasks(engines.plan(common.inputs, "blur", output))
    stages = stages_for(uuid.uuid4().hex, partial(method_fn, "blur", common, {"radius": None}))
    decoded = [unpack(pack(it)) for it in decode_items(stages, tasks, overwrite=False)]
    computed = [unpack(pack(it)) for it in compute_items(stages, decoded)]
    assert all(getattr(it.value, "loaded", None) is None or it.value.loaded.rgb.size == 0 for it in computed)
    return encode_items(stages, computed)


def _local(src: Path, out: Path) -> dict[str, bytes]:
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    r = CliRunner().invoke(app, ["blur", str(src), "-o", str(out), "--detect", "faces", "--quiet"])
    assert r.exit_code == 1, r.output  # the broken file
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_stages_write_the_local_bytes_and_fail_alone(tmp_path):
    src = _thumbs(tmp_path / "in")
    local = _local(src, tmp_path / "local")
    rows = _staged_run([str(src)], str(tmp_path / "staged"))
    by_name = {Path(r["input"]).name: r for r in rows}
    assert sorted(by_name) == sorted([*NAMES, "broken.jpg"])
    bad = by_name.pop("broken.jpg")
    assert bad["status"] == "error" and bad["output"] is None and "broken.jpg" in bad["error"]
    assert all(
        r["status"] == "ok" and r["regions_obfuscated"] >= 1 and r["seconds"] > 0 for r in by_name.values()
    )
    assert all(r["worker"] and r["decode_worker"] and r["encode_worker"] for r in rows)
    assert all(sorted(r["stage_seconds"]) == ["compute", "decode", "encode"] for r in rows)
    staged = {p.name: p.read_bytes() for p in (tmp_path / "staged").iterdir()}
    assert sorted(staged) == sorted(NAMES) and staged == local

    # a rerun finds every output written: skipped, nothing rewritten
    again = _staged_run([str(src)], str(tmp_path / "staged"))
    assert sorted(r["status"] for r in again) == ["error", "skipped", "skipped", "skipped"]


def test_a_failing_step_writes_nothing(tmp_path):
    src = _thumbs(tmp_path / "in")
    (tmp_path / "masks").mkdir()  # --mask-dir without a mask for any image: fail closed
    rows = _staged_run([str(src)], str(tmp_path / "out"), mask_dir=tmp_path / "masks")
    assert [r["status"] for r in rows] == ["error"] * 4
    assert all("no mask named" in r["error"] for r in rows if "broken" not in r["input"])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_remote_objects_staged_through_removed_local_copies(tmp_path, monkeypatch):
    import fsspec

    src = _thumbs(tmp_path / "in")
    local = _local(src, tmp_path / "local")
    fs = fsspec.filesystem("memory")
    for p in src.iterdir():
        fs.pipe_file(f"/privpix-staged-test/in/{p.name}", p.read_bytes())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    try:
        rows = _staged_run(["memory://privpix-staged-test/in"], "memory://privpix-staged-test/out")
        assert sorted((r["input"].rsplit("/", 1)[1], r["status"]) for r in rows) == sorted(
            [(n, "ok") for n in NAMES] + [("broken.jpg", "error")]
        )
        assert all(r["input"].startswith("memory://privpix-staged-test/in/") for r in rows)
        assert all(str(tmp_path) not in (r.get("error") or "") + str(r["output"]) for r in rows)
        for name in NAMES:
            assert fs.cat_file(f"/privpix-staged-test/out/{name}") == local[name]
        assert not list((tmp_path / "tmp").iterdir())  # every temporary copy removed
    finally:
        fs.rm("/privpix-staged-test", recursive=True)


def test_stage_resources_leave_room_for_the_cpu_stages():
    """The model actors never take the CPUs the decode / encode tasks need (else Ray Data waits forever)."""
    from privacy_cli.engines.ray import stage_resources

    for cpus in (1, 2, 3, 4, 8, 64):
        for workers in range(1, cpus + 6):
            actor, stage = stage_resources(cpus, workers)
            assert 0 < actor <= 1 and 0 < stage <= 1
            assert workers * actor + stage <= cpus + 1e-9, (cpus, workers)
    assert stage_resources(16, 4) == (1.0, 1.0)  # room for all: one CPU each

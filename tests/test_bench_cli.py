"""End-to-end ``privpix bench`` through the root CLI app: a generated Visual Redactions tree, a pairs
folder and (when present) the shared faces-id photos drive the runner, cache, calibration and report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_bench_datasets import make_vr
from typer.testing import CliRunner

from privacy_cli.cli.app import app

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("offline_bench_env")


def _bench(*args: str) -> tuple[int, dict | None, str]:
    r = runner.invoke(app, ["bench", *args])
    doc = None
    if "--json" in args and r.stdout.strip().startswith("{"):
        doc = json.loads(r.stdout)
    return r.exit_code, doc, r.output


def _metric(doc: dict, label: str, name: str) -> dict:
    m = next(m for m in doc["methods"] if m["label"] == label)
    return m["metrics"][name]


def test_bad_method_option_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not even an image")
    r = runner.invoke(app, ["bench", str(tmp_path), "--methods", "blur:radius=abc"])
    assert r.exit_code == 2, r.output
    assert "blur:radius must be float" in r.output and "dlib" not in r.output


def test_help_lists_the_options() -> None:
    r = runner.invoke(app, ["bench", "--help"])
    assert r.exit_code == 0
    for opt in (
        "--format",
        "--split",
        "--attributes",
        "--limit",
        "--methods",
        "--original",
        "--processed",
        "--metrics",
        "--calibrate",
        "--out",
        "--json",
        "--quiet",
        "--device",
        "--weights-dir",
    ):
        assert opt in r.stdout


def test_visual_redactions_mask_and_blur_report_and_cache(tmp_path: Path) -> None:
    root = tmp_path / "vr"
    make_vr(root, n=3)
    out = tmp_path / "report"
    args = [
        str(root),
        "--methods",
        "mask,blur:radius=4",
        "--metrics",
        "mae,mae_region,mae_outside,ssim,ssim_region",
        "--out",
        str(out),
        "--json",
    ]
    code, doc, output = _bench(*args)
    assert code == 0, output
    assert doc["dataset"]["format"] == "visual-redactions" and doc["dataset"]["n_items"] == 3
    assert doc["dataset"]["small_instances_ignored"] == 3
    # mask: the regions change, nothing else does
    assert _metric(doc, "mask", "mae_region")["value"] > 0.1
    assert _metric(doc, "mask", "mae_outside")["value"] == 0.0
    assert _metric(doc, "mask", "mae")["value"] > 0
    assert _metric(doc, "blur:radius=4", "mae_outside")["value"] == 0.0
    assert (
        0 < _metric(doc, "blur:radius=4", "mae_region")["value"] < _metric(doc, "mask", "mae_region")["value"]
    )
    assert _metric(doc, "mask", "ssim")["value"] < _metric(doc, "blur:radius=4", "ssim")["value"] < 1.0
    first = doc["cache"]
    assert first["outputs_computed"] == 6 and first["outputs_cached"] == 0
    # files
    for name in ("results.json", "per_image.csv", "report.md", "bars.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["methods"][0]["label"] == "mask"
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"mask", "blur:radius=4"}
    assert all(float(r["mae_outside"]) == 0.0 for r in rows)
    md = (out / "report.md").read_text()
    assert "N = 3" in md and "Data range" in md and "96x72" in md and "torchmetrics" in md
    assert (out / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a re-run computes nothing new and gives the same numbers
    code, doc2, output = _bench(*args)
    assert code == 0, output
    assert doc2["cache"]["computed"] == 0 and doc2["cache"]["outputs_cached"] == 6
    assert doc2["cache"]["values_cached"] == first["values_computed"]
    assert _metric(doc2, "mask", "mae_region")["value"] == _metric(doc, "mask", "mae_region")["value"]
    # changing one method's option recomputes only that method
    args[2] = "mask,blur:radius=6"
    code, doc3, output = _bench(*args)
    assert code == 0, output
    mask_cache = next(m for m in doc3["methods"] if m["label"] == "mask")["cache"]
    blur_cache = next(m for m in doc3["methods"] if m["label"] == "blur:radius=6")["cache"]
    assert mask_cache["computed"] == 0 and blur_cache["outputs_computed"] == 3


def test_missing_weights_are_unavailable_with_fetch_command(tmp_path: Path) -> None:
    root = tmp_path / "vr"
    make_vr(root, n=2)
    code, doc, output = _bench(
        str(root),
        "--methods",
        "blur",
        "--metrics",
        "ssim,fid",
        "--json",
        "--weights-dir",
        str(tmp_path / "empty-weights"),
    )
    assert code == 0, output
    fid = _metric(doc, "blur", "fid")
    assert fid["available"] is False and fid["value"] is None
    assert fid["fetch"] == "privpix weights fetch fid-inception"
    assert {"metric": "fid", "reason": fid["reason"], "fetch": fid["fetch"]} in doc["unavailable"]
    assert _metric(doc, "blur", "ssim")["available"] is True
    # the human output names the command too (on stderr) and marks the value n/a, never 0
    r = runner.invoke(app, ["bench", str(root), "--methods", "blur", "--metrics", "ssim,fid"])
    assert r.exit_code == 0, r.output
    assert "privpix weights fetch fid-inception" in r.stderr and "n/a" in r.stdout


def test_fid_pipeline_with_seeded_inception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FID through the runner with pytorch-fid's Inception built from seeded weights (the published
    checkpoint cannot be downloaded here): identical sets give 0, masking gives > 0, N < 2048 is flagged."""
    import torch

    import privacy_cli.bench.features as FT

    torch.manual_seed(0)
    core = FT._fid_core()
    for mod in core.modules():  # He init keeps activations alive through the 94 layers
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    state = core.state_dict()
    real_build = FT.build_fid_inception
    built = {}

    def seeded(state_dict=None, device="cpu", **kw):  # type: ignore[no-untyped-def]
        if "m" not in built:
            built["m"] = real_build(state_dict=state, device=device, **kw)
        return built["m"]

    monkeypatch.setattr(FT, "build_fid_inception", seeded)
    root = tmp_path / "vr"
    make_vr(root, n=3)
    out = tmp_path / "rep"
    code, doc, output = _bench(
        str(root),
        "--methods",
        "none,mask",
        "--metrics",
        "fid",
        "--fid-dims",
        "64",
        "--json",
        "--out",
        str(out),
    )
    assert code == 0, output
    same, masked = _metric(doc, "none", "fid"), _metric(doc, "mask", "fid")
    assert same["available"] and masked["available"] and same["n"] == masked["n"] == 3
    assert abs(same["value"]) < 1e-3 < masked["value"]
    assert any("N=3 < 64" in n for n in masked["notes"]) and masked["extra"]["reliable"] is False
    assert "unreliable" in (out / "report.md").read_text()


def test_pairs_format_scores_a_processed_folder(tmp_path: Path) -> None:
    o, p = tmp_path / "orig", tmp_path / "theirs"
    rng = np.random.default_rng(3)
    for i, name in enumerate(("a", "b", "c")):
        img = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        o.mkdir(exist_ok=True)
        p.mkdir(exist_ok=True)
        cv2.imwrite(str(o / f"{name}.png"), img)
        edited = img.copy()
        edited[5:25, 10:30] = 0
        cv2.imwrite(
            str(p / (f"{name}.png" if i else f"{name}.webp")), edited, [cv2.IMWRITE_WEBP_QUALITY, 101]
        )
    code, doc, output = _bench(
        "--original", str(o), "--processed", str(p), "--metrics", "ssim,mae,psnr", "--json"
    )
    assert code == 0, output
    (m,) = doc["methods"]
    assert m["label"] == "processed:theirs" and m["n_images"] == 3
    assert m["metrics"]["mae"]["value"] > 0 and m["metrics"]["ssim"]["value"] < 1
    expected = float(np.mean([0.0 + (20 * 20) / (40 * 56)]))  # share of zeroed pixels bounds the MAE
    assert m["metrics"]["mae"]["value"] <= expected
    code, _doc, output = _bench("--original", str(o), "--processed", str(p), "--methods", "blur")
    assert code == 2 and "pairs format" in output


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "vr"
    make_vr(root, n=1)
    code, _doc, output = _bench(str(root), "--methods", "smudge")
    assert code == 2 and "unknown method 'smudge'" in output and "Traceback" not in output
    code, _doc, output = _bench(str(root), "--metrics", "sharpness")
    assert code == 2 and "unknown metric" in output
    code, _doc, output = _bench(str(tmp_path / "nothing"))
    assert code == 1 and "no such file" in output


def test_calibrated_comparison_hits_the_ssim_target(tmp_path: Path) -> None:
    root = tmp_path / "vr"
    make_vr(root, n=3)
    out = tmp_path / "cal"
    code, doc, output = _bench(
        str(root),
        "--methods",
        "blur,pixelate",
        "--metrics",
        "ssim,mse",
        "--calibrate",
        "ssim:0.9",
        "--calibrate-n",
        "2",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, output
    (target,) = doc["calibration"]["targets"]
    assert target["metric"] == "ssim" and target["value"] == 0.9
    for c in target["methods"]:
        assert c["reached"], c
        assert abs(c["achieved"] - 0.9) <= 0.02 and len(c["evaluations"]) >= 3
        full = _metric(doc, c["label"], "ssim")["value"]
        assert abs(full - 0.9) < 0.05  # the subset's setting carries over to the whole (similar) set
    labels = [m["label"] for m in doc["methods"]]
    assert any(lab.startswith("blur:radius=") for lab in labels) and any(
        lab.startswith("pixelate:block=") for lab in labels
    )
    assert "Calibrated comparison" in (out / "report.md").read_text()
    assert (out / "privacy_quality.png").is_file()


def test_faces_id_identity_similarity_and_control(tmp_path: Path) -> None:
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"shared faces-id dataset not found at {FACES_ID}")
    # two small single-face photos of four people
    rows = [
        ("img5", "id01"),
        ("img10", "id01"),
        ("img45", "id10"),
        ("img46", "id10"),
        ("img61", "id05"),
        ("img62", "id05"),
        ("img50", "id03"),
        ("img8", "id03"),
    ]
    ids = tmp_path / "ids.csv"
    ids.write_text("file,identity\n" + "".join(f"{FACES_ID / (f + '.jpg')},{i}\n" for f, i in rows))
    code, doc, output = _bench(
        str(ids),
        "--methods",
        "blur:radius=2/8",
        "--metrics",
        "identity_similarity,reid_rank1",
        "--max-side",
        "384",
        "--json",
    )
    assert code == 0, output
    assert doc["dataset"]["format"] == "faces" and doc["dataset"]["n_identities"] == 4
    ctl = doc["control"]
    assert ctl["passed"] is True and ctl["rate"] >= 0.8 and ctl["recognizer"] == "dlib"
    weak = _metric(doc, "blur:radius=2", "identity_similarity")
    strong = _metric(doc, "blur:radius=8", "identity_similarity")
    assert weak["n"] == strong["n"] == 8
    assert strong["value"] < weak["value"] < 1.0
    assert _metric(doc, "blur:radius=8", "reid_rank1")["available"] is True


def test_bench_methods_size_text_strength_like_the_commands() -> None:
    """The bench passes the regions to blur/pixelate (text lines get glyph-sized strength, as
    `privpix blur` gives them), so its scores describe what the commands write."""
    from privacy_cli import api
    from privacy_cli.bench.specs import apply_method, parse_methods
    from privacy_cli.regions import Region, Regions

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (120, 400, 3), np.uint8)
    regs = Regions((400, 120), [Region("text", (20.0, 30.0, 380.0, 70.0))])
    from privacy_cli.pipeline import TEXT_SCALE

    mask = regs.to_mask(text_scale=TEXT_SCALE)
    for spec in parse_methods("blur,pixelate"):
        bench_out = apply_method(spec, img, mask, regs)
        cmd_out = np.asarray(getattr(api, spec.name)(img, regions=regs, box_scale=1.0))
        assert np.array_equal(bench_out, cmd_out), spec.label
        # without the regions the face rule (0.16 x the short side) applies: a weaker setting
        assert not np.array_equal(bench_out, apply_method(spec, img, mask)), spec.label

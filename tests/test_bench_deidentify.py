"""``privpix bench`` with ``deidentify:model=ksame`` on real faces-id photos: paper 004's table layout
(identity similarity, de-identification rate, dlib HOG detection, MSE, SSIM next to blur and mosaic and
next to the paper's figures), calibration that varies beta, and a cache key that follows the donor set."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privacy_cli.cli.app import app

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"
pytestmark = [
    pytest.mark.skipif(
        not (FACES_ID / "identities.csv").exists(), reason=f"faces-id dataset not found at {FACES_ID}"
    ),
    pytest.mark.usefixtures("offline_bench_env"),
]
runner = CliRunner()


def _one_photo_per_identity(folder: Path, n: int) -> Path:
    """The first photo of each of the first ``n`` identities of faces-id, with an identities CSV."""
    with open(FACES_ID / "identities.csv") as f:
        rows = list(csv.DictReader(f))
    picked: dict[str, str] = {}
    for r in rows:
        if r["identity"] not in picked:
            picked[r["identity"]] = r["file"]
        if len(picked) == n:
            break
    folder.mkdir(parents=True)
    with open(folder / "identities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "identity"])
        for ident, name in picked.items():
            shutil.copy(FACES_ID / name, folder / name)
            w.writerow([name, ident])
    return folder


def test_bench_reports_paper_004_tables_and_calibrates_beta(tmp_path: Path) -> None:
    data = _one_photo_per_identity(tmp_path / "faces", 5)
    out = tmp_path / "report"
    r = runner.invoke(
        app,
        [
            "bench",
            str(data),
            "--methods",
            "deidentify:model=ksame,k=3,beta=0.2,blur,pixelate",
            "--metrics",
            "identity_similarity,deid_rate,detect_rate_dlib,mse,ssim",
            "--max-side",
            "256",
            "--calibrate",
            "identity:0.2,0.95",
            "--calibrate-n",
            "2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    paper = doc["paper_004"]
    # the judge is stated: dlib offline, its threshold calibrated on the dataset (not the paper's 0.19)
    assert paper["judge"]["recognizer"] == "dlib" and "CurricularFace" in paper["judge"]["paper"]
    assert paper["judge"]["threshold"] is not None and paper["judge"]["threshold"] != 0.19
    assert paper["judge"]["threshold_source"].startswith("calibrated")
    first, *calibrated = paper["tables"]
    cols = ["identity_similarity", "deid_rate", "detect_rate_dlib", "mse", "ssim"]
    assert first["columns"] == cols
    assert [row["paper_method"] for row in first["rows"]] == ["Ours", "Blur", "Mosaic"]
    for row in first["rows"]:
        assert all(row["ours"][c] is not None for c in cols), row
    # calibrated tables: one per target, the three methods, the paper's numbers where it has them
    assert [t["title"] for t in calibrated] == ["At identity similarity 0.2", "At identity similarity 0.95"]
    at02, at095 = calibrated
    assert at02["paper_table"] == "Table 2"
    by_family = {row["paper_method"]: row for row in at02["rows"]}
    assert set(by_family) == {"Ours", "Blur", "Mosaic"}
    assert by_family["Blur"]["paper"] == {"mse": 0.05, "ssim": 0.60}
    assert by_family["Ours"]["paper"] == {"mse": 0.03, "ssim": 0.66}
    assert all(row["paper"] == {} for row in at095["rows"])
    # calibration keeps model=ksame and k=3 and varies beta; identity similarity rises with beta
    (deid,) = [c for c in doc["calibration"]["targets"][1]["methods"] if c["method"] == "deidentify"]
    assert deid["option"] == "beta" and deid["base"] == "deidentify:k=3:model=ksame"
    assert "model=ksame" in deid["label"] and "k=3" in deid["label"]
    evals = sorted((b, v) for b, v in deid["evaluations"])
    assert len(evals) >= 3 and evals[0][0] == 0.0 and evals[-1][0] == 1.0, evals
    values = [v for _b, v in evals]
    # rises with beta (means over 2 photos: neighbouring betas may tie within a hundredth)
    assert all(b >= a - 0.01 for a, b in zip(values, values[1:], strict=False)), evals
    assert values[-1] > values[0] + 0.03, evals
    assert next(m for m in doc["methods"] if m["label"] == deid["label"])
    # the report shows the same tables
    md = (out / "report.md").read_text()
    assert "## Paper 004 (Private-Encoder) side by side" in md and "Identity judge here: dlib" in md
    assert "MSE (paper)" in md and "Mosaic" in md


def test_deidentify_cache_key_follows_the_donor_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privacy_cli.bench.datasets import open_dataset
    from privacy_cli.bench.results import BenchConfig
    from privacy_cli.bench.runner import BenchRunner
    from privacy_cli.bench.specs import parse_methods

    data = _one_photo_per_identity(tmp_path / "faces", 2)
    donors = _one_photo_per_identity(tmp_path / "donors", 3)
    (deid,) = parse_methods("deidentify:model=ksame")
    (blur,) = parse_methods("blur")

    def keys() -> tuple[str, str]:
        config = BenchConfig(max_side=256, cache_dir=tmp_path / "cache")
        bench = BenchRunner(open_dataset(data, limit=1), config)
        orig = bench.originals()[0]
        return bench._output_key(deid, orig), bench._output_key(blur, orig)

    own_deid, own_blur = keys()  # default donors: the dataset's own folder
    monkeypatch.setenv("PRIVPIX_DONORS", str(donors))
    env_deid, env_blur = keys()
    assert env_deid != own_deid and env_blur == own_blur
    shutil.copy(next(FACES_ID.glob("img2*.jpg")), donors / "extra.jpg")  # same folder, one more donor
    more_deid, _ = keys()
    assert more_deid not in (env_deid, own_deid)
    assert keys()[0] == more_deid  # and stable while the donors do not change

"""privpix perturb on real faces (shared/datasets/faces-id), judged by models the test runs itself.

Subset: the first photo of each of 6 identities (identities.csv order: img1, img3, img8, img13,
img16, img18), downscaled to a 512-px long side and saved as JPEG q95 (small images keep the test
quick; faces are 150-300 px there, the sizes typical of shared photos).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    if not (FACES_ID / "identities.csv").is_file():
        pytest.skip(f"real face photos not available ({FACES_ID} is absent)")
    from PIL import Image

    first: dict[str, str] = {}
    with open(FACES_ID / "identities.csv", newline="") as f:
        for row in csv.DictReader(f):
            first.setdefault(row["identity"], row["file"])
    folder = tmp_path_factory.mktemp("faces")
    for name in list(first.values())[:6]:
        im = Image.open(FACES_ID / name).convert("RGB")
        im.thumbnail((512, 512))
        im.save(folder / name, quality=95)
    return folder


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse)


def test_dlib_cloaking_defeats_real_dlib(subset, tmp_path):
    """After --target dlib-resnet --epsilon 8, real dlib matches at most 20% of the saved JPEGs to
    their originals, while dlib's HOG detector still finds the face; --json says so per image."""
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app
    from privacy_cli.faceid import default_recognizer

    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["perturb", str(subset), "-o", str(out), "-t", "dlib-resnet", "-e", "8", "--json", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    records = {Path(x["input"]).name: x for x in map(json.loads, r.stdout.splitlines()) if x.get("input")}
    rec = default_recognizer()
    matched = found = 0
    names = sorted(p.name for p in subset.iterdir())
    assert len(records) == len(names) == 6
    for name in names:
        orig = np.asarray(Image.open(subset / name).convert("RGB"))
        saved = np.asarray(Image.open(out / name).convert("RGB"))
        box = rec.locate(orig)[0]
        is_match = rec.find_identity_match(rec.embed(orig, box), saved, box)
        matched += is_match
        found += bool(rec.locate(saved))
        # the command's own verdict agrees with the independent check
        assert records[name]["targets"]["dlib-resnet"]["success"] == (not is_match)
        assert records[name]["linf_saved"] <= 8 + 12  # epsilon plus JPEG q95's own error
        assert _psnr(orig, saved) >= 35
    assert matched / len(names) <= 0.2
    assert found / len(names) >= 0.9


#: The issue's requirement, measured on this subset (6 photos, 512 px, JPEG q95 outputs) with
#: `perturb -t mtcnn -e 8 --min-psnr 35` (10 PGD steps x 3 rounds, see docs/methods.md): NOT met
#: (2/6 evaded; 30 steps x 3 rounds give 2/6 too, 60 x 3 no more). E = 10 gives 5/6, E = 12 6/6.
MTCNN_EVASION_MET = False


def _mtcnn_run(subset, out, epsilon):
    """`privpix perturb SUBSET -t mtcnn -e EPSILON --min-psnr 35`; judged again here by the real
    detector on each saved JPEG: (evaded count, PSNRs, summary line)."""
    from PIL import Image
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app
    from privacy_cli.detect.faces import MTCNNFaceDetector

    args = ["perturb", str(subset), "-o", str(out), "-t", "mtcnn", "-e", str(epsilon)]
    r = CliRunner().invoke(app, [*args, "--min-psnr", "35", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    records = {Path(x["input"]).name: x for x in map(json.loads, r.stdout.splitlines()) if x.get("input")}
    detector = MTCNNFaceDetector(device="cpu")
    names = sorted(p.name for p in subset.iterdir())
    assert len(records) == len(names) == 6
    evaded, report, psnrs = 0, [], []
    for name in names:
        orig = np.asarray(Image.open(subset / name).convert("RGB"))
        saved = np.asarray(Image.open(out / name).convert("RGB"))
        assert detector.detect(orig), f"{name}: no face in the original, the subset is wrong"
        left = detector.detect(saved)
        evaded += not left
        # the command's own verdict (judged on the file it wrote) agrees with this check
        assert records[name]["targets"]["mtcnn"]["success"] == (not left)
        psnr = _psnr(orig, saved)
        psnrs.append(psnr)
        report.append(f"{name}: {len(left)} faces {[round(r.score, 3) for r in left]} PSNR {psnr:.1f}")
    return evaded, psnrs, f"{evaded}/{len(names)} evaded; " + "; ".join(report)


@pytest.mark.xfail(
    not MTCNN_EVASION_MET,
    strict=True,
    raises=AssertionError,
    reason="issue #11: MTCNN evasion at epsilon 8 (>= 90% of saved JPEGs without a face) is not reached "
    "yet; docs/methods.md has the measured rate",
)
def test_mtcnn_evasion_on_saved_jpegs(subset, tmp_path):
    """After --target mtcnn --epsilon 8 (with the PSNR floor the issue asks as --min-psnr 35), the
    real detector (MTCNN on onnxruntime, the faces-mtcnn path of `privpix detect`, default
    threshold) finds no face on >= 90% of the saved JPEGs, each at PSNR >= 35 dB; the command's own
    per-image verdict agrees with that check."""
    evaded, psnrs, summary = _mtcnn_run(subset, tmp_path / "out", 8)
    print(summary)
    assert evaded / len(psnrs) >= 0.9, summary
    assert min(psnrs) >= 35, summary


def test_mtcnn_evasion_at_epsilon_12_with_a_psnr_floor(subset, tmp_path):
    """What the attack does reach (docs/methods.md): at --epsilon 12 --min-psnr 35, PGD steps along
    the gradient inside the L2 ball hide the face from MTCNN on >= 5 of the 6 saved JPEGs (6/6
    measured), PSNR >= 35 dB on every file. Signed steps shrunk into the same ball evaded 4/6
    (img1 and img18 kept their face after 90 steps)."""
    evaded, psnrs, summary = _mtcnn_run(subset, tmp_path / "out", 12)
    print(summary)
    assert evaded >= 5, summary
    assert min(psnrs) >= 35, summary


def test_mtcnn_margin_agrees_with_success(subset):
    """The mtcnn target's margin is > 0 exactly when it reports success, also when the detector
    misses a face O-Net alone would still keep (img13 shrunk below the detector's 36-px minimum
    face: no face found, O-Net at the shrunk original box still > 0.7)."""
    from PIL import Image

    from privacy_cli.attack.targets import MtcnnState, MtcnnTarget

    target = MtcnnTarget()
    im = Image.open(subset / "img13.jpg")
    state = target.setup(np.array(im))
    assert len(state.boxes) == 1
    seen = set()
    for f in (1.0, 0.2, 0.1):
        small = np.array(im.resize((round(im.width * f), round(im.height * f)), Image.BILINEAR))
        verdict = target.judge(small, MtcnnState(state.boxes * f, state.scores, small.shape[1::-1]))
        assert (verdict["margin"] > 0) == verdict["success"], (f, verdict)
        seen.add((verdict["success"], verdict["onet_at_original"] >= target.threshold))
    assert (False, True) in seen and (True, True) in seen, seen

"""`privpix bench --metrics pixel-privacy`: paper 002's Table 1 (top-1/top-5 before and after, plain,
after extra scaling and cropping, after JPEG q95 and q75) against class labels from class folders or
a CSV, with the Places365 ResNet-50 loaded from a checkpoint in the CSAIL layout (random weights:
the published file cannot be downloaded here).

The expected accuracies come from the attack target's own judge (``ClassifierTarget.predict``), so
the bench must classify exactly as ``perturb`` judges; half the labels are the classifier's top-1 on
the original and half are not, so top-1 accuracy before is 0.5 in the plain view by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture
def places_target(wenv):
    import torch
    from torchvision.models import resnet50

    from privacy_cli import attack
    from privacy_cli.runtime import clear_runners
    from privacy_cli.weights.registry import get_weights
    from privacy_cli.weights.resolve import weights_dir_path

    torch.manual_seed(0)
    ref = resnet50(num_classes=365)
    # batch-norm statistics of the test photos, so random weights still tell the photos apart
    x = torch.stack(
        [torch.from_numpy(p[:, 25:175].astype(np.float32) / 255).permute(2, 0, 1) for p in _photos(12)]
    )
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        ref.train()(x)
    ref.eval()
    wenv.wdir.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "epoch": 90,
        "arch": "resnet50",
        "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
    }
    torch.save(ckpt, weights_dir_path(get_weights("places365-resnet50")))
    clear_runners()
    attack._INSTANCES.clear()
    yield attack.get_target("places365-resnet50", "cpu")
    clear_runners()
    attack._INSTANCES.clear()


def _photos(n: int) -> list[np.ndarray]:
    """Smooth random colour fields with a few shapes: (150, 200, 3) uint8."""
    import cv2

    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, (200, 150), interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.circle(img, tuple(int(v) for v in rng.integers(20, 140, 2)), int(rng.integers(8, 30)), c, -1)
        out.append(img)
    return out


def _bench(args: list[str]) -> tuple[int, dict | None, str]:
    from typer.testing import CliRunner

    from privacy_cli.cli.app import app

    r = CliRunner().invoke(
        app, ["bench", *args, "--no-cache", "--device", "cpu", "--max-side", "0", "--json"]
    )
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    return r.exit_code, doc, r.output


def _metric(doc: dict, name: str) -> dict:
    (method,) = doc["methods"]
    return method["metrics"][name]


def test_table1_views_and_class_labels(places_target, tmp_path):
    from PIL import Image

    from privacy_cli.bench.classifier_scoring import classifier_view
    from privacy_cli.models.classifiers import places365_categories

    cats = places365_categories()
    photos = _photos(6)
    preds = {
        v: [int(places_target.predict(classifier_view(p, v)).argmax()) for p in photos]
        for v in ("", "rescaled", "jpeg95", "jpeg75")
    }
    # half the labels are the plain top-1 of the original, half another class ("arena/hockey" nests)
    labels = [
        cats[p] if i < 3 else ("arena/hockey" if cats[p] != "arena/hockey" else "bedroom")
        for i, p in enumerate(preds[""])
    ]
    root = tmp_path / "scenes"
    for i, (img, lab) in enumerate(zip(photos, labels, strict=True)):
        d = root / lab
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"p{i}.png")
    common = [
        str(root),
        "--format",
        "folder",
        "--methods",
        "perturb:target=places365-resnet50,epsilon=8,steps=3,rounds=1",
        "--detect",
        "none",
        "--classifier",
        "places365-resnet50",
    ]

    rep = tmp_path / "report"
    code, doc, out = _bench(
        [*common, "--metrics", "pixel-privacy", "--class-labels", "folders", "-o", str(rep)]
    )
    assert code == 0, out
    md = (rep / "report.md").read_text()
    table = md.split("## Pixel Privacy Table 1", 1)[1].split("\n## ", 1)[0]
    assert "accuracy against the class labels" in table and "Top-1 before (JPEG q75)" in table
    assert "| 0.500 |" in table  # plain top-1 before
    for view, (a, b) in {
        "": ("top1_change", "top5_change"),
        "rescaled": ("top1_change_rescaled", "top5_change_rescaled"),
        "jpeg95": ("top1_change_jpeg95", "top5_change_jpeg95"),
        "jpeg75": ("top1_change_jpeg75", "top5_change_jpeg75"),
    }.items():
        want = np.mean([cats[p] == lab for p, lab in zip(preds[view], labels, strict=True)])
        m1, m5 = _metric(doc, a), _metric(doc, b)
        assert m1["available"] and m1["extra"]["labels"] == "class labels" and m1["n"] == 6
        assert m1["extra"]["before"] == pytest.approx(want), view
        assert m1["value"] == pytest.approx(m1["extra"]["after"] - m1["extra"]["before"])
        assert m1["extra"]["before"] <= m5["extra"]["before"] <= 1.0
    plain = _metric(doc, "top1_change")["extra"]
    assert plain["before"] == pytest.approx(0.5) and plain["after"] < plain["before"]  # the attack flips

    # the same labels from a CSV (one given by index), then none at all: agreement, 1.0 before
    common[4] = "pixelate"  # (no region: the output is the original; only "before" matters here)
    csv = tmp_path / "labels.csv"
    rows = [f"scenes/{lab}/p{i}.png,{cats.index(lab) if i == 0 else lab}" for i, lab in enumerate(labels)]
    csv.write_text("file,label\n" + "\n".join(rows) + "\n")
    code, doc, out = _bench([*common, "--metrics", "top1_change", "--class-labels", str(csv)])
    assert code == 0, out
    assert _metric(doc, "top1_change")["extra"]["before"] == pytest.approx(0.5)
    code, doc, out = _bench([*common, "--metrics", "top1_change"])
    assert code == 0, out
    m = _metric(doc, "top1_change")
    assert m["extra"]["before"] == 1.0 and m["extra"]["labels"] == "agreement"

    # a label the classifier does not have, or a photo without one: a one-line error before any work
    csv.write_text("file,label\n" + "\n".join([*rows[:-1], f"scenes/{labels[-1]}/p5.png,moon base"]) + "\n")
    code, _, out = _bench([*common, "--metrics", "top1_change", "--class-labels", str(csv)])
    assert code != 0 and "moon base" in out and "labels.csv" in out
    csv.write_text("file,label\n" + "\n".join(rows[:-1]) + "\n")
    code, _, out = _bench([*common, "--metrics", "top1_change", "--class-labels", str(csv)])
    assert code != 0 and "p5.png" in out and "no label" in out

"""Classifier targets load the published checkpoints: places365-resnet50 from a file in the CSAIL
``resnet50_places365.pth.tar`` layout (made here: state_dict under "state_dict", "module." keys);
a missing file is a one-line error naming `privpix weights`."""

from __future__ import annotations

import numpy as np
import pytest


def test_places365_csail_layout_loads_and_judges(wenv, monkeypatch):
    import torch
    from torchvision.models import resnet50

    from privacy_cli import attack
    from privacy_cli.attack.targets import pil_resize_short_crop
    from privacy_cli.models.classifiers import places365_categories
    from privacy_cli.runtime import clear_runners

    torch.manual_seed(0)
    ref = resnet50(num_classes=365).eval()
    wenv.wdir.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "epoch": 90,
        "arch": "resnet50",
        "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
        "best_prec1": 54.74,
    }
    from privacy_cli.weights.registry import get_weights
    from privacy_cli.weights.resolve import weights_dir_path

    entry = get_weights("places365-resnet50")
    assert entry.filename == "resnet50_places365.pth.tar" and entry.container == "state_dict"
    torch.save(ckpt, weights_dir_path(entry))  # the published file, as `privpix weights import` places it
    clear_runners()
    attack._INSTANCES.clear()
    try:
        t = attack.get_target("places365-resnet50", "cpu")
        img = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
        crop = pil_resize_short_crop(img, 256, 224)
        assert crop.shape == (224, 224, 3)
        x = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None] / 255.0
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            want = ref((x - mean) / std)[0]
        got = t.predict(img)
        assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
        state = t.setup(img)
        assert t.label_name(state.label) == places365_categories()[int(want.argmax())]
        verdict = t.judge(img, state)
        assert verdict["success"] is False and verdict["margin"] < 0
        assert len(places365_categories()) == 365 and places365_categories()[52] == "bedroom"
    finally:
        clear_runners()
        attack._INSTANCES.clear()


def test_missing_classifier_weights_name_the_weights_command(wenv, monkeypatch):
    from privacy_cli import attack
    from privacy_cli.errors import WeightsError
    from privacy_cli.runtime import clear_runners

    monkeypatch.setenv("PRIVPIX_OFFLINE", "1")
    clear_runners()
    attack._INSTANCES.clear()
    with pytest.raises(WeightsError, match="privpix weights"):
        attack.get_target("imagenet-resnet50", "cpu")
    attack._INSTANCES.clear()

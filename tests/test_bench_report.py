"""Bench report plots: rates on a 0-1 axis with error bars inside [0, 1], labelled axes, no empty panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privacy_cli.bench.datasets import BenchDataset
from privacy_cli.bench.metrics import MetricResult
from privacy_cli.bench.report import axis_label, clipped_errors, make_plots
from privacy_cli.bench.results import BenchConfig, BenchResult, MethodResult
from privacy_cli.bench.specs import MethodSpec


def _result(strengths: list[int]) -> BenchResult:
    methods = []
    for k, s in enumerate(strengths):
        metrics = {
            "ssim": MetricResult(
                "ssim", 0.9 - 0.1 * k, "", True, 4, library="torchmetrics", extra={"std": 0.05}
            ),
            "identity_similarity": MetricResult(
                "identity_similarity",
                0.8 - 0.2 * k,
                "cosine",
                False,
                4,
                library="privpix",
                extra={"std": 0.1},
            ),
            "detect_rate_dlib": MetricResult(
                "detect_rate_dlib", 0.97, "fraction", True, 4, library="privpix", extra={"std": 0.3}
            ),
        }
        methods.append(MethodResult(MethodSpec("blur", (("radius", s),)), metrics))
    ds = BenchDataset(format="folder", root=Path("."), items=[])
    return BenchResult(ds, BenchConfig(cache_dir=None), methods)


def test_error_bars_stay_in_the_unit_interval():
    lo, hi = clipped_errors([0.97, 0.02, 0.5], [0.3, 0.3, 0.1], (0.0, 1.0))
    assert np.allclose(hi, [0.03, 0.3, 0.1]) and np.allclose(lo, [0.3, 0.02, 0.1])
    assert clipped_errors([5.0], [2.0], None) == [[2.0], [2.0]]


def test_axes_name_metric_direction_and_judge():
    r = _result([2])
    assert axis_label(r, "identity_similarity") == "Id. similarity ↓ (dlib)"
    assert axis_label(r, "detect_rate_dlib").endswith("↑ (dlib HOG)")
    assert "(torchmetrics)" in axis_label(r, "ssim")


@pytest.mark.parametrize(("strengths", "panels"), [([2], 1), ([2, 8], 2)])
def test_privacy_quality_plot_has_no_empty_panel(tmp_path: Path, strengths: list[int], panels: int):
    files = {p.name: p for p in make_plots(_result(strengths), tmp_path)}
    assert set(files) == {"bars.png", "privacy_quality.png"}
    w, _h = Image.open(files["privacy_quality.png"]).size
    assert w == pytest.approx(5.5 * 110 * panels, abs=2)  # one panel per thing to show, none empty

"""Personal text stays unreadable after the default blur, pixelate and mask: an OCR re-read attack.

Generated photos carry personal strings (phones, e-mails, names, addresses, card numbers, IBANs,
labelled IDs and dates) in the DejaVu fonts, 16-80 px, random colours and small rotations.
privpix detects them with its own OCR (PP-OCR) and obfuscates them with each default method;
Tesseract, an independent OCR engine, then tries to read every string back from the whole output
and from a crop upscaled 2x and sharpened. The control: Tesseract reads them on the originals.
"""

from __future__ import annotations

import numpy as np
import pytest

from privacy_cli.bench.text_attack import make_scenes, read_back, tesseract_available

pytestmark = pytest.mark.skipif(
    not tesseract_available(),
    reason="tesseract (apt install tesseract-ocr) or pytesseract missing: the OCR re-read attack cannot run",
)

#: every size class of the issue, smallest and largest included
FONT_PX = [16, 80, 24, 56, 32, 44, 20, 68, 28, 38, 64, 50]


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(seed=8, n_scenes=3, personal_per_scene=4, benign_per_scene=0, font_px=FONT_PX)


@pytest.fixture(scope="module")
def detected(scenes):
    from privacy_cli.api import detect

    return [detect(img, kinds=("text",), threads=1) for img, _ in scenes]


@pytest.fixture(scope="module")
def readable(scenes):
    """Per scene, which personal strings Tesseract reads on the original (the control)."""
    return [read_back(img, placed, upscales=(2.0,)) for img, placed in scenes]


def test_control_tesseract_reads_the_originals(readable):
    flat = [r for per in readable for r in per]
    assert sum(flat) >= 0.75 * len(flat), f"Tesseract read only {sum(flat)} of {len(flat)} originals"


@pytest.mark.parametrize("method", ["blur", "pixelate", "fill"])
def test_default_method_leaves_no_personal_string_readable(scenes, detected, readable, method):
    from privacy_cli import api

    leaked = []
    for (img, placed), regions, control in zip(scenes, detected, readable, strict=True):
        out = getattr(api, method)(img, regions)
        assert isinstance(out, np.ndarray) and out.shape == img.shape
        for p, before, after in zip(placed, control, read_back(out, placed, upscales=(2.0,)), strict=True):
            if before and after:
                leaked.append(f"{p.category} at {p.font_px} px")
    n = sum(sum(c) for c in readable)
    assert not leaked, f"Tesseract read back {len(leaked)} of {n} personal strings after {method}: {leaked}"

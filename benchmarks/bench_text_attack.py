"""How strong must blur / pixelation be before OCR can no longer read text? A Tesseract re-read sweep.

Generated photos (privacy_cli.bench.text_attack.make_scenes: personal strings in the DejaVu fonts,
16-80 px, random colours, small rotations) are read by privpix's detector (PP-OCR, ``--text all`` so
the sweep measures the methods, not the PII classifier). Each text region is then blurred with a
sigma of ``f x`` its line height, or pixelated with cells of ``f x`` its line height, for each
fraction ``f``; also the defaults. Tesseract tries to read every personal string back from the whole
output and from a crop upscaled 2x and sharpened; the re-read rate counts only strings it reads on
the original (the control).

    python benchmarks/bench_text_attack.py --scenes 3 --fractions 0.1,0.15,0.2,0.3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import privacy_cli.methods.blur as blur_mod
import privacy_cli.methods.pixelate as pix_mod
from privacy_cli.bench.text_attack import make_scenes, read_back, tesseract_available
from privacy_cli.methods import get_method
from privacy_cli.methods.compose import call_method, text_line_height
from privacy_cli.pipeline import TEXT_SCALE
from privacy_cli.regions import Regions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fractions", default="0.1,0.15,0.2,0.3", help="strengths as fractions of line height")
    ap.add_argument("--methods", default="blur,pixelate")
    args = ap.parse_args()
    if not tesseract_available():
        raise SystemExit("tesseract / pytesseract not installed (apt install tesseract-ocr)")
    from privacy_cli.detect import get_detector

    det = get_detector("text", threads=1)
    scenes = make_scenes(args.seed, args.scenes, personal_per_scene=4, benign_per_scene=0)
    fractions = [float(f) for f in args.fractions.split(",")] + [None]  # None: the default
    methods = args.methods.split(",")
    read: dict[str, int] = {}
    control = 0
    heights: list[float] = []
    t0 = time.perf_counter()
    for img, placed in scenes:
        regs = Regions((img.shape[1], img.shape[0]), det.detect(img))
        heights += [text_line_height(r) for r in regs]
        mask = regs.to_mask(text_scale=TEXT_SCALE)
        orig = read_back(img, placed)
        control += sum(orig)
        for m in methods:
            for f in fractions:
                if f is None:
                    out = call_method(get_method(m), img, mask, regs)
                else:
                    saved = blur_mod.text_sigma, pix_mod.text_block
                    blur_mod.text_sigma = lambda h, f=f: max(blur_mod.MIN_SIGMA, f * h) if h > 0 else 0.0
                    pix_mod.text_block = lambda h, f=f: (
                        max(pix_mod.MIN_BLOCK, int(np.ceil(f * h))) if h > 0 else 0
                    )
                    try:
                        out = call_method(get_method(m), img, mask, regs)
                    finally:
                        blur_mod.text_sigma, pix_mod.text_block = saved
                key = f"{m}@{'default' if f is None else f}"
                hits = read_back(out, placed)
                read[key] = read.get(key, 0) + sum(a and b for a, b in zip(orig, hits, strict=True))
        print(f"scene done ({time.perf_counter() - t0:.0f} s)", flush=True)
    n = sum(p.secret is not None for _img, placed in scenes for p in placed)
    print(
        json.dumps(
            {
                "personal_strings": n,
                "read_on_originals": control,
                "line_height_px": [round(min(heights)), round(max(heights))] if heights else None,
                "re_read_of_those": {k: f"{v}/{control}" for k, v in read.items()},
                "defaults": {
                    "blur_sigma": blur_mod.TEXT_SIGMA_FRACTION,
                    "pixelate_block": pix_mod.TEXT_BLOCK_FRACTION,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

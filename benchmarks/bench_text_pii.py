"""PII recall and false positives of privpix's text detection on generated photos.

Scenes (privacy_cli.bench.text_attack.make_scenes): personal strings (phones of 12 regions, e-mails,
names with titles or initials, street addresses without a city, card numbers in digit groups,
IBANs, labelled IDs and dates) and benign strings (shop signs, "EXIT", prices) in the DejaVu fonts,
16-80 px, random colours, small rotations, on crops of scikit-image's photos. privpix reads them
with its real detector (PP-OCR through rapidocr, ``--text pii``), and its mask is scored against
the rendered ground truth:

* recall: a personal string is found when the mask covers >= 90% of its ink box;
* benign altered: a benign string is altered when the mask covers > 10% of its ink box.

    python benchmarks/bench_text_pii.py --scenes 40 --seed 100
    python benchmarks/bench_text_pii.py --scenes 40 --seed 100 --cache /tmp/ocr100.json --misses

``--cache`` keeps PP-OCR's raw lines of each scene in a JSON file (synthetic text only) so the
classification can be re-scored without re-running OCR; ``--misses`` lists the missed categories
and the benign strings altered (synthetic strings, never user data).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from privacy_cli.bench.text_attack import make_scenes, score_pii


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--cache", type=Path, help="JSON file with PP-OCR's lines per scene (made if absent)")
    ap.add_argument("--misses", action="store_true", help="list missed / wrongly altered synthetic strings")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for PP-OCR")
    ap.add_argument("--personal", type=int, default=3, help="personal strings per scene")
    ap.add_argument("--benign", type=int, default=2, help="benign strings per scene")
    args = ap.parse_args()

    scenes = make_scenes(
        args.seed, args.scenes, personal_per_scene=args.personal, benign_per_scene=args.benign
    )
    t_ocr = None
    if args.cache and args.cache.exists():
        ocr_lines = json.loads(args.cache.read_text())
    else:
        from privacy_cli.detect import get_detector

        det = get_detector("text", threads=args.threads)
        t0 = time.perf_counter()
        ocr_lines = [det.read_lines(img) for img, _ in scenes]
        t_ocr = (time.perf_counter() - t0) / len(scenes)
        if args.cache:
            args.cache.write_text(json.dumps(ocr_lines))
    t0 = time.perf_counter()
    res = score_pii(scenes, ocr_lines)
    t_cls = (time.perf_counter() - t0) / len(scenes)
    if args.misses:
        for m in res["_misses"]:
            print("missed   ", m)
        for m in res["_altered"]:
            print("altered  ", m)
    out = {k: v for k, v in res.items() if not k.startswith("_")}
    out["seconds_per_scene"] = {
        "ocr": None if t_ocr is None else round(t_ocr, 3),
        "classify+score": round(t_cls, 3),
    }
    out["scenes"] = args.scenes
    out["mean_size"] = [
        int(np.mean([s[0].shape[1] for s in scenes])),
        int(np.mean([s[0].shape[0] for s in scenes])),
    ]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

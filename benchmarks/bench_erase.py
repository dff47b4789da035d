"""Benchmark: time per image of `erase` for a face-sized region in a 12-megapixel photo and in a
512x512 photo, per model, with peak memory.

Each (model, photo) case runs in its own process: load the model once (timed separately), then
decode + erase + encode the photo `--repeat` times; the median per-image time and the process's
peak RSS are reported. big-lama runs on a randomly initialised generator saved in the published
Lightning layout when no real checkpoint is present (the compute does not depend on the weights).

Run:  uv run python benchmarks/bench_erase.py [--models big-lama,telea] [--repeat 3] [--device cpu]
Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REGION = (200, 240)  # face-sized region (w, h) in pixels, the same in both photos


def make_photos(folder: Path) -> dict[str, Path]:
    from PIL import Image
    from skimage import data

    base = data.astronaut()
    big = np.tile(base, (6, 8, 1))[:3000, :4000]  # 12 MP
    photos = {"512x512": base, "4000x3000 (12 MP)": big}
    out = {}
    for name, arr in photos.items():
        p = folder / f"{arr.shape[1]}x{arr.shape[0]}.jpg"
        Image.fromarray(np.ascontiguousarray(arr)).save(p, quality=95)
        out[name] = p
    return out


def random_lama(folder: Path) -> Path:
    import torch

    from privacy_cli.models import build_model

    torch.manual_seed(0)
    gen = build_model("big-lama", pretrained=False)
    torch.save(
        {"state_dict": {"generator." + k: v for k, v in gen.state_dict().items()}},
        folder / "big-lama-ckpt.ckpt",
    )
    return folder


def one_case(model: str, photo: Path, repeat: int, device: str, out_dir: Path) -> dict:
    from privacy_cli.io import load_image, save_image
    from privacy_cli.methods import erase as er

    t0 = time.perf_counter()
    inp = er.load_inpainter(model, device)
    load_s = time.perf_counter() - t0
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        img = load_image(photo)
        h, w = img.rgb.shape[:2]
        mask = np.zeros((h, w), np.float32)
        cx, cy = w // 2, h // 3
        mask[cy - REGION[1] // 2 : cy + REGION[1] // 2, cx - REGION[0] // 2 : cx + REGION[0] // 2] = 1
        out, _info = er.erase(img.rgb, mask, model=model, device=device)
        save_image(out, out_dir / f"{photo.stem}_{model}_{i}.jpg", like=img)
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s": load_s, "median_s": float(np.median(times)), "peak_mb": peak_mb, "device": inp.device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="big-lama,telea")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "PHOTO"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one[0], Path(args.one[1]), args.repeat, args.device, args.out)))
        return
    work = Path(tempfile.mkdtemp(prefix="privpix-erase-bench-"))
    photos = make_photos(work)
    env = dict(os.environ)
    models = args.models.split(",")
    if "big-lama" in models or "eraser" in models:
        from privacy_cli.methods.erase import weights_present

        if not weights_present("big-lama"):
            env["PRIVPIX_WEIGHTS_DIR"] = str(random_lama(work))
            print("(big-lama: randomly initialised weights in the Lightning layout; compute is identical)\n")
    rows = []
    for model in models:
        res = {}
        for name, p in photos.items():
            cmd = [
                sys.executable,
                __file__,
                "--one",
                model,
                str(p),
                "--repeat",
                str(args.repeat),
                "--device",
                args.device,
                "--out",
                str(work),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.stderr.write(r.stderr[-3000:])
                raise SystemExit(r.returncode)
            res[name] = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append((model, res))
    import torch

    print(
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; region {REGION[0]}x{REGION[1]} px; median of {args.repeat}; "
        "time = decode + erase + encode (JPEG q95), model load excluded.\n"
    )
    print(
        "| model | device | 512x512 s/image | 12 MP s/image | ratio | peak RSS 512 / 12 MP (MB) | model load (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, res in rows:
        a, b = res["512x512"], res["4000x3000 (12 MP)"]
        print(
            f"| {model} | {a['device']} | {a['median_s']:.3f} | {b['median_s']:.3f} | {b['median_s'] / a['median_s']:.2f}x | "
            f"{a['peak_mb']:.0f} / {b['peak_mb']:.0f} | {a['load_s']:.2f} |"
        )


if __name__ == "__main__":
    main()

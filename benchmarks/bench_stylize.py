"""Benchmark: seconds per 12-megapixel photo and peak memory of `stylize`, per style.

Each case (style, options) runs in its own process: the 4000x3000 photo is decoded once, the GAN (if
any) is loaded once (timed separately), then `stylize` runs `--repeat` times on the whole photo; the
median time of the style alone (no decode/encode) and the process's peak RSS, with the RSS before
the first run, are reported. GAN styles run on randomly initialised generators saved in their
published layouts when no real checkpoint is present (the compute does not depend on the weights).

Run:  uv run python benchmarks/bench_stylize.py [--styles cartoon,watercolor,sketch,ukiyoe,...]
      [--repeat 3] [--device cpu] [--upsample bilinear,guided]
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

ALL = "cartoon,watercolor,sketch,ukiyoe,hayao,face-paint,paprika"


def make_photo(folder: Path) -> Path:
    """A 4000x3000 JPEG made of scikit-image's astronaut tiled (real photo content at 12 MP)."""
    from PIL import Image
    from skimage import data

    big = np.tile(data.astronaut(), (6, 8, 1))[:3000, :4000]
    p = folder / "4000x3000.jpg"
    Image.fromarray(np.ascontiguousarray(big)).save(p, quality=95)
    return p


def random_weights(folder: Path) -> Path:
    """Seeded random generators in the published file layouts, under the weights-dir file names."""
    import torch

    from privacy_cli.models import build_model
    from privacy_cli.models.stylization import AnimeGANv2Generator
    from privacy_cli.weights import get_weights

    torch.manual_seed(0)
    for model in ("cyclegan-ukiyoe", "cartoongan-hayao", "animegan2-face-paint-v2", "animegan2-paprika"):
        gen = build_model(model, pretrained=False)
        assert model.startswith("animegan") == isinstance(gen, AnimeGANv2Generator)
        torch.save(gen.state_dict(), folder / get_weights(model).local_filename)
    return folder


def one_case(style: str, photo: Path, repeat: int, device: str, upsample: str) -> dict:
    from privacy_cli.io import load_image
    from privacy_cli.methods import stylize as st

    img = load_image(photo).rgb
    mask = np.ones(img.shape[:2], np.float32)
    load_s = 0.0
    if st.get_style(style).model is not None:
        t0 = time.perf_counter()
        st.gan_runner(style, device)
        load_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, cpu, info = [], [], {}
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        _out, info = st.stylize(img, mask, style=style, device=device, upsample=upsample)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "median_s": float(np.median(times)),
        "cpu_s": float(np.median(cpu)),
        "peak_mb": peak_mb,
        "rss_before_mb": rss_before,
        "load_s": load_s,
        "device": info.get("device", "cpu (OpenCV)"),
        "work_size": info.get("work_size"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--styles", default=ALL)
    ap.add_argument("--upsample", default="bilinear", help="comma list: bilinear, guided")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=3, metavar=("STYLE", "PHOTO", "UPSAMPLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one[0], Path(args.one[1]), args.repeat, args.device, args.one[2])))
        return
    work = Path(tempfile.mkdtemp(prefix="privpix-stylize-bench-"))
    photo = make_photo(work)
    env = dict(os.environ)
    styles = args.styles.split(",")
    from privacy_cli.methods.stylize import GAN

    if any(s in GAN for s in styles) and "PRIVPIX_WEIGHTS_DIR" not in env:
        wdir = work / "weights"
        wdir.mkdir()
        env["PRIVPIX_WEIGHTS_DIR"] = str(random_weights(wdir))
        env["HF_HUB_OFFLINE"] = "1"
        print(
            "(GAN styles: randomly initialised generators in the published layouts; compute is identical)\n"
        )
    rows = []
    for style in styles:
        for up in args.upsample.split(","):
            cmd = [sys.executable, __file__, "--one", style, str(photo), up]
            cmd += ["--repeat", str(args.repeat), "--device", args.device]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.stderr.write(r.stderr[-3000:])
                raise SystemExit(r.returncode)
            rows.append((style, up, json.loads(r.stdout.strip().splitlines()[-1])))
    import torch

    print(
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; 4000x3000 photo; "
        f"median of {args.repeat}; time = stylize() on the whole photo (decode/encode and model load excluded); CPU s = process CPU time of the same call (all threads).\n"
    )
    print(
        "| style | upsample | device | working size | s per 12 MP photo | CPU s | peak RSS (MB) | RSS before (MB) | model load (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for style, up, res in rows:
        ws = "x".join(map(str, res["work_size"])) if res["work_size"] else "-"
        print(
            f"| {style} | {up} | {res['device']} | {ws} | {res['median_s']:.2f} | {res['cpu_s']:.2f} | {res['peak_mb']:.0f} | "
            f"{res['rss_before_mb']:.0f} | {res['load_s']:.2f} |"
        )


if __name__ == "__main__":
    main()

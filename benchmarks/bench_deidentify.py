"""Benchmark: seconds per face and peak memory of `privpix deidentify` backends on CPU (GPU when present).

Stages timed separately (in-process, 1 torch thread unless --threads):

* ``donors``: landmarks + alignment + dlib descriptor per face (done once per run for ksame);
* ``ksame``: per face, donor choice + piecewise-affine average + paste-back (the backend itself);
* ``judge``: dlib descriptor of the output face (the identity similarity recorded in --json);
* ``latent`` / ``private-encoder``: only when their weights are present (``privpix weights``).

Detection (MTCNN) is excluded: it is the same for every image command (docs/performance.md, blur).
Wall and CPU seconds are both reported: on a shared machine CPU time (``time.process_time``, one
thread) is what an idle core would take. Peak memory is the process's maximum RSS (``resource.getrusage``), as ``/usr/bin/time -v`` reports it.

Run:  uv run python benchmarks/bench_deidentify.py [FOLDER] [--limit N]
(default FOLDER: ../shared/datasets/faces-id). Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "faces-id"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--limit", type=int, default=30, help="photos used (donor pool and timing)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="latent optimisation steps")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from privacy_cli.io import iter_images, load_image
    from privacy_cli.methods import deidentify as d
    from privacy_cli.pipeline import RegionSpec, collect_regions, regions_mask

    spec = RegionSpec(detect=("faces",))
    photos = []
    for p in sorted(iter_images([args.folder]))[: args.limit]:
        loaded = load_image(p)
        photos.append((loaded.rgb, regions_mask(collect_regions(loaded, spec), spec)))
    pool = d.DonorPool()
    t0, c0 = time.perf_counter(), time.process_time()
    for img, mask in photos:
        pool.add_image(img, mask)
    nf = max(1, len(pool))
    rows = [
        (
            "donors (landmarks + alignment + dlib descriptor)",
            (time.perf_counter() - t0) / nf,
            (time.process_time() - c0) / nf,
            len(pool),
        )
    ]
    from privacy_cli.faceid import default_recognizer

    w_ksame = c_ksame = w_judge = c_judge = 0.0
    n = 0
    for img, mask in photos:
        faces, _ = pool.lookup(img)
        if not faces:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        out, _info = d.deidentify(img, mask, model="ksame", k=args.k, donors=pool, judge=False)
        w_ksame += time.perf_counter() - t0
        c_ksame += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        for f in faces:
            default_recognizer().embed(out, f.box)
        w_judge += time.perf_counter() - t0
        c_judge += time.process_time() - c0
        n += len(faces)
    rows.append((f"ksame backend + paste-back (k={args.k})", w_ksame / n, c_ksame / n, n))
    rows.append(("judge (dlib descriptor of the output)", w_judge / n, c_judge / n, n))

    for model in ("latent", "private-encoder"):
        avail = not d.missing_latent_weights() if model == "latent" else d.private_encoder_checkpoint(0.0)
        if not avail:
            rows.append((f"{model} (weights absent: not measured)", float("nan"), float("nan"), 0))
            continue
        img, mask = photos[0]
        t0 = time.perf_counter()
        d.deidentify(img, mask, model=model, beta=0.0, steps=args.steps, device="auto", judge=False)
        rows.append(
            (f"{model} ({args.steps} steps)" if model == "latent" else model, time.perf_counter() - t0, 1)
        )

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"cuda {torch.cuda.is_available()}; {len(photos)} photos of {args.folder.name}"
    )
    print()
    print(f"Load average at the end: {os.getloadavg()[0]:.1f} (CPU s is what one idle core would take)")
    print()
    print("| stage | wall s / face | CPU s / face | faces |")
    print("|---|---|---|---|")
    for name, w, c, k in rows:
        print(f"| {name} | {w:.3f} | {c:.3f} | {k} |" if np.isfinite(w) else f"| {name} | - | - | - |")
    print(f"\nPeak RSS of the process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()

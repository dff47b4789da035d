"""SSIM map cost per photo: privpix's CPU path (OpenCV separable Gaussian) against torchmetrics.

Both compute the same map (torchmetrics' definition: 11x11 Gaussian, sigma 1.5, reflect-padded);
the script checks they agree, then times each on faces-id photos downscaled so the longer side is
``--max-side`` (the bench default, 1024), one thread. Usage::

    uv run python benchmarks/bench_ssim.py [--max-side 1024] [--limit 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=FACES_ID)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import cv2
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    from privacy_cli.bench.metrics import ssim_map
    from privacy_cli.io import load_image

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    pairs = []
    for p in sorted(args.dataset.glob("*.jpg"))[: args.limit]:
        rgb = load_image(p).rgb
        s = args.max_side / max(rgb.shape[:2])
        if s < 1:
            rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        pairs.append((t * 0.9 + 0.05, t))

    def tm(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return structural_similarity_index_measure(
            p,
            t,
            gaussian_kernel=True,
            sigma=1.5,
            kernel_size=11,
            data_range=1.0,
            reduction="none",
            return_full_image=True,
        )[1]

    diff = max(float((ssim_map(p, t) - tm(p, t)).abs().max()) for p, t in pairs[:3])
    rows = []
    for name, fn in (("torchmetrics 11x11 conv2d", tm), ("privpix (OpenCV separable)", ssim_map)):
        fn(*pairs[0])  # warm-up
        t0 = time.perf_counter()
        for p, t in pairs:
            fn(p, t)
        dt = time.perf_counter() - t0
        rows.append((name, len(pairs) / dt, dt / len(pairs)))
    px = np.mean([p.shape[-1] * p.shape[-2] for p, _ in pairs]) / 1e6
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), {len(pairs)} faces-id "
        f"photos, longer side <= {args.max_side} px ({px:.2f} MP mean); max |diff| of the maps {diff:.1e}"
    )
    print("| SSIM map | images/s | s/image |\n|---|---|---|")
    for name, ips, spi in rows:
        print(f"| {name} | {ips:.1f} | {spi:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput and peak memory of the bench metrics on CPU over the shared faces-id photos.

Measures, for one method (``blur:radius=8`` by default) over faces-id (61 photos of 13 people):

1. preparing the originals: decode, EXIF orientation, downscale to ``--max-side``, MTCNN face regions;
2. quality metrics (SSIM, PSNR, MAE, MSE and their region variants, MAE outside the regions);
3. privacy metrics (dlib identity similarity, de-identification rate, rank-1 re-identification
   with its control on the originals);
4. quality + privacy together, cold (empty cache), then warm (a re-run served from the cache).

Each stage runs in a fresh runner without a disk cache except the warm re-run. Peak memory is the
process's resident set size sampled every 20 ms with psutil. Prints a Markdown table for
docs/performance.md (images per second of wall time and per CPU second, i.e. user + system time of
every thread of the process). ``--workers`` is the runner's setting (``BenchConfig.workers``: originals
computed at once in threads, 0 = auto); ``--stages quality`` runs only stages 1-2. Usage::

    uv run python benchmarks/bench_metrics.py [--max-side 1024] [--limit 0] [--method blur:radius=8]
        [--threads 1] [--workers 0] [--stages all|quality]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"

QUALITY = "ssim,psnr,mae,mse,ssim_region,psnr_region,mae_region,mse_region,mae_outside"
PRIVACY = "identity_similarity,deid_rate,reid_rank1"


class PeakRSS:
    """Samples the resident set size of this process in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def stage(name: str, fn, n: int, rows: list) -> object:  # type: ignore[no-untyped-def]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        out = fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rows.append((name, n, wall, cpu, mem.peak / 2**20))
    print(
        f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {mem.peak / 2**20:.0f} MiB", file=sys.stderr
    )
    return out


def _table(args: argparse.Namespace, n: int, n_ok: int, rows: list, torch, workers: int) -> None:  # type: ignore[no-untyped-def]
    import cv2

    print()
    print(
        f"CPU: {platform.processor() or platform.machine()}, {psutil.cpu_count(logical=True)} logical cores, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; torch threads {torch.get_num_threads()}, "
        f"OpenCV threads {cv2.getNumThreads()}, bench workers {workers}; Python {platform.python_version()}, "
        f"torch {torch.__version__}; faces-id {n} photos ({n_ok} with a detected face), longer side <= "
        f"{args.max_side} px, method `{args.method}`."
    )
    print()
    print("| stage | images | wall s | CPU s | images/s (wall) | images per CPU-s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, k, wall, cpu, peak in rows:
        per_cpu = f"{k / cpu:.2f}" if cpu > 0.05 else "-"
        print(f"| {name} | {k} | {wall:.1f} | {cpu:.1f} | {k / wall:.2f} | {per_cpu} | {peak:.0f} |")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=FACES_ID)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=0, help="first N photos (0 = all)")
    ap.add_argument("--method", default="blur:radius=8")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch's default). 1 gives per-core numbers that stay stable on a "
        "busy machine, where idle OpenMP workers spin and inflate CPU time.",
    )
    ap.add_argument("--workers", type=int, default=0, help="BenchConfig.workers (0 = auto)")
    ap.add_argument("--stages", choices=("all", "quality"), default="all")
    args = ap.parse_args()
    if not (args.dataset / "identities.csv").is_file():
        print(f"faces-id not found at {args.dataset}", file=sys.stderr)
        return 1

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # benchmark setting only; the library never sets it

    from privacy_cli.bench.datasets import open_dataset
    from privacy_cli.bench.results import BenchConfig
    from privacy_cli.bench.runner import BenchRunner
    from privacy_cli.bench.specs import parse_methods, parse_metrics

    ds = open_dataset(args.dataset, limit=args.limit or None)
    spec = parse_methods(args.method)
    n = len(ds)
    rows: list[tuple[str, int, float, float, float]] = []
    print(f"faces-id: {n} photos, max side {args.max_side} px, method {args.method}", file=sys.stderr)

    def runner(metrics: str, cache: Path | None = None) -> BenchRunner:
        extra = {"workers": args.workers} if "workers" in BenchConfig.__dataclass_fields__ else {}
        cfg = BenchConfig(
            metrics=parse_metrics(metrics), max_side=args.max_side, device="cpu", cache_dir=cache, **extra
        )
        return BenchRunner(ds, cfg)

    # warm-up: imports and model construction are not what we measure
    warm = runner(QUALITY + ("," + PRIVACY if args.stages == "all" else ""))
    warm.dataset = type(ds)(ds.format, ds.root, ds.items[:2])
    warm.run(spec)

    r = runner(QUALITY)
    originals = stage("prepare originals (decode, resize, MTCNN regions)", r.originals, n, rows)
    n_ok = len(originals)
    workers = r.workers(spec, originals) if hasattr(r, "workers") else 1
    qres = stage("quality metrics (9 values per image)", lambda: r.run_methods(spec, originals), n_ok, rows)
    if args.stages == "quality":
        _table(args, n, n_ok, rows, torch, workers)
        vals = {k: v.value for k, v in qres[0].metrics.items() if getattr(v, "available", False)}
        print("Values: " + ", ".join(f"{k} {v:.6f}" for k, v in vals.items()))
        return 0

    r = runner(PRIVACY)
    r._originals = originals  # same prepared originals (regions), faces found again by dlib
    res = stage("privacy metrics (dlib; faces on originals + processed)", lambda: r.run(spec), n_ok, rows)
    ctl = res.control or {}

    with tempfile.TemporaryDirectory() as tmp:
        cold = runner(QUALITY + "," + PRIVACY, Path(tmp))
        res = stage(
            "quality + privacy, cold cache (incl. preparing originals)", lambda: cold.run(spec), n, rows
        )
        again = runner(QUALITY + "," + PRIVACY, Path(tmp))
        res2 = stage("quality + privacy, warm cache (re-run)", lambda: again.run(spec), n, rows)
        assert res2.cache.computed == 0, res2.cache.to_json()

    m = res.methods[0]
    _table(args, n, n_ok, rows, torch, workers)
    vals = {k: v.value for k, v in m.metrics.items() if getattr(v, "available", False)}
    print(
        "Values of that run: "
        + ", ".join(f"{k} {v:.3f}" for k, v in vals.items())
        + f"; identity control {'passed' if ctl.get('passed') else 'failed'} "
        f"(rank-1 {ctl.get('rate') or float('nan'):.2f})."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

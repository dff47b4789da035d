"""Benchmark: `privpix blur --detect faces` over a folder with --engine local and --engine ray (1 and 2 workers).

Each configuration is one fresh `privpix` process (what a user runs), timed end to end, so Ray's
overheads are included: connecting to (or starting) the cluster, starting actors, each actor importing
torch and loading the detector, moving tasks and rows. It also checks that every configuration wrote
the same bytes as the local engine.

Run:  uv run python benchmarks/bench_engine.py [FOLDER] [--limit N] [--workers 1,2] [--batch-size 8]
(default FOLDER: ../shared/datasets/faces-id). Without RAY_ADDRESS each ray run starts its own local
cluster (its start-up is then part of the time); with RAY_ADDRESS=host:port they join that cluster.
Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "faces-id"


def run(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, exit code, tail of stderr)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, p.returncode, p.stderr[-1500:]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    ap.add_argument("--workers", default="1,2", help="Ray actor counts to measure")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        photos = photos[: args.limit]
    exe = [sys.executable, "-c", "from privacy_cli.cli.app import main; main()"]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "in")
        src.mkdir()
        for p in photos:
            shutil.copy(p, src / p.name)
        configs = [("local", [])] + [
            (f"ray, {w} worker(s)", ["--engine", "ray", "--workers", w, "--batch-size", str(args.batch_size)])
            for w in args.workers.split(",")
        ]
        rows, reference = [], None
        for name, extra in configs:
            out = Path(d, name.replace(" ", "_").replace(",", ""))
            dt, code, err = run(
                [*exe, "blur", str(src), "-o", str(out), "--detect", "faces", "--quiet", *extra]
            )
            got = outputs(out)
            if code != 0 or len(got) != len(photos):
                sys.exit(f"{name}: exit {code}, {len(got)}/{len(photos)} outputs\n{err}")
            reference = reference or got
            same = got == reference
            rows.append((name, dt, len(photos) / dt, same))
    local = rows[0][1]
    print(
        f"{len(photos)} photos from {args.folder}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '(local cluster per run)')}\n"
    )
    print("| engine | wall s | photos/s | time vs local | bytes equal to local |")
    print("|---|---:|---:|---:|---|")
    for name, dt, rate, same in rows:
        print(f"| {name} | {dt:.1f} | {rate:.2f} | {dt / local:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()

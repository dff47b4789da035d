"""Scaling of a folder job with `--workers` (issue 14, target 4): photos/s at 1, 2, 4, ... workers.

Each configuration is a fresh ``privpix blur DIR -o OUT --detect faces --quiet --workers N`` process
(faces-id by default), configurations alternating over ``--rounds``; the median wall time is kept.
CPU seconds (user + sys) come from the OS's accounting of the finished child
(``resource.getrusage(RUSAGE_CHILDREN)`` differences) and the peak RSS from the child's own
``ru_maxrss`` at exit, so no external timing tool is needed. The outputs of every configuration are compared byte for byte with those of ``--workers 1``.

    python benchmarks/bench_workers.py --workers 1 2           # this 2-core machine
    python benchmarks/bench_workers.py --workers 1 2 4 8 16    # a many-core machine
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "datasets" / "faces-id"
# the CLI, reporting its own peak RSS at exit (threads share the process, so this covers all workers)
CLI = (
    "import atexit, resource, sys; atexit.register(lambda: sys.stderr.write("
    "'\\nPEAK_RSS_KB=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
    "from privacy_cli.cli.app import main; main()"
)


def run(folder: Path, out: Path, workers: int, detect: str) -> dict[str, float]:
    """One fresh process over ``folder``: wall s, CPU s of the child, its peak RSS in MB."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-c", CLI, "blur", str(folder), "-o", str(out), "--detect", detect,
           "--quiet", "--workers", str(workers)]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd,
        env=dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        ),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1):
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss_kb = int(p.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_kb / 1024}


def same_outputs(a: Path, b: Path) -> bool:
    """Every file of ``a`` exists in ``b`` with the same bytes (and the same file names)."""
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--detect", default="faces")
    args = ap.parse_args()
    photos = [p for p in args.dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not photos:
        print(f"no photos in {args.dir}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="privpix-workers-"))
    runs: dict[int, list[dict[str, float]]] = {w: [] for w in args.workers}
    try:
        run(args.dir, tmp / "warm", 1, args.detect)  # bytecode and the ONNX graph cache exist afterwards
        for _ in range(args.rounds):
            for w in args.workers:
                runs[w].append(run(args.dir, tmp / f"w{w}", w, args.detect))
        base = statistics.median(r["wall_s"] for r in runs[args.workers[0]])
        for w in args.workers:
            wall = statistics.median(r["wall_s"] for r in runs[w])
            row = {
                "workers": w,
                "photos": len(photos),
                "wall_s": round(wall, 2),
                "photos_per_s": round(len(photos) / wall, 2),
                "speedup": round(base / wall, 2),
                "cpu_s": round(statistics.median(r["cpu_s"] for r in runs[w]), 1),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs[w]), 0),
                "same_bytes_as_first": same_outputs(tmp / f"w{args.workers[0]}", tmp / f"w{w}"),
                "cores": os.cpu_count(),
            }
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 14: memory over a long folder. Does ``privpix blur DIR`` grow per image?

Builds a folder of ``--count`` images (default 500) from the photos of ``--dir`` (faces-id by
default: 63 photos from 330 x 512 to 4352 x 2903, so sizes are mixed), hard-linked or copied
round-robin into a temporary folder (``--tmp``), runs one ``privpix blur FOLDER -o OUT --quiet``
process (``--detect faces`` unless ``--args`` says otherwise) and samples its resident set size (psutil, every ``--every`` seconds)
while counting the outputs written. Reported: peak RSS, RSS when 50, 250 and ``--count`` outputs
exist (the last sample before the count was reached), CPU seconds (user + sys) and wall time.

No per-image growth means RSS at image 250 and at the end are about the RSS at image 50: the
photos repeat every 63 images, so the same work repeats and a leak would add up.

    python benchmarks/bench_memory.py --count 500
    python benchmarks/bench_memory.py --count 500 --args "--detect faces,text"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "datasets" / "faces-id"
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp"}
CLI = "from privacy_cli.cli.app import main; main()"


def link_folder(src: Path, dst: Path, count: int) -> int:
    """Hard-link (else copy) the images of ``src`` round-robin into ``dst`` as ``0000-name`` ...
    (``count`` files). Not symlinks: privpix lists a file reached by two symlinks once."""
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not photos:
        raise SystemExit(f"{src}: no images")
    dst.mkdir(parents=True)
    for i in range(count):
        p = photos[i % len(photos)]
        target = dst / f"{i:04d}-{p.name}"
        try:
            os.link(p.resolve(), target)
        except OSError:
            shutil.copyfile(p, target)
    return len(photos)


def written(out: Path) -> int:
    """Outputs finished so far (temporary files of atomic writes start with a dot)."""
    try:
        return sum(1 for e in os.scandir(out) if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def tree_rss(proc: psutil.Process) -> int:
    """RSS (bytes) of ``proc`` and its children."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="photos to cycle through")
    ap.add_argument("--count", type=int, default=500, help="images in the folder")
    ap.add_argument("--args", default="--detect faces", help="extra privpix blur arguments")
    ap.add_argument("--tmp", type=Path, default=None, help="where to build the folder (default: system temp)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="privpix checkout to run (PYTHONPATH)")
    ap.add_argument("--every", type=float, default=0.2, help="RSS sampling period (s)")
    ap.add_argument("--marks", default="50,250", help="report RSS at these image counts (and --count)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="privpix-mem-", dir=args.tmp))
    marks = sorted({int(m) for m in args.marks.split(",") if m} | {args.count})
    try:
        distinct = link_folder(args.dir, tmp / "in", args.count)
        out = tmp / "out"
        cmd = [sys.executable, "-c", CLI, "blur", str(tmp / "in"), "-o", str(out), "--quiet"]
        cmd += shlex.split(args.args)
        env = dict(os.environ, PYTHONPATH=str(args.tree.resolve()))
        t0 = time.perf_counter()
        popen = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc = psutil.Process(popen.pid)
        peak, last, at = 0, 0, {}
        cpu = 0.0
        while popen.poll() is None:
            n = written(out)
            for m in marks:
                if m not in at and n >= m:
                    at[m] = last  # the last sample taken before image m was written
            try:
                rss = tree_rss(proc)
                t = proc.cpu_times()
                cpu = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                break
            peak, last = max(peak, rss), rss
            time.sleep(args.every)
        err = popen.communicate()[1]
        wall = time.perf_counter() - t0
        if popen.returncode != 0:
            raise SystemExit(f"privpix failed ({popen.returncode}):\n{err[-2000:]}")
        n = written(out)
        if n != args.count:
            raise SystemExit(f"privpix wrote {n} outputs for {args.count} images")
        for m in marks:
            at.setdefault(m, last)
        mb = 1024 * 1024
        print(
            json.dumps(
                {
                    "command": "privpix blur DIR -o OUT --quiet " + args.args,
                    "images": args.count,
                    "distinct_photos": distinct,
                    "written": n,
                    "peak_rss_mb": round(peak / mb),
                    "rss_mb_at": {str(m): round(at[m] / mb) for m in marks},
                    "cpu_s": round(cpu, 1),
                    "wall_s": round(wall, 1),
                    "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

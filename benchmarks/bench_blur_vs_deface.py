"""Benchmark: `privpix blur --detect faces` against deface (PyPI) over the same folder, in one run.

Reports images/s, peak memory (RSS of the whole process tree, sampled), and face coverage judged the
same way for both tools: reference faces come from an independent detector (dlib's HOG), a face counts
as covered when at least 90% of its central box changed visibly; plus the mean change outside the faces.

The tools run alternately (privpix, deface, privpix, deface, ... for ``--rounds`` rounds) so that
both see the same machine load; each tool's best round is reported, and the ratios the performance
issue asks for: privpix photos/s over deface's (target >= 3) and privpix peak RSS over deface's
(target <= 0.5).

Run:  python benchmarks/bench_blur_vs_deface.py [FOLDER] [--limit N] [--rounds R] [--privpix-args ARGS]
(default FOLDER: ../shared/datasets/faces-id). Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
PRIVPIX, DEFACE = "privpix blur", "deface (defaults)"
DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "faces-id"


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (seconds, peak RSS of its process tree in MB, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            p = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                    peak = max(peak, rss)
                except psutil.Error:
                    pass
                time.sleep(0.05)
        except psutil.Error:
            pass

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    stop.set()
    th.join()
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return dt, peak / 2**20, proc.returncode


def reference_faces(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    from privacy_cli.faceid import DlibFaceRecognizer

    return [tuple(int(v) for v in b) for b in DlibFaceRecognizer(upsample=1, max_side=1600).locate(img)]


def coverage(orig: np.ndarray, proc: np.ndarray, faces: list[tuple[int, int, int, int]]) -> tuple[int, float]:
    """(faces covered, mean abs grey change outside 1.5x face boxes).

    A face counts as covered when the detail in its central box (0.6 x the box) is gone: the mean
    absolute Laplacian there drops below 30% of the original's (blurring, pixelating, filling and
    inpainting all do that; re-encoding does not).
    """
    import cv2

    g0 = orig.astype(np.float32).mean(axis=2)
    g1 = proc.astype(np.float32).mean(axis=2)
    lap0, lap1 = np.abs(cv2.Laplacian(g0, cv2.CV_32F)), np.abs(cv2.Laplacian(g1, cv2.CV_32F))
    diff = np.abs(g0 - g1)
    covered = 0
    outside = np.ones(diff.shape, bool)
    h, w = diff.shape
    for x0, y0, x1, y1 in faces:
        cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        ix0, ix1 = int(max(0, cx - 0.3 * bw)), int(min(w, cx + 0.3 * bw))
        iy0, iy1 = int(max(0, cy - 0.3 * bh)), int(min(h, cy + 0.3 * bh))
        before = lap0[iy0:iy1, ix0:ix1].mean()
        if before > 0 and lap1[iy0:iy1, ix0:ix1].mean() < 0.3 * before:
            covered += 1
        ox0, ox1 = int(max(0, cx - 0.75 * bw)), int(min(w, cx + 0.75 * bw))
        oy0, oy1 = int(max(0, cy - 0.75 * bh)), int(min(h, cy + 0.75 * bh))
        outside[oy0:oy1, ox0:ox1] = False
    return covered, float(diff[outside].mean()) if outside.any() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per tool (best is kept)")
    ap.add_argument("--privpix-args", default="--detect faces", help="privpix blur arguments")
    ap.add_argument(
        "--cold",
        type=int,
        default=3,
        help="also time `privpix blur PHOTO` (default detectors) from a cold process this many times "
        "on the first photo (0: skip)",
    )
    args = ap.parse_args()
    from privacy_cli.io import load_image

    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        photos = photos[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="privpix-bench-"))
    src = work / "in"
    src.mkdir()
    for p in photos:
        shutil.copy(p, src / p.name)
    bindir = Path(sys.executable).parent
    tools = {
        PRIVPIX: [
            str(bindir / "privpix"),
            "blur",
            str(src),
            "-o",
            str(work / "privpix"),
            "--quiet",
            *shlex.split(args.privpix_args),
        ],
        # deface writes <stem>_anonymized<ext> next to each input
        DEFACE: [str(bindir / "deface"), *[str(p) for p in sorted(src.iterdir())]],
    }
    results: dict[str, dict] = {}
    for _ in range(max(1, args.rounds)):
        for name, cmd in tools.items():
            if name == PRIVPIX:  # each tool starts from no outputs of its own
                shutil.rmtree(work / "privpix", ignore_errors=True)
            else:
                for old in src.glob("*_anonymized*"):
                    old.unlink()
            dt, peak, code = run_measured(cmd)
            best = results.get(name)
            if best is None or dt < best["seconds"]:
                results[name] = {"seconds": dt, "peak_mb": peak, "code": code}
    refs = {p.name: (load_image(src / p.name).rgb) for p in photos}
    faces = {n: reference_faces(img) for n, img in refs.items()}
    n_faces = sum(len(f) for f in faces.values())
    outputs = {
        PRIVPIX: lambda p: work / "privpix" / p.name,
        DEFACE: lambda p: src / f"{p.stem}_anonymized{p.suffix}",
    }
    for name, out_of in outputs.items():
        cov = 0
        outside = []
        for p in photos:
            if not out_of(p).exists():
                continue
            proc = load_image(out_of(p)).rgb
            if proc.shape != refs[p.name].shape:
                continue
            c, o = coverage(refs[p.name], proc, faces[p.name])
            cov += c
            outside.append(o)
        results[name].update(covered=cov, outside=float(np.mean(outside)) if outside else float("nan"))
    cpu = platform.processor() or platform.machine()
    print(
        f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}; {len(photos)} photos from {args.folder.name}; "
        f"{n_faces} reference faces (dlib HOG).\n"
    )
    print(
        "| tool | s/photo | photos/s | peak RSS (MB) | faces covered | mean change outside faces (grey levels) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['seconds'] / len(photos):.3f} | {len(photos) / r['seconds']:.2f} | {r['peak_mb']:.0f} | "
            f"{r['covered']}/{n_faces} | {r['outside']:.2f} |"
        )
    pp, df = results[PRIVPIX], results[DEFACE]
    print(
        f"\nprivpix blur {args.privpix_args}: {df['seconds'] / pp['seconds']:.2f}x deface's photos/s "
        f"(target >= 3), peak RSS {pp['peak_mb'] / df['peak_mb']:.2f}x deface's (target <= 0.5); "
        f"best of {max(1, args.rounds)} alternating rounds."
    )
    if args.cold:
        cold = [
            run_measured(
                [
                    str(bindir / "privpix"),
                    "blur",
                    str(src / photos[0].name),
                    "-o",
                    str(work / f"cold{i}{photos[0].suffix}"),
                ]
            )
            for i in range(args.cold)
        ]
        walls = sorted(c[0] for c in cold)
        print(
            f"`privpix blur {photos[0].name}` (faces + text), cold process: median {walls[len(walls) // 2]:.2f} s "
            f"wall (min {walls[0]:.2f}, target <= 1.5), peak RSS {max(c[1] for c in cold):.0f} MB."
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

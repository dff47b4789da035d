"""Issue 14, targets 2 and 3: one photo from a cold process, and the default job over a folder.

Every measurement is a fresh ``privpix blur`` process under GNU time (``/usr/bin/time -v``): wall
seconds, CPU seconds (user + sys: the trustworthy figure on a shared machine) and peak RSS.

* ``cold``: ``privpix blur PHOTO`` (faces + personal text, the README's main job) and, for the split,
  ``--detect faces`` and ``--detect text``; ``--repeat`` runs of each, alternating.
* ``folder``: ``privpix blur DIR --quiet`` (faces + text) and ``--detect faces`` over ``--limit``
  photos of a folder (faces-id by default), alternating; seconds per photo include the process start.

One warm-up run comes first, so Python's bytecode and privpix's ONNX graph cache exist (as after any
first use); ``--tree LABEL=PATH`` (repeatable) runs each configuration from other checkouts too
(``PYTHONPATH=PATH``), alternating with this one, for before/after ratios in one sitting.

    python benchmarks/bench_cold_start.py cold --photo examples/astronaut.jpg --repeat 3
    python benchmarks/bench_cold_start.py folder --limit 16 --repeat 1
    python benchmarks/bench_cold_start.py cold --tree before=/tmp/privpix-main --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "datasets" / "faces-id"
CLI = "from privacy_cli.cli.app import main; main()"
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".tif", ".tiff", ".bmp"}


def timed(args: list[str], tree: Path) -> dict[str, float]:
    """Run ``privpix ARGS`` from checkout ``tree`` under ``/usr/bin/time -v`` -> wall s, cpu s, rss MB."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", CLI, *args]
    p = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(args)}\n{p.stderr[-2000:]}")

    def field(name: str) -> str:
        m = re.search(rf"{re.escape(name)}: (.+)", p.stderr)
        if m is None:
            raise SystemExit(f"/usr/bin/time printed no {name!r}")
        return m.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return {"wall_s": wall, "cpu_s": cpu, "rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def summary(runs: list[dict[str, float]], per: int = 1) -> dict[str, float]:
    """Medians (and the minimum wall time) of ``runs``, divided by ``per`` photos."""
    return {
        "wall_s": round(statistics.median(r["wall_s"] for r in runs) / per, 3),
        "wall_min_s": round(min(r["wall_s"] for r in runs) / per, 3),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs) / per, 3),
        "peak_rss_mb": round(max(r["rss_mb"] for r in runs)),
        "runs": len(runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("cold", "folder"))
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "astronaut.jpg")
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder for the folder mode")
    ap.add_argument("--limit", type=int, default=0, help="first N photos of --dir (0 = all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tree", action="append", default=[], help="LABEL=PATH of another checkout")
    ap.add_argument("--configs", default="default,faces,text", help="cold mode: default, faces, text")
    args = ap.parse_args()

    trees = [("this", ROOT)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    flags = {"default": [], "faces": ["--detect", "faces"], "text": ["--detect", "text"]}
    tmp = Path(tempfile.mkdtemp(prefix="privpix-cold-"))
    out: dict[str, object] = {"mode": args.mode, "load_before": load(), "cpus": os.cpu_count()}
    try:
        if args.mode == "cold":
            photo = args.photo.resolve()
            configs = [c for c in args.configs.split(",") if c]
            jobs = [(t, c) for t in trees for c in configs]
            for _label, tree in trees:  # warm-up: bytecode and ONNX graph caches
                timed(["blur", str(photo), "-o", str(tmp / "w.jpg"), "--overwrite"], tree)
            runs: dict[str, list[dict[str, float]]] = {f"{t[0]} {c}": [] for t, c in jobs}
            for _ in range(args.repeat):
                for (label, tree), c in jobs:
                    dst = tmp / f"{label}-{c}.jpg"
                    runs[f"{label} {c}"].append(
                        timed(["blur", str(photo), "-o", str(dst), "--overwrite", *flags[c]], tree)
                    )
            out["photo"] = str(photo)
            out["results"] = {k: summary(v) for k, v in runs.items()}
        else:
            photos = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if args.limit:
                photos = photos[: args.limit]
            src = tmp / "in"
            src.mkdir()
            for p in photos:
                shutil.copy2(p, src / p.name)
            runs = {f"{label} {c}": [] for label, _ in trees for c in ("default", "faces")}
            for i in range(args.repeat):
                for label, tree in trees:
                    for c in ("default", "faces"):
                        dst = tmp / f"out-{label}-{c}-{i}"
                        runs[f"{label} {c}"].append(
                            timed(["blur", str(src), "-o", str(dst), "--quiet", *flags[c]], tree)
                        )
                        shutil.rmtree(dst, ignore_errors=True)
            out["photos"] = len(photos)
            out["results"] = {k: summary(v, len(photos)) for k, v in runs.items()}
            out["unit"] = "per photo (process start included)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_after"] = load()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

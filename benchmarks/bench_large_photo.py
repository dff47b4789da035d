"""Benchmark: peak memory and time of one image command on a 100-megapixel photo.

Makes a 10000 x 10000 JPEG (scikit-image's astronaut, upscaled, so it compresses like a photo), then
runs ``privpix <command> big.jpg --boxes boxes.json --max-pixels 150000000`` (given boxes: this measures
the batch machinery - decode, mask, method, encode - not a detector) under ``/usr/bin/time -v`` and
reports wall time and the maximum resident set size, for each command. The raw image alone is
10000 x 10000 x 3 bytes = 300 MB.

Run:  python benchmarks/bench_large_photo.py [--side 10000] [--commands blur,pixelate,mask]
Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_photo(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    Image.fromarray(np.ascontiguousarray(data.astronaut())).resize((side, side), Image.BICUBIC).save(
        path, quality=90
    )


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of ``cmd`` under /usr/bin/time -v."""
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    assert wall and rss, p.stderr[-2000:]
    h, m, s = wall.groups()
    seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    if p.returncode:
        print(p.stderr[-2000:], file=sys.stderr)
    return seconds, int(rss.group(1)) / 1024, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=10000)
    ap.add_argument("--commands", default="blur,pixelate,mask")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        make_photo(big, args.side)
        s = args.side
        boxes = Path(tmp) / "boxes.json"
        # five face-sized regions (8% of the side) spread over the picture
        boxes.write_text(
            json.dumps(
                [[x * s // 6, x * s // 6, x * s // 6 + s // 12, x * s // 6 + s // 12] for x in range(1, 6)]
            )
        )
        env_py = [
            sys.executable,
            "-c",
            "import sys; from privacy_cli.cli.app import main; sys.argv[0]='privpix'; main()",
        ]
        os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
        print(
            f"{s} x {s} JPEG ({s * s / 1e6:.0f} MP, {big.stat().st_size / 1e6:.1f} MB on disk); "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
        )
        print("| command | wall s | peak RSS MB | exit |")
        print("|---|---|---|---|")
        base = run([*env_py, "--version"])
        print(
            f"| `privpix --version` (interpreter + CLI baseline) | {base[0]:.1f} | {base[1]:.0f} | {base[2]} |"
        )
        for c in args.commands.split(","):
            cmd = [
                *env_py,
                c,
                str(big),
                "--boxes",
                str(boxes),
                "--max-pixels",
                "150000000",
                "-q",
                "--overwrite",
            ]
            w, rss, rc = run(cmd)
            print(f"| `privpix {c} big.jpg --boxes ...` | {w:.1f} | {rss:.0f} | {rc} |")


if __name__ == "__main__":
    main()

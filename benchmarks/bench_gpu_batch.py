"""Benchmark: model forwards batched across images (issues 14, 15), photos/s by batch size and precision.

For three neural methods, through the real per-image code path of the image commands (the
``Stages`` of ``privpix stylize | deidentify | erase``: ``Stages.compute_many`` on groups of
``--batch`` photos, i.e. regions -> method -> paste-back, with every image's forward passes grouped
by :mod:`privacy_cli.engines.batching`):

* ``stylize``: a GAN style (``--style``, default paprika: AnimeGANv2) over 512-px tiles;
* ``deidentify``: the Private-Encoder backend (pSp GradualStyleEncoder on IR-SE50 + StyleGAN2 decoder of
  ``--pe-size``, 1024 = the published size) on the face of each photo;
* ``erase``: big-lama (Fourier convolutions, float32 only) on a context crop around the face.

All weights are RANDOM, saved in the published checkpoint layouts into a temporary folder (nothing is
downloaded): compute does not depend on the weight values, so seconds and memory are the real models'
(the images are meaningless). Photos: ``--photos`` variants (crop offset, mirror, brightness) of
``examples/astronaut.jpg`` at ``--side`` pixels (all the same size, as a camera's photos are), or the
photos of ``--folder``. Regions are given as boxes (``--boxes``), found once with dlib's HOG detector,
so no detector model runs; deidentify gets its faces' 68 landmarks from a fixed template placed in
the box (no ``shape_predictor_68_face_landmarks.dat`` needed) through its donor-pool cache.

Measured per (method, precision, batch size): photos/s of the compute stage (decoding and encoding
are unchanged CPU stages and excluded; models are loaded and every photo computed once untimed
first), CPU seconds, forward
calls and samples per call, the largest difference of the output pixels (uint8) to batch size 1 at
the same precision and to float32 at the same batch size, and peak memory
(``torch.cuda.max_memory_allocated`` on CUDA, per measurement; on CPU the process's peak RSS so far,
which only grows). Precision ``half`` = float16 autocast (``PRIVPIX_HALF``) on CUDA for the models that
allow it (stylize: not CartoonGAN; deidentify); CPU is float32 only. Forwards are grouped across
images on CUDA; on CPU grouping is forced here (``PRIVPIX_CROSS_BATCH=1``) to measure it.

Run:  python benchmarks/bench_gpu_batch.py                              (CPU: small sizes)
      python benchmarks/bench_gpu_batch.py --device cuda                (GPU: batch 1, 8, 32; fp32 + half)
One JSON line per measurement on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_deidentify import offline_weights_env  # noqa: E402 - benchmarks/ is on sys.path

METHODS = ("stylize", "deidentify", "erase")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_weights(wdir: Path, methods: list[str], style: str, pe_size: int) -> None:
    """Seeded random checkpoints in the published layouts: the GAN style's generator, a Private-Encoder
    ``private-encoder/privacy_0.pt`` (pSp ``{"state_dict", "latent_avg", "opts"}``), big-lama's
    Lightning checkpoint (``{"state_dict": {"generator.*"}}``)."""
    import torch

    from privacy_cli.methods import deidentify as d
    from privacy_cli.methods.stylize import get_style
    from privacy_cli.models import build_model
    from privacy_cli.models.psp import PSPPipeline
    from privacy_cli.weights import get_weights

    torch.manual_seed(0)
    wdir.mkdir(parents=True, exist_ok=True)
    if "stylize" in methods:
        model = get_style(style).model
        assert model is not None, f"{style} is not a GAN style"
        torch.save(
            build_model(model, pretrained=False).state_dict(), wdir / get_weights(model).local_filename
        )
    if "deidentify" in methods:
        (wdir / d.PE_FOLDER).mkdir(exist_ok=True)
        pe = PSPPipeline("GradualStyleEncoder", pe_size)
        with torch.no_grad():
            lat = pe.decoder.mean_latent(4096).repeat(pe.decoder.n_latent, 1)
        ckpt = {"state_dict": pe.state_dict(), "latent_avg": lat, "opts": {"target_id": 0.0}}
        torch.save(ckpt, wdir / d.PE_FOLDER / d.pe_checkpoint_name(0.0))
        del pe, ckpt
    if "erase" in methods:
        gen = build_model("big-lama", pretrained=False)
        sd = {"generator." + k: v for k, v in gen.state_dict().items()}
        torch.save({"state_dict": sd, "pytorch-lightning_version": "1.2.9"}, wdir / "big-lama-ckpt.ckpt")


def template_landmarks(box: tuple[float, float, float, float]) -> np.ndarray:
    """68 landmarks (68, 2) float32 of a frontal face filling ``box`` (x0, y0, x1, y1): dlib's point
    order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) on a fixed template."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.5 - 0.46 * np.cos(t), 0.38 + 0.58 * np.sin(t)], 1)
    brows = np.stack([np.r_[np.linspace(0.14, 0.44, 5), np.linspace(0.56, 0.86, 5)], np.full(10, 0.30)], 1)
    nose = np.r_[np.stack([np.full(4, 0.5), np.linspace(0.38, 0.58, 4)], 1), [[0.42, 0.63], [0.46, 0.64]],
                 [[0.5, 0.65], [0.54, 0.64], [0.58, 0.63]]]  # fmt: skip
    a = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.stack([-np.cos(a) * 0.08, -np.sin(a) * 0.03], 1)
    eyes = np.r_[eye + [0.31, 0.40], eye + [0.69, 0.40]]
    b = np.linspace(0, 2 * np.pi, 13)[:-1]
    outer = np.stack([0.5 - 0.16 * np.cos(b), 0.79 - 0.06 * np.sin(b)], 1)
    c = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.stack([0.5 - 0.10 * np.cos(c), 0.79 - 0.025 * np.sin(c)], 1)
    unit = np.r_[jaw, brows, nose, eyes, outer, inner]
    x0, y0, x1, y1 = box
    return (unit * [x1 - x0, y1 - y0] + [x0, y0]).astype(np.float32)


def make_photos(folder: Path, n: int, side: int, source: Path | None) -> tuple[list[Path], dict]:
    """``n`` photos in ``folder`` (PNG) and their face boxes ``{name: [[x0, y0, x1, y1]]}``: variants of
    ``examples/astronaut.jpg`` (``side`` x ``side``: crop offset, mirror, brightness) or, with
    ``source``, the photos found there (scaled to ``side``), the boxes from dlib's HOG detector."""
    from PIL import Image

    from privacy_cli.faceid import default_recognizer
    from privacy_cli.io import iter_images

    folder.mkdir(parents=True, exist_ok=True)
    rec = default_recognizer()
    photos, boxes = [], {}
    if source is not None:
        srcs = sorted(iter_images([source]))
        images = []
        for p in srcs:
            im = Image.open(p).convert("RGB")
            im.thumbnail((side, side))
            images.append(np.asarray(im))
            if len(images) == n:
                break
    else:
        base = np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB"))
        big = np.asarray(Image.fromarray(base).resize((side * 5 // 4, side * 5 // 4), Image.BICUBIC))
        rng = np.random.default_rng(0)
        images = []
        for i in range(n):
            oy, ox = (int(v) for v in rng.integers(0, big.shape[0] - side + 1, 2))
            img = big[oy : oy + side, ox : ox + side]
            img = img[:, ::-1] if i % 2 else img
            gain = 0.8 + 0.4 * rng.random()
            images.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    for i, img in enumerate(images):
        found = rec.locate(img)
        if not found:
            continue
        name = f"p{i:03d}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(folder / name)
        photos.append(folder / name)
        boxes[name] = [{"box": [round(float(v), 1) for v in found[0]], "kind": "face"}]
    if not photos:
        raise SystemExit("no face found by dlib's HOG detector in the photos")
    return photos, boxes


def donor_pool(photos: list[Path]) -> object:
    """A deidentify donor pool whose per-image cache holds each photo's face (template landmarks in
    its box, FFHQ-aligned), so the method skips landmark detection (no 68-point model needed)."""
    from privacy_cli.align import align_face
    from privacy_cli.faceid import default_recognizer
    from privacy_cli.io import load_image
    from privacy_cli.methods import deidentify as d

    pool = d.DonorPool()
    rec = default_recognizer()
    for p in photos:
        rgb = load_image(p).rgb
        box = rec.locate(rgb)[0]
        al = align_face(rgb, template_landmarks(box), d.KSAME_SIZE)
        region = tuple(int(v) for v in box)
        face = d.FaceInfo(region, box, al, np.zeros(128), d.appearance_vector(al))
        pool._by_image[d.image_key(rgb)] = ([face], [])
    return pool


def method_stages(
    method: str, photos: list[Path], boxes_path: Path, out: Path, args: argparse.Namespace
) -> tuple:
    """The image command's Stages and jobs for ``method`` (regions from the boxes file)."""
    from privacy_cli import engines
    from privacy_cli.cli.image_cmds import method_fn
    from privacy_cli.cli.options import CommonArgs
    from privacy_cli.pipeline import RegionSpec

    whole = method == "stylize"
    spec = RegionSpec(boxes=None if whole else boxes_path, whole=whole, device=args.device)
    common = CommonArgs(
        inputs=[str(p) for p in photos],
        output=out,
        overwrite=True,
        json=True,
        quiet=True,
        device=args.device,
        workers=1,
        quality=95,
        keep_metadata=False,
        max_pixels=200_000_000,
        spec=spec,
    )
    kwargs: dict = {
        "stylize": {"style": args.style, "device": args.device},
        "erase": {"model": "big-lama", "device": args.device},
        "deidentify": {
            "model": "private-encoder",
            "beta": 0.0,
            "device": args.device,
            "judge": False,
            "donors": donor_pool(photos) if method == "deidentify" else None,
        },
    }[method]
    fn = method_fn(method, common, kwargs)
    jobs = engines.plan(common.inputs, method, out)
    return fn.stages, jobs


def measure(stages, jobs, decoded, batch: int, cuda: bool) -> dict:  # noqa: ANN001
    """Compute every photo in groups of ``batch``; outputs, seconds, CPU s, forwards, peak memory."""
    import torch

    from privacy_cli.engines import batching

    calls: list[int] = []
    real = batching.run_chunked

    def counted(fn, args, limit):  # noqa: ANN001, ANN202
        calls.append(int(args[0].shape[0]))
        return real(fn, args, limit)

    batching.run_chunked = counted
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    outs = []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for i in range(0, len(jobs), batch):
            values = stages.compute_many(jobs[i : i + batch], decoded[i : i + batch])
            for v in values:
                if not hasattr(v, "outs"):
                    raise SystemExit(f"an image failed: {v}")
                outs.append(v.outs[0][0])
        if cuda:
            torch.cuda.synchronize()
    finally:
        batching.run_chunked = real
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = (
        {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        if cuda
        else {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    )
    return {
        "outs": outs,
        "seconds": round(wall, 3),
        "photos_per_s": round(len(jobs) / wall, 3),
        "cpu_s": round(cpu, 2),
        "forwards": len(calls),
        "samples_per_forward": round(sum(calls) / max(1, len(calls)), 2),
        **mem,
    }


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, float]:
    d = [np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(a, b, strict=True)]
    return int(max(x.max() for x in d)), float(np.mean([(x > 0).mean() for x in d]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    ap.add_argument("--batches", default=None, help="batch sizes (default 1,8 on CPU; 1,8,32 on CUDA)")
    ap.add_argument(
        "--photos", type=int, default=None, help="photos per measurement (default 8 CPU, 64 CUDA)"
    )
    ap.add_argument(
        "--side", type=int, default=None, help="photo side in pixels (default 256 CPU, 1024 CUDA)"
    )
    ap.add_argument("--style", default="paprika", help="GAN style for stylize")
    ap.add_argument(
        "--pe-size", type=int, default=None, help="StyleGAN2 resolution (default 64 CPU, 1024 CUDA)"
    )
    ap.add_argument(
        "--folder", type=Path, default=None, help="photos from here instead of astronaut variants"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    batches = [int(b) for b in (args.batches or ("1,8,32" if cuda else "1,8")).split(",")]
    n = args.photos or (64 if cuda else 8)
    side = args.side or (1024 if cuda else 256)
    pe_size = args.pe_size or (1024 if cuda else 64)
    methods = [m for m in args.methods.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="privpix-bench-batch-"))
    offline_weights_env(tmp / "weights")
    os.environ["PRIVPIX_CROSS_BATCH"] = "1"  # group forwards on CPU too (CUDA groups by default)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    make_weights(tmp / "weights", methods, args.style, pe_size)
    photos, boxes = make_photos(tmp / "photos", n, side, args.folder)
    boxes_path = tmp / "boxes.json"
    boxes_path.write_text(json.dumps(boxes))
    from privacy_cli.io import load_image

    decoded = [load_image(p) for p in photos]
    machine = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu x{os.cpu_count()}",
        "torch_threads": torch.get_num_threads(),
        "photos": len(photos),
        "side": side,
    }
    _log(f"{len(photos)} photos of {side} px; weights in {tmp / 'weights'} (random: outputs meaningless)")
    for method in methods:
        precisions = ["fp32"] + (
            ["half"] if cuda and not (method == "stylize" and args.style == "hayao") else []
        )
        if method == "erase":
            precisions = ["fp32"]  # LaMa's FFT layers run in float32 only
        stages, jobs = method_stages(method, photos, boxes_path, tmp / "out", args)
        ref32: dict[int, list[np.ndarray]] = {}
        for prec in precisions:
            os.environ["PRIVPIX_HALF"] = "fp16" if prec == "half" else "0"
            # load, and warm up on every photo once: the first forward of each input shape is slow
            # (oneDNN / cuDNN / FFT plans), which would otherwise count against whichever batch runs first
            measure(stages, jobs, decoded, 1, cuda)
            base: list[np.ndarray] | None = None
            for b in batches:
                _log(f"{method} {prec} batch {b} ...")
                r = measure(stages, jobs, decoded, b, cuda)
                outs = r.pop("outs")
                if b == 1:
                    base = outs
                row = {
                    "method": method,
                    "model": {"stylize": args.style, "erase": "big-lama"}.get(
                        method, f"private-encoder-{pe_size}"
                    ),
                    "precision": prec,
                    "batch": b,
                    **r,
                    **machine,
                    "load_avg": round(os.getloadavg()[0], 2),
                }
                if base is not None:
                    row["max_abs_diff_vs_batch1"], row["frac_pixels_diff_vs_batch1"] = _diff(outs, base)
                if prec == "fp32":
                    ref32[b] = outs
                elif b in ref32:
                    row["max_abs_diff_vs_fp32"], row["frac_pixels_diff_vs_fp32"] = _diff(outs, ref32[b])
                print(json.dumps(row), flush=True)
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

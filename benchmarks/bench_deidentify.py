"""Benchmark: seconds per face and peak memory of `privpix deidentify` backends on CPU (GPU when present).

Stages timed separately (in-process, 1 torch thread unless --threads):

* ``donors``: landmarks + alignment + dlib descriptor per face (done once per run for ksame);
* ``ksame``: per face, donor choice + piecewise-affine average + paste-back (the backend itself);
* ``judge``: dlib descriptor of the output face (the identity similarity recorded in --json);
* ``latent`` / ``private-encoder``: only when their weights are present (``privpix weights``), or,
  with ``--random-weights DIR``, timing only: full-size architectures (e4e / pSp GradualStyleEncoder on
  IR-SE50, StyleGAN2 1024 decoder, ArcFace IR-SE50, LPIPS-alex) with RANDOM weights, saved in the
  published checkpoint layouts into DIR and run through the real backend code. Compute does not depend
  on weight values, so the seconds and memory are those of the real models; the images are meaningless.

Detection (MTCNN) is excluded: it is the same for every image command (docs/performance.md, blur).
Wall and CPU seconds are both reported: on a shared machine CPU time (``time.process_time``, one
thread) is what an idle core would take. Peak memory is the process's maximum RSS (``resource.getrusage``), as ``/usr/bin/time -v`` reports it.

Run:  uv run python benchmarks/bench_deidentify.py [FOLDER] [--limit N]
      uv run python benchmarks/bench_deidentify.py --random-weights /tmp/rw --backend latent --steps 3
(default FOLDER: ../shared/datasets/faces-id). Prints a Markdown table for docs/performance.md.
Run one ``--backend`` per process so that the peak RSS printed is that backend's.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "faces-id"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--limit", type=int, default=30, help="photos used (donor pool and timing)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument(
        "--steps",
        type=int,
        default=20,
        help="latent optimisation steps (with --random-weights: steps timed, then extrapolated; 2-5 on CPU)",
    )
    ap.add_argument(
        "--random-weights",
        type=Path,
        metavar="DIR",
        help="timing only: build full-size random-weight checkpoints in DIR (published layouts) and time "
        "the learned backends with them (outputs are meaningless)",
    )
    ap.add_argument(
        "--backend",
        choices=("latent", "private-encoder", "both"),
        default="both",
        help="with --random-weights: which learned backend to time (one per process for its peak RSS)",
    )
    ap.add_argument(
        "--default-steps", type=int, default=100, help="latent steps to extrapolate to (the CLI default)"
    )
    ap.add_argument("--make-random-weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_random_weights is not None:
        make_random_checkpoints(args.make_random_weights)
        return
    if args.random_weights is not None:
        random_weights_bench(args)
        return

    import torch

    torch.set_num_threads(args.threads)
    from privacy_cli.io import iter_images, load_image
    from privacy_cli.methods import deidentify as d
    from privacy_cli.pipeline import RegionSpec, collect_regions, regions_mask

    spec = RegionSpec(detect=("faces",))
    photos = []
    for p in sorted(iter_images([args.folder]))[: args.limit]:
        loaded = load_image(p)
        photos.append((loaded.rgb, regions_mask(collect_regions(loaded, spec), spec)))
    pool = d.DonorPool()
    t0, c0 = time.perf_counter(), time.process_time()
    for img, mask in photos:
        pool.add_image(img, mask)
    nf = max(1, len(pool))
    rows = [
        (
            "donors (landmarks + alignment + dlib descriptor)",
            (time.perf_counter() - t0) / nf,
            (time.process_time() - c0) / nf,
            len(pool),
        )
    ]
    from privacy_cli.faceid import default_recognizer

    w_ksame = c_ksame = w_judge = c_judge = 0.0
    n = 0
    for img, mask in photos:
        faces, _ = pool.lookup(img)
        if not faces:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        out, _info = d.deidentify(img, mask, model="ksame", k=args.k, donors=pool, judge=False)
        w_ksame += time.perf_counter() - t0
        c_ksame += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        for f in faces:
            default_recognizer().embed(out, f.box)
        w_judge += time.perf_counter() - t0
        c_judge += time.process_time() - c0
        n += len(faces)
    rows.append((f"ksame backend + paste-back (k={args.k})", w_ksame / n, c_ksame / n, n))
    rows.append(("judge (dlib descriptor of the output)", w_judge / n, c_judge / n, n))

    for model in ("latent", "private-encoder"):
        avail = not d.missing_latent_weights() if model == "latent" else d.private_encoder_checkpoint(0.0)
        if not avail:
            rows.append((f"{model} (weights absent: not measured)", float("nan"), float("nan"), 0))
            continue
        img, mask = photos[0]
        t0 = time.perf_counter()
        d.deidentify(img, mask, model=model, beta=0.0, steps=args.steps, device="auto", judge=False)
        rows.append(
            (f"{model} ({args.steps} steps)" if model == "latent" else model, time.perf_counter() - t0, 1)
        )

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"cuda {torch.cuda.is_available()}; {len(photos)} photos of {args.folder.name}"
    )
    print()
    print(f"Load average at the end: {os.getloadavg()[0]:.1f} (CPU s is what one idle core would take)")
    print()
    print("| stage | wall s / face | CPU s / face | faces |")
    print("|---|---|---|---|")
    for name, w, c, k in rows:
        print(f"| {name} | {w:.3f} | {c:.3f} | {k} |" if np.isfinite(w) else f"| {name} | - | - | - |")
    print(f"\nPeak RSS of the process: {peak_mb:.0f} MB")


# ----------------------------------------------------------------------------------------------------------
# --random-weights: timing of the learned backends without their published weights

RANDOM_LABEL = "timing only, random weights: outputs are meaningless"
PE_BETA = 0.0  # beta of the random Private-Encoder checkpoint (privacy_0.pt)


def offline_weights_env(wdir: Path) -> None:
    """Point privpix at ``wdir`` only (offline, no HF cache); call before importing privacy_cli (also used by
    bench_gpu_batch.py)."""
    os.environ["PRIVPIX_WEIGHTS_DIR"] = str(wdir)
    os.environ["HF_HUB_CACHE"] = str(wdir / "hf")
    os.environ["PRIVPIX_OFFLINE"] = "1"
    for var in ("HF_HUB_OFFLINE", "PRIVPIX_WEIGHTS_TOML", "HF_HOME"):
        os.environ.pop(var, None)


def make_random_checkpoints(wdir: Path) -> None:
    """Write randomly initialised full-size checkpoints into ``wdir`` in the published layouts:
    ``e4e-ffhq.pt`` (e4e_ffhq_encode.pt: ``{"state_dict": encoder.* + decoder.*, "latent_avg": (18, 512),
    "opts"}``, StyleGAN2 1024), ``private-encoder/privacy_0.pt`` (the same with pSp's GradualStyleEncoder
    and ``opts.target_id``) and ``arcface-ir-se50.pth`` (model_ir_se50.pth: a plain state_dict).
    Existing files are kept. Run in a child process so the timed process's RSS excludes it."""
    offline_weights_env(wdir)
    import torch

    from privacy_cli.methods import deidentify as d
    from privacy_cli.models.irse import arcface_ir_se50
    from privacy_cli.models.psp import PSPPipeline

    torch.manual_seed(0)
    wdir.mkdir(parents=True, exist_ok=True)
    (wdir / d.PE_FOLDER).mkdir(exist_ok=True)
    targets = {
        wdir / "e4e-ffhq.pt": ("Encoder4Editing", {}),
        wdir / d.PE_FOLDER / d.pe_checkpoint_name(PE_BETA): ("GradualStyleEncoder", {"target_id": PE_BETA}),
    }
    for path, (encoder_type, extra) in targets.items():
        if path.is_file():
            continue
        model = PSPPipeline(encoder_type, 1024)
        with torch.no_grad():
            lat = model.decoder.mean_latent(4096).repeat(model.decoder.n_latent, 1)
        ckpt = {
            "state_dict": model.state_dict(),
            "latent_avg": lat,
            "opts": {"encoder_type": encoder_type, **extra},
        }
        torch.save(ckpt, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MB, {encoder_type}, StyleGAN2 1024)")
        del model, ckpt
    arc = wdir / "arcface-ir-se50.pth"
    if not arc.is_file():
        torch.save(arcface_ir_se50().state_dict(), arc)
        print(f"wrote {arc} ({arc.stat().st_size / 2**20:.0f} MB)")


def _cpu_wall() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def random_weights_bench(args: argparse.Namespace) -> None:
    """Seconds per face and peak RSS of latent / private-encoder with random full-size weights."""
    wdir = args.random_weights.resolve()
    subprocess.run([sys.executable, __file__, "--make-random-weights", str(wdir)], check=True)
    offline_weights_env(wdir)
    import torch

    torch.set_num_threads(args.threads)
    import torchvision

    from privacy_cli.bench import features
    from privacy_cli.io import iter_images, load_image
    from privacy_cli.methods import deidentify as d
    from privacy_cli.pipeline import RegionSpec, collect_regions, regions_mask

    # LPIPS-alex with a random AlexNet trunk (the lpips package's own linear layers), as the tests do
    alex = torchvision.models.alexnet(weights=None).features.state_dict()
    lp = features.build_lpips("alex", backbone_state={f"features.{k}": v for k, v in alex.items()})
    features._LPIPS_CACHE[("alex", "cpu")] = lp

    spec = RegionSpec(detect=("faces",))
    photos = []
    for p in sorted(iter_images([args.folder]))[: args.limit]:
        loaded = load_image(p)
        photos.append((p.name, loaded.rgb, regions_mask(collect_regions(loaded, spec), spec)))
    rows: list[tuple[str, float, float, int]] = []

    def timed(fn, *a, **kw):  # noqa: ANN001, ANN202
        w0, c0 = _cpu_wall()
        out = fn(*a, **kw)
        w1, c1 = _cpu_wall()
        return out, w1 - w0, c1 - c0

    nfaces = 0
    w_al = c_al = 0.0
    for _name, img, mask in photos:
        (faces, _failed), w, c = timed(d.analyse_faces, img, mask)
        nfaces += len(faces)
        w_al, c_al = w_al + w, c_al + c
    rows.append(
        ("align: HOG + 68 landmarks + FFHQ alignment + dlib descriptor", w_al / nfaces, c_al / nfaces, nfaces)
    )

    backends = ("private-encoder", "latent") if args.backend == "both" else (args.backend,)
    for model in backends:
        if model == "private-encoder":
            path = d.private_encoder_checkpoint(PE_BETA)
            _, w, c = timed(d.load_psp, path, "GradualStyleEncoder")
            rows.append(("private-encoder: read checkpoint + build (once per run)", w, c, 0))
            w_t = c_t = 0.0
            n = 0
            for _name, img, mask in photos:
                (_out, info), w, c = timed(d.deidentify, img, mask, beta=PE_BETA, model=model, judge=False)
                n += sum(1 for f in info["faces"] if f.get("backend") == model)
                w_t, c_t = w_t + w, c_t + c
                print(f"{_name}: {model} {w:.1f} s wall, {c:.1f} CPU s", file=sys.stderr, flush=True)
            rows.append(
                (
                    "private-encoder: align + encoder + StyleGAN2 1024 decoder + paste-back",
                    w_t / n,
                    c_t / n,
                    n,
                )
            )
        else:
            _, w, c = timed(d.load_psp, d._resolved_path("e4e-ffhq"), "Encoder4Editing")
            _, w2, c2 = timed(d.identity_net, "cpu")
            rows.append(("latent: read e4e + ArcFace checkpoints + build (once per run)", w + w2, c + c2, 0))
            w0_t = c0_t = ws_t = cs_t = 0.0
            n = 0
            for _name, img, mask in photos:
                (_out, info), w0, c0 = timed(
                    d.deidentify, img, mask, beta=0.0, model=model, steps=0, judge=False
                )
                (_out, info), ws, cs = timed(
                    d.deidentify, img, mask, beta=0.0, model=model, steps=args.steps, judge=False
                )
                n += sum(1 for f in info["faces"] if f.get("backend") == model)
                w0_t, c0_t, ws_t, cs_t = w0_t + w0, c0_t + c0, ws_t + ws, cs_t + cs
                print(
                    f"{_name}: latent 0 steps {w0:.1f} s wall, {c0:.1f} CPU s; {args.steps} steps {ws:.1f} s wall, "
                    f"{cs:.1f} CPU s",
                    file=sys.stderr,
                    flush=True,
                )
            step_w, step_c = (ws_t - w0_t) / n / args.steps, (cs_t - c0_t) / n / args.steps
            rows.append(
                (
                    "latent, 0 steps: align + e4e inversion + decode + ArcFace + paste-back",
                    w0_t / n,
                    c0_t / n,
                    n,
                )
            )
            rows.append(
                (
                    f"latent: one optimisation step (from {args.steps}-step runs minus 0-step runs)",
                    step_w,
                    step_c,
                    n,
                )
            )
            rows.append(
                (
                    f"latent, {args.default_steps} steps (extrapolated: 0-step + {args.default_steps} x step)",
                    w0_t / n + args.default_steps * step_w,
                    c0_t / n + args.default_steps * step_c,
                    n,
                )
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"CPU; photos {', '.join(name for name, _, _ in photos)} of {args.folder.name}"
    )
    print()
    print(f"**{RANDOM_LABEL}.** Load average at the end: {os.getloadavg()[0]:.1f}")
    print()
    print("| stage | wall s / face | CPU s / face (all threads) | faces |")
    print("|---|---|---|---|")
    for name, w, c, k in rows:
        print(f"| {name} ({RANDOM_LABEL}) | {w:.2f} | {c:.2f} | {k} |")
    print(f"\nPeak RSS of the process: {peak_mb:.0f} MB (backend: {args.backend})")


if __name__ == "__main__":
    main()

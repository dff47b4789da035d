"""Images per second of `privpix train uap` (paper 002's UAP with DeepFool inner steps), and peak memory.

Runs the real trainer (:func:`privacy_cli.train.uap.train_uap`) for one epoch over faces-id photos
(or any folder of JPEGs) against ``places365-resnet50`` at paper 002's geometry (short side 256,
centre crop 224). The CSAIL weights cannot be downloaded here: with ``--random-weights`` the
benchmark writes a randomly initialised ResNet-50 (365 classes) in the published
``resnet50_places365.pth.tar`` layout (``state_dict`` with ``module.`` keys) into a temporary weights
directory, so the timed code path (weights read, DeepFool, checkpointing) is the real one; the
fooling rate reached then means nothing, only the seconds and bytes are real.

    python benchmarks/bench_uap.py --random-weights --device cuda --images 61
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


def write_random_places365(weights_dir: Path) -> None:
    """A random ResNet-50 (365 classes) saved as CSAIL's resnet50_places365.pth.tar is laid out."""
    import torch
    from torchvision.models import resnet50

    from privacy_cli.weights.registry import get_weights
    from privacy_cli.weights.resolve import weights_dir_path

    torch.manual_seed(0)
    net = resnet50(num_classes=365)
    ckpt = {"epoch": 90, "arch": "resnet50", "best_prec1": 0.0,
            "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}  # fmt: skip
    path = weights_dir_path(get_weights("places365-resnet50"), weights_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=FACES_ID)
    ap.add_argument("--images", type=int, default=61)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--xi", type=float, default=10.0)
    ap.add_argument(
        "--random-weights", action="store_true", help="time on a random ResNet-50 in the CSAIL layout"
    )
    args = ap.parse_args()

    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    if not paths:
        print(f"no photos under {args.folder}")
        return 1
    tmp = tempfile.TemporaryDirectory(prefix="privpix-uap-")
    if args.random_weights:
        os.environ["PRIVPIX_WEIGHTS_DIR"] = str(Path(tmp.name, "weights"))
        os.environ["HF_HUB_OFFLINE"] = "1"
        write_random_places365(Path(tmp.name, "weights"))

    import torch

    from privacy_cli.train.uap import train_uap

    t0 = time.perf_counter()
    # fooling rate 1.0 is never reached with a fresh perturbation: exactly one epoch is run
    res = train_uap(paths, "places365-resnet50", Path(tmp.name, "uap.safetensors"), xi=args.xi, fooling=1.0,
                    max_images=len(paths), max_epochs=1, device=args.device)  # fmt: skip
    wall = time.perf_counter() - t0
    row = {
        "target": "places365-resnet50" + (" (random weights)" if args.random_weights else ""),
        "device": args.device,
        "images": res.images,
        "epochs": res.epochs,
        "seconds": round(res.seconds, 2),
        "images_per_s": round(res.images_per_second, 2),
        "wall_incl_model_load_s": round(wall, 2),
        "fooling_rate": res.fooling_rate,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if torch.cuda.is_available():
        row["device"] = torch.cuda.get_device_name()
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(row), flush=True)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

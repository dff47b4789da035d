"""Issue 14, target 3: where the default job's CPU goes, and what other inference runtimes would buy.

* ``models``: the default detection (faces + text) over a folder, one image at a time and one
  onnxruntime thread per session, with the CPU time of every network call summed per model.
  Wall seconds on one pinned core are CPU seconds, so the table is the job's floor per photo for
  these models at these resolutions, whatever the parallelism.
* ``runtimes``: each detector graph privpix runs (the cached, fused graphs of the user cache) on
  onnxruntime, OpenCV's DNN module and, when the ``openvino`` package is importable, OpenVINO, one
  thread each, at shapes the default job feeds them; CPU seconds per call (best of ``--repeat``) and
  the largest output difference against onnxruntime.

    taskset -c 0 python benchmarks/bench_detector_cost.py models --limit 63
    python benchmarks/bench_detector_cost.py runtimes --repeat 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before anything starts a thread pool

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DIR = ROOT.parent / "shared" / "datasets" / "faces-id"
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp"}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def model_name(path: str) -> str:
    """``ppocr1-ch_PP-OCRv4_det_infer-<key>.onnx`` -> ``ppocr-det``; ``mtcnn-pnet-<key>.onnx`` -> ``mtcnn-pnet``."""
    stem = Path(path).stem
    for part, name in (("_det_", "ppocr-det"), ("_rec_", "ppocr-rec"), ("_cls_", "ppocr-cls")):
        if part in stem:
            return name
    return "-".join(stem.split("-")[:2]) if stem.startswith("mtcnn") else stem.split("-")[0]


def models(args: argparse.Namespace) -> dict:
    import onnxruntime as ort
    from PIL import Image

    from privacy_cli.detect import detect

    spent: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    run = ort.InferenceSession.run

    def timed_run(self, *a, **k):  # one thread per session: wall == CPU on a pinned core
        t = time.perf_counter()
        try:
            return run(self, *a, **k)
        finally:
            with lock:
                key = model_name(str(getattr(self, "_model_path", "?")))
                spent[key] += time.perf_counter() - t
                calls[key] += 1

    ort.InferenceSession.run = timed_run  # type: ignore[method-assign]
    files = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in IMAGE_EXT)
    files = files[: args.limit] if args.limit else files
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    for kinds in ("faces", "text"):  # models load outside the timed part
        detect(images[0], kinds)
    spent.clear()
    calls.clear()
    per_kind: dict[str, float] = {}
    for kinds in ("faces", "text"):
        c0 = cpu_seconds()
        for img in images:
            detect(img, kinds)
        per_kind[kinds] = (cpu_seconds() - c0) / len(images)
    n = len(images)
    return {
        "photos": n,
        "megapixels_mean": round(float(np.mean([i.shape[0] * i.shape[1] for i in images])) / 1e6, 2),
        "cpu_s_per_photo": {k: round(v, 3) for k, v in per_kind.items()},
        "network_s_per_photo": {k: round(v / n, 3) for k, v in spent.most_common()},
        "calls_per_photo": {k: round(calls[k] / n, 1) for k in spent},
    }


def runtimes(args: argparse.Namespace) -> dict:
    import glob

    import cv2
    import onnxruntime as ort

    from privacy_cli.detect import detect
    from privacy_cli.detect.ort import cache_dir

    rng = np.random.default_rng(0)
    detect(rng.integers(0, 255, (640, 800, 3), dtype=np.uint8), "faces,text")  # fills the graph cache
    cv2.setNumThreads(1)
    try:
        import openvino as ov

        core = ov.Core()
    except ImportError:
        core = None
    graphs = {
        "ppocr-det": ("ppocr*_det_*", [(1, 3, 992, 1504), (1, 3, 736, 992)]),
        "ppocr-rec": ("ppocr*_rec_*", [(6, 3, 48, 320)]),
        "centerface": ("centerface-dyn-*", [(1, 3, 608, 800)]),
        "mtcnn-pnet": ("mtcnn-pnet-*", [(1, 300, 400, 3), (1, 120, 160, 3)]),
    }
    rows = []
    for name, (pattern, shapes) in graphs.items():
        found = sorted(glob.glob(str(cache_dir() / f"{pattern}.onnx")), key=os.path.getmtime)
        if not found:
            continue
        path = found[-1]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        engines = {"onnxruntime": lambda x, sess=sess, name=inp.name: sess.run(None, {name: x})}
        try:
            net = cv2.dnn.readNetFromONNX(path)

            def run_cv(x, net=net):
                net.setInput(x)
                return net.forward(net.getUnconnectedOutLayersNames())

            engines["opencv-dnn"] = run_cv
        except cv2.error:
            pass
        if core is not None:
            compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": 1})
            req = compiled.create_infer_request()
            engines["openvino"] = lambda x, req=req: list(req.infer({0: x}).values())
        for shape in shapes:
            x = rng.random(shape, dtype=np.float32)
            if inp.type == "tensor(uint8)":
                x = (x * 255).astype(np.uint8)
            ref = None
            row: dict = {"model": name, "shape": list(shape)}
            for eng, fn in engines.items():
                try:
                    out = fn(x)
                except Exception as e:  # a runtime that cannot run this graph: say so
                    row[eng] = f"failed: {type(e).__name__}"
                    continue
                best = float("inf")
                for _ in range(args.repeat):
                    c0 = cpu_seconds()
                    out = fn(x)
                    best = min(best, cpu_seconds() - c0)
                row[eng] = round(best, 4)
                if ref is None:
                    ref = out
                else:
                    diff = max(
                        float(np.abs(np.asarray(a, np.float64) - np.asarray(b)).max())
                        for a, b in zip(ref, out, strict=True)
                    )
                    row[f"{eng}_max_diff"] = float(f"{diff:.2e}")
            rows.append(row)
    return {
        "openvino": None if core is None else ov.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("models", "runtimes"))
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--limit", type=int, default=0, help="first N photos (0 = all)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    result = models(args) if args.mode == "models" else runtimes(args)
    result.update(
        machine=platform.processor() or platform.machine(),
        cores=len(os.sched_getaffinity(0)),
        load=" ".join(f"{v:.2f}" for v in os.getloadavg()),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Would int8 weights make the PP-OCR text detector cheap enough for issue 14's target 3?

Quantises the detector privpix runs (PP-OCRv4 det from the rapidocr-onnxruntime wheel, hard-swish fused as
in ``privacy_cli/detect/ppocr.py``) with onnxruntime's static QDQ quantisation (uint8 activations, int8
weights, per tensor: the graph's opset has no per-channel DequantizeLinear), calibrated on the detector
inputs of the first ``--calib`` faces-id photos, then compares it with the float graph on ``--test`` other
photos: CPU seconds per detector run (one onnxruntime thread) and how far the text-probability maps move
(largest absolute difference, share of pixels on the same side of DB's 0.3 threshold).

Run:  python benchmarks/bench_text_int8.py [--calib 12] [--test 6] [--size 736x992]
Nothing is written outside a temporary folder; privpix itself is unchanged by this script.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from privacy_cli.detect.ppocr import DET_MODEL, _normalise, fuse_hardswish, models_dir

FACES_ID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "faces-id"


def _session(path: str) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=FACES_ID)
    ap.add_argument("--calib", type=int, default=12)
    ap.add_argument("--test", type=int, default=6)
    ap.add_argument("--size", default="736x992", help="detector input HxW (multiples of 32)")
    a = ap.parse_args()
    h, w = map(int, a.size.split("x"))
    files = sorted(str(p) for p in a.dataset.glob("*.jpg"))
    if len(files) < a.calib + a.test:
        raise SystemExit(f"{a.dataset}: need {a.calib + a.test} photos, found {len(files)}")

    def inp(f: str) -> np.ndarray:
        return _normalise(cv2.resize(cv2.imread(f), (w, h), interpolation=cv2.INTER_AREA))[None]

    with tempfile.TemporaryDirectory() as tmp:
        fp, pre, qp = (os.path.join(tmp, n) for n in ("det_f.onnx", "det_pre.onnx", "det_q.onnx"))
        Path(fp).write_bytes(fuse_hardswish((models_dir() / DET_MODEL).read_bytes()))
        name = _session(fp).get_inputs()[0].name
        calib = iter([inp(f) for f in files[: a.calib]])

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict | None:
                x = next(calib, None)
                return None if x is None else {name: x}

        quant_pre_process(fp, pre, skip_symbolic_shape=True)
        quantize_static(
            pre, qp, Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        test = [inp(f) for f in files[-a.test :]]
        maps, cpu = {}, {}
        for label, path in (("float32", fp), ("int8", qp)):
            s = _session(path)
            s.run(None, {name: test[0]})  # warm-up
            t = time.process_time()
            maps[label] = [s.run(None, {name: x})[0][0, 0] for x in test]
            cpu[label] = (time.process_time() - t) / len(test)
    diff = [float(np.abs(f - q).max()) for f, q in zip(maps["float32"], maps["int8"], strict=True)]
    agree = [
        float(((f > 0.3) == (q > 0.3)).mean()) for f, q in zip(maps["float32"], maps["int8"], strict=True)
    ]
    print(f"detector input {h}x{w}, {a.test} faces-id photos, one onnxruntime thread")
    print("| graph | CPU s per run | largest prob difference | pixels agreeing at 0.3 (min) |")
    print("|---|---|---|---|")
    print(f"| float32 (privpix) | {cpu['float32']:.3f} | - | - |")
    print(f"| int8 QDQ per tensor | {cpu['int8']:.3f} | {max(diff):.3f} | {min(agree):.4f} |")


if __name__ == "__main__":
    main()

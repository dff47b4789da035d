"""Learned adversarial task masks (paper 003) against the paper's baselines, in its Table I/II layout.

Task (offline, real identities): the faces-id photos (../shared/datasets/faces-id, 13 people) each
get a coloured badge (red or blue disc) at a random position; the task is the badge colour, the
private content is the person. Training uses the photos of 9 people (many badge variants per photo);
the table is measured on the other 4 people's photos, which no model saw.

* Utility: accuracy of a task classifier (Φ's architecture, trained on unmasked training images, in
  place of the paper's SlimCNN / FERAtt) on each method's output.
* Privacy: dlib face similarity (cosine of the 128-d dlib ResNet embeddings of the original face and
  of the same box in the output; the paper uses FaceNet cosine, measured too when its weights are
  present) and the share of outputs dlib still matches to the original (distance < 0.6).
* Privacy of the hidden remainder (the paper's own criterion): a fresh adversary
  (``privacy_cli.train.masker.fresh_adversary``, Φ's architecture trained from scratch) reads the
  badge colour from x_o = (m - m_topK) * x, stored as 8-bit images, of the training variants and is
  scored on the test variants' x_o (learned masks only; the baselines have no soft remainder).
* Methods: the original; centre block and centre Gaussian blur (the paper's baselines); the
  non-adversarial model, ours (shared Φ as obfuscator, the paper) and ours with a separate adversary
  (``--adversary separate``), applied through the methods registry as ``mask:learned=RUN_DIR,keep=K``
  (what ``privpix bench --methods`` runs).

Writes OUT/results.json, OUT/table.md and OUT/masks.png (a sheet of examples; not committed).

    PYTHONPATH=. python benchmarks/bench_learned_mask.py --out /tmp/lmask_bench

``--toy`` instead measures the obfuscator variants on the generated task of
tests/test_learned_mask_privacy.py (10 x 10 label patch in 16 x 16 images: fresh adversary on x_o,
soft mass outside the top K%) and of tests/test_learned_mask.py (4 x 4 patch: coverage, predictor).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "faces-id"
SIDE = 256  # full-resolution side of the test photos


def portrait(path: Path) -> np.ndarray:
    """Centre square crop, resized to SIDE x SIDE."""
    from privacy_cli.io import load_image

    rgb = load_image(path).rgb
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return cv2.resize(rgb[y0 : y0 + s, x0 : x0 + s], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def badge(img: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    r = int(SIDE * rng.uniform(0.06, 0.09))
    cx, cy = (int(v) for v in rng.integers(r, SIDE - r, 2))
    base = np.array((215, 45, 45) if label == 0 else (45, 45, 215)) + rng.integers(-20, 21, 3)
    cv2.circle(out, (cx, cy), r, tuple(int(v) for v in np.clip(base, 0, 255)), -1, lineType=cv2.LINE_AA)
    return out


def variants(photos: list[np.ndarray], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img in photos:
        for _ in range(n):
            lab = int(rng.integers(0, 2))
            v = badge(img[:, ::-1] if rng.random() < 0.5 else img, lab, rng)
            xs.append(v)
            ys.append(lab)
    return np.stack(xs), np.asarray(ys)


def small(x: np.ndarray, size: int) -> np.ndarray:
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in x])


def centre_block(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    q = SIDE // 4
    out[q : SIDE - q, q : SIDE - q] = 0
    return out


def centre_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    out = img.copy()
    q = SIDE // 4
    out[q : SIDE - q, q : SIDE - q] = cv2.GaussianBlur(img, (0, 0), sigma)[q : SIDE - q, q : SIDE - q]
    return out


def facenet_embedder():  # -> callable or None
    """FaceNet (facenet-vggface2) embeddings when its weights are present, else None."""
    try:
        import torch

        from privacy_cli.models import build_model
        from privacy_cli.models.zoo import facenet_standardize

        net = build_model("facenet-vggface2", pretrained=True)
    except Exception as e:  # weights absent offline
        print(f"FaceNet not measured: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return None

    def emb(img: np.ndarray, box) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        crop = cv2.resize(img[y0:y1, x0:x1], (160, 160), interpolation=cv2.INTER_AREA)
        t = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return net(facenet_standardize(t))[0].numpy()

    return emb


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def throughput(out: Path, images: int, size: int, device: str) -> None:
    """Training images/s with the CLI defaults (U-Net base 16, batch 64) on random images, and apply
    seconds per photo (12 MP and 2 MP) through the methods registry."""
    from privacy_cli.methods import get_method
    from privacy_cli.train.masker import MaskTrainConfig, Split, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images + 64, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, images + 64)
    cfg = MaskTrainConfig(
        out_dir=out / "throughput", size=size, epochs=1, device=device, quiet=True, resume=False
    )
    t0 = time.perf_counter()
    res = fit(cfg, Split(x[:images], y[:images]), Split(x[images:], y[images:]), ["a", "b"])
    print(
        f"train {size}x{size}, {images} images, batch 64 on {res.device}: {res.images_per_s:.1f} images/s "
        f"(epoch incl. validation + checkpoint: {time.perf_counter() - t0:.1f} s)"
    )
    fn = get_method("mask")
    for w, h in ((4000, 3000), (1600, 1200)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        fn(img, np.ones((h, w), np.float32), learned=str(out / "throughput"), device=device)  # load once
        t0 = time.perf_counter()
        for _ in range(3):
            fn(img, np.ones((h, w), np.float32), learned=str(out / "throughput"), device=device)
        print(f"apply (image model) {w}x{h}: {(time.perf_counter() - t0) / 3:.3f} s/photo")


TOY_VARIANTS: dict[str, dict] = {
    "non-adversarial": {"adversarial": False},
    "shared Φ, sigmoid, the paper's loss": {"gate": "sigmoid", "rest_weight": 0.0},
    "shared Φ, sigmoid + remainder term 1": {"gate": "sigmoid", "rest_weight": 1.0},
    "stretched gate + remainder term 1, no ramp": {"rest_ramp": 0.0, "rest_weight": 1.0},
    "stretched gate + remainder term 1, no margin": {"rest_margin": 0.0, "rest_weight": 1.0},
    "stretched gate + remainder term 1, ramp + margin": {"rest_weight": 1.0},
    "stretched gate + remainder term 3, ramp + margin (default)": {},
    "separate adversary (stretched gate, remainder term 1)": {"adversary": "separate", "rest_weight": 1.0},
}


def toy(out: Path, variants: list[str]) -> None:
    """Obfuscator variants on the generated tasks of the learned-mask tests (same data and settings)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_learned_mask import _config, make_task

    from privacy_cli.train.masker import Split, evaluate_run, fit, fresh_adversary, load_run, split_images

    out.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for patch, n, epochs in ((10, 384, 16), (4, 512, 16)):  # privacy test, utility test
        x, y, _ = make_task(n + 128, seed=1, patch=patch)
        xt, yt, bt = make_task(256 if patch == 10 else 200, seed=2, patch=patch)
        region = np.zeros(xt.shape[:3], bool)
        for k, (x0, y0, x1, y1) in enumerate(bt):
            region[k, y0:y1, x0:x1] = True
        tasks[patch] = (Split(x[:n], y[:n]), Split(x[n:], y[n:]), Split(xt, yt), region, epochs)
    rows = [
        "| variant | fresh adversary on x_o (patch 10) | mass outside top K | m hidden | non-zero x_o px | "
        "coverage (patch 4) | predictor (patch 4) | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for name in variants:
        kw = TOY_VARIANTS[name]
        r: dict = {}
        t0 = time.process_time()
        for patch, (train, val, test, region, epochs) in tasks.items():
            run = out / f"{name.replace(' ', '_')}_{patch}"
            cfg = _config(run, kw.get("adversarial", True), epochs=epochs, resume=False)
            for k, v in kw.items():
                setattr(cfg, k, v)
            fit(cfg, train, val, ["red", "blue"])
            m, top, xo = split_images(load_run(run), test.x)
            if patch == 10:
                half = len(test.y) // 2
                fr = fresh_adversary(
                    run, train, Split(test.x[:half], test.y[:half]), Split(test.x[half:], test.y[half:])
                )
                hid = region & ~top
                r.update(
                    fresh=fr["acc"],
                    chance=fr["chance"],
                    mass=float((m * ~top).sum((1, 2)).mean()),
                    m_hidden=float(m[hid].mean()),
                    xo_pixels=float((xo.max(-1) > 0).sum((1, 2)).mean()),  # non-zero pixels of 8-bit x_o
                )
            else:
                r.update(
                    coverage=float((top & region).sum() / region.sum()),
                    predictor=evaluate_run(run, test)["acc_p"],
                )
        r["cpu_s"] = time.process_time() - t0
        results[name] = r
        rows.append(
            f"| {name} | {r['fresh']:.0%} (chance {r['chance']:.0%}) | {r['mass']:.1f} | "
            f"{r['m_hidden']:.2f} | {r['xo_pixels']:.1f} | {r['coverage']:.0%} | {r['predictor']:.0%} | {r['cpu_s']:.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))
    (out / "toy.md").write_text("\n".join(rows) + "\n")
    (out / "toy.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=32, help="model resolution")
    ap.add_argument("--keep", type=float, default=25.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--variants", type=int, default=24, help="badge variants per training photo")
    ap.add_argument("--blur-sigma", type=float, default=8.0, help="centre blur sigma at 256 px (papers' 8)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--throughput", type=int, default=0, help="only time training on N images and applying")
    ap.add_argument(
        "--toy", nargs="*", metavar="VARIANT", help=f"generated-task variants: {list(TOY_VARIANTS)}"
    )
    a = ap.parse_args()
    if a.toy is not None:
        toy(a.out, a.toy or list(TOY_VARIANTS))
        return
    if a.throughput:
        a.out.mkdir(parents=True, exist_ok=True)
        throughput(a.out, a.throughput, a.size, a.device)
        return

    from privacy_cli.faceid import default_recognizer, distance
    from privacy_cli.methods import get_method
    from privacy_cli.train.masker import (
        MaskTrainConfig,
        Split,
        classifier_accuracy,
        fit,
        fit_classifier,
        fresh_adversary,
    )

    a.out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(open(FACES / "identities.csv")))
    people = sorted({r["identity"] for r in rows})
    test_people = set(people[-4:])
    rec = default_recognizer()
    train_photos, test_photos = [], []
    for r in rows:
        img = portrait(FACES / r["file"])
        (test_photos if r["identity"] in test_people else train_photos).append(img)
    xtr, ytr = variants(train_photos, a.variants, seed=0)
    nval = len(ytr) // 10
    perm = np.random.default_rng(1).permutation(len(ytr))
    va, tr = perm[:nval], perm[nval:]
    train = Split(small(xtr[tr], a.size), ytr[tr])
    val = Split(small(xtr[va], a.size), ytr[va])
    xte, yte = variants(test_photos, 3, seed=2)
    boxes = [rec.locate(im) for im in xte]
    keep_idx = [i for i, b in enumerate(boxes) if b]
    print(
        f"{len(train.y)} training / {len(val.y)} validation images from {len(train_photos)} photos; "
        f"{len(keep_idx)} of {len(xte)} test images of {len(test_photos)} photos with a dlib-detected face"
    )
    xte, yte = xte[keep_idx], yte[keep_idx]
    boxes = [boxes[i][0] for i in keep_idx]

    timings = {}
    runs = {}
    learned = {
        "non-adversarial": (False, "shared"),
        "ours": (True, "shared"),
        "ours-separate": (True, "separate"),
    }
    for name, (adv, adversary) in learned.items():
        cfg = MaskTrainConfig(
            out_dir=a.out / name,
            keep=a.keep,
            size=a.size,
            epochs=a.epochs,
            batch_size=32,
            lr=2e-3,
            adversarial=adv,
            adversary=adversary,
            patience=0,
            base=8,
            device=a.device,
            quiet=True,
            task="badge-colour",
            resume=False,
        )
        t0 = time.perf_counter()
        res = fit(cfg, train, val, ["red", "blue"])
        timings[f"train {name} s"] = time.perf_counter() - t0
        timings[f"train {name} images/s (last epoch)"] = res.images_per_s
        runs[name] = a.out / name
    t0 = time.perf_counter()
    judge, jv = fit_classifier(
        train, val, 2, a.size, epochs=a.epochs, batch_size=32, lr=2e-3, device=a.device
    )
    timings["train judge s"] = time.perf_counter() - t0

    mask_fn = get_method("mask")
    ones = np.ones((SIDE, SIDE), np.float32)
    methods = {
        "Original Image": lambda im: im,
        "Block": centre_block,
        "Gaussian Blur": lambda im: centre_blur(im, a.blur_sigma),
        "Our Method – Non-Adversarial": lambda im: mask_fn(
            im, ones, learned=str(runs["non-adversarial"]), keep=a.keep, device=a.device
        )[0],
        "Our Method": lambda im: mask_fn(im, ones, learned=str(runs["ours"]), keep=a.keep, device=a.device)[
            0
        ],
        "Our Method – separate adversary": lambda im: mask_fn(
            im, ones, learned=str(runs["ours-separate"]), keep=a.keep, device=a.device
        )[0],
    }
    run_of = {
        "Our Method – Non-Adversarial": "non-adversarial",
        "Our Method": "ours",
        "Our Method – separate adversary": "ours-separate",
    }
    test_small = Split(small(xte, a.size), yte)
    fnet = facenet_embedder()
    orig_dlib = [rec.embed(im, b) for im, b in zip(xte, boxes, strict=True)]
    orig_fn = [fnet(im, b) for im, b in zip(xte, boxes, strict=True)] if fnet else None
    results, outputs = {}, {}
    for mname, fn in methods.items():
        t0 = time.perf_counter()
        outs = np.stack([fn(im) for im in xte])
        secs = (time.perf_counter() - t0) / len(xte)
        outputs[mname] = outs
        util = classifier_accuracy(judge, Split(small(outs, a.size), yte), a.device)
        sims, matched, fsims = [], [], []
        for k, (im, b) in enumerate(zip(outs, boxes, strict=True)):
            e = rec.embed(im, b)
            sims.append(cos(orig_dlib[k], e))
            matched.append(distance(orig_dlib[k], e) < 0.6)
            if fnet:
                fsims.append(cos(orig_fn[k], fnet(im, b)))
        results[mname] = {
            "face_similarity_dlib": float(np.mean(sims)),
            "dlib_match_rate": float(np.mean(matched)),
            "face_similarity_facenet": float(np.mean(fsims)) if fsims else None,
            "task_accuracy": util,
            "seconds_per_photo": secs,
        }
        if mname in run_of:  # a fresh adversary on the stored hidden remainder x_o
            fr = fresh_adversary(runs[run_of[mname]], train, val, test_small, epochs=a.epochs)
            results[mname]["fresh_adversary_on_xo"] = fr["acc"]
            results[mname]["fresh_adversary_chance"] = fr["chance"]
    # apply time at a realistic photo size
    big = cv2.resize(xte[0], (1600, 1200), interpolation=cv2.INTER_CUBIC)
    t0 = time.perf_counter()
    for _ in range(3):
        mask_fn(
            big, np.ones(big.shape[:2], np.float32), learned=str(runs["ours"]), keep=a.keep, device=a.device
        )
    timings["apply s/photo at 1600x1200"] = (time.perf_counter() - t0) / 3

    lines = [
        "| Method | Face Similarity (dlib) | dlib still matches | Badge colour accuracy "
        "| Fresh adversary on x_o (chance) |",
        "|---|---|---|---|---|",
    ]
    for mname, r in results.items():
        fresh = (
            f"{r['fresh_adversary_on_xo']:.0%} ({r['fresh_adversary_chance']:.0%})"
            if "fresh_adversary_on_xo" in r
            else "–"
        )
        lines.append(
            f"| {mname} | {r['face_similarity_dlib']:.2f} | {r['dlib_match_rate']:.0%} | "
            f"{r['task_accuracy'] * 100:.2f} | {fresh} |"
        )
    table = "\n".join(lines)
    print(table)
    print(json.dumps(timings, indent=1))
    (a.out / "table.md").write_text(table + "\n")
    (a.out / "results.json").write_text(
        json.dumps(
            {
                "results": results,
                "timings": timings,
                "judge_val_acc": jv["val_acc"],
                "test_images": len(yte),
                "args": {k: str(v) for k, v in vars(a).items()},
            },
            indent=2,
        )
    )
    # sheet: one row per example, one column per method (+ the soft mask of ours)
    from privacy_cli.methods.learned_mask import learned_reveal

    rows_img = []
    for k in range(min(6, len(xte))):
        _rev, soft, _ = learned_reveal(xte[k], runs["ours"], a.keep, a.device)
        cells = [outputs[m][k] for m in methods] + [np.repeat((soft * 255).astype(np.uint8)[..., None], 3, 2)]
        rows_img.append(np.concatenate([cv2.resize(c, (128, 128)) for c in cells], axis=1))
    cv2.imwrite(str(a.out / "masks.png"), cv2.cvtColor(np.concatenate(rows_img, axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {a.out / 'table.md'}, {a.out / 'results.json'}, {a.out / 'masks.png'}")


if __name__ == "__main__":
    main()

"""``privpix bench``: run methods over a dataset and report quality, privacy and utility as the papers do."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import DeviceOpt, QuietOpt
from .output import Output, cli_errors

DEFAULT_METHODS = "blur,pixelate,mask"


@cli_errors
def bench(
    dataset: Annotated[
        Path | None,
        typer.Argument(
            help="Dataset: a Visual Redactions root (annotations/2017_v1 + images/<split>), a folder of "
            "<identity>/<photo>, a file,identity CSV (or a folder holding one), or any folder of images.",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="auto, visual-redactions, faces, pairs or folder."),
    ] = "auto",
    split: Annotated[
        str, typer.Option("--split", help="Visual Redactions split: train2017, val2017 or test2017.")
    ] = "val2017",
    attributes: Annotated[
        str | None,
        typer.Option(
            "--attributes",
            help="Visual Redactions attributes: ids (a105_face_all,a49_phone), prefixes (a105) or groups "
            "(textual, visual, multimodal). Default: all 24.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Use the first N images (0 = all).")] = 0,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            "-m",
            help="Methods with options: blur,pixelate:block=16,mask:fill=white; blur:radius=2/4/8 sweeps a "
            "strength; 'none' is the unchanged image.",
        ),
    ] = DEFAULT_METHODS,
    original: Annotated[
        Path | None, typer.Option("--original", help="Pairs format: folder of original images.")
    ] = None,
    processed: Annotated[
        Path | None,
        typer.Option(
            "--processed", help="Pairs format: folder of processed images (matched by path, then stem)."
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Metrics or groups, comma separated: quality, content, privacy, utility, eraser, "
            "private-encoder, pixel-privacy (paper 002's Table 1: top-1/top-5 plain, rescaled+cropped, "
            "after JPEG q95 and q75), or names (ssim, psnr, lpips_vgg, fid, identity_similarity, "
            "reid_rank1, top1_change_jpeg75, ...). "
            "Default: every metric that applies.",
        ),
    ] = None,
    calibrate: Annotated[
        str | None,
        typer.Option(
            "--calibrate",
            help="Calibrated comparison (Private-Encoder): tune each method's strength to a target, e.g. "
            "identity:0.1,0.2,0.4 (equal privacy), ssim:0.65 or ssim-region:0.65 (equal quality; SSIM in the "
            "face regions compares with the paper's face crops), then bench those settings. Other options of a "
            "method are kept (deidentify:model=ksame varies beta only).",
        ),
    ] = None,
    calibrate_n: Annotated[
        int, typer.Option("--calibrate-n", min=1, help="Images of the calibration subset (the first N).")
    ] = 8,
    max_side: Annotated[
        int,
        typer.Option(
            "--max-side",
            min=0,
            help="Downscale images so the longer side is at most this many pixels (0 = native size). "
            "Smaller is faster; the report states the size.",
        ),
    ] = 1024,
    detect: Annotated[
        str,
        typer.Option("--detect", help="Detectors for datasets without annotated regions (faces, text, ...)."),
    ] = "faces",
    box_scale: Annotated[
        float,
        typer.Option("--box-scale", min=0.1, help="Scale of detected face boxes (as the image commands)."),
    ] = 1.3,
    recognizer: Annotated[
        str,
        typer.Option(
            "--recognizer",
            help="Face recogniser for privacy metrics: auto (curricularface, paper 004's judge, when its "
            "weights are present, else arcface when present, else dlib), dlib, facenet, arcface or "
            "curricularface. CurricularFace/ArcFace use the paper's threshold 0.19, the others a "
            "threshold calibrated on the dataset.",
        ),
    ] = "auto",
    classifier: Annotated[
        str, typer.Option("--classifier", help="Registry classifier for top-1/top-5 change (paper 002).")
    ] = "vgg16",
    class_labels: Annotated[
        str | None,
        typer.Option(
            "--class-labels",
            help="Class labels for top-1/top-5 accuracy: a CSV with file,label columns (file relative "
            "to the CSV; label a class name of --classifier or its index), or 'folders' (each photo's "
            "folder under the dataset, e.g. kitchen/ or arena/hockey/). Without: agreement with the "
            "classifier's top-1 on the original.",
        ),
    ] = None,
    fid_dims: Annotated[
        int,
        typer.Option(
            "--fid-dims",
            help="FID feature block of pytorch-fid's Inception: 2048 (pool3, the standard), 768, 192 or 64 "
            "(cheaper, not comparable with published FIDs).",
        ),
    ] = 2048,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write results.json, per_image.csv, report.md and PNG plots to this folder."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Result cache (default: ~/.cache/privpix/bench or $PRIVPIX_CACHE_DIR)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute everything, store nothing.")] = False,
    weights_dir: Annotated[
        Path | None,
        typer.Option("--weights-dir", help="Folder with pretrained weights (privpix weights fetch)."),
    ] = None,
    device: DeviceOpt = "auto",
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the whole result (per method: every metric with its judge, notes and per-image "
            "values) as one JSON document on stdout; -o also writes it as results.json.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure how much privacy methods buy and what they cost, as the papers measure it.

    Runs each method on the dataset's regions (Visual Redactions polygons, or detected faces),
    then reports image quality (SSIM, PSNR, MAE, MSE, LPIPS, FID; also inside the regions), content
    difference in the regions (ERASER: MAE, FM, Adv, PL-V, PL-R), privacy (identity similarity,
    de-identification rate, rank-1 re-identification with a control on the originals) and utility
    (face detection after processing, classifier top-k). Metrics whose weights are missing are
    reported as unavailable with the command that fetches them. Results are cached, so a re-run only
    computes what changed.

    Examples:

      privpix bench faces/ --methods blur:radius=2/4/8,pixelate:block=16,mask -o report/

      privpix bench visual_redactions/ --split val2017 --attributes a105_face_all --limit 200

      privpix bench faces/ --methods blur,pixelate --calibrate identity:0.1,0.2,0.4

      privpix bench --original photos/ --processed photos_blurred/ --metrics quality,privacy --json
    """
    from ..bench.cache import default_cache_dir
    from ..bench.datasets import open_dataset
    from ..bench.report import print_tables, results_json, write_report
    from ..bench.results import BenchConfig
    from ..bench.runner import BenchRunner
    from ..bench.specs import parse_methods, parse_metrics
    from ..errors import UsageError
    from ..runtime import resolve_device

    output = Output(json_out, quiet)
    if weights_dir is not None:
        from ..weights import configure

        configure(weights_dir=weights_dir)
    dev = resolve_device(device)
    parsed_methods = parse_methods(methods)  # option errors are usage errors before any work
    ds = open_dataset(
        dataset,
        format=format,
        split=split,
        attributes=attributes,
        limit=limit or None,
        original=original,
        processed=processed,
    )
    if ds.format == "pairs" and methods != DEFAULT_METHODS:
        raise UsageError(
            "--methods does not apply to the pairs format: the processed folder is what is scored"
        )
    if ds.format == "pairs" and calibrate:
        raise UsageError(
            "--calibrate needs methods to tune; the pairs format scores a fixed processed folder"
        )
    from ..bench.privacy import EMBEDDERS, resolve_recogniser

    if recognizer not in ("auto", *EMBEDDERS):
        raise UsageError(f"--recognizer must be auto, {', '.join(EMBEDDERS)}, got {recognizer!r}")
    recognizer = resolve_recogniser(recognizer)
    if fid_dims not in (64, 192, 768, 2048):
        raise UsageError(f"--fid-dims must be 64, 192, 768 or 2048, got {fid_dims}")
    detectors = tuple(d.strip() for d in detect.split(",") if d.strip() and d.strip() != "none")
    config = BenchConfig(
        metrics=parse_metrics(metrics),
        max_side=max_side,
        device=dev,
        detect=detectors,
        box_scale=box_scale,
        recognizer=recognizer,
        classifier=classifier,
        class_labels=class_labels,
        fid_dims=fid_dims,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )
    specs = parsed_methods if ds.format != "pairs" else []
    output.info(
        f"bench: {len(ds)} image(s) ({ds.format}"
        + (f", {ds.split}" if ds.format == "visual-redactions" else "")
        + f"), {len(specs) if specs else 1} method setting(s), device {dev}"
    )
    runner = BenchRunner(ds, config, progress=output.progress, log=output.info)
    if calibrate:
        from ..bench.calibrate import calibrated_bench, parse_targets

        targets = parse_targets(calibrate)

        def on_eval(method: str, strength: float, value: float) -> None:
            output.info(f"  calibrating {method}: strength {strength:g} -> {value:.3f}")

        result = calibrated_bench(runner, specs, targets, n=calibrate_n, on_eval=on_eval)
    else:
        result = runner.run(specs)
    if out is not None:
        files = write_report(result, out)
        output.info(f"report written to {files['report']} ({', '.join(p.name for p in files.values())})")
    if json_out:
        output.emit_json(results_json(result))
    elif not quiet:
        print_tables(result, output.out, output.err)
    failed = sum(len(m.errors) for m in result.methods)
    if failed:
        output.error(f"{failed} image/method pair(s) failed; see the report")
        raise typer.Exit(1)

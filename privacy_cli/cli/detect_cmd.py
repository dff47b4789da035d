"""``privpix detect``: find faces and personal text; write JSON, masks and previews."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..io import (
    DEFAULT_MAX_PIXELS,
    Job,
    LoadedImage,
    load_image,
    plan_outputs,
    save_image,
    write_bytes_atomic,
)
from ..pipeline import DEFAULT_BOX_SCALE, DEFAULT_DETECT, Result, collect_regions, regions_json, regions_mask
from .batch import run_jobs
from .options import (
    BoxScaleOpt,
    DeviceOpt,
    DilateOpt,
    Inputs,
    JsonOpt,
    MaxPixels,
    Overwrite,
    QuietOpt,
    ShowTextOpt,
    ThresholdOpt,
    WorkersOpt,
    region_spec,
)
from .output import Output, cli_errors, route_warnings

KIND_COLOURS = {"face": (255, 64, 64), "text": (64, 160, 255)}


def draw_preview(rgb: np.ndarray, regions, mask: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Overlay: the obfuscation mask tinted, each region outlined and labelled with kind and score."""
    import cv2

    out = rgb.copy()
    tint = np.zeros_like(out)
    tint[:] = (255, 0, 160)
    m = (mask > 0)[..., None]
    out = np.where(m, (0.6 * out + 0.4 * tint).astype(np.uint8), out)
    thick = max(1, round(max(rgb.shape[:2]) / 500))
    for r in regions:
        colour = KIND_COLOURS.get(r.kind, (255, 200, 0))
        if r.polygon is not None:
            pts = np.round(np.asarray(r.polygon)).astype(np.int32)
            cv2.polylines(out, [pts], True, colour, thick)
        else:
            x0, y0, x1, y1 = (int(round(v)) for v in r.box)
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        label = f"{r.category or r.kind} {r.score:.2f}"
        cv2.putText(
            out,
            label,
            (int(r.box[0]), max(12, int(r.box[1]) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            colour,
            thick,
        )
    return out


@cli_errors
def detect(
    inputs: Inputs,
    detect: Annotated[
        str, typer.Option("--detect", "-d", help="Detectors, comma separated (faces, text, faces-dlib, ...).")
    ] = ",".join(DEFAULT_DETECT),
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write all detections to this JSON file ({image: \\[regions]}), usable as --boxes.",
        ),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="Write a mask PNG per image (<stem>_mask.png, 255 = sensitive)."),
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option("--preview", help="Write an overlay preview per image (<stem>_preview.jpg)."),
    ] = None,
    threshold: ThresholdOpt = None,
    text: Annotated[
        str,
        typer.Option(
            "--text",
            help="Text to report: all (the default here, to show everything found) or pii (only personal text: "
            "what the image commands obfuscate by default).",
        ),
    ] = "all",
    box_scale: BoxScaleOpt = DEFAULT_BOX_SCALE,
    dilate: DilateOpt = 0,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 1,
    json_out: JsonOpt = False,
    show_text: ShowTextOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find faces and text (with PII categories) and report them.

    Prints a line per image (or one JSON record per image with --json: kind, box = the detector's
    box, obfuscated_box = what the image commands would cover with the same options, polygon, score,
    category = PII category; label = the recognised text only with --show-text). Masks use the same geometry as the image
    commands (--box-scale, --dilate), so `privpix blur --mask-dir` reproduces them.

    Examples:

      privpix detect photo.jpg --json

      privpix detect photos/ -o detections.json --masks masks/ --preview previews/
    """
    from ..runtime import resolve_device

    out = Output(json_out, quiet)
    route_warnings(out)
    spec = region_spec(
        None,
        None,
        False,
        None,
        None,
        None,
        detect,
        threshold,
        text,
        dilate,
        box_scale,
        0.0,
        resolve_device(device),
    )
    spec.keep_text = show_text
    jobs = plan_outputs(inputs, "detect", None)
    if not jobs:
        out.error("no input images found")
        raise typer.Exit(1)
    collected: dict[str, list] = {}

    def side_path(folder: Path, job: Job, suffix: str) -> Path:
        return folder / job.rel.parent / f"{job.input.stem}{suffix}"

    def one(job: Job) -> Result:
        t0 = time.perf_counter()
        loaded = load_image(job.input, max_pixels=max_pixels)
        regions = collect_regions(loaded, spec, job.input, job.rel)
        written = []
        if masks is not None or preview is not None:
            mask = regions_mask(regions, spec)
            if masks is not None:
                p = side_path(masks, job, "_mask.png")
                if overwrite or not p.exists():
                    m = (mask > 0).astype(np.uint8) * 255
                    # a single-channel (L) PNG: 255 = sensitive
                    save_image(
                        np.repeat(m[..., None], 3, axis=2), p, like=LoadedImage(None, loaded.rgb, mode="L")
                    )
                    written.append(str(p))
            if preview is not None:
                p = side_path(preview, job, "_preview.jpg")
                if overwrite or not p.exists():
                    save_image(draw_preview(loaded.rgb, regions, mask), p, quality=90)
                    written.append(str(p))
        records = regions_json(regions, spec, show_text)
        collected[str(job.input)] = records
        kinds: dict[str, int] = {}
        for r in regions:
            kinds[r.category or r.kind] = kinds.get(r.category or r.kind, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing found"
        out.line(f"{job.input}: {summary}")
        return Result(
            str(job.input),
            None,
            "ok",
            len(regions),
            0,
            time.perf_counter() - t0,
            extra={"size": list(loaded.size), "regions": records, "files": written},
        )

    # detect reports its own line per image; the runner's default line would repeat it
    quiet_runner = Output(json_out, True)
    code, _results = run_jobs(jobs, one, quiet_runner, "detect", workers)
    if output is not None:
        write_bytes_atomic(json.dumps(collected, indent=1).encode(), output)
        out.info(f"detections written to {output}")
    raise typer.Exit(code)

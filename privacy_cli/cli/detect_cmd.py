"""``privpix detect``: find faces and personal text; write JSON, masks and previews."""

from __future__ import annotations

import json
import posixpath
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from ..engines.tasks import as_location, is_remote, write_bytes
from ..io import DEFAULT_MAX_PIXELS, Job, LoadedImage, load_image, save_image
from ..pipeline import (
    DEFAULT_BOX_SCALE,
    DEFAULT_DETECT,
    RegionSpec,
    Result,
    collect_regions,
    regions_json,
    regions_mask,
)
from .options import (
    BatchSizeOpt,
    BoxScaleOpt,
    DeviceOpt,
    DilateOpt,
    EngineOpt,
    Inputs,
    JsonOpt,
    MaxPixels,
    Overwrite,
    QuietOpt,
    RayAddressOpt,
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


def _side_file(folder: str, job: Job, suffix: str) -> str:
    """Where a per-image side file goes: ``folder``/<input's relative folder>/<stem><suffix> (a local
    path or, for a URI folder, a URI)."""
    name = f"{job.input.stem}{suffix}"
    parent = job.rel.parent.as_posix()
    if is_remote(folder):
        return posixpath.join(folder.rstrip("/"), *([parent] if parent != "." else []), name)
    return str(Path(folder) / job.rel.parent / name)


def _write_side(rgb: np.ndarray, where: str, **save_kw: object) -> None:
    """``save_image`` to a local path, or through a local temporary file and one PUT to a URI."""
    if not is_remote(where):
        save_image(rgb, where, **save_kw)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="privpix-side-") as d:
        tmp = Path(d, posixpath.basename(where))
        save_image(rgb, tmp, **save_kw)  # type: ignore[arg-type]
        write_bytes(tmp.read_bytes(), where)


def detect_fn(
    spec: RegionSpec,
    masks: str | None,
    preview: str | None,
    max_pixels: int,
    overwrite: bool,
    show_text: bool,
) -> Callable[[Job], Result]:
    """The per-image function of ``detect`` (built where it runs: this process or a Ray actor).

    ``fn(job) -> Result`` detects the regions of ``job.input`` (the Result's ``regions`` are the
    ``--json`` records, ``size`` is (w, h) in pixels) and writes the optional side files: a mask PNG
    (255 = sensitive) under ``masks`` and an overlay JPEG under ``preview`` (folders or URIs).
    """
    from ..engines.tasks import exists

    def one(job: Job) -> Result:
        t0 = time.perf_counter()
        loaded = load_image(job.input, max_pixels=max_pixels)
        regions = collect_regions(loaded, spec, job.input, job.rel)
        written = []
        if masks is not None or preview is not None:
            mask = regions_mask(regions, spec)
            if masks is not None:
                p = _side_file(masks, job, "_mask.png")
                if overwrite or not exists(p):
                    m = (mask > 0).astype(np.uint8) * 255
                    # a single-channel (L) PNG: 255 = sensitive
                    like = LoadedImage(None, loaded.rgb, mode="L")
                    _write_side(np.repeat(m[..., None], 3, axis=2), p, like=like)
                    written.append(p)
            if preview is not None:
                p = _side_file(preview, job, "_preview.jpg")
                if overwrite or not exists(p):
                    _write_side(draw_preview(loaded.rgb, regions, mask), p, quality=90)
                    written.append(p)
        records = regions_json(regions, spec, show_text)
        return Result(
            str(job.input),
            None,
            "ok",
            len(regions),
            0,
            time.perf_counter() - t0,
            extra={"size": list(loaded.size), "regions": records, "files": written},
        )

    return one


def summary_line(record: dict) -> str:
    """detect's human line for one image's record: ``<input>: 1 face, 2 email`` or ``nothing found``."""
    kinds: dict[str, int] = {}
    for r in record.get("regions", ()):
        k = r.get("category") or r["kind"]
        kinds[k] = kinds.get(k, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing found"
    return f"{escape(record['input'])}: {summary}"


class DetectOutput(Output):
    """The engines' output for ``detect``: ``--json`` records as every command, and detect's own line
    per image (:func:`summary_line`) instead of the runner's ✓ lines and totals, printed here, where
    the results arrive, whichever engine ran the image. Errors still go to stderr."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        super().__init__(json_mode, quiet=True)
        self.human = not (json_mode or quiet)
        self.messages = Output(json_mode, quiet)

    def record(self, obj: dict) -> None:
        super().record(obj)
        if self.human and obj.get("status") == "ok":
            self.out.print(summary_line(obj))


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
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    batch_size: BatchSizeOpt = 8,
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
    from .. import engines
    from ..runtime import resolve_device

    opts = engines.EngineOptions(
        engine=engine, workers=workers, batch_size=batch_size, ray_address=ray_address, overwrite=overwrite
    )
    out = DetectOutput(json_out, quiet)
    route_warnings(out.messages)
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
    # detect writes no image: each job's planned output is dropped (so no manifest either)
    jobs = [replace(j, output=None) for j in engines.plan(inputs, "detect", None)]
    if not jobs:
        out.error("no input images found")
        raise typer.Exit(1)
    make = partial(
        detect_fn, spec, as_location(masks), as_location(preview), max_pixels, overwrite, show_text
    )
    code, results = engines.run_jobs(jobs, make, out, "detect", opts)
    if output is not None:
        # every image detected, in input order (the engine reports in completion order)
        by_input = {r.input: r.extra.get("regions", []) for r in results if r.status == "ok"}
        collected = {str(j.input): by_input[str(j.input)] for j in jobs if str(j.input) in by_input}
        write_bytes(json.dumps(collected, indent=1).encode(), as_location(output) or "")
        out.messages.info(f"detections written to {output}")
    raise typer.Exit(code)

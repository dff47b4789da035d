"""``privpix blur | pixelate | mask``: the classical obfuscation commands (one shared runner)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from ..io import Job, LoadedImage
from ..pipeline import Computed, Result
from .options import CommonArgs, _p, image_command
from .output import Output, route_warnings


def method_fn(
    method: str,
    common: CommonArgs,
    method_kwargs: dict[str, Any],
    setup: Callable[[], None] | None = None,
    save_mask_dir: Path | None = None,
) -> Callable[[Job], Result]:
    """The per-image function of an image command: ``fn(job) -> Result`` runs ``method`` on
    ``job.input`` and writes ``job.output`` (raises a PrivpixError on failure, nothing written).

    Built in the process that runs it (a Ray actor builds its own); ``setup`` (picklable) first
    applies process-wide settings there, e.g. the weights folder. Engines call it on the jobs of
    :func:`privacy_cli.io.plan_outputs`, wrapped by :func:`privacy_cli.cli.batch.run_one`. ``save_mask_dir``: the method gets
    ``save_mask=<dir>/<input's relative path>.png`` per image.
    """
    if setup is not None:
        setup()
    from ..io import load_image
    from ..pipeline import compute_file, write_computed
    from .batch import Stages

    def decode(job: Job) -> LoadedImage | None:
        assert job.output is not None
        if job.output.exists() and not common.overwrite:
            return None  # compute reports it skipped
        return load_image(job.input, max_pixels=common.max_pixels)

    def compute(job: Job, loaded: LoadedImage | None) -> Computed | Result:
        assert job.output is not None
        return compute_file(
            job.input,
            job.output,
            method,
            {**method_kwargs, "save_mask": str(save_mask_dir / job.rel.with_suffix(".png"))}
            if save_mask_dir is not None
            else method_kwargs,
            common.spec,
            rel=job.rel,
            quality=common.quality,
            keep_metadata=common.keep_metadata,
            max_pixels=common.max_pixels,
            overwrite=common.overwrite,
            show_text=common.show_text,
            loaded=loaded,
        )

    def one(job: Job) -> Result:
        c = compute(job, None)
        return c if isinstance(c, Result) else write_computed(c)

    # torch methods whose forward passes are batched across images (Stages.compute_many) by default:
    # where it was measured to pay on a GPU (H200, 1024-px photos: stylize 2.8 -> 5.2 photos/s at
    # --batch-size 8; deidentify private-encoder 18.7 -> 17.8 and erase big-lama 15.5 -> 10.4, whose
    # per-image CPU work dominates and whose LaMa crops rarely share a shape). PRIVPIX_CROSS_BATCH=1
    # batches erase and deidentify too.
    batched = method == "stylize" or (
        method in ("erase", "deidentify") and os.environ.get("PRIVPIX_CROSS_BATCH") == "1"
    )
    one.stages = Stages(decode, compute, write_computed, batched)  # type: ignore[attr-defined]
    # classical methods run no torch model: two images at once fill the cores (batch.auto_workers)
    one.torch_free = method in ("blur", "pixelate", "mask") and not method_kwargs.get("learned")  # type: ignore[attr-defined]
    return one


def run_method(
    command: str,
    method: str,
    common: CommonArgs,
    method_kwargs: dict[str, Any],
    setup: Callable[[], None] | None = None,
    save_mask_dir: Path | None = None,
) -> int:
    """Plan outputs, run ``method`` over every input on the chosen engine, report; returns the exit code."""
    from .. import engines

    opts = engines.EngineOptions.from_common(common)  # checks the engine options before any work
    out = Output(common.json, common.quiet)
    route_warnings(out)
    jobs = engines.plan(common.inputs, command, common.output)
    if not jobs:
        out.error("no input images found")
        return 1
    code, _ = engines.run_jobs(
        jobs, partial(method_fn, method, common, method_kwargs, setup, save_mask_dir), out, command, opts
    )
    return code


def _check_fill(value: str) -> str:
    """--fill is checked when the command line is parsed (exit 2), not per image."""
    from ..errors import UsageError
    from ..methods.fill import parse_fill

    try:
        parse_fill(value)
    except UsageError as e:
        raise typer.BadParameter(str(e).removeprefix(f"--fill {value!r}: ")) from None
    return value


EXAMPLES = """

Examples:

  privpix {cmd} photo.jpg                      faces + personal text, output photo_{cmd}.jpg

  privpix {cmd} photos/ -o out/ --detect faces  a whole folder, tree mirrored under out/

  privpix {cmd} photo.jpg --mask mask.png      your own mask (non-zero = sensitive)
"""

blur = image_command(
    [
        _p(
            "radius",
            Annotated[
                float | None,
                typer.Option(
                    "--radius",
                    min=0.0,
                    max=10000.0,
                    help="Gaussian sigma in pixels (papers' baseline: 8). Default: scaled to each region: "
                    "faces 0.16 x the region's shorter side (a face recogniser no longer matches them), "
                    "text 0.5 x its line height (Tesseract, also on 2x upscaled, sharpened crops, read back "
                    "none of the personal strings of our generated test photos). A value given here is used "
                    "as is; each image's record then warns when it is likely too weak for the text found.",
                ),
            ],
            None,
        ),
    ],
    partial(run_method, "blur", "blur"),
    "Blur faces and personal text (or given regions) with a Gaussian blur." + EXAMPLES.format(cmd="blur"),
)

pixelate = image_command(
    [
        _p(
            "block",
            Annotated[
                int | None,
                typer.Option(
                    "--block",
                    min=1,
                    max=100000,
                    help="Mosaic cell size in pixels. Default: faces about 8 cells across; text 2 cells per "
                    "line height, i.e. about one cell per glyph (Tesseract, also on 2x upscaled, sharpened "
                    "crops, read back none of the personal strings of our generated test photos). A value "
                    "given here is used as is; each image's record then warns when it is likely too weak "
                    "for the text found.",
                ),
            ],
            None,
        ),
    ],
    partial(run_method, "pixelate", "pixelate"),
    "Pixelate (mosaic) faces and personal text (or given regions)." + EXAMPLES.format(cmd="pixelate"),
)


def run_mask(common: CommonArgs, kw: dict[str, Any]) -> int:
    """``mask``: solid fill of the regions, or with ``--learned`` a learned task mask (paper 003)."""
    if kw["learned"] is None:
        if kw["keep"] is not None or kw["soft"] or kw["save_mask"] is not None:
            from ..errors import UsageError

            raise UsageError("--keep, --soft and --save-mask need --learned RUN_DIR")
        return run_method("mask", "mask", common, {"fill": kw["fill"]})
    from ..methods.fill import parse_fill
    from ..methods.learned_mask import read_run

    parse_fill(kw["fill"])
    read_run(kw["learned"])  # a usage error before any work
    # the learned mask decides what to hide: the method sees the whole photo (and finds faces itself)
    common.spec.detect, common.spec.whole = (), True
    opts = {
        "fill": kw["fill"],
        "learned": str(kw["learned"]),
        "keep": kw["keep"],
        "soft": kw["soft"],
        "device": common.device,
    }
    return run_method("mask", "mask", common, opts, save_mask_dir=kw["save_mask"])


mask = image_command(
    [
        _p(
            "fill",
            Annotated[
                str,
                typer.Option(
                    "--fill",
                    callback=_check_fill,
                    help="black, white, mean (region's mean colour) or #rrggbb.",
                ),
            ],
            "black",
        ),
        _p(
            "learned",
            Annotated[
                Path | None,
                typer.Option(
                    "--learned",
                    help="Run folder of `privpix train mask`: reveal only the pixels its task needs (top "
                    "--keep percent of the whole photo, or of each face for face models), fill the rest.",
                ),
            ],
            None,
        ),
        _p(
            "keep",
            Annotated[
                float | None,
                typer.Option(
                    "--keep", min=0.01, max=100.0, help="Percent revealed (default: the trained K)."
                ),
            ],
            None,
        ),
        _p(
            "soft",
            Annotated[bool, typer.Option("--soft", help="Multiply revealed pixels by the soft mask.")],
            False,
        ),
        _p(
            "save_mask",
            Annotated[
                Path | None,
                typer.Option("--save-mask", help="Write each learned mask here (PNG, 0 = hidden)."),
            ],
            None,
        ),
    ],
    run_mask,
    "Fill faces and personal text (or given regions) with a solid colour (the papers' Mask baseline); "
    "with --learned, reveal only what a trained task needs."
    + EXAMPLES.format(cmd="mask")
    + "\n  privpix mask photos/ -o out/ --learned runs/hair --keep 25   learned task mask (paper 003)\n",
)

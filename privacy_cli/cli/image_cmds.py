"""``privpix blur | pixelate | mask``: the classical obfuscation commands (one shared runner)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import typer

from ..io import Job, plan_outputs
from ..pipeline import Result, process_file
from .batch import run_jobs
from .options import CommonArgs, _p, image_command
from .output import Output, route_warnings


def job_function(method: str, common: CommonArgs, method_kwargs: dict[str, Any]) -> Callable[[Job], Result]:
    """The per-image function of an image command: ``fn(job) -> Result`` runs ``method`` on
    ``job.input`` and writes ``job.output`` (raises a PrivpixError on failure, nothing written).

    Engines call it on the jobs of :func:`privacy_cli.io.plan_outputs`, wrapped by
    :func:`privacy_cli.cli.batch.run_one` (errors become Results). It holds only plain values
    (paths, options, the RegionSpec), so it can be shipped to other processes (cloudpickle).
    """

    def one(job: Job) -> Result:
        assert job.output is not None
        return process_file(
            job.input,
            job.output,
            method,
            method_kwargs,
            common.spec,
            rel=job.rel,
            quality=common.quality,
            keep_metadata=common.keep_metadata,
            max_pixels=common.max_pixels,
            overwrite=common.overwrite,
            show_text=common.show_text,
        )

    return one


def run_method(command: str, method: str, common: CommonArgs, method_kwargs: dict[str, Any]) -> int:
    """Plan outputs, run ``method`` over every input, report; returns the exit code."""
    out = Output(common.json, common.quiet)
    route_warnings(out)
    jobs = plan_outputs(common.inputs, command, common.output)
    if not jobs:
        out.error("no input images found")
        return 1
    code, _ = run_jobs(jobs, job_function(method, common, method_kwargs), out, command, common.workers)
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
                    help="Gaussian sigma in pixels (papers' baseline: 8). Default: scaled to each region, "
                    "0.16 x its shorter side, so faces are no longer recognised.",
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
                    help="Mosaic cell size in pixels (at most the image's longer side). Default: about 8 cells per "
                    "region.",
                ),
            ],
            None,
        ),
    ],
    partial(run_method, "pixelate", "pixelate"),
    "Pixelate (mosaic) faces and personal text (or given regions)." + EXAMPLES.format(cmd="pixelate"),
)

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
    ],
    partial(run_method, "mask", "mask"),
    "Fill faces and personal text (or given regions) with a solid colour (the papers' Mask baseline)."
    + EXAMPLES.format(cmd="mask"),
)

"""``privpix stylize``: render photos in an artistic style (paper 002's style-transfer defence)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .image_cmds import run_method
from .options import WEIGHTS_PARAMS, CommonArgs, _p, image_command

STYLE_HELP = (
    "cartoon, watercolor, sketch (OpenCV, offline); ukiyoe (CycleGAN), hayao (CartoonGAN), face-paint, "
    "paprika (AnimeGANv2): need weights, privpix weights fetch NAME."
)


def _run(common: CommonArgs, kw: dict[str, Any]) -> int:
    from ..methods.stylize import _check_opts, gan_runner, get_style
    from ..weights import configure

    style = get_style(kw["style"])
    _check_opts(kw["strength"], kw["work_size"], kw["tile"], None, kw["upsample"])
    configure(weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None)
    if style.model is not None and kw["strength"] > 0:
        # load once before any file: missing weights fail here, with the fetch/import hint, and nothing is written
        gan_runner(style.name, common.device)
    opts = {
        "style": style.name,
        "strength": kw["strength"],
        "work_size": kw["work_size"],
        "tile": kw["tile"],
        "upsample": kw["upsample"],
        "device": common.device,
    }
    return run_method("stylize", "stylize", common, opts)


stylize = image_command(
    [
        _p("style", Annotated[str, typer.Option("--style", "-s", help=STYLE_HELP)], "cartoon"),
        _p(
            "strength",
            Annotated[
                float,
                typer.Option(
                    "--strength",
                    min=0.0,
                    max=1.0,
                    help="Blend with the photo: 0 = unchanged, 1 = full style.",
                ),
            ],
            1.0,
        ),
        _p(
            "work_size",
            Annotated[
                int | None,
                typer.Option(
                    "--work-size",
                    min=0,
                    help="Longer side (pixels) the style runs at; 0 = native size. Default per style: "
                    "cartoon 1024, watercolor 640, sketch 768, ukiyoe 512, hayao 450, face-paint 512, paprika 1024.",
                ),
            ],
            None,
        ),
        _p(
            "tile",
            Annotated[
                int | None,
                typer.Option(
                    "--tile",
                    min=64,
                    help="GAN tile size in pixels (overlapping tiles, blended; default 512).",
                ),
            ],
            None,
        ),
        _p(
            "upsample",
            Annotated[
                str,
                typer.Option(
                    "--upsample",
                    help="Back to the photo's size: bilinear (crisp strokes) or guided (photo edges).",
                ),
            ],
            "bilinear",
        ),
        *WEIGHTS_PARAMS,
    ],
    _run,
    "Render photos in an artistic style (whole image by default; with --detect/--mask/--boxes only inside "
    "the regions). Scene classifiers do worse on stylised photos (paper 002); faces stay largely "
    "recognisable to dlib (measured in docs/methods.md), so blur or erase faces when they matter."
    """

Examples:

  privpix stylize photo.jpg --style cartoon       whole photo, output photo_stylize.jpg

  privpix stylize photos/ -o out/ --style hayao   a folder with CartoonGAN (weights: privpix weights fetch cartoongan-hayao)

  privpix stylize photo.jpg --style sketch --detect faces --strength 0.8   faces only
""",
    whole_image=True,
)

"""``privpix erase``: fill regions with natural content that differs from the original (ERASER)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import typer

from .image_cmds import EXAMPLES, run_method
from .options import WEIGHTS_PARAMS, CommonArgs, _p, image_command


def _run(common: CommonArgs, kw: dict[str, Any]) -> int:
    from ..methods.erase import choose_model
    from ..weights import configure

    configure(weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None)

    model = choose_model(kw["model"])  # resolve auto once and say which model runs
    if kw["model"] == "auto":  # say which model runs (stdout; --json records carry model_used)
        from .output import Output

        Output(common.json, common.quiet).line(
            f"erase: using model [bold]{model}[/] (--model auto: the best model whose weights are present)"
        )
    return run_method(
        "erase",
        "erase",
        common,
        {"model": model, "device": common.device, "context": kw["context"], "work_size": kw["work_size"]},
        setup=partial(configure, weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None),
    )


erase = image_command(
    [
        _p(
            "model",
            Annotated[
                str,
                typer.Option(
                    "--model",
                    "-m",
                    help="eraser, big-lama, migan (need weights: privpix weights fetch NAME), telea or ns (OpenCV, "
                    "offline); auto = best model whose weights are present.",
                ),
            ],
            "auto",
        ),
        _p(
            "context",
            Annotated[
                float,
                typer.Option(
                    "--context", min=1.0, help="Context crop around each region, as a multiple of its size."
                ),
            ],
            2.5,
        ),
        _p(
            "work_size",
            Annotated[
                int | None,
                typer.Option(
                    "--work-size",
                    min=64,
                    max=4096,
                    help="Model working resolution of a crop (default: 512 for neural models).",
                ),
            ],
            None,
        ),
        *WEIGHTS_PARAMS,
    ],
    _run,
    "Erase faces and personal text (or given regions): inpaint them with natural, different content."
    + EXAMPLES.format(cmd="erase"),
)

"""``privpix perturb``: adversarial perturbations against scene classifiers, face detectors and face
recognisers (Pixel Privacy, paper 002), verified on what was written."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import MethodError, UsageError
from ..io import Job
from ..pipeline import Result, output_exists, process_file
from .options import WEIGHTS_PARAMS, CommonArgs, _p, image_command, split_list
from .output import Output

LOSSY = {".jpg", ".jpeg", ".webp", ".heic", ".heif"}


def _run(common: CommonArgs, kw: dict[str, Any]) -> int:
    from ..attack import check_targets
    from ..weights import configure

    configure(weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None)
    names = check_targets(split_list(kw["target"]))
    attack = kw["attack"]
    if attack not in ("pgd", "fgsm", "uap"):
        raise UsageError(f"--attack {attack}: use pgd, fgsm or uap")
    if attack == "uap" and kw["uap"] is None:
        raise UsageError("--attack uap needs --uap FILE (made by `privpix train uap`)")
    if kw["uap"] is not None and not Path(kw["uap"]).is_file():
        raise UsageError(f"--uap {kw['uap']}: no such file")
    if not 1 <= kw["epsilon"] <= 255:
        raise UsageError(f"--epsilon {kw['epsilon']}: must be in [1, 255] grey levels")
    from .. import engines

    opts = engines.EngineOptions.from_common(common)
    out = Output(common.json, common.quiet)
    jobs = engines.plan(common.inputs, "perturb", common.output)
    if not jobs:
        out.error("no input images found")
        return 1
    setup = partial(configure, weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None)
    code, _ = engines.run_jobs(jobs, partial(perturb_fn, common, names, kw, setup), out, "perturb", opts)
    return code


def perturb_fn(
    common: CommonArgs, names: list[str], kw: dict[str, Any], setup: Callable[[], None] | None = None
) -> Callable[[Job], Result]:
    """The per-image function of ``perturb`` (built where it runs: this process or a Ray actor, after
    ``setup``, e.g. the weights folder): ``fn(job) -> Result`` is :func:`perturb_file`."""
    if setup is not None:
        setup()
    return partial(perturb_file, common=common, names=names, kw=kw)


def perturb_file(job: Job, common: CommonArgs, names: list[str], kw: dict[str, Any]) -> Result:
    """Perturb one file through the shared pipeline into a temporary file next to the output,
    re-decode it, judge it with every target and then publish it (or, with --require-success
    and a target that still succeeds, delete it and fail)."""
    import numpy as np

    from ..attack import judge_all
    from ..io import load_image
    from ..methods.perturb import psnr

    final = Path(job.output)  # type: ignore[arg-type]
    if final.exists() and not common.overwrite:
        return output_exists(str(job.input), str(final))
    tmp = final.with_name(f".{final.stem}.privpix-perturb{final.suffix}")
    lossy = final.suffix.lower() in LOSSY
    opts = {
        "targets": names,
        "attack": kw["attack"],
        "epsilon": kw["epsilon"],
        "steps": kw["steps"],
        "rounds": kw["rounds"],
        "min_psnr": kw["min_psnr"],
        "step_size": kw["step_size"],
        "targeted": kw["targeted"],
        "eot": kw["eot"],
        "jpeg_quality": common.quality if lossy else None,
        "uap": str(kw["uap"]) if kw["uap"] else None,
        "device": common.device,
        "seed": kw["seed"],
    }
    try:
        res = process_file(
            job.input,
            tmp,
            "perturb",
            opts,
            common.spec,
            rel=job.rel,
            quality=common.quality,
            keep_metadata=common.keep_metadata,
            max_pixels=common.max_pixels,
            overwrite=True,
        )
        # verify on what was written: decode the saved file, judge it with each target's own model
        original = load_image(job.input, max_pixels=common.max_pixels).rgb
        saved = load_image(tmp, max_pixels=common.max_pixels).rgb
        verdict = judge_all(original, saved, names, common.device)
        res.extra.pop("checked", None)
        res.extra["targets"] = verdict
        res.extra["success"] = all(v["success"] for v in verdict.values())
        diff = np.abs(saved.astype(np.int16) - original.astype(np.int16))
        res.extra["linf_saved"] = int(diff.max())
        quality = psnr(original, saved)
        res.extra["psnr_saved"] = round(quality, 2) if np.isfinite(quality) else None
        failed = [n for n, v in verdict.items() if not v["success"]]
        if failed and kw["require_success"]:
            raise MethodError(
                f"{job.input}: attack did not succeed against {', '.join(failed)} "
                "(--require-success: nothing written)"
            )
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    res.output = str(final)
    return res


perturb = image_command(
    [
        _p(
            "target",
            Annotated[
                str,
                typer.Option(
                    "--target",
                    "-t",
                    help="Machines to fool, comma separated: mtcnn (face detector), dlib-resnet (face "
                    "recogniser), facenet-vggface2, arcface-ir-se50 (face recognisers; need weights), "
                    "places365-resnet50, imagenet-resnet50 (classifiers; need weights).",
                ),
            ],
            "mtcnn",
        ),
        _p(
            "attack",
            Annotated[str, typer.Option("--attack", "-a", help="pgd (iterative), fgsm (one step) or uap.")],
            "pgd",
        ),
        _p(
            "epsilon",
            Annotated[
                float,
                typer.Option(
                    "--epsilon",
                    "-e",
                    help="Largest change of any pixel, in 8-bit grey levels (L-infinity). Exact in PNG; "
                    "JPEG adds its own compression error (--json reports linf_saved).",
                ),
            ],
            8.0,
        ),
        _p("steps", Annotated[int, typer.Option("--steps", min=1, help="PGD steps per round.")], 10),
        _p(
            "rounds",
            Annotated[
                int,
                typer.Option(
                    "--rounds",
                    min=1,
                    help="PGD rounds: after each, the output as it will be saved is judged by every "
                    "target's real model; the attack goes on (smaller steps) until all are fooled.",
                ),
            ],
            3,
        ),
        _p(
            "min_psnr",
            Annotated[
                float | None,
                typer.Option(
                    "--min-psnr",
                    min=1.0,
                    help="Keep PSNR >= this (dB), measured on what the saved file decodes to: PGD "
                    "steps follow the gradient inside the matching L2 ball as well as the "
                    "--epsilon bound.",
                ),
            ],
            None,
        ),
        _p(
            "step_size",
            Annotated[
                float | None,
                typer.Option(
                    "--step-size", min=0.01, help="PGD step in grey levels (default 2.5 eps / steps)."
                ),
            ],
            None,
        ),
        _p(
            "targeted",
            Annotated[
                str | None,
                typer.Option(
                    "--targeted", help="Classifier targets: make them predict this class (name or index)."
                ),
            ],
            None,
        ),
        _p(
            "eot",
            Annotated[
                bool,
                typer.Option(
                    "--eot",
                    help="Expectation over transformation: random rescale/shift and a differentiable JPEG at "
                    "the output quality, so the attack survives resizing and the save (slower).",
                ),
            ],
            False,
        ),
        _p(
            "uap",
            Annotated[
                Path | None, typer.Option("--uap", help="Universal perturbation from `privpix train uap`.")
            ],
            None,
        ),
        _p(
            "require_success",
            Annotated[
                bool,
                typer.Option(
                    "--require-success",
                    help="Fail closed: write nothing for an image where any target still sees what it saw.",
                ),
            ],
            False,
        ),
        _p("seed", Annotated[int, typer.Option("--seed", help="Random seed (PGD start, EOT).")], 0),
        *WEIGHTS_PARAMS,
    ],
    _run,
    "Perturb photos imperceptibly so that machines (scene classifiers, face detectors, face recognisers) "
    "get them wrong; each output is re-read and judged by every target (--json: success and margin)."
    """

Examples:

  privpix perturb photo.jpg -t dlib-resnet          whole image, identity no longer matched by dlib

  privpix perturb photo.png -t mtcnn,dlib-resnet --detect faces -e 12    only inside detected faces

  privpix perturb photos/ -o out/ -t places365-resnet50 --eot --require-success

  privpix perturb photo.jpg --attack uap --uap uap.safetensors -t places365-resnet50
""",
    whole_image=True,
)

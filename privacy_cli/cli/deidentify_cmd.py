"""``privpix deidentify``: replace faces by natural faces of nobody, ``--beta`` = identity kept (paper 004)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer

from .image_cmds import run_method
from .options import WEIGHTS_PARAMS, CommonArgs, _p, image_command


def _donor_pool(common: CommonArgs, donors_dir: Path | None) -> Any:
    """Analyse the donor faces: every face of ``--donors DIR``, else of every input of the run.

    Donors from the run's own inputs: when faces are detected (and nothing else is a region source),
    the regions found here are handed to the run (:func:`_reuse_regions`) so each input is detected
    once, not twice (local files and the local engine only).

    Built here, before any image is processed, because every image's donors come from the whole run;
    with ``--engine ray`` the pool travels to each actor with the per-image function (Ray Data keeps
    that in its object store once per run, not once per task). Inputs may be URIs (read here).
    """
    from .. import engines
    from ..engines.tasks import is_remote, read_bytes
    from ..errors import PrivpixError
    from ..io import decode_image, load_image
    from ..methods.deidentify import DonorPool
    from ..pipeline import collect_regions, regions_mask
    from .output import Output

    out = Output(common.json, common.quiet)
    pool = DonorPool()
    spec = common.spec
    if donors_dir is not None:
        from dataclasses import replace

        from ..io import iter_images

        spec = replace(spec, mask=None, mask_dir=None, boxes=None, annotations=None, detect=("faces",))
        items = [(str(p), None) for p in iter_images([donors_dir])]
    else:
        jobs = engines.plan(common.inputs, "deidentify", common.output)
        items = [(str(j.input), Path(j.rel)) for j in jobs if not j.error and not j.skip]
    # the donor pass's faces are reused by the run only for local files on the local engine (the
    # run looks them up by input path; remote inputs are read through temporary copies)
    reuse = donors_dir is None and common.engine == "local" and not any(is_remote(loc) for loc, _ in items)
    found: dict[str, list[Any]] | None = {} if reuse else None
    with out.progress(len(items), "donor faces") as bar:
        for loc, rel in items:
            try:
                if is_remote(loc):
                    path = Path(PurePosixPath(loc).name)  # its name, for --mask-dir / --boxes lookups
                    loaded = decode_image(read_bytes(loc), path, max_pixels=common.max_pixels)
                else:
                    path = Path(loc)
                    loaded = load_image(path, max_pixels=common.max_pixels)
                regions = collect_regions(loaded, spec, path, rel)
                mask = regions_mask(regions, spec)
                if found is not None and not loaded.frames and len(regions):
                    found[str(path)] = list(regions.items)
                if mask.any():
                    pool.add_image(loaded.rgb, mask, box_scale=spec.box_scale, source=path.name)
            except PrivpixError:
                pass  # a bad input is reported (once) by the run itself
            if bar:
                bar.advance()
    if found is not None and len(found) == len(items):
        _reuse_regions(common, found)
    return pool


def _reuse_regions(common: CommonArgs, found: dict[str, list[Any]]) -> None:
    """Give the run the faces the donor pass detected (by input path) instead of detecting again.

    Only when detection is the sole region source and every input was read, is a single frame and
    has a face (``found`` holds them all): the regions become an in-memory per-image boxes source.
    Without ``--allow-empty`` an input missing from it is then an error for that input (fail closed),
    never an unchanged copy; with ``--allow-empty`` the run detects as usual."""
    from ..regions import BoxesFile

    spec = common.spec
    sources = spec.mask or spec.mask_dir or spec.boxes or spec.annotations or spec.whole
    if sources or not spec.detect or spec.allow_empty:
        return
    spec._boxes_cache = BoxesFile(Path("<detected faces>"), per_image=found)
    spec.boxes, spec.detect = Path("<detected faces>"), ()


def _run(common: CommonArgs, kw: dict[str, Any]) -> int:
    from ..errors import UsageError
    from ..methods.deidentify import MODELS, ON_FAIL, choose_model
    from ..pipeline import DEFAULT_DETECT
    from ..weights import configure
    from .output import Output

    if kw["model"] not in MODELS:
        raise UsageError(f"--model {kw['model']!r}: use one of {', '.join(MODELS)}")
    if kw["on_fail"] not in ON_FAIL:
        raise UsageError(f"--on-fail {kw['on_fail']!r}: use one of {', '.join(ON_FAIL)}")
    donors_dir = kw["donors"]
    if donors_dir is not None and not Path(donors_dir).is_dir():
        raise UsageError(f"--donors {donors_dir}: no such folder")
    if kw["weights"] is not None and not Path(kw["weights"]).is_file():
        raise UsageError(f"--weights {kw['weights']}: no such file")
    if common.spec.detect == DEFAULT_DETECT:  # faces only: text regions have no identity to change
        common.spec.detect = ("faces",)
    configure(weights_dir=kw["weights_dir"], offline=True if kw["offline"] else None)
    model, pool = kw["model"], None
    if model == "auto":
        try:
            model = choose_model("auto", kw["beta"], None, kw["k"])
        except Exception:  # no learned backend: k-Same, if the donors suffice
            pool = _donor_pool(common, donors_dir)
            model = choose_model("auto", kw["beta"], pool, kw["k"])
        Output(common.json, common.quiet).line(
            f"deidentify: using [bold]{model}[/] (--model auto: the best backend available)"
        )
    if model == "latent" and kw["weights"] is None:
        from ..errors import WeightsError
        from ..methods.deidentify import missing_latent_weights

        missing = missing_latent_weights()
        if missing:
            raise WeightsError(
                f"deidentify --model latent: weights missing ({', '.join(missing)}); run "
                + " and ".join(f"`privpix weights fetch {m}`" for m in missing)
                + ", train a model with `privpix train deidentify`, or use --model ksame"
            )
    if model == "private-encoder" and kw["weights"] is None:
        from ..errors import WeightsError
        from ..methods.deidentify import private_encoder_checkpoint, private_encoder_checkpoints

        if private_encoder_checkpoint(kw["beta"]) is None:
            have = ", ".join(f"{b:g}" for b in sorted(private_encoder_checkpoints())) or "none"
            raise WeightsError(
                f"deidentify --model private-encoder: no checkpoint for beta {kw['beta']:g} (available: "
                f"{have}); train one with `privpix train deidentify FACES/ --beta {kw['beta']:g}`"
            )
    if model == "ksame" and pool is None:
        pool = _donor_pool(common, donors_dir)
    return run_method(
        "deidentify",
        "deidentify",
        common,
        {
            "beta": kw["beta"],
            "model": model,
            "k": kw["k"],
            "donors": pool,
            "on_fail": kw["on_fail"],
            "steps": kw["steps"],
            "box_scale": common.spec.box_scale,
            "device": common.device,
            "weights": str(kw["weights"]) if kw["weights"] is not None else None,
        },
    )


deidentify = image_command(
    [
        _p(
            "beta",
            Annotated[
                float,
                typer.Option(
                    "--beta",
                    "-b",
                    min=0.0,
                    max=1.0,
                    help="Identity similarity to keep: 0 = an unrelated identity, 1 = the same person.",
                ),
            ],
            0.0,
        ),
        _p(
            "model",
            Annotated[
                str,
                typer.Option(
                    "--model",
                    "-m",
                    help="private-encoder (checkpoint from privpix train deidentify), latent (e4e weights: "
                    "privpix weights fetch e4e-ffhq), ksame (offline, needs donor faces) or auto.",
                ),
            ],
            "auto",
        ),
        _p(
            "k",
            Annotated[int, typer.Option("--k", min=1, max=50, help="ksame: donor faces averaged per face.")],
            5,
        ),
        _p(
            "donors",
            Annotated[
                Path | None,
                typer.Option(
                    "--donors",
                    envvar="PRIVPIX_DONORS",
                    help="ksame: folder of donor photos (default: the other faces of this run).",
                ),
            ],
            None,
        ),
        _p(
            "on_fail",
            Annotated[
                str,
                typer.Option(
                    "--on-fail",
                    help="A face without usable landmarks (profile, occluded, tiny): blur it, mask it, "
                    "or error (no output for the image).",
                ),
            ],
            "blur",
        ),
        _p(
            "steps",
            Annotated[int, typer.Option("--steps", min=1, max=5000, help="latent: optimisation steps.")],
            100,
        ),
        _p(
            "weights",
            Annotated[
                Path | None,
                typer.Option(
                    "--weights", help="Checkpoint file for private-encoder / latent (default: registry)."
                ),
            ],
            None,
        ),
        *WEIGHTS_PARAMS,
    ],
    _run,
    """De-identify faces: natural faces with the pose, expression and lighting kept but nobody's identity.

--beta sets how much identity remains (0 = none). Faces are found (--detect faces by default, or
--boxes / --mask), located by 68 landmarks, aligned, changed by the backend and blended back; a face
without landmarks is blurred (--on-fail). --json records per face the backend, beta and the identity
similarity reached (dlib).

Examples:

  privpix deidentify photos/ -o out/ --model ksame     k-Same with donors from the other photos

  privpix deidentify photo.jpg --donors faces/ --beta 0.2

  privpix deidentify photo.jpg --model latent --steps 100
""",
)

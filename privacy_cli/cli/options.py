"""Options shared by every image command, defined once, and the factory that builds a command from them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..io import DEFAULT_MAX_PIXELS
from ..pipeline import DEFAULT_BOX_SCALE, DEFAULT_DETECT, RegionSpec
from ..regions import BOXES_FORMATS

Inputs = Annotated[
    list[str],
    typer.Argument(metavar="INPUT", help="Image files, folders (recursive) or globs.", show_default=False),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="Output file (one input) or folder: in a folder every output keeps its input's name (folder "
        "trees mirrored; equal names get -2, -3). Default: next to each input as <stem>_<command><ext>.",
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON record per image on stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No messages or progress; errors still go to stderr.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (auto: CUDA > MPS > CPU).")]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        "-j",
        min=0,
        max=256,
        help="Images processed in parallel (local: threads; ray: actors). 0 = auto: local runs 2 at once "
        "on 2+ cores when no torch model is loaded, else 1; ray runs 1 actor.",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process) or ray (a Ray cluster: actors, batches, retries, a resumable manifest; "
        "pip install 'privpix[ray]'). Inputs/-o may be s3:// or gs:// URIs.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to use with --engine ray: auto (the running one) or host:port. "
        "Default: start a local cluster.",
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        max=100000,
        help="Images per Ray task (--engine ray); with a CUDA GPU also the images whose model forward "
        "passes are batched together (erase, stylize, deidentify; both engines).",
    ),
]
QualityOpt = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality of outputs.")]
KeepMeta = Annotated[
    bool, typer.Option("--keep-metadata", help="Keep EXIF (incl. GPS!), XMP and comments. Default: stripped.")
]
MaxPixels = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."),
]
MaskOpt = Annotated[
    Path | None,
    typer.Option("--mask", help="Mask image (any mode, non-zero = sensitive) applied to every input."),
]
MaskDirOpt = Annotated[
    Path | None,
    typer.Option("--mask-dir", help="Folder of masks matched by stem (<stem>.* or <stem>_mask.*)."),
]
ResizeMask = Annotated[bool, typer.Option("--resize-mask", help="Scale masks of another size to the image.")]
BoxesOpt = Annotated[
    Path | None,
    typer.Option("--boxes", help="JSON file of regions in pixels: " + escape(BOXES_FORMATS) + "."),
]
AllowEmptyOpt = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Write an unchanged copy when --mask/--mask-dir/--boxes/--annotations has nothing for an image "
        "(default: that image is an error, exit 1, nothing written).",
    ),
]
ShowTextOpt = Annotated[
    bool,
    typer.Option(
        "--show-text",
        help="Include the recognised text in --json records (default: only its category, box and score, "
        "so logs never hold the personal data removed).",
    ),
]
AnnotationsOpt = Annotated[
    Path | None,
    typer.Option("--annotations", help="Visual Redactions annotation JSON (images matched by id = stem)."),
]
AttributesOpt = Annotated[
    str | None,
    typer.Option("--attributes", help="Visual Redactions attr ids to use, e.g. a105_face_all,a49_phone."),
]
DetectOpt = Annotated[
    str | None,
    typer.Option(
        "--detect",
        help="Detectors, comma separated: faces, text (see `privpix detect --help`); 'none' to use only given "
        f"regions. Default: {','.join(DEFAULT_DETECT)} when no other region source is given.",
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Face detector confidence threshold (lower finds more). Default: each detector's own calibrated value.",
    ),
]
TextOpt = Annotated[
    str, typer.Option("--text", help="Text to obfuscate: pii (emails, phones, names, ...) or all.")
]
DilateOpt = Annotated[
    int, typer.Option("--dilate", min=0, help="Grow regions by this many pixels (at most the image's size).")
]
BoxScaleOpt = Annotated[
    float,
    typer.Option("--box-scale", min=0.1, max=100.0, help="Scale of detected face boxes about their centre."),
]
FeatherOpt = Annotated[
    float,
    typer.Option(
        "--feather",
        min=0.0,
        help="Soft edge width (pixels) added outside the regions (at most the image's longer side).",
    ),
]


def check_finite(kwargs: dict[str, Any]) -> None:
    """Every float option must be a finite number (``inf``/``nan`` parse as floats): UsageError, exit 2."""
    import math

    from ..errors import UsageError

    for name, v in kwargs.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--{name.replace('_', '-')} {v}: must be a finite number")


def split_list(s: str | None) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()] if s else []


def region_spec(
    mask: Path | None,
    mask_dir: Path | None,
    resize_mask: bool,
    boxes: Path | None,
    annotations: Path | None,
    attributes: str | None,
    detect: str | None,
    threshold: float | None,
    text: str,
    dilate: int,
    box_scale: float,
    feather: float,
    device: str,
    allow_empty: bool = False,
    whole_image: bool = False,
) -> RegionSpec:
    """Reconcile the region options into a RegionSpec. With no source given: the whole image when
    ``whole_image`` (whole-image commands such as stylize), else the default detectors."""
    from ..errors import UsageError

    if text not in ("pii", "all"):
        raise UsageError(f"--text {text!r}: use pii or all")
    spec = RegionSpec(
        mask=mask,
        mask_dir=mask_dir,
        resize_mask=resize_mask,
        boxes=boxes,
        annotations=annotations,
        attributes=split_list(attributes) or None,
        threshold=threshold,
        text=text,
        dilate=dilate,
        box_scale=box_scale,
        feather=feather,
        device=device,
        allow_empty=allow_empty,
    )
    kinds = split_list(detect)
    if kinds == ["none"]:
        kinds = []
    elif detect is None and not spec.has_source():
        if whole_image:
            spec.whole = True
        else:
            kinds = list(DEFAULT_DETECT)
    if kinds:
        from ..detect import list_detectors

        known = list_detectors()
        bad = [k for k in kinds if k not in known]
        if bad:
            raise UsageError(f"--detect {','.join(bad)}: unknown detector; known: {', '.join(known)}")
    spec.detect = tuple(kinds)
    for p, flag in ((mask, "--mask"), (boxes, "--boxes"), (annotations, "--annotations")):
        if p is not None and not Path(p).is_file():
            raise UsageError(f"{flag} {p}: no such file")
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise UsageError(f"--mask-dir {mask_dir}: no such folder")
    if boxes is not None:  # read and validate the whole file before any image is processed
        from ..errors import RegionError
        from ..pipeline import boxes_file

        try:
            boxes_file(spec)
        except RegionError as e:
            raise UsageError(f"--boxes {e}") from None
    return spec


@dataclass
class CommonArgs:
    """The shared options of an image command, after parsing."""

    inputs: list[str]
    output: Path | None
    overwrite: bool
    json: bool
    quiet: bool
    device: str
    workers: int
    quality: int
    keep_metadata: bool
    max_pixels: int
    spec: RegionSpec
    show_text: bool = False
    engine: str = "local"
    ray_address: str | None = None
    batch_size: int = 8


def _p(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


COMMON_PARAMS = [
    _p("inputs", Inputs),
    _p("output", OutputOpt, None),
    _p("mask", MaskOpt, None),
    _p("mask_dir", MaskDirOpt, None),
    _p("resize_mask", ResizeMask, False),
    _p("boxes", BoxesOpt, None),
    _p("allow_empty", AllowEmptyOpt, False),
    _p("annotations", AnnotationsOpt, None),
    _p("attributes", AttributesOpt, None),
    _p("detect", DetectOpt, None),
    _p("threshold", ThresholdOpt, None),
    _p("text", TextOpt, "pii"),
    _p("box_scale", BoxScaleOpt, DEFAULT_BOX_SCALE),
    _p("dilate", DilateOpt, 0),
    _p("feather", FeatherOpt, 0.0),
    _p("overwrite", Overwrite, False),
    _p("quality", QualityOpt, 95),
    _p("keep_metadata", KeepMeta, False),
    _p("max_pixels", MaxPixels, DEFAULT_MAX_PIXELS),
    _p("device", DeviceOpt, "auto"),
    _p("workers", WorkersOpt, 0),
    _p("engine", EngineOpt, "local"),
    _p("ray_address", RayAddressOpt, None),
    _p("batch_size", BatchSizeOpt, 8),
    _p("json_out", JsonOpt, False),
    _p("show_text", ShowTextOpt, False),
    _p("quiet", QuietOpt, False),
]
_COMMON_NAMES = [p.name for p in COMMON_PARAMS]


#: ``--weights-dir`` / ``--offline`` of every image command that loads checkpoints (erase, stylize,
#: perturb, deidentify); the command passes them to :func:`privacy_cli.weights.configure`
WEIGHTS_PARAMS = [
    _p(
        "weights_dir",
        Annotated[
            Path | None,
            typer.Option(
                "--weights-dir",
                envvar="PRIVPIX_WEIGHTS_DIR",
                help="Folder of checkpoints (see privpix weights).",
            ),
        ],
        None,
    ),
    _p("offline", Annotated[bool, typer.Option("--offline", help="Never download weights.")], False),
]


def image_command(
    extra: list[inspect.Parameter],
    run: Callable[[CommonArgs, dict[str, Any]], int],
    doc: str,
    whole_image: bool = False,
) -> Callable[..., None]:
    """Build a Typer command function with the shared options plus ``extra`` method options.

    ``run(common, method_kwargs) -> exit code`` does the work; options named in ``extra`` arrive
    in ``method_kwargs``. ``whole_image``: without a region source the method applies to the whole
    image (instead of the default detectors).
    """

    def command(**kwargs: Any) -> None:
        from ..runtime import resolve_device

        check_finite(kwargs)  # before anything runs, for every option of every image command

        # "auto"/"cpu" are resolved where a model loads (no torch import for mask-only jobs)
        device = kwargs["device"] if kwargs["device"] in ("auto", "cpu") else resolve_device(kwargs["device"])
        detect_device = device
        if device.startswith("cuda"):
            from ..detect.ort import detector_device

            detect_device = detector_device(device)  # plain onnxruntime: detectors on CPU, models on GPU
        spec = region_spec(
            kwargs["mask"],
            kwargs["mask_dir"],
            kwargs["resize_mask"],
            kwargs["boxes"],
            kwargs["annotations"],
            kwargs["attributes"],
            kwargs["detect"],
            kwargs["threshold"],
            kwargs["text"],
            kwargs["dilate"],
            kwargs["box_scale"],
            kwargs["feather"],
            detect_device,
            kwargs["allow_empty"],
            whole_image,
        )
        common = CommonArgs(
            inputs=kwargs["inputs"],
            output=kwargs["output"],
            overwrite=kwargs["overwrite"],
            json=kwargs["json_out"],
            quiet=kwargs["quiet"],
            device=device,
            workers=kwargs["workers"],
            quality=kwargs["quality"],
            keep_metadata=kwargs["keep_metadata"],
            max_pixels=kwargs["max_pixels"],
            spec=spec,
            show_text=kwargs["show_text"],
            engine=kwargs["engine"],
            ray_address=kwargs["ray_address"],
            batch_size=kwargs["batch_size"],
        )
        spec.keep_text = kwargs["show_text"]
        method_kwargs = {k: v for k, v in kwargs.items() if k not in _COMMON_NAMES}
        code = run(common, method_kwargs)
        if code:
            raise typer.Exit(code)

    from .output import cli_errors

    command = cli_errors(command)
    params = COMMON_PARAMS[:1] + list(extra) + COMMON_PARAMS[1:]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command

"""``privpix train eraser DATA``: two-stage ERASER fine-tuning (thin command over
:func:`privacy_cli.train.eraser.train_eraser`). Mounted by the root app as ``privpix train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import Output, cli_errors

app = typer.Typer(
    name="train",
    help="Fine-tune learned methods.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _train() -> None:
    """Train learned methods (ERASER fine-tuning, learned task masks)."""


@app.command("eraser")
@cli_errors
def eraser(
    data: Annotated[
        Path,
        typer.Argument(
            help="images/ + masks/ folder (pairs by stem) or a Visual Redactions tree "
            "(annotations/2017_v1/<split>.json, images/<split>/<id>.jpg).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder: checkpoints, train_log.jsonl, eval.json.")
    ] = Path("runs/eraser"),
    split: Annotated[str, typer.Option("--split", help="Visual Redactions split to train on.")] = "train",
    val_split: Annotated[
        str, typer.Option("--val-split", help="Visual Redactions split to evaluate on.")
    ] = "val",
    val_data: Annotated[
        Path | None, typer.Option("--val-data", help="Separate evaluation data (either layout).")
    ] = None,
    attributes: Annotated[
        str | None,
        typer.Option(
            "--attributes", help="Visual Redactions attr ids to use (comma separated; default all)."
        ),
    ] = None,
    size: Annotated[int, typer.Option("--size", min=8, help="Training crop size (multiple of 8).")] = 256,
    resize: Annotated[
        bool, typer.Option("--resize", help="Resize whole images to --size instead of cropping.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 4,
    stage1_steps: Annotated[
        int, typer.Option("--stage1-steps", min=0, help="Quality-loss steps (at most).")
    ] = 2000,
    stage2_steps: Annotated[
        int, typer.Option("--stage2-steps", min=0, help="Steps with the Difference Loss.")
    ] = 2000,
    converge_window: Annotated[
        int,
        typer.Option(
            "--converge-window",
            min=0,
            help="End stage 1 early when the quality loss stalls over this many steps (0: off).",
        ),
    ] = 0,
    lambda_diff: Annotated[
        float, typer.Option("--lambda-diff", min=0.0, help="Weight of the Difference Loss (stage 2).")
    ] = 1.0,
    diff_margin: Annotated[
        float,
        typer.Option(
            "--diff-margin",
            min=0.0,
            help="Stop pushing once the (normalised) Difference Loss exceeds this; 0: never stop.",
        ),
    ] = 4.0,
    lr_g: Annotated[float, typer.Option("--lr", help="Generator + fusion learning rate (Adam).")] = 1e-4,
    lr_d: Annotated[float, typer.Option("--lr-d", help="Discriminator learning rate (Adam).")] = 1e-5,
    init: Annotated[
        str,
        typer.Option(
            "--init", help="big-lama, eraser (registry weights) or a checkpoint file to start from."
        ),
    ] = "big-lama",
    prior: Annotated[str, typer.Option("--prior", help="auto, transformer or coarse.")] = "auto",
    transformer: Annotated[
        Path | None,
        typer.Option(
            "--transformer", help="ICT Prior Transformer checkpoint (enables the transformer prior)."
        ),
    ] = None,
    palette: Annotated[
        Path | None, typer.Option("--palette", help="(512,3) palette .npy (e.g. ICT kmeans_centers.npy).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (auto: CUDA when present).")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[
        int, typer.Option("--workers", "-j", min=0, help="Data-loading worker processes.")
    ] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 500,
    eval_images: Annotated[
        int, typer.Option("--eval-images", min=0, help="Images in the evaluation pass (0: none).")
    ] = 16,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Ignore existing checkpoints in --out.")
    ] = False,
    weights_dir: Annotated[
        Path | None,
        typer.Option("--weights-dir", help="Folder with pretrained weights (privpix weights fetch/import)."),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Never download weights: use the weights folder and the Hub cache only."
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Fine-tune ERASER: stage 1 on LaMa's quality losses, stage 2 adds the (maximised) Difference Loss.

    Needs the big-lama, ADE20k ResNet50 and VGG19 weights (privpix weights fetch ...). Resumes from
    the newest checkpoint in --out. Every loss of every step goes to --out/train_log.jsonl.

    Examples:
      privpix train eraser data/visual_redactions --out runs/vr --stage1-steps 5000 --stage2-steps 5000
      privpix train eraser my_pairs/ --size 256 --lambda-diff 2 --device cuda
    """
    from ..train.eraser import TrainConfig, train_eraser
    from ..weights import configure

    configure(weights_dir=weights_dir, offline=True if offline else None)
    out_ = Output(json_, quiet)
    cfg = TrainConfig(
        data=data,
        out_dir=out,
        split=split,
        val_split=val_split,
        val_data=val_data,
        attributes=[a.strip() for a in attributes.split(",") if a.strip()] if attributes else None,
        size=size,
        resize=resize,
        batch_size=batch_size,
        stage1_steps=stage1_steps,
        stage2_steps=stage2_steps,
        stage1_converge_window=converge_window,
        lambda_diff=lambda_diff,
        diff_margin=diff_margin or None,
        lr_g=lr_g,
        lr_d=lr_d,
        init=init,
        prior=prior,
        transformer_weights=transformer,
        palette=palette,
        device=device,
        seed=seed,
        num_workers=workers,
        checkpoint_every=checkpoint_every,
        eval_images=eval_images,
        resume=not no_resume,
        quiet=quiet or json_,
    )
    res = train_eraser(cfg)
    record = {
        "step": res.step,
        "stage": res.stage,
        "stage2_start": res.stage2_start,
        "checkpoint": str(res.checkpoint) if res.checkpoint else None,
        "weights": str(res.weights) if res.weights else None,
        "log": str(res.log),
        "device": res.device,
        "resumed_from": res.resumed_from,
        "losses": res.losses,
        "metrics": res.metrics,
    }
    if json_:
        out_.emit_json(record)
    else:
        out_.line(f"trained to step {res.step} on {res.device}; weights: {res.weights}")
        if res.metrics:
            out_.line("eval: " + ", ".join(f"{k} {v:.4g}" for k, v in res.metrics.items()))


@app.command("uap")
@cli_errors
def uap(
    folder: Annotated[
        Path, typer.Argument(help="Folder of images (recursive) to train on.", show_default=False)
    ],
    target: Annotated[
        str,
        typer.Option("--target", "-t", help="Classifier to fool (places365-resnet50, imagenet-resnet50)."),
    ] = "places365-resnet50",
    xi: Annotated[
        float, typer.Option("--xi", help="L-infinity bound of the perturbation, grey levels.")
    ] = 10.0,
    fooling_rate: Annotated[
        float, typer.Option("--fooling-rate", help="Stop once this share of images changes label.")
    ] = 0.8,
    max_images: Annotated[
        int, typer.Option("--max-images", min=1, help="Use at most this many images.")
    ] = 3000,
    max_epochs: Annotated[
        int, typer.Option("--max-epochs", min=1, help="Passes over the images at most.")
    ] = 10,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")] = Path(
        "uap.safetensors"
    ),
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the image order.")] = 0,
    weights_dir: Annotated[
        Path | None,
        typer.Option("--weights-dir", envvar="PRIVPIX_WEIGHTS_DIR", help="Folder of checkpoints."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Train a universal adversarial perturbation (UAP + DeepFool, paper 002) for perturb --attack uap.

    One perturbation that changes the classifier's label on most photos; images are resized to a short side of 256 and centre
    cropped to 224. Resumes from <out>.partial.safetensors after an interruption.

    Example: privpix train uap photos/ --target places365-resnet50 --xi 10 --fooling-rate 0.8 -o uap.safetensors
    """
    from ..io import iter_images
    from ..train.uap import train_uap
    from ..weights import configure

    configure(weights_dir=weights_dir)
    output = Output(json_out, quiet)
    if not folder.is_dir():
        from ..errors import UsageError

        raise UsageError(f"{folder}: no such folder")
    paths = sorted(iter_images([folder]))
    with output.progress(min(len(paths), max_images) * max_epochs, "train uap") as bar:
        last = [0]

        def progress(done: int, total: int, rate: float) -> None:
            if bar and done > last[0]:
                bar.advance(done - last[0])
                last[0] = done

        res = train_uap(
            paths, target, out, xi=xi, fooling=fooling_rate, max_images=max_images, max_epochs=max_epochs,
            device=device, seed=seed, progress=progress,
        )  # fmt: skip
    assert res is not None
    record = {
        "out": str(res.path),
        "target": target,
        "xi": xi,
        "fooling_rate": round(res.fooling_rate, 4),
        "epochs": res.epochs,
        "images": res.images,
        "seconds": round(res.seconds, 2),
        "images_per_second": round(res.images_per_second, 3),
        "resumed": res.resumed,
    }
    output.record(record)
    output.line(
        f"UAP written to {res.path}: fooling rate {res.fooling_rate:.1%} on {res.images} images "
        f"after {res.epochs} pass(es)"
    )
    if res.fooling_rate < fooling_rate:
        output.error(f"requested fooling rate {fooling_rate:.0%} not reached (got {res.fooling_rate:.1%})")
        raise typer.Exit(1)


@app.command("mask")
@cli_errors
def mask(
    data: Annotated[
        Path,
        typer.Argument(
            help="Image folder: with --labels, files listed relative to it; else one sub-folder per class, "
            "a CelebA root (hair colour) or a FER+ root (fer2013.csv + fer2013new.csv).",
            show_default=False,
        ),
    ],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="CSV with the columns file,label (file relative to DATA).")
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run folder: masker.safetensors, phi.safetensors, config.json."),
    ] = Path("runs/mask"),
    keep: Annotated[float, typer.Option("--keep", help="K: percent of pixels revealed.")] = 25.0,
    size: Annotated[int, typer.Option("--size", help="Model resolution (multiple of 16).")] = 64,
    input_kind: Annotated[
        str, typer.Option("--input", help="image (whole images) or face (detected face crops).")
    ] = "image",
    face_scale: Annotated[
        float, typer.Option("--face-scale", help="Face crop side / detector box side (--input face).")
    ] = 1.6,
    dataset: Annotated[
        str, typer.Option("--dataset", help="auto, csv, folders, celeba-hair or ferplus.")
    ] = "auto",
    no_adversarial: Annotated[
        bool, typer.Option("--no-adversarial", help="The paper's non-adversarial baseline (no obfuscator).")
    ] = False,
    adversary: Annotated[
        str,
        typer.Option(
            "--adversary",
            help="Who reads the hidden remainder: shared (the predictor Φ, the paper) or separate "
            "(its own network trained on the stored remainder every step).",
        ),
    ] = "shared",
    rest_weight: Annotated[
        float,
        typer.Option(
            "--rest-weight",
            min=0.0,
            help="Weight of the remainder term pushing the hidden soft mask to 0 (0: the paper's loss).",
        ),
    ] = 3.0,
    gate: Annotated[
        str,
        typer.Option(
            "--gate",
            help="Soft-mask gate: sigmoid (the paper), stretched (can be exactly 0), auto (stretched when "
            "adversarial).",
        ),
    ] = "auto",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=2)] = 64,
    lr: Annotated[float, typer.Option("--lr", min=1e-7, help="Adam learning rate.")] = 1e-3,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Validation share when the data has no published split.")
    ] = 0.1,
    patience: Annotated[
        int,
        typer.Option(
            "--patience",
            min=0,
            help="Stop after this many epochs without a better utility/privacy score (0: off).",
        ),
    ] = 5,
    max_images: Annotated[
        int | None, typer.Option("--max-images", min=1, help="Use at most this many training images.")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task name recorded in config.json.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Start over even if --out holds a checkpoint.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Learn an adversarial task mask (paper 003): reveal the K% of pixels a task needs, hide the rest.

    A U-Net masker and a classifier are trained alternately: 3 steps predicting the label from the
    revealed pixels, 1 step making the hidden remainder uninformative (cross-entropy to uniform).
    Validation picks the epoch with the best utility/privacy trade-off; training resumes from --out.
    Apply the result with `privpix mask PHOTOS --learned RUN_DIR`.

    Examples:
      privpix train mask data/ --labels labels.csv --keep 25 --out runs/task
      privpix train mask celeba/ --input face --face-scale 2 --keep 25 --out runs/hair --device cuda
    """
    from ..train.masker import MaskTrainConfig, check_config, train_mask

    out_ = Output(json_, quiet)
    cfg = MaskTrainConfig(
        out_dir=out,
        keep=keep,
        size=size,
        input_kind=input_kind,
        face_scale=face_scale,
        adversarial=not no_adversarial,
        adversary=adversary,
        rest_weight=rest_weight,
        gate=gate,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        device=device,
        resume=not no_resume,
        task=task or "task",
        quiet=quiet or json_,
    )
    check_config(cfg)
    res = train_mask(cfg, data, labels, dataset, val_fraction, max_images)
    record = {
        "out": str(res.out_dir),
        "epoch": res.epoch,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "resumed_from": res.resumed_from,
        "device": res.device,
        "images_per_s": round(res.images_per_s, 2),
        "val": res.val,
    }
    if json_:
        out_.emit_json(record)
    else:
        acc_p, acc_o = res.val.get("val_acc_p", float("nan")), res.val.get("val_acc_o", float("nan"))
        out_.line(
            f"best epoch {res.best_epoch}/{res.epoch}: predictor accuracy {acc_p:.3f}, "
            f"obfuscator {acc_o:.3f} on validation; run folder {res.out_dir}"
        )


@app.command("deidentify")
@cli_errors
def deidentify(
    faces: Annotated[
        Path, typer.Argument(help="Folder of face photos (aligned on the fly).", show_default=False)
    ],
    beta: Annotated[
        float, typer.Option("--beta", "-b", min=0.0, max=1.0, help="Target identity similarity (0 = none).")
    ] = 0.0,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run folder: checkpoint.pt, train_log.jsonl, privacy_<beta>.pt."),
    ] = Path("runs/deidentify"),
    steps: Annotated[int, typer.Option("--steps", min=1)] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 4,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="AdamW learning rate.")] = 1e-4,
    lambda_id: Annotated[float, typer.Option("--lambda-id", min=0.0)] = 0.1,
    lambda_l2: Annotated[float, typer.Option("--lambda-l2", min=0.0)] = 1.0,
    lambda_lpips: Annotated[float, typer.Option("--lambda-lpips", min=0.0)] = 0.8,
    init: Annotated[
        str, typer.Option("--init", help="psp-ffhq-encode (registry) or a pSp-layout checkpoint file.")
    ] = "psp-ffhq-encode",
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda (auto: CUDA when present).")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 100,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore checkpoint.pt in --out.")] = False,
    no_install: Annotated[
        bool, typer.Option("--no-install", help="Do not copy the model into <weights dir>/private-encoder/.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Train a Private-Encoder model for --beta (paper 004): pSp fine-tuned with |beta - cos| identity loss.

    Needs psp-ffhq-encode, arcface-ir-se50 and alexnet weights (privpix weights fetch NAME).

    Example:
      privpix train deidentify faces/ --beta 0.2 --steps 20000 --device cuda
    """
    from ..train.deidentify import DeidTrainConfig, train_deidentify

    out_ = Output(json_, quiet)
    res = train_deidentify(
        DeidTrainConfig(
            data=faces,
            beta=beta,
            out_dir=out,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            lambda_id=lambda_id,
            lambda_l2=lambda_l2,
            lambda_lpips=lambda_lpips,
            init=init,
            device=device,
            seed=seed,
            checkpoint_every=checkpoint_every,
            resume=not no_resume,
            install=not no_install,
            quiet=quiet or json_,
        )
    )
    record = {
        "step": res.step,
        "beta": beta,
        "weights": str(res.weights),
        "installed": str(res.installed) if res.installed else None,
        "checkpoint": str(res.checkpoint),
        "log": str(res.log),
        "device": res.device,
        "resumed_from": res.resumed_from,
        "faces": res.faces,
        "skipped": res.skipped,
        "losses": res.losses,
    }
    if json_:
        out_.emit_json(record)
    else:
        out_.line(f"trained to step {res.step} on {res.device}; model for beta {beta:g}: {res.weights}")

"""Two-stage ERASER fine-tuning (paper: "Implementation Details").

Stage 1 trains the fusion + FFC generator on LaMa's quality losses (L1, ResNetPL, non-saturating
adversarial with R1, feature matching) until it converges or for ``stage1_steps`` steps; stage 2
adds the Difference Loss, *maximised* with weight ``lambda_diff`` (see
:mod:`privacy_cli.train.losses`). The Prior Transformer is not trained (the paper borrows ICT's).

Outputs under ``out_dir``::

    train_log.jsonl                  one JSON object per step (every loss), plus eval records
    checkpoints/step_00000500/
        eraser.safetensors           Eraser state_dict (generator.*, fusion.*[, transformer.*])
        discriminator.safetensors    NLayerDiscriminator state_dict
        optimizer.pt                 Adam states, a dict of tensors only (torch.load weights_only=True)
        meta.json                    step, stage, stage-2 start, config, optimiser hyper-parameters
    eval.json                        the final evaluation metrics

Training resumes from the newest complete checkpoint (``meta.json`` is written last, the folder
is renamed into place) and continues the step count; the data order and prior sampling depend
only on ``(seed, step)``, so an interrupted run resumes on the same batches.

The ``eraser.safetensors`` of a checkpoint is what ``build_model("eraser")`` loads.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, UsageError, WeightsError
from ..runtime import choose_device
from . import losses as L
from .data import EraserDataset, StepBatchSampler, _mix, collate, is_visual_redactions, open_dataset

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"
EVAL_FILE = "eval.json"
_CKPT_PREFIX = "step_"


@dataclass
class TrainConfig:
    """Everything ``train_eraser`` needs. Paths may be str or Path.

    Data: ``data`` is an ``images/`` + ``masks/`` folder or a Visual Redactions tree (``split``
    picks the annotation file; ``val_split`` the evaluation one when it exists, else ``val_data``,
    else the training images). ``size``: square crop size (multiple of 8); ``resize``: resize whole
    images to ``size`` instead (the paper's 256x256 setting).

    Schedule: stage 1 runs at most ``stage1_steps`` steps and ends early when the mean quality loss
    of the last ``stage1_converge_window`` steps improved by less than ``stage1_converge_tol``
    (relative) on the window before (0 = no early end); stage 2 then runs ``stage2_steps`` steps.

    Loss weights default to big-lama's (``LAMA_NOTES.md``); ``lambda_diff`` (not given in the paper)
    weighs the Difference Loss objective ``log(1 + min(L_diff, diff_margin))``. The Difference Loss
    is normalised by the original's own VGG energy in the region (see
    :func:`~privacy_cli.train.losses.difference_loss`): about 2 per term, 4 in all, means "as
    different as unrelated content of the same energy", hence the default margin 4 (None: no clamp).

    Models: ``init`` = ``"big-lama"`` (registry generator + identity fusion), ``"eraser"`` (registry
    ERASER checkpoint) or a path to an ERASER/big-lama state_dict (.safetensors, or .ckpt/.pth read
    with ``weights_only=True``). ``pretrained=False`` builds every network (generator,
    discriminator, ResNetPL encoder, VGG19) without pretrained weights (tests). ``freeze_bn`` keeps
    the generator's BatchNorm layers on their running statistics (small fine-tuning batches).
    ``prior``: ``"auto"`` (transformer when ``transformer_weights`` is given, else coarse),
    ``"transformer"`` or ``"coarse"``.
    """

    data: Path
    out_dir: Path = Path("runs/eraser")
    split: str = "train"
    val_split: str = "val"
    val_data: Path | None = None
    attributes: list[str] | None = None
    size: int = 256
    resize: bool = False
    batch_size: int = 4
    stage1_steps: int = 2000
    stage2_steps: int = 2000
    stage1_converge_window: int = 0
    stage1_converge_tol: float = 0.01
    lr_g: float = 1e-4
    lr_d: float = 1e-5
    weight_l1_known: float = 10.0
    weight_l1_missing: float = 0.0
    weight_resnet_pl: float = 30.0
    weight_adv: float = 10.0
    gp_coef: float = 0.001
    weight_fm: float = 100.0
    lambda_diff: float = 1.0
    diff_margin: float | None = 4.0
    diff_content_weight: float = 1.0
    diff_style_weight: float = 1.0
    init: str = "big-lama"
    pretrained: bool = True
    generator_kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_bn: bool = True
    prior: str = "auto"
    transformer_weights: Path | None = None
    palette: Path | None = None
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_images: int = 16
    eval_every: int = 0
    resume: bool = True
    quiet: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What a run produced: the final step (completed steps), the stage it ended in, the step
    stage 2 started at, the last checkpoint folder and its ``eraser.safetensors``, the log file,
    the last step's losses, the evaluation metrics and the step it resumed from (None = fresh)."""

    step: int
    stage: int
    stage2_start: int | None
    checkpoint: Path | None
    weights: Path | None
    log: Path
    losses: dict[str, float]
    metrics: dict[str, float]
    resumed_from: int | None
    device: str


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, Any]:
    """A state_dict from .safetensors or a torch file (``weights_only=True``); never unpickles objects."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a weights problem
        raise WeightsError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: not a state_dict")
    return obj


def build_eraser(config: TrainConfig, device: torch.device):  # -> Eraser
    """The ERASER to fine-tune, as ``config.init`` / ``pretrained`` / ``transformer_weights`` say."""
    from ..models import build_model
    from ..models.eraser import (
        Eraser,
        PriorTransformer,
        _transformer_config,
        eraser_key_filter,
        ict_transformer_key_filter,
    )
    from ..models.lama import big_lama_key_filter

    gkw = dict(config.generator_kwargs)
    if config.init == "big-lama":
        eraser = Eraser.from_lama(build_model("big-lama", pretrained=config.pretrained, **gkw))
    elif config.init == "eraser":
        eraser = build_model("eraser", pretrained=config.pretrained, generator=gkw)
    else:
        path = Path(config.init)
        sd = _read_state_dict(path)
        eraser = Eraser.from_lama(build_model("big-lama", pretrained=False, **gkw))
        if any(k.endswith("fusion.weight") for k in sd):
            eraser.load_state_dict(eraser_key_filter(sd, eraser))
        else:
            eraser.generator.load_state_dict(big_lama_key_filter(sd, eraser.generator))
    if config.transformer_weights is not None:
        sd = ict_transformer_key_filter(_read_state_dict(Path(config.transformer_weights)), None)
        tr = PriorTransformer(**_transformer_config(sd))
        tr.load_state_dict(sd)
        eraser.attach_transformer(tr, palette=config.palette)
    elif config.palette is not None:
        eraser.tokenizer.set_palette(config.palette)
    if config.prior == "transformer" and not eraser.transformer_ready:
        raise UsageError(
            "prior 'transformer' needs transformer weights (transformer_weights / --transformer)"
        )
    eraser.prior = config.prior
    return eraser.to(device)


class EraserTrainer:
    """The networks, optimisers and one training step of ERASER fine-tuning.

    ``eraser`` (trained: generator + fusion; transformer frozen), ``discriminator``
    (NLayerDiscriminator), ``encoder`` (ResNetPL, frozen; None when its weight is 0) and ``vgg``
    (:class:`~privacy_cli.train.losses.VGGFeatures`, frozen). Adam for G and D.
    """

    def __init__(self, config: TrainConfig, device: torch.device | None = None, log=None) -> None:  # noqa: ANN001
        from ..models import build_model

        self.config = config
        self.device = device or choose_device(config.device)
        self._warn = log or (lambda msg: None)
        torch.manual_seed(config.seed)
        self.eraser = build_eraser(config, self.device)
        try:
            self.discriminator = build_model("big-lama-discr", pretrained=config.pretrained)
        except WeightsError as e:
            self._warn(f"discriminator starts from scratch: {e}")
            self.discriminator = build_model("big-lama-discr", pretrained=False)
        self.discriminator.to(self.device)
        self.encoder = None
        if config.weight_resnet_pl > 0:
            self.encoder = build_model("lama-resnetpl-ade20k", pretrained=config.pretrained).to(self.device)
            self.encoder.eval().requires_grad_(False)
        self.vgg = L.vgg19_features(config.pretrained).to(self.device)
        if self.eraser.transformer is not None:
            self.eraser.transformer.requires_grad_(False)
        g_params = list(self.eraser.generator.parameters()) + list(self.eraser.fusion.parameters())
        self.opt_g = torch.optim.Adam(g_params, lr=config.lr_g)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d)

    # ---- modes ----------------------------------------------------------------------------

    def train_mode(self) -> None:
        self.eraser.train()
        if self.eraser.transformer is not None:
            self.eraser.transformer.eval()
        if self.config.freeze_bn:
            for m in self.eraser.generator.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.discriminator.train()

    # ---- losses ---------------------------------------------------------------------------

    def _priors(self, image: Tensor, mask: Tensor, step: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator(device=self.device).manual_seed(_mix(self.config.seed, step, 3))
        return self.eraser.priors(image, mask, None, gen)

    def generator_losses(self, image: Tensor, mask: Tensor, step: int, stage: int) -> dict[str, Tensor]:
        """Forward + every generator term for one batch (``image`` ``(B,3,S,S)``, ``mask``
        ``(B,1,S,S)`` binary, on the device). Keys: ``pred``, ``out`` (tensors) and scalar losses
        ``l1``, ``resnet_pl``, ``adv_g``, ``fm``, ``quality`` (their sum), in stage 2 also
        ``diff``, ``diff_content``, ``diff_style``, ``diff_objective``; ``loss_g`` = quality -
        lambda_diff * diff_objective (stage 2)."""
        c = self.config
        p_g, p_r = self._priors(image, mask, step)
        pred = self.eraser.predict(image, mask, p_g, p_r)
        out = mask * pred + (1 - mask) * image
        res: dict[str, Tensor] = {"pred": pred, "out": out}
        res["l1"] = L.masked_l1(pred, image, mask, c.weight_l1_known, c.weight_l1_missing)
        res["resnet_pl"] = (
            L.resnet_pl_loss(self.encoder, pred, image, c.weight_resnet_pl)
            if self.encoder is not None
            else pred.new_zeros(())
        )
        self.discriminator.requires_grad_(False)
        try:
            fake_logits, fake_feats = self.discriminator(pred)
            with torch.no_grad():
                _, real_feats = self.discriminator(image)
        finally:
            self.discriminator.requires_grad_(True)
        res["adv_g"] = L.generator_adversarial_loss(fake_logits, c.weight_adv)
        res["fm"] = (
            L.feature_matching_loss(fake_feats, real_feats, c.weight_fm)
            if c.weight_fm > 0
            else pred.new_zeros(())
        )
        res["quality"] = res["l1"] + res["resnet_pl"] + res["adv_g"] + res["fm"]
        loss = res["quality"]
        if stage >= 2:
            d = L.difference_loss(
                self.vgg,
                out,
                image,
                mask,
                content_weight=c.diff_content_weight,
                style_weight=c.diff_style_weight,
            )
            res["diff"] = d["total"].mean()
            res["diff_content"] = d["content"].mean()
            res["diff_style"] = d["style"].mean()
            res["diff_objective"] = L.difference_objective(d["total"], c.diff_margin)
            loss = loss - c.lambda_diff * res["diff_objective"]
        res["loss_g"] = loss
        return res

    def train_step(self, batch: dict, step: int, stage: int) -> dict[str, float]:
        """One generator and one discriminator Adam step on ``batch``; returns every loss as float."""
        c = self.config
        self.train_mode()
        image = batch["image"].to(self.device, non_blocking=True)
        mask = (batch["mask"].to(self.device, non_blocking=True) > 0).float()
        res = self.generator_losses(image, mask, step, stage)
        self.opt_g.zero_grad(set_to_none=True)
        res["loss_g"].backward()
        self.opt_g.step()
        # discriminator: real (with R1) vs the raw prediction
        real = image.detach().requires_grad_(c.gp_coef > 0)
        real_logits, _ = self.discriminator(real)
        r1 = L.r1_penalty(real_logits, real) if c.gp_coef > 0 else None
        fake_logits, _ = self.discriminator(res["pred"].detach())
        d = L.discriminator_adversarial_loss(real_logits, fake_logits, mask, r1, c.gp_coef)
        self.opt_d.zero_grad(set_to_none=True)
        d["total"].backward()
        self.opt_d.step()
        logs = {k: float(v.detach()) for k, v in res.items() if k not in ("pred", "out")}
        logs.update({f"{k}_d" if k == "total" else f"d_{k}": float(v.detach()) for k, v in d.items()})
        logs["loss_d"] = logs.pop("total_d")
        return logs

    # ---- checkpoints ----------------------------------------------------------------------

    def save(self, out_dir: Path, step: int, meta: dict[str, Any]) -> Path:
        """Write ``checkpoints/step_<step>/`` atomically (temp folder, meta.json last, rename)."""
        from safetensors.torch import save_file

        root = Path(out_dir) / CHECKPOINT_DIR
        final = root / f"{_CKPT_PREFIX}{step:08d}"
        tmp = root / f".{final.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        info = {"format": "privpix-eraser", "step": str(step)}
        save_file(_cpu_state(self.eraser.state_dict()), str(tmp / "eraser.safetensors"), metadata=info)
        save_file(
            _cpu_state(self.discriminator.state_dict()), str(tmp / "discriminator.safetensors"), metadata=info
        )
        tensors_g, groups_g = _optimizer_tensors(self.opt_g, "g")
        tensors_d, groups_d = _optimizer_tensors(self.opt_d, "d")
        torch.save({**tensors_g, **tensors_d}, tmp / "optimizer.pt")
        meta = dict(meta, step=step, optimizer_param_groups={"g": groups_g, "d": groups_d})
        meta["has_transformer"] = self.eraser.transformer is not None
        meta["torch"] = torch.__version__
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def load(self, ckpt: Path) -> dict[str, Any]:
        """Restore networks and optimisers from a checkpoint folder; returns its meta.json."""
        from safetensors.torch import load_file

        from ..models.eraser import eraser_key_filter

        try:
            meta = json.loads((ckpt / "meta.json").read_text())
            sd = load_file(str(ckpt / "eraser.safetensors"))
            self.eraser.load_state_dict(eraser_key_filter(sd, self.eraser))
            self.eraser.to(self.device)
            if self.eraser.transformer is not None:
                self.eraser.transformer.requires_grad_(False)
            self.discriminator.load_state_dict(load_file(str(ckpt / "discriminator.safetensors")))
            opt = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise WeightsError(
                f"{ckpt}: cannot resume from this checkpoint ({type(e).__name__}: {e})"
            ) from None
        groups = meta["optimizer_param_groups"]
        _load_optimizer(self.opt_g, opt, "g", groups["g"])
        _load_optimizer(self.opt_d, opt, "d", groups["d"])
        return meta


def _cpu_state(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], list[dict]]:
    """An optimiser's state as ``{"<prefix>.state.<param>.<name>": tensor}`` plus its param groups
    (plain JSON values)."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            t = v if isinstance(v, Tensor) else torch.tensor(v)
            tensors[f"{prefix}.state.{pid}.{name}"] = t.detach().cpu().clone()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str, groups: list[dict]
) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    head = f"{prefix}.state."
    for key, t in tensors.items():
        if key.startswith(head):
            pid, name = key[len(head) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = t
    pg = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": pg})


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint folders (with meta.json) under ``out_dir``, oldest first."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_CKPT_PREFIX) and (p / "meta.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_CKPT_PREFIX) :]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    m = m.expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def _psnr(mse: Tensor) -> float:
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-10)))


@torch.no_grad()
def evaluate_eraser(
    eraser: nn.Module,
    dataset: EraserDataset,
    vgg: L.VGGFeatures,
    device: torch.device,
    max_images: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Quality and difference metrics over the first ``max_images`` items of ``dataset`` (eval
    view), averaged per image.

    Quality (higher is better unless noted): ``psnr``/``ssim`` of the composited output vs the
    original over the whole image (the paper's Table 2); ``l1_known`` (lower better),
    ``psnr_known``, ``ssim_known`` of the *raw* prediction outside the mask (the composite is exact
    there). Difference inside the mask (higher = more different = more private): ``mae_hole``
    (the paper's MAE), ``psnr_hole``, ``ssim_hole`` (lower = more different) and ``vgg_diff``
    (PL-V: VGG19 perceptual distance inside the mask). ``images``: how many were evaluated.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

    was_training = eraser.training
    eraser.eval()
    sums: dict[str, float] = {}
    n = min(len(dataset), max_images)
    for i in range(n):
        s = dataset[i]
        img = s["image"][None].to(device)
        m = (s["mask"][None].to(device) > 0).float()
        if not bool(m.any()):
            continue
        gen = torch.Generator(device=device).manual_seed(_mix(seed, i, 5))
        p_g, p_r = eraser.priors(img, m, None, gen)
        pred = eraser.predict(img, m, p_g, p_r).clamp(0, 1)
        out = m * pred + (1 - m) * img
        known = 1 - m
        _, ssim_map_out = ssim_fn(out, img, data_range=1.0, return_full_image=True)
        _, ssim_map_pred = ssim_fn(pred, img, data_range=1.0, return_full_image=True)
        vals = {
            "psnr": _psnr((out - img).pow(2).mean()),
            "ssim": float(ssim_map_out.mean()),
            "l1_known": float(_masked_mean((pred - img).abs(), known)),
            "psnr_known": _psnr(_masked_mean((pred - img).pow(2), known)),
            "ssim_known": float(_masked_mean(ssim_map_pred, known)),
            "mae_hole": float(_masked_mean((out - img).abs(), m)),
            "psnr_hole": _psnr(_masked_mean((out - img).pow(2), m)),
            "ssim_hole": float(_masked_mean(ssim_map_out, m)),
            "vgg_diff": float(L.perceptual_difference(vgg, out, img, m).mean()),
        }
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + v
        sums["images"] = sums.get("images", 0.0) + 1
    eraser.train(was_training)
    count = sums.pop("images", 0.0)
    metrics = {k: v / count for k, v in sums.items()} if count else {}
    metrics["images"] = count
    return metrics


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class _Logger:
    """JSONL file + Rich console (stderr) for training records."""

    def __init__(self, path: Path, quiet: bool) -> None:
        from rich.console import Console

        self.path = path
        self.console = None if quiet else Console(stderr=True, highlight=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("a", encoding="utf-8")

    def record(self, obj: dict[str, Any]) -> None:
        self.fh.write(json.dumps(obj, default=str) + "\n")
        self.fh.flush()

    def say(self, msg: str) -> None:
        from rich.markup import escape

        if self.console is not None:
            self.console.print(escape(msg))

    def warn(self, msg: str) -> None:
        from rich.markup import escape

        if self.console is not None:
            self.console.print(f"[yellow]warning:[/] {escape(msg)}")
        self.record({"event": "warning", "message": msg, "time": time.time()})

    def close(self) -> None:
        self.fh.close()


def _eval_dataset(config: TrainConfig, train_ds: EraserDataset) -> tuple[EraserDataset, str]:
    data = Path(config.data)
    if config.val_data is not None:
        return open_dataset(
            Path(config.val_data), config.val_split, config.size, False, config.attributes, config.resize
        ), str(config.val_data)
    if is_visual_redactions(data) and config.val_split != config.split:
        try:
            ds = open_dataset(data, config.val_split, config.size, False, config.attributes, config.resize)
            return ds, f"{data} ({config.val_split})"
        except InputError:
            pass
    return EraserDataset(
        train_ds.items, config.size, train=False, resize=config.resize
    ), f"{data} (training images)"


def _converged(history: list[float], window: int, tol: float) -> bool:
    if window <= 0 or len(history) < 2 * window:
        return False
    prev = sum(history[-2 * window : -window]) / window
    last = sum(history[-window:]) / window
    return last > prev * (1 - tol)


def _fmt(logs: dict[str, float], keys: tuple[str, ...]) -> str:
    return " ".join(f"{k} {logs[k]:.4g}" for k in keys if k in logs)


def train_eraser(config: TrainConfig) -> TrainResult:
    """Run (or resume) the two-stage ERASER fine-tuning described by ``config``.

    Raises :class:`InputError` for unusable data, :class:`WeightsError` for missing/corrupt
    pretrained weights or checkpoints, :class:`UsageError` for inconsistent settings.
    """
    c = config
    if c.batch_size < 1 or c.stage1_steps < 0 or c.stage2_steps < 0:
        raise UsageError("batch_size must be >= 1 and step counts >= 0")
    if c.prior not in ("auto", "transformer", "coarse"):
        raise UsageError(f"prior must be auto, transformer or coarse, got {c.prior!r}")
    if c.checkpoint_every < 1 or c.log_every < 1:
        raise UsageError("checkpoint_every and log_every must be >= 1")
    out_dir = Path(c.out_dir)
    device = choose_device(c.device)
    dataset = open_dataset(Path(c.data), c.split, c.size, True, c.attributes, c.resize)
    log = _Logger(out_dir / LOG_FILE, c.quiet)
    try:
        trainer = EraserTrainer(c, device, log.warn)
        step, stage2_start, history, resumed = 0, None, [], None
        ckpt = latest_checkpoint(out_dir) if c.resume else None
        if ckpt is not None:
            meta = trainer.load(ckpt)
            step, stage2_start = int(meta["step"]), meta.get("stage2_start")
            history = list(meta.get("quality_history", []))
            resumed = step
            log.say(f"resuming from {ckpt} (step {step})")
        prior_mode = trainer.eraser.resolve_prior()
        log.record(
            {
                "event": "start",
                "time": time.time(),
                "step": step,
                "device": str(device),
                "prior": prior_mode,
                "images": len(dataset),
                "config": c.to_json(),
            }
        )
        log.say(
            f"ERASER fine-tuning on {device}: {len(dataset)} images, batch {c.batch_size}, size {c.size}, "
            f"prior {prior_mode}, stage 1 <= {c.stage1_steps} steps, stage 2 {c.stage2_steps} steps"
        )
        max_steps = c.stage1_steps + c.stage2_steps
        sampler = StepBatchSampler(len(dataset), c.batch_size, c.seed, step, max(0, max_steps - step))
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=c.num_workers,
            pin_memory=device.type == "cuda",
        )
        last_logs: dict[str, float] = {}
        last_saved: Path | None = ckpt
        t_last, step_last = time.time(), step

        def meta_now() -> dict[str, Any]:
            stage_now = 2 if stage2_start is not None and step >= stage2_start else 1
            return {
                "stage": stage_now,
                "stage2_start": stage2_start,
                "quality_history": history[-2 * max(1, c.stage1_converge_window) :],
                "config": c.to_json(),
                "prior": prior_mode,
                "time": time.time(),
            }

        it = iter(loader)
        while True:
            if stage2_start is None and step >= c.stage1_steps:
                stage2_start = step
                log.record({"event": "stage2", "step": step, "time": time.time()})
                log.say(f"stage 2 (Difference Loss, lambda {c.lambda_diff}) from step {step}")
            if stage2_start is not None and step >= stage2_start + c.stage2_steps:
                break
            stage = 2 if stage2_start is not None else 1
            try:
                batch = next(it)
            except StopIteration:  # pragma: no cover - sampler sized for the maximum
                break
            t0 = time.time()
            logs = trainer.train_step(batch, step, stage)
            step += 1
            logs["sec"] = time.time() - t0
            last_logs = logs
            log.record({"step": step, "stage": stage, "time": time.time(), **logs})
            if stage == 1:
                history.append(logs["quality"])
                if _converged(history, c.stage1_converge_window, c.stage1_converge_tol):
                    stage2_start = step
                    log.record({"event": "stage1_converged", "step": step, "time": time.time()})
                    log.say(f"stage 1 converged at step {step}")
            if step % c.log_every == 0 or step == 1:
                rate = (time.time() - t_last) / max(1, step - step_last)
                t_last, step_last = time.time(), step
                log.say(
                    f"step {step} [stage {stage}] {_fmt(logs, ('loss_g', 'l1', 'resnet_pl', 'adv_g', 'fm', 'diff', 'loss_d'))} "
                    f"({rate:.2f} s/step)"
                )
            if step % c.checkpoint_every == 0:
                last_saved = trainer.save(out_dir, step, meta_now())
                _prune(out_dir, c.keep_checkpoints)
            if c.eval_every and step % c.eval_every == 0:
                _run_eval(trainer, c, dataset, log, step)
        if last_saved is None or int(last_saved.name[len(_CKPT_PREFIX) :]) != step:
            last_saved = trainer.save(out_dir, step, meta_now())
            _prune(out_dir, c.keep_checkpoints)
        metrics = _run_eval(trainer, c, dataset, log, step)
        (out_dir / EVAL_FILE).write_text(json.dumps({"step": step, **metrics}, indent=2))
        final_stage = 2 if stage2_start is not None and step > stage2_start else 1
        return TrainResult(
            step=step,
            stage=final_stage,
            stage2_start=stage2_start,
            checkpoint=last_saved,
            weights=last_saved / "eraser.safetensors" if last_saved else None,
            log=out_dir / LOG_FILE,
            losses=last_logs,
            metrics=metrics,
            resumed_from=resumed,
            device=str(device),
        )
    finally:
        log.close()


def _run_eval(
    trainer: EraserTrainer, c: TrainConfig, train_ds: EraserDataset, log: _Logger, step: int
) -> dict[str, float]:
    if c.eval_images <= 0:
        return {}
    ds, source = _eval_dataset(c, train_ds)
    metrics = evaluate_eraser(trainer.eraser, ds, trainer.vgg, trainer.device, c.eval_images, c.seed)
    log.record({"event": "eval", "step": step, "data": source, "time": time.time(), **metrics})
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v))
    log.say(f"eval @ {step} on {source}: {shown}")
    return metrics


def _prune(out_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "EraserTrainer",
    "TrainConfig",
    "TrainResult",
    "build_eraser",
    "evaluate_eraser",
    "latest_checkpoint",
    "list_checkpoints",
    "train_eraser",
]

"""Training of learned adversarial task masks (paper 003, Gupta et al. 2021, Sec. II).

A U-Net masker gives a soft mask m; the top K% of m keep their soft value (m_topK), the rest is
zeroed. The predictor sees ``x_p = m_topK * x``, the obfuscator ``x_o = (m - m_topK) * x``; both are
the same network Φ. Training repeats 3 predictor steps (cross-entropy on the task label; masker and
Φ updated) and 1 obfuscator step (cross-entropy between Φ(x_o) and the uniform distribution; masker
only). ``adversarial=False`` drops the obfuscator step (the paper's non-adversarial baseline).

Additions (docs/methods.md has the measurements): adversarial runs use by default a stretched,
clipped sigmoid gate (``gate``; m exactly 0 below a logit, the top K% ranked by the logit) and a
remainder term in logit space in every masker update (``rest_weight``, default 3; 0 is the paper's
loss) that pushes the soft mask outside the top K% (and the lowest ``rest_margin`` of it) to 0,
ramped up over ``rest_ramp`` epochs: together they make x_o exactly 0, the only x_o in which a fresh
adversary found nothing. ``adversary="separate"`` replaces the shared Φ as the reader of x_o by
its own network, trained every step on x_o as stored (8-bit), with masker and Φ updated every step
on the predictor loss plus that adversary's cross-entropy to uniform.

Run folder (``out_dir``)::

    config.json          K, size, classes, task, input kind, normalisation, face geometry, scores
    masker.safetensors   the masker of the best validation epoch (U-Net, ``mask-unet``)
    phi.safetensors      its Φ (``mask-phi``)
    adversary.safetensors  the separate adversary (``mask-phi``; ``adversary="separate"`` only)
    train_log.jsonl      one record per epoch (losses, validation accuracies, images/s)
    checkpoint/          the last epoch's full state (networks, optimisers, counters) for resume

Resuming from ``checkpoint/`` continues bit-identically: batches come from a generator seeded by
``(seed, epoch)`` and the checkpoint is taken at epoch boundaries.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, UsageError, WeightsError
from ..models.masker import GATES, Z_OFF, MaskerUNet, TaskClassifier, mask_gate, topk_select

LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "config.json"
CKPT_DIR = "checkpoint"
#: predictor steps per obfuscator step (paper 003, Sec. II-B)
PREDICTOR_STEPS = 3
#: who reads x_o in the obfuscator step: the shared Φ (the paper, default) or a separate adversary
ADVERSARIES = ("separate", "shared")


@dataclass
class MaskTrainConfig:
    """Settings of one training run (see ``privpix train mask --help``)."""

    out_dir: Path
    keep: float = 25.0  # percent of pixels revealed (K)
    size: int = 64  # model resolution (S x S)
    input_kind: str = "image"  # "image": whole images; "face": detected face crops
    face_scale: float = 1.6  # face crop side = face_scale x detector box's longer side
    adversarial: bool = True
    adversary: str = "shared"  # who reads x_o: the "shared" Φ (the paper) or a "separate" network
    rest_weight: float = 3.0  # weight of the remainder term (logit space) in every masker update
    # soft-mask gate: "sigmoid" (the paper), "stretched" (can be exactly 0), "auto": stretched when
    # adversarial, the paper's sigmoid for the non-adversarial baseline
    gate: str = "auto"
    rest_ramp: float = 8.0  # epochs over which the remainder term's weight ramps up linearly from 0
    rest_margin: float = 0.1  # the remainder term also pushes the lowest rest_margin of the top K% to 0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 5  # epochs without a better validation trade-off before stopping (0: never)
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    base: int = 16  # masker width
    task: str = "task"
    quiet: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


@dataclass
class Split:
    """Images ``(N, S, S, 3)`` uint8 and labels ``(N,)`` int64."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class MaskTrainResult:
    epoch: int
    best_epoch: int
    stopped_early: bool
    val: dict[str, float]
    out_dir: Path
    device: str
    images_per_s: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def check_config(c: MaskTrainConfig) -> None:
    """UsageError for absurd settings (before any work)."""
    if not 0 < c.keep <= 100:
        raise UsageError(f"--keep {c.keep}: a percentage in (0, 100]")
    if c.size < 16 or c.size % 16:
        raise UsageError(f"--size {c.size}: a multiple of 16 (Φ halves it four times)")
    if c.input_kind not in ("image", "face"):
        raise UsageError(f"--input {c.input_kind!r}: use image or face")
    if c.adversary not in ADVERSARIES:
        raise UsageError(f"--adversary {c.adversary!r}: use {' or '.join(ADVERSARIES)}")
    if c.rest_weight < 0:
        raise UsageError(f"--rest-weight {c.rest_weight}: >= 0")
    if c.gate != "auto" and c.gate not in GATES:
        raise UsageError(f"--gate {c.gate!r}: use auto, {' or '.join(GATES)}")
    if not 0 <= c.rest_ramp < 1e6:
        raise UsageError(f"--rest-ramp {c.rest_ramp}: epochs >= 0")
    if c.epochs < 1 or c.batch_size < 2 or c.lr <= 0 or c.patience < 0 or c.face_scale <= 0:
        raise UsageError("epochs >= 1, batch size >= 2, lr > 0, patience >= 0 and face scale > 0 are needed")


def resolved_gate(c: MaskTrainConfig) -> str:
    """The masker's gate for ``c``: ``c.gate``, or for "auto" stretched (adversarial) / sigmoid."""
    if c.gate != "auto":
        return c.gate
    return "stretched" if c.adversarial else "sigmoid"


def _normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def stored(x01: Tensor) -> Tensor:
    """``x01`` in [0, 1] as an 8-bit image holds it (rounded to multiples of 1/255); the gradient
    passes straight through the rounding."""
    return x01 + (torch.round(x01 * 255.0) / 255.0 - x01).detach()


#: dm/dz used for the obfuscation gradient into the masker's logit z (sigmoid'(0)); the true
#: m (1 - m) vanishes as m -> 0, long before x_o rounds to 0
LOGIT_GAIN = 0.25
#: logit of a quarter grey level: a hidden pixel with z below it is 0 in an 8-bit x_o whatever x is
Z_ZERO = math.log(0.25 / 254.75)


class MaskTrainer:
    """Masker + Φ (+ the separate adversary) with their optimisers; one call per training step."""

    def __init__(self, c: MaskTrainConfig, classes: int, mean: np.ndarray, std: np.ndarray, device: Any):
        torch.manual_seed(c.seed)
        self.c = c
        self.device = device
        self.gate = resolved_gate(c)
        self.masker = MaskerUNet(base=c.base, gate=self.gate).to(device)
        self.masker.straight_through = True  # a stretched-gate pixel at 0 can still be pulled back up
        self.phi = TaskClassifier(classes=classes, size=c.size).to(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self.opt_pred = torch.optim.Adam([*self.masker.parameters(), *self.phi.parameters()], lr=c.lr)
        self.opt_obf = torch.optim.Adam(self.masker.parameters(), lr=c.lr)
        self.adv: TaskClassifier | None = None
        self.progress = 0.0  # epochs done, fractional (set by fit before each step)
        self.opt_adv: torch.optim.Optimizer | None = None
        if c.adversarial and c.adversary == "separate":
            self.adv = TaskClassifier(classes=classes, size=c.size).to(device)
            self.opt_adv = torch.optim.Adam(self.adv.parameters(), lr=c.lr)

    def mask(self, x01: Tensor) -> tuple[Tensor, Tensor]:
        """Soft mask ``m`` (B, 1, S, S) in [0, 1] and its logit ``z`` (``m = mask_gate(z, gate)``)."""
        z = self.masker.logits(_normalise(x01, self.mean, self.std))
        return mask_gate(z, self.gate, self.masker.straight_through and self.masker.training), z

    def select(self, m: Tensor, z: Tensor, straight_through: bool = False) -> Tensor:
        """The top-K% indicator of ``m`` (see :func:`~privacy_cli.models.masker.topk_select`); with the
        stretched gate ranked and relaxed by the logits ``z``, which also order the pixels at m = 0
        (and keep the straight-through gradient alive there)."""
        return topk_select(m, self.c.keep, straight_through, z if self.gate == "stretched" else None)

    def rest_scale(self) -> float:
        """Weight of the remainder term now: ``rest_weight``, ramped up linearly from 0 over the first
        ``rest_ramp`` epochs (0 without the obfuscator). In epochs, not as a share of the run, so that
        a resumed run with more epochs continues the same schedule."""
        if not self.c.adversarial:
            return 0.0
        ramp = 1.0 if self.c.rest_ramp <= 0 else min(1.0, self.progress / self.c.rest_ramp)
        return self.c.rest_weight * ramp

    def split(self, x01: Tensor, straight_through: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(m, x_p, x_o)`` for images ``x01`` (B, 3, S, S) in [0, 1]: ``x_p = m_topK * x``,
        ``x_o = (m - m_topK) * x``. ``straight_through``: gradients also reach the top-K selection
        (:func:`~privacy_cli.models.masker.topk_select`); forward values are the same."""
        m, z = self.mask(x01)
        mk = m * self.select(m, z, straight_through)
        return m, mk * x01, (m - mk) * x01

    def predictor_step(self, x01: Tensor, y: Tensor) -> dict[str, float]:
        self.masker.train()
        self.phi.train()
        m, z = self.mask(x01)
        sel = self.select(m, z, straight_through=True)
        logits = self.phi(m * sel * x01)
        loss = F.cross_entropy(logits, y)
        w = self.rest_scale()
        if w > 0:  # the remainder term is part of every masker update (adversarial runs)
            loss = loss + w * self.rest_term(z, sel)
        self.opt_pred.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_pred.step()
        return {"loss_pred": float(loss.detach()), "acc_p": float((logits.argmax(1) == y).float().mean())}

    def obfuscator_step(self, x01: Tensor, y: Tensor) -> dict[str, float]:
        """Shared Φ (the paper): cross-entropy between Φ(x_o) and the uniform distribution, plus the
        remainder term (``rest_weight``); only the masker moves."""
        self.masker.train()
        self.phi.requires_grad_(False)
        try:
            m, z = self.mask(x01)
            # x_o = (m - m_topK) * x = m * (1 - sel) * x. The loss reaches the masker through the
            # selection (straight-through, see topk_select), not through the soft values: otherwise the
            # cheapest way to hide the task from x_o is to dim it there rather than to reveal it.
            sel = self.select(m, z, straight_through=True)
            xo = m.detach() * (1.0 - sel) * x01
            logits = self.obfuscator(xo)
            loss = -F.log_softmax(logits, dim=1).mean(dim=1).mean()
            rest = self.rest_term(z, sel)
            self.opt_obf.zero_grad(set_to_none=True)
            (loss + self.rest_scale() * rest).backward()
            self.opt_obf.step()
        finally:
            self.phi.requires_grad_(True)
        return {
            "loss_obf": float(loss.detach()),
            "loss_rest": float(rest.detach()),
            "acc_o": float((logits.argmax(1) == y).float().mean()),
        }

    def rest_term(self, z: Tensor, sel: Tensor) -> Tensor:
        """Remainder term in logit space: mean over all pixels of ``relu(z - Z_ZERO)`` outside the top
        K% (``sel`` 0), i.e. a constant push on every hidden pixel whose x_o would survive 8-bit
        rounding, and none once it cannot."""
        if self.c.rest_margin > 0:  # a margin: the lowest of the top K% too, see rest_margin
            sel = topk_select(z, self.c.keep * (1.0 - self.c.rest_margin))
        return (F.relu(z - self.z_zero) * (1.0 - sel.detach())).mean()

    @property
    def z_zero(self) -> float:
        """The logit below which a hidden pixel is 0 in an 8-bit x_o: ``Z_ZERO`` (sigmoid), or half a
        logit inside the stretched gate's exact zero (``Z_OFF - 0.5``)."""
        return Z_OFF - 0.5 if self.gate == "stretched" else Z_ZERO

    def adversary_step(self, xo: Tensor, y: Tensor) -> dict[str, float]:
        """The separate adversary learns to read the task from ``xo`` (x_o as stored, 8-bit; no
        gradient to the masker), as a fresh attacker would from saved remainders."""
        assert self.adv is not None and self.opt_adv is not None
        self.adv.train()
        logits = self.adv(xo.detach())
        loss = F.cross_entropy(logits, y)
        self.opt_adv.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_adv.step()
        return {"loss_adv": float(loss.detach()), "acc_adv": float((logits.argmax(1) == y).float().mean())}

    def separate_step(self, x01: Tensor, y: Tensor) -> dict[str, float]:
        """Separate adversary (standard adversarial learning), every step: the adversary first learns
        this batch's stored x_o; then masker and Φ minimise the predictor's cross-entropy on x_p plus
        the adversary's cross-entropy to uniform on x_o (plus the remainder term).

        The obfuscation gradient reaches both the selection (straight-through) and the soft values
        outside the top K%, the latter in logit space (``LOGIT_GAIN``); x_o goes through 8-bit
        rounding (straight-through), so hidden pixels that round to 0 are invisible to the adversary.
        """
        assert self.adv is not None
        self.masker.train()
        self.phi.train()
        m, z = self.mask(x01)
        sel = self.select(m, z, straight_through=True)
        logs = self.adversary_step(stored(m * (1.0 - sel) * x01), y)
        m_lin = m.detach() + LOGIT_GAIN * (z - z.detach())
        xo = stored(m_lin * (1.0 - sel) * x01)
        logits = self.phi(m * sel * x01)
        loss_p = F.cross_entropy(logits, y)
        self.adv.requires_grad_(False)
        try:
            lo = self.obfuscator(xo, self.adv)
            loss_o = -F.log_softmax(lo, dim=1).mean(dim=1).mean()
            rest = self.rest_term(z, sel)
            self.opt_pred.zero_grad(set_to_none=True)
            (loss_p + loss_o + self.rest_scale() * rest).backward()
            self.opt_pred.step()
        finally:
            self.adv.requires_grad_(True)
        return {
            **logs,
            "loss_pred": float(loss_p.detach()),
            "acc_p": float((logits.argmax(1) == y).float().mean()),
            "loss_obf": float(loss_o.detach()),
            "loss_rest": float(rest.detach()),
            "acc_o": float((lo.argmax(1) == y).float().mean()),
        }

    def obfuscator(self, xo: Tensor, net: TaskClassifier | None = None) -> Tensor:
        """Φ (or ``net``) on ``x_o`` with the batch's own batch-norm statistics, running statistics
        untouched.

        A convolution followed by batch-norm is blind to the input's scale, so the masker cannot hide
        the task from the obfuscator by merely dimming it (small m outside the top K%): the task
        pixels must leave x_o, i.e. enter the revealed top K%.
        """
        net = self.phi if net is None else net
        bns = [mod for mod in net.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [(mod.training, mod.momentum) for mod in bns]
        was = net.training
        net.train()
        for mod in bns:
            mod.momentum = 0.0  # running = (1 - 0) * running: unchanged
        try:
            return net(xo)
        finally:
            for mod, (tr, mom) in zip(bns, saved, strict=True):
                mod.momentum = mom
                mod.train(tr)
            net.train(was)

    @torch.no_grad()
    def evaluate(self, data: Split, batch: int = 256) -> dict[str, float]:
        """Validation accuracies of Φ on x_p and x_o, and the trade-off score used for early stopping."""
        self.masker.eval()
        self.phi.eval()
        n = len(data.y)
        cp = co = 0
        for idx in np.array_split(np.arange(n), max(1, math.ceil(n / batch))):
            x01, y = _to_tensors(data.x[idx], data.y[idx], self.device)
            _m, xp, xo = self.split(x01)
            cp += int((self.phi(xp).argmax(1) == y).sum())
            if self.adv is not None:  # the separate adversary on stored x_o, with x_o's own batch
                # statistics as in training (its running statistics lag the moving x_o and flatter it)
                co += int((self.obfuscator(stored(xo), self.adv).argmax(1) == y).sum())
            else:
                co += int((self.obfuscator(xo).argmax(1) == y).sum())
        chance = float(np.bincount(data.y).max() / max(1, n))
        acc_p, acc_o = cp / max(1, n), co / max(1, n)
        score = acc_p - (max(0.0, acc_o - chance) if self.c.adversarial else 0.0)
        return {"val_acc_p": acc_p, "val_acc_o": acc_o, "val_chance": chance, "val_score": score}

    # ---- state ------------------------------------------------------------------------------

    def weights(self) -> dict[str, dict[str, Tensor]]:
        """State dicts on the CPU by file stem: masker, phi and (separate adversary) adversary."""
        nets = {"masker": self.masker, "phi": self.phi}
        if self.adv is not None:
            nets["adversary"] = self.adv
        return {k: _cpu(v.state_dict()) for k, v in nets.items()}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"pred": self.opt_pred, "obf": self.opt_obf}
        if self.opt_adv is not None:
            opts["adv"] = self.opt_adv
        return opts

    def save_checkpoint(self, path: Path, counters: dict[str, Any]) -> None:
        """Networks, optimisers and counters, atomically (temp folder + rename)."""
        from safetensors.torch import save_file

        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, sd in self.weights().items():
            save_file(sd, str(tmp / f"{name}.safetensors"))
        torch.save({k: o.state_dict() for k, o in self.optimisers().items()}, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps(counters, indent=1))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    def load_weights(self, folder: Path) -> None:
        """Load ``masker``, ``phi`` (and ``adversary``) ``.safetensors`` from ``folder``."""
        from safetensors.torch import load_file

        nets = {"masker": self.masker, "phi": self.phi}
        if self.adv is not None:
            nets["adversary"] = self.adv
        for name, net in nets.items():
            net.load_state_dict(load_file(str(folder / f"{name}.safetensors")))

    def load_checkpoint(self, path: Path) -> dict[str, Any]:

        try:
            self.load_weights(path)
            opt = torch.load(path / "optim.pt", map_location=self.device, weights_only=True)
            for k, o in self.optimisers().items():
                o.load_state_dict(opt[k])
            return json.loads((path / "state.json").read_text())
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise WeightsError(f"{path}: cannot resume ({type(e).__name__}: {e}); use --no-resume") from None


def _cpu(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _to_tensors(x: np.ndarray, y: np.ndarray, device: Any) -> tuple[Tensor, Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return xt, torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images ``(N, S, S, 3)`` uint8, in [0, 1] units."""
    f = x.reshape(-1, 3).astype(np.float64) / 255.0
    return f.mean(0).astype(np.float32), np.maximum(f.std(0), 1e-3).astype(np.float32)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _save_final(out: Path, weights: dict[str, dict[str, Tensor]]) -> None:
    from safetensors.torch import save_file

    for name, sd in weights.items():
        tmp = out / f".{name}.safetensors.tmp"
        save_file(sd, str(tmp), metadata={"format": "privpix-learned-mask"})
        tmp.replace(out / f"{name}.safetensors")


def fit(
    c: MaskTrainConfig,
    train: Split,
    val: Split,
    classes: list[str],
    extra_config: dict[str, Any] | None = None,
) -> MaskTrainResult:
    """Train (or resume) on in-memory splits of ``(N, S, S, 3)`` uint8 images; writes the run folder.

    ``extra_config`` is merged into ``config.json`` (data source, face geometry, ...).
    """
    from ..cli.output import Output
    from ..runtime import choose_device

    check_config(c)
    if train.x.shape[1:] != (c.size, c.size, 3) or len(train.y) < c.batch_size:
        raise InputError(
            f"training images must be {c.size}x{c.size}x3 and at least one batch ({c.batch_size}); "
            f"got {len(train.y)} of {train.x.shape[1:]}"
        )
    if len(val.y) < 2:
        raise InputError("the validation split needs at least two images")
    out = Path(c.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = choose_device(c.device)
    mean, std = channel_stats(train.x)
    tr = MaskTrainer(c, len(classes), mean, std, device)
    ckpt = out / CKPT_DIR
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": -math.inf, "best_epoch": 0, "bad": 0}
    history: list[dict[str, Any]] = []
    resumed = None
    if c.resume and (ckpt / "state.json").is_file():
        state = tr.load_checkpoint(ckpt)
        history = state.pop("history", [])
        resumed = state["epoch"]
    ui = Output(False, c.quiet)
    config = {
        "format": "privpix-learned-mask",
        "version": 1,
        "keep": c.keep,
        "size": c.size,
        "classes": list(classes),
        "task": c.task,
        "input": c.input_kind,
        "face_scale": c.face_scale if c.input_kind == "face" else None,
        "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "range": "0-1"},
        "adversarial": c.adversarial,
        # who read x_o in the obfuscator step (None: no obfuscator step)
        "adversary": c.adversary if c.adversarial else None,
        "rest_weight": c.rest_weight if c.adversarial else None,
        "rest_ramp": c.rest_ramp if c.adversarial else None,
        "masker": {"arch": "mask-unet", "base": c.base, "depth": 3, "gate": tr.gate},
        "phi": {"arch": "mask-phi", "classes": len(classes), "size": c.size},
        "train": c.to_json(),
        "images": {"train": int(len(train.y)), "val": int(len(val.y))},
        **(extra_config or {}),
    }
    n = len(train.y)
    steps_per_epoch = n // c.batch_size
    stopped = False
    rate = 0.0
    with (out / LOG_FILE).open("a", encoding="utf-8") as log:
        if resumed is not None:
            ui.info(f"resuming {out} at epoch {resumed}")
        log.write(
            json.dumps(
                {
                    "event": "start",
                    "time": time.time(),
                    "epoch": state["epoch"],
                    "device": str(device),
                    "config": c.to_json(),
                }
            )
            + "\n"
        )
        while state["epoch"] < c.epochs:
            if c.patience and state["bad"] >= c.patience:
                stopped = True
                break
            epoch = state["epoch"]
            gen = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen).numpy()
            sums: dict[str, list[float]] = {}
            t0 = time.perf_counter()
            with ui.progress(steps_per_epoch, f"epoch {epoch + 1}/{c.epochs}") as bar:
                for b in range(steps_per_epoch):
                    idx = np.sort(order[b * c.batch_size : (b + 1) * c.batch_size])
                    x01, y = _to_tensors(train.x[idx], train.y[idx], device)
                    tr.progress = epoch + b / steps_per_epoch
                    obf = c.adversarial and state["step"] % (PREDICTOR_STEPS + 1) == PREDICTOR_STEPS
                    if tr.adv is not None:
                        logs = tr.separate_step(x01, y)
                    else:
                        logs = tr.obfuscator_step(x01, y) if obf else tr.predictor_step(x01, y)
                    state["step"] += 1
                    for k, v in logs.items():
                        sums.setdefault(k, []).append(v)
                    if bar is not None:
                        bar.advance()
            secs = time.perf_counter() - t0
            rate = steps_per_epoch * c.batch_size / max(secs, 1e-9)
            ev = tr.evaluate(val)
            state["epoch"] = epoch + 1
            rec = {
                "epoch": epoch + 1,
                "step": state["step"],
                **{k: float(np.mean(v)) for k, v in sums.items()},
                **ev,
                "images_per_s": rate,
                "time": time.time(),
            }
            if ev["val_score"] >= state["best_score"]:  # on a tie the longer-trained model
                state.update(best_score=ev["val_score"], best_epoch=epoch + 1, bad=0)
                _save_final(out, tr.weights())
                config.update(
                    best_epoch=epoch + 1, val={k: ev[k] for k in ("val_acc_p", "val_acc_o", "val_chance")}
                )
                _atomic_write(out / CONFIG_FILE, json.dumps(config, indent=2))
                rec["best"] = True
            else:
                state["bad"] += 1
            history.append({k: rec[k] for k in ("epoch", "val_acc_p", "val_acc_o", "val_score")})
            log.write(json.dumps(rec) + "\n")
            log.flush()
            tr.save_checkpoint(ckpt, {**state, "history": history})
            ui.info(
                f"epoch {epoch + 1}: predictor {ev['val_acc_p']:.3f}, obfuscator {ev['val_acc_o']:.3f} "
                f"(chance {ev['val_chance']:.3f}) on validation; {rate:.0f} images/s"
            )
    best = next((h for h in history if h["epoch"] == state["best_epoch"]), {})
    return MaskTrainResult(
        epoch=state["epoch"],
        best_epoch=state["best_epoch"],
        stopped_early=stopped,
        val={k: float(v) for k, v in best.items() if k != "epoch"},
        out_dir=out,
        device=str(device),
        images_per_s=rate,
        resumed_from=resumed,
        history=history,
    )


def load_run(run_dir: Path, device: Any = "cpu") -> MaskTrainer:
    """A trainer holding a run folder's masker and Φ (eval mode), for scoring it on new data."""

    from ..methods.learned_mask import read_run

    info = read_run(run_dir)
    cfg = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    c = MaskTrainConfig(
        out_dir=Path(run_dir),
        keep=info.keep,
        size=info.size,
        base=info.base,
        gate=str(cfg["masker"].get("gate", "sigmoid")),  # runs from before the gate option: sigmoid
        adversarial=bool(cfg.get("adversarial", True)),
        adversary=cfg.get("adversary") or "shared",  # runs from before the separate adversary: shared
        rest_weight=float(cfg.get("rest_weight") or 0.0),
        device=str(device),
    )
    tr = MaskTrainer(c, len(info.classes), np.asarray(info.mean), np.asarray(info.std), device)
    try:
        tr.load_weights(Path(run_dir))
    except (OSError, RuntimeError, ValueError) as e:
        raise WeightsError(f"{run_dir}: cannot load the run's networks ({type(e).__name__}: {e})") from None
    tr.masker.eval()
    tr.phi.eval()
    return tr


def evaluate_run(
    run_dir: Path, data: Split, keep: float | None = None, device: Any = "cpu"
) -> dict[str, float]:
    """Accuracy of the run's Φ on x_p and x_o of ``data`` (at its K, or ``keep``), as in validation."""
    tr = load_run(run_dir, device)
    if keep is not None:
        tr.c.keep = float(keep)
    ev = tr.evaluate(data)
    return {k[4:]: v for k, v in ev.items()}


def fit_classifier(
    train: Split,
    val: Split,
    classes: int,
    size: int,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = "cpu",
) -> tuple[TaskClassifier, dict[str, float]]:
    """A task classifier Φ trained on unmasked images (the utility judge, in place of the paper's
    SlimCNN / FERAtt); returns it in eval mode with its best validation accuracy."""
    from ..runtime import choose_device

    dev = choose_device(device)
    torch.manual_seed(seed)
    phi = TaskClassifier(classes=classes, size=size).to(dev)
    opt = torch.optim.Adam(phi.parameters(), lr=lr)
    best, best_sd = -1.0, None
    for epoch in range(epochs):
        phi.train()
        order = torch.randperm(
            len(train.y), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        ).numpy()
        for b in range(len(order) // batch_size):
            x01, y = _to_tensors(
                train.x[np.sort(order[b * batch_size : (b + 1) * batch_size])],
                train.y[np.sort(order[b * batch_size : (b + 1) * batch_size])],
                dev,
            )
            loss = F.cross_entropy(phi(x01), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = classifier_accuracy(phi, val, dev)
        if acc > best:
            best, best_sd = acc, _cpu(phi.state_dict())
    assert best_sd is not None
    phi.load_state_dict(best_sd)
    phi.eval()
    return phi, {"val_acc": best}


@torch.no_grad()
def classifier_accuracy(phi: TaskClassifier, data: Split, device: Any = "cpu", batch: int = 256) -> float:
    """Accuracy of ``phi`` (eval mode) on ``data`` images ``(N, S, S, 3)`` uint8."""
    phi.eval()
    correct = 0
    for i in range(0, len(data.y), batch):
        x01, y = _to_tensors(data.x[i : i + batch], data.y[i : i + batch], device)
        correct += int((phi(x01).argmax(1) == y).sum())
    return correct / max(1, len(data.y))


@torch.no_grad()
def split_images(
    tr: MaskTrainer, x: np.ndarray, batch: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The masker's split of images ``(N, S, S, 3)`` uint8: ``(m, top, x_o)`` with the soft masks
    ``m`` ``(N, S, S)`` float32 in (0, 1), the top-K% indicator ``top`` ``(N, S, S)`` bool, and the
    hidden remainder ``x_o = (m - m_topK) * x`` as 8-bit images ``(N, S, S, 3)`` (rounded, as stored)."""
    tr.masker.eval()
    ms, tops, xos = [], [], []
    for i in range(0, len(x), batch):
        x01, _ = _to_tensors(x[i : i + batch], np.zeros(len(x[i : i + batch])), tr.device)
        m, z = tr.mask(x01)
        sel = tr.select(m, z)
        xo = m * (1.0 - sel) * x01
        ms.append(m[:, 0].cpu().numpy())
        tops.append(sel[:, 0].cpu().numpy() > 0.5)
        xos.append(xo.mul(255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(ms), np.concatenate(tops), np.concatenate(xos)


def fresh_adversary(
    run_dir: Path, train: Split, val: Split, test: Split, epochs: int = 8, batch_size: int = 32, seed: int = 0
) -> dict[str, float]:
    """Privacy of a run's hidden remainder: a fresh Φ (:func:`fit_classifier`, not the run's shared Φ)
    trained to read the task from ``x_o`` of ``train`` (best epoch on ``val``), its accuracy on ``x_o``
    of ``test``, and the majority-class chance level of ``test``."""
    tr = load_run(run_dir)
    xo = [Split(split_images(tr, d.x)[2], d.y) for d in (train, val, test)]
    phi, info = fit_classifier(
        xo[0], xo[1], int(max(train.y.max(), test.y.max())) + 1, tr.c.size, epochs, batch_size, seed=seed
    )
    chance = float(np.bincount(test.y).max() / max(1, len(test.y)))
    return {"acc": classifier_accuracy(phi, xo[2]), "val_acc": info["val_acc"], "chance": chance}


# ---------------------------------------------------------------------------- from a dataset


def prepare_images(
    samples: list,
    size: int,
    input_kind: str = "image",
    face_scale: float = 1.6,
    device: str = "cpu",
    on_skip: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load ``TaskSample`` images to ``(N, size, size, 3)`` uint8: whole images resized (aspect not
    kept, as at apply time), or the largest detected face cropped in the apply geometry. Returns
    ``(x, y, names)``; face images where no face is found are skipped (``on_skip(name)``)."""
    import cv2

    from ..methods.learned_mask import detect_faces, face_crop

    xs, ys, names = [], [], []
    for s in samples:
        rgb = s.rgb()
        if input_kind == "face":
            boxes = detect_faces(rgb, device)
            if not boxes:
                if on_skip:
                    on_skip(s.name)
                continue
            big = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            crop, _mat = face_crop(rgb, big, face_scale, size)
        else:
            crop = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        xs.append(crop)
        ys.append(s.label)
        names.append(s.name)
    if not xs:
        raise InputError(
            "no usable training image" + (" (no face found in any)" if input_kind == "face" else "")
        )
    return np.stack(xs), np.asarray(ys, np.int64), names


def split_data(data: Any, val_fraction: float, seed: int, max_images: int | None = None) -> tuple[list, list]:
    """(train, val) samples: the published partition when the data has one, else a seeded random
    ``val_fraction`` (stratified by nothing; at least one image)."""
    samples = list(data.samples)
    if any(s.split == "train" for s in samples) and any(s.split == "val" for s in samples):
        tr, va = [s for s in samples if s.split == "train"], [s for s in samples if s.split == "val"]
    else:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(samples))
        nv = max(1, round(val_fraction * len(samples)))
        va = [samples[i] for i in sorted(order[:nv])]
        tr = [samples[i] for i in sorted(order[nv:])]
    if max_images:
        tr = tr[:max_images]
        va = va[: max(1, max_images // 5)]
    return tr, va


def train_mask(
    c: MaskTrainConfig,
    data_dir: Path,
    labels: Path | None = None,
    dataset: str = "auto",
    val_fraction: float = 0.1,
    max_images: int | None = None,
) -> MaskTrainResult:
    """Read a task dataset (:mod:`privacy_cli.train.task_data`), prepare it at ``c.size`` and fit."""
    from .task_data import open_task_data

    check_config(c)
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction {val_fraction}: in (0, 1)")
    data = open_task_data(Path(data_dir), labels, dataset)
    tr, va = split_data(data, val_fraction, c.seed, max_images)
    skipped: list[str] = []
    xt, yt, _ = prepare_images(tr, c.size, c.input_kind, c.face_scale, c.device, skipped.append)
    xv, yv, _ = prepare_images(va, c.size, c.input_kind, c.face_scale, c.device, skipped.append)
    if c.task == "task":
        c.task = data.task
    extra = {"data": {"source": str(data_dir), "kind": data.kind, "skipped_no_face": len(skipped)}}
    return fit(c, Split(xt, yt), Split(xv, yv), data.classes, extra)


__all__ = [
    "MaskTrainConfig",
    "MaskTrainResult",
    "MaskTrainer",
    "Split",
    "classifier_accuracy",
    "evaluate_run",
    "fit_classifier",
    "fit",
    "fresh_adversary",
    "split_images",
    "load_run",
    "prepare_images",
    "train_mask",
]

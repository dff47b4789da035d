"""Private-Encoder training (paper 004): fine-tune a pSp encoder so that its reconstructions keep
everything but identity, with the identity similarity to the input pulled towards ``beta``.

Loss per batch (as in the released code; ``../shared/reference/PRIVATE_ENCODER_NOTES.md``):
``lambda_id * mean|beta - cos(ArcFace(y_hat), ArcFace(x))| + lambda_l2 * MSE(y_hat, x)
+ lambda_lpips * LPIPS_alex(y_hat, x)``, defaults 0.1 / 1.0 / 0.8; ArcFace is IR-SE50 on pSp's
identity crop (rows 35:223, columns 32:220 of the 256 output, pooled to 112). Only the encoder is
trained (the StyleGAN2 decoder stays frozen), starting from ``psp-ffhq-encode`` (or any pSp-layout
checkpoint), with pSp's ``randomize_noise=True`` while training.

Optimiser: AdamW (torch's own), lr 1e-4. The released code uses Ranger (RAdam + Lookahead), which
needs a package outside torch; AdamW with the same learning rate is the well-kept equivalent here,
and with weight decay 0 it is Adam, which pSp also offers (``--optim_name adam``).

Data: a folder of face photos. Each photo's first face with 68 dlib landmarks is FFHQ-aligned to
256 x 256 once at start (the released code trains on aligned 256 crops), with random horizontal
flips as in its transforms. Photos without a usable face are skipped (counted in the result).

Run folder ``--out``: ``checkpoint.pt`` (model + optimiser + step, for resume), ``train_log.jsonl``
(one JSON object per step: every loss and the mean cosine), and ``privacy_<beta>.pt`` (pSp layout:
``state_dict`` with ``encoder.*``/``decoder.*``, ``latent_avg``, ``opts`` with ``target_id = beta``),
also installed into ``<weights dir>/private-encoder/`` where ``deidentify --model private-encoder``
finds it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

LOG_FILE = "train_log.jsonl"
CHECKPOINT = "checkpoint.pt"


@dataclass
class DeidTrainConfig:
    """Options of :func:`train_deidentify` (see the module docstring)."""

    data: Path
    beta: float
    out_dir: Path = Path("runs/deidentify")
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    lambda_id: float = 0.1
    lambda_l2: float = 1.0
    lambda_lpips: float = 0.8
    init: str = "psp-ffhq-encode"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 100
    resume: bool = True
    install: bool = True
    quiet: bool = False


@dataclass
class DeidTrainResult:
    """What a run did: last step, files written, device, resume point, last losses, skipped photos."""

    step: int
    checkpoint: Path
    weights: Path
    installed: Path | None
    log: Path
    device: str
    resumed_from: int | None
    faces: int
    skipped: int
    losses: dict[str, float] = field(default_factory=dict)


def load_faces(folder: Path, size: int = 256) -> tuple[np.ndarray, int]:
    """FFHQ-aligned ``size`` crops (N, size, size, 3) uint8 of the first face of every photo under
    ``folder``, and the number of photos skipped (unreadable, or no face with landmarks)."""
    from ..align import align_face
    from ..detect.landmarks import find_landmarks
    from ..errors import PrivpixError
    from ..io import iter_images, load_image

    crops, skipped = [], 0
    for path in iter_images([folder]):
        try:
            rgb = load_image(path).rgb
        except PrivpixError:
            skipped += 1
            continue
        h, w = rgb.shape[:2]
        found = find_landmarks(rgb, (0, 0, w, h), box_scale=1.0)
        if not found:
            skipped += 1
            continue
        crops.append(align_face(rgb, found[0].points, size).crop)
    if not crops:
        raise UsageError(f"{folder}: no photo with a face whose landmarks dlib finds")
    return np.stack(crops), skipped


def _init_path(init: str) -> Path:
    p = Path(init)
    if p.is_file():
        return p
    from ..weights import resolve_any

    return Path(resolve_any(init).path)


def _batch(faces: np.ndarray, step: int, seed: int, batch_size: int, device: Any) -> Any:
    """Batch of step ``step`` (depends only on seed and step, so a resumed run sees the same data)."""
    import torch

    rng = np.random.default_rng([seed, step])
    idx = rng.integers(0, len(faces), batch_size)
    arr = faces[idx].copy()
    flip = rng.random(batch_size) < 0.5
    arr[flip] = arr[flip, :, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(device)


def identity_gap(model: Any, net: Any, faces: np.ndarray, beta: float, device: Any) -> float:
    """Mean ``|beta - cos(ArcFace(model(x)), ArcFace(x))|`` over ``faces`` (eval mode, fixed noise)."""
    import torch

    from ..methods.deidentify import _cos

    model.eval()
    gaps = []
    with torch.no_grad():
        for i in range(len(faces)):
            x = torch.from_numpy(faces[i : i + 1]).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0
            gaps.append(float((beta - _cos(net, model(x, resize=True), x)).abs().mean()))
    return float(np.mean(gaps))


def train_deidentify(c: DeidTrainConfig) -> DeidTrainResult:
    """Train (or resume) a Private-Encoder model for ``c.beta``; see the module docstring."""
    import torch

    from ..bench.features import build_lpips
    from ..methods.deidentify import PE_FOLDER, _cos, identity_net, load_psp, pe_checkpoint_name
    from ..runtime import resolve_device

    if not 0.0 <= c.beta <= 1.0:
        raise UsageError(f"--beta {c.beta}: must be in [0, 1]")
    device = resolve_device(c.device)
    out = Path(c.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    faces, skipped = load_faces(Path(c.data))
    torch.manual_seed(c.seed)
    base = load_psp(_init_path(c.init), "GradualStyleEncoder", "cpu")
    import copy

    model = copy.deepcopy(base).to(device)  # the cached base stays untouched
    model.latent_avg = None if base.latent_avg is None else base.latent_avg.clone().to(device)
    for p in model.decoder.parameters():
        p.requires_grad_(False)
    net = identity_net(device)
    lp = build_lpips("alex", device=device)
    for p in lp.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.encoder.parameters(), lr=c.lr, weight_decay=0.0)
    step, resumed = 0, None
    ckpt_path = out / CHECKPOINT
    if c.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        step = resumed = int(state["step"])
    log_path = out / LOG_FILE
    opts = {
        "encoder_type": "GradualStyleEncoder",
        "target_id": float(c.beta),
        "id_lambda": c.lambda_id,
        "l2_lambda": c.lambda_l2,
        "lpips_lambda": c.lambda_lpips,
        "learning_rate": c.lr,
        "optim_name": "adamw",
        "batch_size": c.batch_size,
        "start_from_latent_avg": True,
        "train_decoder": False,
        "init": str(c.init),
    }

    def save() -> None:
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        lat = None if model.latent_avg is None else model.latent_avg.detach().cpu()
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {"state_dict": sd, "latent_avg": lat, "opts": opts, "optimizer": opt.state_dict(), "step": step},
            tmp,
        )
        tmp.replace(ckpt_path)

    losses: dict[str, float] = {}
    model.train()
    with open(log_path, "a") as log:
        while step < c.steps:
            t0 = time.perf_counter()
            x = _batch(faces, step, c.seed, c.batch_size, device)
            y = model(x, resize=True, randomize_noise=True)
            cos = _cos(net, y, x)
            l_id = (c.beta - cos).abs().mean()
            l_l2 = torch.nn.functional.mse_loss(y, x)
            l_lp = lp(y, x).mean()
            loss = c.lambda_id * l_id + c.lambda_l2 * l_l2 + c.lambda_lpips * l_lp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses = {
                k: float(v.detach())
                for k, v in (("loss", loss), ("id", l_id), ("l2", l_l2), ("lpips", l_lp), ("cos", cos.mean()))
            }
            log.write(
                json.dumps({"step": step, **losses, "seconds": round(time.perf_counter() - t0, 3)}) + "\n"
            )
            log.flush()
            if not c.quiet:
                print(
                    f"step {step}/{c.steps} " + " ".join(f"{k} {v:.4f}" for k, v in losses.items()),
                    flush=True,
                )
            if step % c.checkpoint_every == 0 or step == c.steps:
                save()
    if not ckpt_path.is_file():
        save()
    model.eval()
    weights = out / pe_checkpoint_name(c.beta)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    lat = None if model.latent_avg is None else model.latent_avg.detach().cpu()
    tmp = weights.with_suffix(".tmp")
    torch.save({"state_dict": sd, "latent_avg": lat, "opts": opts}, tmp)
    tmp.replace(weights)
    installed = None
    if c.install:
        import shutil

        from ..weights import get_weights_dir

        dst_dir = get_weights_dir() / PE_FOLDER
        dst_dir.mkdir(parents=True, exist_ok=True)
        installed = dst_dir / weights.name
        shutil.copyfile(weights, installed.with_suffix(".tmp"))
        installed.with_suffix(".tmp").replace(installed)
    return DeidTrainResult(
        step, ckpt_path, weights, installed, log_path, str(device), resumed, len(faces), skipped, losses
    )

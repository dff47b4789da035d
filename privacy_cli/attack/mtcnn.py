"""A differentiable copy of privpix's MTCNN cascade, for detector evasion (target ``mtcnn``).

:class:`DiffMTCNN` runs the three stages the way :class:`~privacy_cli.detect.faces.MTCNNFaceDetector`
does (same pyramid scales, mirrored level borders, P-Net cells -> boxes, NMS, box regression,
R-Net and O-Net crops cut from the pyramid level closest in scale, mirrored and stretched border
crops), but on a torch tensor with gradients, so an attack can push every stage at once:

* **P-Net** on every pyramid level (OpenCV's INTER_AREA reproduced exactly, levels rounded to
  whole grey levels with straight-through gradients): every cell whose face
  log-odds is above ``logit(0.6) - margin``;
* **R-Net** on every P-Net proposal the relaxed cascade keeps;
* **O-Net** on every R-Net survivor of the relaxed cascade.

Candidates are chosen (without gradient) with every stage threshold lowered by ``margin`` in
log-odds, so boxes just under a threshold are pushed further down too. The loss
(:meth:`DiffMTCNN.loss`) sums, over every R-Net survivor, the smaller of its R-Net and O-Net
excess ``relu(log_odds - (logit(threshold) - margin))``: 0 once every chain is rejected by one
of its stages with margin, which is what the real detector needs to find no face. On faces-id
photos the copy keeps the same proposals, survivors and boxes as the ONNX detector (boxes within
0.02 px); the real detector, on the saved file, stays the judge.

Weights: facenet-pytorch's packaged ``pnet/rnet/onet.pt`` through :mod:`privacy_cli.detect.mtcnn_nets`.
Images: (1, 3, H, W) float RGB in [0, 255].
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..detect.faces import (
    DEFAULT_MAX_LEVEL_PIXELS,
    DEFAULT_MIN_FACE,
    LEVEL_PAD,
    PNET_THRESHOLD,
    PYRAMID_FACTOR,
    RNET_THRESHOLD,
    _nms,
    _regress,
    _square,
)


def logit(p: float) -> float:
    """log(p / (1 - p)) for p clipped to [0.01, 0.99]."""
    p = min(max(float(p), 0.01), 0.99)
    return math.log(p / (1.0 - p))


def log_odds(prob: torch.Tensor) -> torch.Tensor:
    """Face log-odds from MTCNN's two-way softmax output (dim 1 = (not face, face))."""
    return torch.log(prob[:, 1].clamp_min(1e-30)) - torch.log(prob[:, 0].clamp_min(1e-30))


@lru_cache(maxsize=256)
def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) sparse weights of OpenCV's INTER_AREA shrink along one axis: output pixel i
    averages the input over [i * s, (i + 1) * s), s = n_in / n_out, weighting each input pixel by
    the fraction of it the window covers."""
    scale = n_in / n_out
    rows, cols, vals = [], [], []
    for i in range(n_out):
        s, e = i * scale, (i + 1) * scale
        for j in range(int(math.floor(s)), min(n_in, int(math.ceil(e)))):
            cover = min(e, j + 1) - max(s, j)
            if cover > 1e-12:
                rows.append(i)
                cols.append(j)
                vals.append(cover / scale)
    return torch.sparse_coo_tensor(
        [rows, cols], vals, (n_out, n_in), dtype=torch.float32, check_invariants=False
    ).coalesce()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to whole grey levels (as OpenCV writes uint8) with a straight-through gradient."""
    return x + (x.round() - x).detach()


def cv_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Differentiable copy of the detector's OpenCV resize of a uint8 image: (1, 3, H, W) in
    [0, 255] -> (1, 3, h, w), size = (h, w). INTER_AREA when the width shrinks (exact, as sparse
    matrices), else bilinear (INTER_LINEAR, half-pixel centres); rounded to whole grey levels."""
    _, c, hh, ww = x.shape
    h, w = size
    if (hh, ww) == (h, w):
        return x
    if w < ww:
        my, mx = _area_matrix(hh, h).to(x.device), _area_matrix(ww, w).to(x.device)
        y = torch.sparse.mm(my, x[0].permute(1, 0, 2).reshape(hh, c * ww))  # (h, c * W)
        y = y.reshape(h, c, ww).permute(2, 1, 0).reshape(ww, c * h)  # (W, c * h)
        y = torch.sparse.mm(mx, y).reshape(w, c, h).permute(1, 2, 0)[None]  # (1, c, h, w)
    else:
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return _round_ste(y)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class DiffMTCNN:
    """Differentiable MTCNN cascade (see the module docstring).

    threshold: the O-Net cut of the detector under attack (default 0.7). margin: log-odds below
    each stage threshold that a candidate must reach (and below which candidates are ignored).
    min_face_size, max_level_pixels: as the detector's.
    """

    def __init__(
        self,
        threshold: float = 0.7,
        margin: float = 1.5,
        min_face_size: int = DEFAULT_MIN_FACE,
        max_level_pixels: int = DEFAULT_MAX_LEVEL_PIXELS,
        device: Any = "cpu",
    ) -> None:
        from ..detect.mtcnn_nets import ONet, PNet, RNet

        self.device = torch.device(device)
        self.threshold, self.margin = float(threshold), float(margin)
        self.min_face_size, self.max_level_pixels = int(min_face_size), int(max_level_pixels)
        self.pnet, self.rnet, self.onet = (n().eval().to(self.device) for n in (PNet, RNet, ONet))
        for net in (self.pnet, self.rnet, self.onet):
            for p in net.parameters():
                p.requires_grad_(False)
        # stage cut-offs in log-odds, lowered by the margin
        self.cuts = {
            "pnet": logit(PNET_THRESHOLD) - self.margin,
            "rnet": logit(RNET_THRESHOLD) - self.margin,
            "onet": logit(self.threshold) - self.margin,
        }

    def _scales(self, w: int, h: int) -> list[tuple[int, int]]:
        """Pyramid level sizes (w, h), as the detector computes them."""
        level = float(w) * float(h) * (12.0 / self.min_face_size) ** 2
        smallest = self.min_face_size * max(1.0, math.sqrt(level / self.max_level_pixels))
        scale = 12.0 / smallest
        out = []
        while min(h, w) * scale >= 12:
            out.append((max(1, round(w * scale)), max(1, round(h * scale))))
            scale *= PYRAMID_FACTOR
        return out

    def _crops(
        self, sources: list[tuple[float, float, torch.Tensor]], boxes: np.ndarray, size: int, stretch: bool
    ) -> torch.Tensor:
        """(N, 3, size, size) crops of square ``boxes`` (original px) from the smallest source
        (sx, sy, (1, 3, h, w) level) on which the box spans >= size px; mirrored beyond the border,
        or with ``stretch`` the part inside the image resized to the square."""
        crops = []
        for b in boxes:
            side = b[2] - b[0]
            sx, sy, src = sources[-1]
            for cand in sources:
                if side * cand[0] >= size:
                    sx, sy, src = cand
                    break
            sh, sw = src.shape[-2:]
            x0, y0 = int(math.floor(b[0] * sx)), int(math.floor(b[1] * sy))
            x1, y1 = max(x0 + 1, int(math.ceil(b[2] * sx))), max(y0 + 1, int(math.ceil(b[3] * sy)))
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(sw, x1), min(sh, y1)
            if cx1 <= cx0 or cy1 <= cy0:
                crops.append(src.new_zeros(1, 3, size, size))
                continue
            crop = src[..., cy0:cy1, cx0:cx1]
            pads = (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1)
            if any(pads) and not stretch:
                ok = max(pads[:2]) < crop.shape[-1] and max(pads[2:]) < crop.shape[-2]
                crop = F.pad(crop, pads, mode="reflect" if ok else "replicate")
            crops.append(cv_resize(crop, (size, size)))
        return _norm(torch.cat(crops, 0))

    def _stage(
        self, net: torch.nn.Module, sources: list, boxes: np.ndarray, size: int, w: int, h: int
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Face log-odds (N,) of ``boxes`` (for boxes beyond the image the better of the mirrored
        and the stretched crop, as the detector keeps) and their (N, 4) regression offsets."""
        out = net(self._crops(sources, boxes, size, False))
        lo, reg = log_odds(out[-1]), out[0].detach().cpu().numpy().astype(np.float64)
        beyond = np.nonzero((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h))[0]
        if len(beyond):
            o2 = net(self._crops(sources, boxes[beyond], size, True))
            lo2 = log_odds(o2[-1])
            idx = torch.from_numpy(beyond).to(lo.device)
            better = (lo2.detach() > lo.detach()[idx]).cpu().numpy()
            lo = lo.index_put((idx,), torch.maximum(lo[idx], lo2))
            reg[beyond[better]] = o2[0].detach().cpu().numpy().astype(np.float64)[better]
        return lo, reg

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """Run the relaxed cascade on ``x`` (1, 3, H, W) in [0, 255].

        Returns {"pnet", "rnet", "onet"}: (N,) face log-odds of the candidates each stage scores
        (with gradients to ``x``), "rnet_kept": the R-Net log-odds of the O-Net candidates (same
        order as "onet"), and "boxes": the (M, 4) O-Net boxes (regressed, original px)
        whose log-odds exceed the O-Net cut-off.
        """
        _, _, h, w = x.shape
        empty = x.new_zeros(0)
        res: dict[str, Any] = {
            "pnet": empty,
            "rnet": empty,
            "rnet_kept": empty,
            "onet": empty,
            "boxes": np.zeros((0, 4)),
        }
        if min(h, w) < 12:
            return res
        levels: list[tuple[float, float, torch.Tensor]] = []
        p_lo, p_boxes, p_scores, p_regs = [], [], [], []
        src = x
        for lw, lh in self._scales(w, h):
            # resized from the previous level when it is larger, as the detector does
            img = cv_resize(src if src.shape[-1] >= lw else x, (lh, lw))
            src = img
            levels.append((lw / w, lh / h, img))
            pad = LEVEL_PAD if min(lh, lw) > LEVEL_PAD else 0
            padded = F.pad(img, (pad,) * 4, mode="reflect") if pad else img
            reg, prob = self.pnet(_norm(padded))
            lo = log_odds(prob)[0]  # (h', w')
            iy, ix = torch.nonzero(lo.detach() >= self.cuts["pnet"], as_tuple=True)
            if not len(iy):
                continue
            p_lo.append(lo[iy, ix])
            iy_n, ix_n = iy.cpu().numpy(), ix.cpu().numpy()
            gx = (2 * ix_n - pad).astype(np.float64)
            gy = (2 * iy_n - pad).astype(np.float64)
            sx, sy = lw / w, lh / h
            b = np.stack([gx / sx, gy / sy, (gx + 12) / sx, (gy + 12) / sy], axis=1)
            s = lo.detach()[iy, ix].cpu().numpy()
            keep = _nms(b, s, 0.5)
            p_boxes.append(b[keep])
            p_scores.append(s[keep])
            p_regs.append(reg[0][:, iy, ix].detach().T.cpu().numpy()[keep].astype(np.float64))
        if not p_lo:
            return res
        res["pnet"] = torch.cat(p_lo)
        boxes, scores, regs = np.concatenate(p_boxes), np.concatenate(p_scores), np.concatenate(p_regs)
        keep = _nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], regs[keep]))
        sources = sorted(levels, key=lambda s: s[0]) + [(1.0, 1.0, x)]
        lo, reg = self._stage(self.rnet, sources, boxes, 24, w, h)
        res["rnet"] = lo
        ok = (lo.detach() >= self.cuts["rnet"]).cpu().numpy()
        if not ok.any():
            return res
        res["rnet_boxes"] = boxes[ok]
        boxes = _square(_regress(boxes[ok], reg[ok]))
        res["onet_boxes"] = boxes
        res["rnet_kept"] = lo[torch.from_numpy(np.nonzero(ok)[0]).to(lo.device)]
        lo, reg = self._stage(self.onet, sources, boxes, 48, w, h)
        res["onet"] = lo
        ok = (lo.detach() >= self.cuts["onet"]).cpu().numpy()
        res["boxes"] = _regress(boxes[ok], reg[ok])
        return res

    def loss(self, x: torch.Tensor, pnet_weight: float = 0.0) -> torch.Tensor:
        """0 once every candidate chain is rejected with margin. x: (1, 3, H, W) in [0, 255].

        A P-Net proposal is a face only if R-Net and then O-Net both keep it, so each chain (the
        R-Net box, and the O-Net box R-Net regressed it to) contributes min(R-Net excess, O-Net
        excess) (excess = relu(log_odds - cut-off)): the attack pushes down whichever stage is
        closer to rejecting it. ``pnet_weight`` adds the
        P-Net cells' excess over the whole pyramid (P-Net's log-odds on large faces only fall
        from ~17 to ~11 at E = 8 on faces-id photos, far above its cut, so it is off by default).
        """
        res = self.forward(x)
        total = x.sum() * 0.0
        if pnet_weight and len(res["pnet"]):
            total = total + pnet_weight * F.relu(res["pnet"] - self.cuts["pnet"]).sum()
        if len(res["onet"]):
            chain = torch.minimum(
                F.relu(res["rnet_kept"] - self.cuts["rnet"]), F.relu(res["onet"] - self.cuts["onet"])
            )
            total = total + chain.sum()
        return total


__all__ = ["DiffMTCNN", "log_odds", "logit"]

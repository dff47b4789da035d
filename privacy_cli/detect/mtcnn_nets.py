"""The three MTCNN stages (Zhang et al. 2016) with the layer names of facenet-pytorch's weight files.

The weights are facenet-pytorch's (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, plain state dicts,
loaded with ``weights_only=True``). Defining the small networks here avoids importing
facenet_pytorch's detection module, which pulls in torchvision and added seconds to every
``privpix`` start; ``tests/test_detect_faces.py`` checks the outputs equal facenet-pytorch's own
classes on the same weights.

Inputs are ``(B, 3, H, W)`` float32, normalised as ``(x - 127.5) / 128`` from uint8 RGB.
Outputs follow facenet-pytorch: PNet -> (box regression (B,4,h,w), face probability (B,2,h,w));
RNet -> (regression (B,4), probability (B,2)); ONet -> (regression (B,4), landmarks (B,10),
probability (B,2)).
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from .faces import weights_path


def _load(net: nn.Module, stage: str) -> nn.Module:
    net.load_state_dict(torch.load(weights_path(stage), map_location="cpu", weights_only=True))
    return net.eval()


def _flatten_hw_swapped(x: torch.Tensor) -> torch.Tensor:
    # the original Caffe weights flatten (C, W, H) order
    return x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)
        if pretrained:
            _load(self, "pnet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        if pretrained:
            _load(self, "rnet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_hw_swapped(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48x48 crops: box, five landmarks, probability."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        if pretrained:
            _load(self, "onet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_hw_swapped(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


class _Uint8Input(nn.Module):
    """Wraps a stage net to take ``(B, H, W, 3)`` uint8 RGB and return (regression, face probability).

    The ONNX graphs then do the normalisation themselves and send back only what the cascade uses.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net((x.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125)
        return out[0], out[-1][:, 1]


def export_onnx(stage: str) -> bytes:
    """Serialized ONNX graph of MTCNN stage ``stage`` ("pnet", "rnet", "onet") on facenet-pytorch's weights.

    Input ``image``: (B, H, W, 3) uint8 RGB (P-Net: any H, W >= 12; R-Net 24 x 24; O-Net 48 x 48).
    Outputs ``reg``: box regression (P-Net (B, 4, h, w), others (B, 4)); ``prob``: face probability
    (P-Net (B, h, w), others (B,)).
    """
    net = {"pnet": PNet, "rnet": RNet, "onet": ONet}[stage]()
    size = {"pnet": 48, "rnet": 24, "onet": 48}[stage]
    axes = {"image": {0: "B", 1: "H", 2: "W"}} if stage == "pnet" else {"image": {0: "B"}}
    if stage == "pnet":
        axes.update(reg={0: "B", 2: "h", 3: "w"}, prob={0: "B", 1: "h", 2: "w"})
    else:
        axes.update(reg={0: "B"}, prob={0: "B"})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but exact for these nets
        torch.onnx.export(
            _Uint8Input(net).eval(),
            (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
            buf,
            input_names=["image"],
            output_names=["reg", "prob"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()

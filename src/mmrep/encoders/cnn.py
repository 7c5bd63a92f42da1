"""Image encoders in plain torch: ResNet-18 (crossmodal_mislaignment encoders.py) and a small CNN for CPU-sized runs.

torchvision is not a dependency (each of its builds is tied to one torch version), so the ResNet-18 is written here
with torchvision's architecture and initialisation: a 7×7/2 stem with max-pooling, four stages of two basic blocks
(64, 128, 256, 512 channels), global average pooling and ``Linear(512, num_classes)``. The image encoder of
main_mpi3dreal.py is that network with ``num_classes=100``, then ``LeakyReLU`` and ``Linear(100, encoding_size)``.
Both encoders read per-layer features for alignment as the global average of each stage's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmrep.core.contract import ModalitySpec
from mmrep.core.errors import ConfigError


def _image_channels(modality: ModalitySpec) -> int:
    if len(modality.shape) != 3:
        raise ConfigError(f"encoder: an image encoder needs (C, H, W) inputs, the modality has shape {modality.shape}")
    return modality.shape[0]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a (projected when the shape changes) identity shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 → ``LeakyReLU(0.01)`` → ``Linear(num_classes, out_dim)``: ``(B, C, H, W)`` → ``(B, out_dim)``.

    Args:
        modality: the image modality (``shape = (C, H, W)``). out_dim: the encoding size.
        num_classes: the ResNet's own output width (original: 100). negative_slope: of the LeakyReLU (original:
            0.01).
    """

    def __init__(
        self, modality: ModalitySpec, out_dim: int, num_classes: int = 100, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        channels = _image_channels(modality)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(512, int(num_classes))
        self.head = nn.Sequential(nn.LeakyReLU(negative_slope), nn.Linear(int(num_classes), int(out_dim)))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _run(self, x: torch.Tensor):
        h = self.stem(x)
        for i, stage in enumerate(self.stages, start=1):
            h = stage(h)
            yield f"stage{i}", h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, h in self._run(x):
            pass
        return self.head(self.fc(h.mean(dim=(2, 3))))

    def layer_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"stage1".."stage4": (B, channels)}`` (global average of each stage) and ``"fc"`` (B, num_classes)
        after the LeakyReLU."""
        layers = {name: h.mean(dim=(2, 3)) for name, h in self._run(x)}
        layers["fc"] = self.head[0](self.fc(layers["stage4"]))
        return layers


class SmallCNN(nn.Module):
    """A CPU-sized image encoder: ``Conv(3×3, stride 2) → BatchNorm → ReLU`` per entry of ``channels``, global
    average pooling, ``Linear(channels[-1], out_dim)``. Per-layer features: each block's global average."""

    def __init__(self, modality: ModalitySpec, out_dim: int, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        c_in = _image_channels(modality)
        if not channels or any(int(c) < 1 for c in channels):
            raise ConfigError(f"encoder.channels: positive channel counts, got {list(channels)}")
        blocks = []
        for c_out in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, int(c_out), 3, 2, 1, bias=False), nn.BatchNorm2d(int(c_out)), nn.ReLU(inplace=True)
                )
            )
            c_in = int(c_out)
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(c_in, int(out_dim))

    def layer_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        layers = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            layers[f"block{i}"] = x.mean(dim=(2, 3))
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(list(self.layer_features(x).values())[-1])

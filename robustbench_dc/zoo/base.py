"""Pieces shared by the zoo architectures: input normalization and the model base class."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from robustbench_dc.operators import OperatorSpec

__all__ = ["Normalize", "ZooModel", "scaled", "conv_blocks"]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (the width multiplier of CPU-scale models)."""
    return max(1, int(round(channels * width)))


def conv_blocks(operator: OperatorSpec, in_channels: int, input_size: int, widths: Sequence[int], width: float,
                convs_per_block: int, kernel_size: int) -> tuple[nn.Sequential, int, int]:
    """VGG-style blocks: ``convs_per_block`` x (operator conv, BN, ReLU) then a 2x2 max-pool,
    per entry of ``widths`` (scaled by ``width``); "same" padding.

    Returns the blocks as one ``nn.Sequential`` and the output channels and spatial size.
    """
    layers: list[nn.Module] = []
    c_in, size = in_channels, input_size
    for c in widths:
        c_out = scaled(c, width)
        for _ in range(convs_per_block):
            layers += [operator.make_conv(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
        size //= 2
    return nn.Sequential(*layers), c_in, size


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the constants stored as buffers.

    Models take inputs in [0, 1] and normalize inside (RobustBench convention), so attacks
    and budgets are expressed in pixel units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean/std: lengths differ ({len(mean)} vs {len(std)})")
        if any(s <= 0 for s in std):
            raise ValueError(f"std: must be > 0, got {tuple(std)}")
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class ZooModel(nn.Module):
    """Base class of the zoo networks: ``[0, 1]`` NCHW in, logits out.

    Subclasses set ``self.normalize`` and ``self.classifier`` and implement
    :meth:`features` (the penultimate representation, on un-normalized inputs).
    ``self.info`` records the architecture, operator and parameters the model was
    built with (for model cards and results).
    """

    normalize: Normalize
    classifier: nn.Module
    info: dict[str, Any]

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def _record(self, arch: str, operator: OperatorSpec, **arch_params: Any) -> None:
        self.info = {"arch": arch, "operator": operator.describe(), "arch_params": arch_params}

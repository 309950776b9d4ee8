"""CIFAR ResNets (He et al. 2016): 3 stages of basic blocks, as used by Decoupled Networks."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from robustbench_dc.operators import OperatorSpec
from robustbench_dc.zoo.base import Normalize, ZooModel, make_pool, make_projection, stage_widths
from robustbench_dc.zoo.registry import register_arch

__all__ = ["BasicBlock", "CifarResNet"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.

    The 3x3 convolutions use the operator; a projection shortcut (1x1 convolution + BN,
    when the shape changes) stays an ordinary layer, as in the authors' code.
    """

    def __init__(self, operator: OperatorSpec, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = operator.make_conv(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = operator.make_conv(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class CifarResNet(ZooModel):
    """ResNet-(6n+2) for 32x32 inputs: stem conv, 3 stages of ``blocks`` basic blocks
    (strides 1, 2, 2), global average pooling, linear classifier.

    ``widths`` are the stage widths: (16, 32, 64) as He et al.; the Decoupled Networks code
    uses (96, 192, 384). ``width`` multiplies them. ``pool`` replaces global average pooling by
    robust pooling (:func:`~robustbench_dc.zoo.base.make_pool`), ``projection`` adds a feature
    projection before the classifier (:func:`~robustbench_dc.zoo.base.make_projection`).
    """

    def __init__(self, operator: OperatorSpec, blocks: int = 5, num_classes: int = 10, in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64), width: float = 1.0, mean: Sequence[float] = (0.5,),
                 std: Sequence[float] = (0.5,), arch: str = "resnet32", pool: Any = "avg",
                 projection: Any = None) -> None:
        super().__init__()
        ws = stage_widths(widths, width, blocks)
        self.normalize = Normalize(mean, std)
        self.stem = operator.make_conv(in_channels, ws[0], 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(ws[0])
        stages: list[nn.Module] = []
        c_in = ws[0]
        for i, c_out in enumerate(ws):
            for j in range(blocks):
                stages.append(BasicBlock(operator, c_in, c_out, 2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = make_pool(pool, c_in)
        self.projection = make_projection(projection)
        self.classifier = nn.Linear(c_in, num_classes)
        self._record(arch, operator, blocks=blocks, widths=list(widths), width=width, in_channels=in_channels,
                     num_classes=num_classes, pool=pool, projection=projection)

    def features(self, x: Tensor) -> Tensor:
        z = self.stem_bn(self.stem(self.normalize(x))).relu()
        return self.pool(self.stages(z))


def _resnet(depth: int):
    blocks = (depth - 2) // 6

    def build(operator: OperatorSpec, num_classes: int = 10, in_channels: int = 3,
              widths: Sequence[int] = (16, 32, 64), width: float = 1.0, mean: Sequence[float] = (0.5,),
              std: Sequence[float] = (0.5,), pool: Any = "avg", projection: Any = None) -> CifarResNet:
        return CifarResNet(operator, blocks, num_classes, in_channels, widths, width, mean, std, f"resnet{depth}",
                           pool, projection)

    build.__doc__ = f"CIFAR ResNet-{depth}: 3 stages x {blocks} basic blocks; ``widths`` per stage."
    return build


for _depth in (20, 32, 56):
    register_arch(f"resnet{_depth}")(_resnet(_depth))

"""CNN-9 of SphereNet / Decoupled Networks for CIFAR: three blocks of three 3x3 convolutions."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators import OperatorSpec
from robustbench_dc.zoo.base import Normalize, ZooModel, conv_blocks, make_projection, scaled
from robustbench_dc.zoo.registry import register_arch

__all__ = ["CNN9"]


class CNN9(ZooModel):
    """CNN-9 (Liu et al. 2017/2018): 3 blocks x 3 convs (128/192/256 filters), BN + ReLU,
    2x2 max-pool after each block, a 256-unit layer, then the classifier.

    Every 3x3 convolution and the 256-unit layer use the operator; the classifier is an
    ordinary ``nn.Linear``. ``width`` multiplies every width (0.25 for CPU-scale runs).
    """

    def __init__(self, operator: OperatorSpec, num_classes: int = 10, in_channels: int = 3,
                 input_size: int = 32, width: float = 1.0, widths: Sequence[int] = (128, 192, 256),
                 hidden: int = 256, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                 projection: Any = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body, c_in, size = conv_blocks(operator, in_channels, input_size, widths, width, 3, 3)
        if size < 1:
            raise InvalidParameterError(f"input_size: {input_size} is too small for three 2x2 poolings")
        h = scaled(hidden, width)
        self.fc = operator.make_linear(c_in * size * size, h)
        self.fc_bn = nn.BatchNorm1d(h)
        self.projection = make_projection(projection)
        self.classifier = nn.Linear(h, num_classes)
        self._record("cnn9", operator, width=width, widths=list(widths), hidden=hidden, in_channels=in_channels,
                     input_size=input_size, num_classes=num_classes, projection=projection)

    def features(self, x: Tensor) -> Tensor:
        return self._embed(self.body(self.normalize(x)))

    def _embed(self, z: Tensor) -> Tensor:
        """:meth:`features` from the body's output."""
        return self.fc_bn(self.fc(z.flatten(1))).relu()


@register_arch("cnn9")
def cnn9(operator: OperatorSpec, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
         width: float = 1.0, widths: Sequence[int] = (128, 192, 256), hidden: int = 256,
         mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), projection: Any = None) -> CNN9:
    """CNN-9 of SphereNet (CIFAR); ``width`` scales every layer; ``projection`` before the classifier."""
    return CNN9(operator, num_classes, in_channels, input_size, width, widths, hidden, mean, std, projection)

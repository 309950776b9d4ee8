"""A small MNIST CNN whose last hidden layer has 2 units, for 2-D feature plots (Figures 6-7)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from robustbench_dc.data.registry import DATASETS
from robustbench_dc.operators import OperatorSpec
from robustbench_dc.zoo.base import Normalize, ZooModel, conv_blocks, make_projection
from robustbench_dc.zoo.registry import register_arch

_MNIST = DATASETS["mnist"]

__all__ = ["MNIST2D"]


class MNIST2D(ZooModel):
    """Three blocks of two 5x5 convolutions (32/64/128 filters, BN + ReLU, 2x2 max-pool),
    a 2-unit layer (the feature embedding) and a linear classifier on it.

    The convolutions and the 2-unit layer use the operator. :meth:`features` returns the
    2-D embedding that the figures scatter, multiplied by ``embed_scale``.

    ``embed_scale`` (default: 1 for an ordinary ``nn.Linear`` embedding, 10 for any other
    operator) is a fixed factor on the embedding. A bounded operator's outputs lie in
    [-alpha, alpha]; with no normalisation between the 2-unit layer and the classifier,
    unscaled logits are too small to train in a few epochs (measured: 30% vs 79% test
    accuracy after 3 epochs of ``mnist-fast`` on the bundled sample, tanh+cos, width 0.25).
    """

    def __init__(self, operator: OperatorSpec, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 width: float = 1.0, widths: Sequence[int] = (32, 64, 128), feature_dim: int = 2,
                 mean: Sequence[float] = _MNIST.mean, std: Sequence[float] = _MNIST.std,
                 embed_scale: float | None = None, projection: Any = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body, c_in, size = conv_blocks(operator, in_channels, input_size, widths, width, 2, 5)
        self.embed = operator.make_linear(c_in * size * size, feature_dim)
        if embed_scale is None:
            embed_scale = 1.0 if type(self.embed) is nn.Linear else 10.0
        self.embed_scale = float(embed_scale)
        self.projection = make_projection(projection)
        self.classifier = nn.Linear(feature_dim, num_classes)
        self._record("mnist2d", operator, width=width, widths=list(widths), feature_dim=feature_dim,
                     in_channels=in_channels, input_size=input_size, num_classes=num_classes,
                     embed_scale=self.embed_scale, projection=projection)

    def features(self, x: Tensor) -> Tensor:
        return self._embed(self.body(self.normalize(x)))

    def _embed(self, z: Tensor) -> Tensor:
        """:meth:`features` from the body's output."""
        return self.embed_scale * self.embed(z.flatten(1))


@register_arch("mnist2d")
def mnist2d(operator: OperatorSpec, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
            width: float = 1.0, widths: Sequence[int] = (32, 64, 128), feature_dim: int = 2,
            mean: Sequence[float] = _MNIST.mean, std: Sequence[float] = _MNIST.std,
            embed_scale: float | None = None, projection: Any = None) -> MNIST2D:
    """MNIST CNN with a 2-unit embedding exposed by ``features(x)``; ``projection`` before the classifier."""
    return MNIST2D(operator, num_classes, in_channels, input_size, width, widths, feature_dim, mean, std, embed_scale,
                   projection)

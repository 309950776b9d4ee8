"""Isometric networks (Qi, You, Wang, Ma & Malik, "Deep Isometric Learning for Visual Recognition",
ICML 2020; seed 004): convolutions kept close to isometries, a shifted ReLU, no BatchNorm.

* :func:`orthogonal_conv_penalty`: ``||conv2d(W, W, padding=k-1) - delta||_F^2 / 2`` per convolution,
  on the smaller of its two channel dimensions (a convolution is an isometry iff the correlations of
  its filters over the input channels vanish at every shift but the centre, where they are the
  identity); its coefficient is the recipe's ``tricks.isometry`` (the authors use 1e-4).
* Dirac (delta) initialization of every convolution: the identity on the first ``min(C_in, C_out)``
  channels, an isometry of those channels.
* :class:`SReLU`: ``max(x, b)`` with a learnable per-channel ``b`` initialised at -1.
* ISONet: a plain network of convolution + SReLU layers, no BatchNorm and no shortcuts;
  R-ISONet: residual blocks ``SReLU(x + alpha * conv(SReLU(conv(x))))`` with a scalar ``alpha``
  initialised at 0 (each block starts as the identity), no BatchNorm.

Both are CIFAR/MNIST-sized: a stem convolution, three stages of ``blocks`` blocks (widths
(16, 32, 64) x ``width``; the first convolution of stages 2 and 3 has stride 2), global pooling
(average, or robust pooling with ``pool``), an optional feature projection, a linear classifier.
The convolutions use the operator (a decoupled operator keeps its Dirac-initialised weights).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_dc.operators import OperatorSpec
from robustbench_dc.zoo.base import Normalize, ZooModel, make_pool, make_projection, stage_widths
from robustbench_dc.zoo.registry import register_arch

__all__ = ["SReLU", "ISONet", "orthogonal_conv_penalty", "conv_weights", "dirac_init"]


class SReLU(nn.Module):
    """Shifted ReLU ``max(x, b)`` with a learnable per-channel shift ``b`` (init ``-1``)."""

    def __init__(self, channels: int, init: float = -1.0) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.maximum(x, self.shift.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype))


def conv_weights(model: nn.Module) -> list[Tensor]:
    """The 4-D weights of every convolution of ``model`` (``nn.Conv2d`` and decoupled convolutions)."""
    return [p for m in model.modules() for name, p in m.named_parameters(recurse=False)
            if name == "weight" and p.dim() == 4]


def orthogonal_conv_penalty(model: nn.Module) -> Tensor:
    """``sum ||conv2d(W, W, padding=k-1) - delta||_F^2 / 2`` over the convolutions of ``model``, each on
    the smaller of its two channel dimensions (0 for a Dirac-initialised square convolution)."""
    total: Tensor | None = None
    for w in conv_weights(model):
        if w.shape[0] > w.shape[1]:
            w = w.transpose(0, 1)  # Gram over the input channels
        k = w.shape[-1]
        gram = F.conv2d(w, w, padding=(w.shape[-2] - 1, k - 1))  # (c, c, 2kh-1, 2kw-1)
        target = torch.zeros_like(gram)
        idx = torch.arange(gram.shape[0], device=w.device)
        target[idx, idx, w.shape[-2] - 1, k - 1] = 1.0
        term = 0.5 * (gram - target).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def dirac_init(model: nn.Module) -> None:
    """Dirac (delta) initialization of every convolution of ``model``; biases to zero."""
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, nn.Parameter) and w.dim() == 4:
                nn.init.dirac_(w)
                b = getattr(m, "bias", None)
                if isinstance(b, nn.Parameter):
                    b.zero_()


class _ResidualBlock(nn.Module):
    def __init__(self, operator: OperatorSpec, c: int) -> None:
        super().__init__()
        self.conv1 = operator.make_conv(c, c, 3, padding=1)
        self.act1 = SReLU(c)
        self.conv2 = operator.make_conv(c, c, 3, padding=1)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.act2 = SReLU(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(x + self.alpha * self.conv2(self.act1(self.conv1(x))))


class ISONet(ZooModel):
    """ISONet (``residual=False``) or R-ISONet (``residual=True``) for small images; see the module."""

    def __init__(self, operator: OperatorSpec, residual: bool = False, blocks: int = 3, num_classes: int = 10,
                 in_channels: int = 3, widths: Sequence[int] = (16, 32, 64), width: float = 1.0,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), pool: Any = "avg",
                 projection: Any = None) -> None:
        super().__init__()
        ws = stage_widths(widths, width, blocks)
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = [operator.make_conv(in_channels, ws[0], 3, padding=1), SReLU(ws[0])]
        c_in = ws[0]
        for i, c_out in enumerate(ws):
            if i > 0:  # the transition: a strided convolution (plain in both variants)
                layers += [operator.make_conv(c_in, c_out, 3, stride=2, padding=1), SReLU(c_out)]
                c_in = c_out
            for _ in range(blocks if residual else (blocks if i == 0 else blocks - 1)):
                if residual:
                    layers.append(_ResidualBlock(operator, c_out))
                else:
                    layers += [operator.make_conv(c_out, c_out, 3, padding=1), SReLU(c_out)]
        self.body = nn.Sequential(*layers)
        self.pool = make_pool(pool, c_in)
        self.projection = make_projection(projection)
        self.classifier = nn.Linear(c_in, num_classes)
        dirac_init(self.body)
        self._record("risonet" if residual else "isonet", operator, blocks=blocks, widths=list(widths), width=width,
                     in_channels=in_channels, num_classes=num_classes, pool=pool, projection=projection)

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.body(self.normalize(x)))


def _builder(residual: bool):
    def build(operator: OperatorSpec, blocks: int = 3, num_classes: int = 10, in_channels: int = 3,
              widths: Sequence[int] = (16, 32, 64), width: float = 1.0, mean: Sequence[float] = (0.5,),
              std: Sequence[float] = (0.5,), pool: Any = "avg", projection: Any = None) -> ISONet:
        return ISONet(operator, residual, blocks, num_classes, in_channels, widths, width, mean, std, pool, projection)

    build.__doc__ = ("R-ISONet: residual blocks scaled by a scalar initialised at 0, SReLU, Dirac init, no BatchNorm"
                     if residual else "ISONet: plain convolution + SReLU layers, Dirac init, no BatchNorm or shortcuts")
    return build


register_arch("isonet")(_builder(False))
register_arch("risonet")(_builder(True))

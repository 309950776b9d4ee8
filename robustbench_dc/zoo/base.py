"""Pieces shared by the zoo architectures: input normalization, global pooling, feature projections
and the model base class."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators import OperatorSpec

__all__ = ["Normalize", "ZooModel", "scaled", "conv_blocks", "stage_widths", "make_pool", "make_projection"]


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


def stage_widths(widths: Sequence[int], width: float, blocks: int) -> list[int]:
    """The three stage widths of a ResNet-like network, scaled by ``width`` (and ``blocks`` >= 1 checked)."""
    if len(widths) != 3:
        raise InvalidParameterError(f"widths: expected 3 stage widths, got {tuple(widths)}")
    if blocks < 1:
        raise InvalidParameterError(f"blocks: must be >= 1, got {blocks}")
    return [scaled(w, width) for w in widths]


def make_pool(spec: Any, channels: int) -> nn.Module:
    """Global pooling (N, C, H, W) -> (N, C): ``"avg"`` (average pooling), a robust-pooling penalty
    name (``"huber"``, ``"welsch"``, ``"pseudo-huber"``, ``"trunc-quad"``, ``"adaptive"``,
    ``"quadratic"``: learnable per-channel ``c`` from 1.0, ``a`` from 1.0), or a mapping of
    :class:`~robustbench_dc.declarative.RobustGlobalPool2d` arguments with ``penalty``."""
    from robustbench_dc.declarative import PENALTIES, RobustGlobalPool2d

    if spec in (None, "avg"):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(spec, str):
        spec = {"penalty": spec}
    if not isinstance(spec, dict) or spec.get("penalty") not in PENALTIES:
        raise InvalidParameterError(f"pool: 'avg', one of {', '.join(PENALTIES)}, or a mapping with 'penalty'; "
                                    f"got {spec!r}")
    kwargs = {"learnable": True, "channels": channels, **{k: v for k, v in spec.items() if k != "penalty"}}
    unknown = set(kwargs) - {"c", "a", "learnable", "channels", "c_min", "tol", "max_iter"}
    if unknown:
        raise InvalidParameterError(f"pool: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        return RobustGlobalPool2d(spec["penalty"], **kwargs)
    except ValueError as exc:
        raise InvalidParameterError(f"pool: {exc}") from None


def make_projection(spec: Any) -> nn.Module | None:
    """A feature projection before the classifier: None, ``"NORM-KIND"`` (``"l2-sphere"``,
    ``"l1-ball"``, ``"linf-sphere"``, ...: learnable radius from 10) or a mapping of
    :class:`~robustbench_dc.declarative.FeatureProjection` arguments."""
    from robustbench_dc.declarative import FeatureProjection

    if spec in (None, "none"):
        return None
    if isinstance(spec, str):
        norm, _, kind = spec.partition("-")
        spec = {"norm": norm, "kind": kind}
    if not isinstance(spec, dict):
        raise InvalidParameterError(f"projection: 'l2-sphere', 'l1-ball', ... or a mapping, got {spec!r}")
    kwargs = {"radius": 10.0, "learnable": True, **spec}
    unknown = set(kwargs) - {"norm", "kind", "radius", "learnable", "r_min"}
    if unknown:
        raise InvalidParameterError(f"projection: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        return FeatureProjection(**kwargs)
    except ValueError as exc:
        raise InvalidParameterError(f"projection: {exc}") from None


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
    #: a feature projection before the classifier (:func:`make_projection`), or None; subclasses that
    #: never set it have none (no class default: it would shadow the registered submodule)
    projection: nn.Module | None

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self._classify(self.features(x))

    def _classify(self, f: Tensor) -> Tensor:
        """Logits from :meth:`features`' output."""
        projection = getattr(self, "projection", None)
        if projection is not None:
            f = projection(f)
        return self.classifier(f)

    def local_split(self) -> tuple[list[nn.Module], Callable[[Tensor], Tensor]] | None:
        """The network as ``(layers, tail)``, ``forward(x) == tail(layers[-1](... layers[0](x)))``,
        where the layers are the input normalization and the convolutional body (spatially local:
        a position of each output depends on a window of its input), the tail the rest; None for a
        network without a ``body`` of that kind. Square Attack recomputes only what a query's
        changed window reaches (:class:`~robustbench_dc.attacks.windowed.WindowedForward`)."""
        body, embed = getattr(self, "body", None), getattr(self, "_embed", None)
        if not isinstance(body, nn.Sequential) or not callable(embed):
            return None
        return [self.normalize, *body], lambda z: self._classify(embed(z))

    def _record(self, arch: str, operator: OperatorSpec, **arch_params: Any) -> None:
        self.info = {"arch": arch, "operator": operator.describe(), "arch_params": arch_params}

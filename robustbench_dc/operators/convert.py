"""Turn an existing network into its decoupled counterpart."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_dc.operators.registry import OperatorSpec, get_operator

__all__ = ["convert", "classifier_name"]

log = logging.getLogger(__name__)


def classifier_name(model: nn.Module) -> str | None:
    """Name of the classifier: the last ``nn.Conv2d`` / ``nn.Linear`` in registration order."""
    last = None
    for name, module in model.named_modules():
        if type(module) in (nn.Conv2d, nn.Linear):
            last = name
    return last


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(model: nn.Module, operator: str | OperatorSpec, *, include_classifier: bool = False,
            include_1x1: bool = False, include_linear: bool = False, **params: Any) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``model`` by its decoupled counterpart, in place.

    Weights (and biases, when present) are copied, so a ``"linear+cos"`` conversion with
    ``weighted="linear"`` computes the same function as the original network.

    Args:
        model: any network; it is modified in place and returned.
        operator: an operator spec (``"tanh+cos"``, a registered name, a reference...).
        include_classifier: also convert the classifier (the last conv / linear layer).
        include_1x1: also convert 1x1 convolutions (projection shortcuts).
        include_linear: also convert hidden ``nn.Linear`` layers (needs an operator with
            a fully-connected counterpart).
        **params: operator parameters (``rho=...``, ``weighted=...``).

    Grouped convolutions are left as they are (logged), since a decoupled operator
    normalises over the whole input patch.
    """
    spec = operator if isinstance(operator, OperatorSpec) else get_operator(operator)
    if params:
        spec = spec.with_params(**params)
    if spec.is_baseline:
        return model
    classifier = None if include_classifier else classifier_name(model)
    converted = 0
    for name, module in list(model.named_modules()):
        if name == classifier:
            continue
        if type(module) is nn.Conv2d:
            if module.groups != 1:
                log.info("convert: %s is a grouped convolution (groups=%d); left unchanged", name, module.groups)
                continue
            if module.kernel_size == (1, 1) and not include_1x1:
                continue
            new = spec.conv(module.in_channels, module.out_channels, module.kernel_size,
                            stride=module.stride, padding=module.padding, dilation=module.dilation,
                            bias=module.bias is not None, **spec.params)
            if module.padding_mode != "zeros":
                setattr(new, "padding_mode", module.padding_mode)
        elif type(module) is nn.Linear and include_linear:
            if spec.linear is None:
                raise ValueError(f"convert: operator {spec.name!r} has no fully-connected counterpart")
            new = spec.linear(module.in_features, module.out_features, bias=module.bias is not None,
                              **spec.params)
        else:
            continue
        new = new.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            weight, bias = new.weight, new.bias
            assert isinstance(weight, Tensor)
            weight.copy_(module.weight)
            if module.bias is not None:
                assert isinstance(bias, Tensor)
                bias.copy_(module.bias)
        new.train(module.training)
        _set_submodule(model, name, new)
        converted += 1
    log.info("convert: replaced %d layer(s) with %s", converted, spec.name)
    return model

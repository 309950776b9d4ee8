"""What an evaluation costs, counted: forward and backward passes through the model, in examples
(a batch of 100 through the model is 100 forward passes), as adv-lib counts them and RobustBench
reports them."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn

__all__ = ["PassCounter"]


class PassCounter:
    """Count the examples that go forward through ``model`` (every call of its ``forward``) and
    backward through it (every gradient that reaches one of its outputs), while in the ``with`` block.

    >>> with PassCounter(model) as passes:             # doctest: +SKIP
    ...     x_adv = run_attack(model, x, y, spec)
    >>> passes.forward, passes.backward
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = 0
        self.backward = 0
        self._handle: Any = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0] if args else None
        n = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1
        self.forward += n
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: self._backward(n))

    def _backward(self, n: int) -> None:
        self.backward += n

    @staticmethod
    def counting(model: nn.Module) -> list[PassCounter]:
        """The counters whose ``with`` block is open on ``model`` (hooked on ``model`` itself)."""
        return [c for h in model._forward_hooks.values() if isinstance(c := getattr(h, "__self__", None), PassCounter)]

    def add_forward(self, n: int) -> None:
        """Count ``n`` forward passes that computed the model's logits without calling its ``forward``
        (:class:`~robustbench_dc.attacks.windowed.WindowedForward`, from cached feature maps)."""
        self.forward += n

    def __enter__(self) -> PassCounter:
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

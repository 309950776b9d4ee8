"""Models that count their calls, for the tests that check attack budgets."""

from __future__ import annotations

import torch
from torch import nn


class Counter(nn.Module):
    """Counts the wrapped model's calls by phase: gradient evaluations and forward-only calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.phase = "setup"
        self.grad: dict[str, int] = {}
        self.forward_only: dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        book = self.grad if torch.is_grad_enabled() and x.requires_grad else self.forward_only
        book[self.phase] = book.get(self.phase, 0) + 1
        return self.model(x)


class Unbreakable(nn.Module):
    """Logits with a real input gradient but a margin no eps <= 1 can overcome: class 0 always wins."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(d, k)
        with torch.no_grad():
            self.lin.weight.mul_(1e-3)
            self.lin.bias.copy_(-torch.arange(k, dtype=torch.float32))
            self.lin.bias[0] = 100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))

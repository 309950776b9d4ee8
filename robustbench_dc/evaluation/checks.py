"""What the evaluation refuses before it attacks a model: a model that is not a function of its
input (non-finite logits on the clean examples)."""

from __future__ import annotations

import torch

from robustbench_dc.errors import UserError

__all__ = ["NonFiniteModelError", "check_finite_logits"]


class NonFiniteModelError(UserError, ValueError):
    """A model whose logits on the clean inputs are NaN or infinite: not a function to attack (a
    checkpoint of NaN weights, say). Refused before any attack runs: every attack would "break" or
    "miss" such a model for no reason, and its numbers would mean nothing."""


def check_finite_logits(logits: torch.Tensor, model_name: str) -> None:
    """Raise :class:`NonFiniteModelError` when some clean example's logits are not all finite,
    naming how many of the examples gave them."""
    bad = ~torch.isfinite(logits.detach().reshape(logits.shape[0], -1)).all(dim=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = [int(i) for i in bad.nonzero().flatten()[:5]]
        raise NonFiniteModelError(
            f"model {model_name}: non-finite logits (NaN or inf) on {n_bad} of {logits.shape[0]} clean examples "
            f"(the first: {', '.join(map(str, first))}); refusing to attack it: check its weights (a checkpoint "
            "with NaN or inf values?) and its forward pass")

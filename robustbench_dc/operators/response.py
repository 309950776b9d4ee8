"""The decoupled response ``h * g`` from the inner product and the norms (the generic path).

Its own module so that both :mod:`~robustbench_dc.operators.functional` (eager) and
:mod:`~robustbench_dc.operators.compiled` (``torch.compile``) build on it without importing
each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators.angular import Angular
from robustbench_dc.operators.magnitude import Magnitude

__all__ = ["WEIGHTED", "decoupled_response"]

WEIGHTED: tuple[str | None, ...] = (None, "linear", "nonlinear", "separable")


def decoupled_response(dot: Tensor, xnorm: Tensor, wnorm: Tensor, *, magnitude: Magnitude,
                       angular: Angular, weighted: str | None = None, alpha: float = 1.0,
                       beta: float = 0.5, rho: float | Tensor = 1.0, k: float = 0.3) -> Tensor:
    """Combine the inner product and the norms into ``h * g``.

    Args:
        dot: ``<w, x>`` for every (example, filter, position), e.g. ``(N, O, H, W)``.
        xnorm: ``||x||`` broadcastable against ``dot`` (e.g. ``(N, 1, H, W)``).
        wnorm: ``||w||`` broadcastable against ``dot`` (e.g. ``(1, O, 1, 1)``).
        magnitude, angular: the registered functions.
        weighted: ``None``, ``"linear"``, ``"nonlinear"`` or ``"separable"``.
        alpha, beta, rho, k: hyper-parameters (``rho`` may be a tensor broadcastable
            against ``dot``, e.g. a per-filter radius).
    """
    # The epsilons keep the norms positive; the clamp_min only guards eps=0 on blank patches.
    denom = (xnorm * wnorm).clamp_min(torch.finfo(dot.dtype).tiny)
    cos = (dot / denom).clamp(-1.0, 1.0)
    g = angular(cos, k=k)
    if weighted is None:
        h = magnitude(xnorm, alpha=alpha, beta=beta, rho=rho)
    elif weighted == "linear":
        h = magnitude(xnorm, alpha=alpha, beta=beta, rho=rho) * wnorm
    elif weighted == "nonlinear":
        h = magnitude(xnorm * wnorm, alpha=alpha, beta=beta, rho=rho)
    elif weighted == "separable":
        h = magnitude(xnorm, alpha=alpha, beta=beta, rho=rho) * torch.tanh(wnorm / rho)
    else:
        raise InvalidParameterError(f"weighted: must be one of {WEIGHTED}, got {weighted!r}")
    return g * h

"""Robust global pooling: a declarative layer (Gould et al., "Deep Declarative Networks", TPAMI 2021;
the adaptive version of seed 003).

Per example and channel, the pooled value of the features ``x_1..x_n`` (the spatial positions) is

    y = argmin_u  sum_i phi(u - x_i; c, a)

for a penalty ``phi`` of :mod:`~robustbench_dc.declarative.penalties`. With the quadratic penalty
``y`` is the mean (global average pooling); robust penalties give outlying positions less weight.

Forward: safeguarded Newton steps (``u <- u - sum_i phi'(z_i) / sum_i phi''(z_i)`` where that sum is
positive and the step lowers the objective, else an iteratively-reweighted-least-squares step
``u <- sum_i w_i x_i / sum_i w_i``, ``w = phi'(z)/z``, which never raises it) for all examples and
channels at once, until every update is below ``tol`` (relative to the spread of the values) or
``max_iter``. It starts from the mean; for a non-convex penalty also from the median, keeping per
channel the solution with the lower objective.

Backward: implicit differentiation of the optimality condition ``sum_i phi'(y - x_i) = 0``, never
by unrolling the solver:

    dy/dx_i = phi''(z_i) / sum_j phi''(z_j),   dy/dc = -sum_i d2phi/dzdc(z_i) / sum_j phi''(z_j)

(and likewise for ``a``), with ``z_i = y - x_i``; the second derivatives come from autograd on
``phi'``. Where ``sum_j phi''(z_j)`` vanishes (every position outside a truncated quadratic's
threshold) the gradient is shared equally among the positions, as for the mean.

A learnable ``c`` is ``softplus(raw) + c_min`` and a learnable ``a`` is ``3 sigmoid(raw)`` (in (0, 3)).

Example::

    >>> pool = RobustGlobalPool2d("huber", c=1.0)
    >>> pool(torch.randn(8, 64, 7, 7)).shape
    torch.Size([8, 64])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from robustbench_dc.declarative.penalties import Penalty, get_penalty, softplus_inverse

__all__ = ["robust_pool", "RobustGlobalPool2d", "solve_robust_pool", "irls_step"]

_TINY = 1e-12


def _objective(p: Penalty, x: Tensor, u: Tensor, c: Tensor, a: Tensor) -> Tensor:
    return p.phi(u - x, c, a).sum(-1, keepdim=True)


def irls_step(p: Penalty, x: Tensor, u: Tensor, c: Tensor, a: Tensor) -> Tensor:
    """One reweighted-least-squares update ``sum_i w_i x_i / sum_i w_i`` (``u`` where every weight vanishes)."""
    w = p.weight(u - x, c, a)
    den = w.sum(-1, keepdim=True)
    return torch.where(den > _TINY, (w * x).sum(-1, keepdim=True) / den.clamp_min(_TINY), u)


def _solve(p: Penalty, x: Tensor, u: Tensor, c: Tensor, a: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int]:
    """Safeguarded Newton: per channel the Newton step where the objective is locally convex and the
    step does not increase the objective, else the IRLS step (which never increases it)."""
    scale = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)).clamp_min(_TINY)
    f_u = _objective(p, x, u, c, a)
    for it in range(1, max_iter + 1):
        z = u - x
        g = p.dphi(z, c, a).sum(-1, keepdim=True)
        h = p.d2phi(z, c, a).sum(-1, keepdim=True)
        newton = u - g / torch.where(h > _TINY, h, torch.ones_like(h))
        f_n = _objective(p, x, newton, c, a)
        take = (h > _TINY) & (f_n <= f_u)
        new = torch.where(take, newton, irls_step(p, x, u, c, a))
        f_new = torch.where(take, f_n, _objective(p, x, new, c, a))
        done = bool(((new - u).abs() <= tol * scale).all())
        u, f_u = new, f_new
        if done:
            return u, it
    return u, max_iter


def solve_robust_pool(x: Tensor, penalty: str | Penalty, c: Tensor | float = 1.0, a: Tensor | float = 1.0, *,
                      tol: float = 1e-7, max_iter: int = 100, stats: dict[str, int] | None = None) -> Tensor:
    """The minimiser ``y`` (..., 1) of ``sum_i phi(u - x_i)`` over the last dimension of ``x`` (..., n),
    without gradients (the forward of :func:`robust_pool`); ``stats["iterations"]`` receives the
    solver's iterations (the larger of the two starts for a non-convex penalty)."""
    p = get_penalty(penalty) if isinstance(penalty, str) else penalty
    with torch.no_grad():
        x = x.detach()
        c_t = torch.as_tensor(c, dtype=x.dtype, device=x.device)
        a_t = torch.as_tensor(a, dtype=x.dtype, device=x.device)
        u, iters = _solve(p, x, x.mean(-1, keepdim=True), c_t, a_t, tol, max_iter)
        if not p.convex:
            v, it2 = _solve(p, x, x.median(-1, keepdim=True).values, c_t, a_t, tol, max_iter)
            u = torch.where(_objective(p, x, v, c_t, a_t) < _objective(p, x, u, c_t, a_t), v, u)
            iters = max(iters, it2)
    if stats is not None:
        stats["iterations"] = iters
    return u


class _RobustPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, c: Tensor, a: Tensor, penalty: Penalty, tol: float, max_iter: int) -> Tensor:
        y = solve_robust_pool(x, penalty, c, a, tol=tol, max_iter=max_iter)
        ctx.penalty = penalty
        ctx.save_for_backward(x, y, c, a)
        return y.squeeze(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, c, a = ctx.saved_tensors
        p: Penalty = ctx.penalty
        shape = y.shape  # (..., 1)
        with torch.enable_grad():
            z = (y - x).detach().requires_grad_(True)
            c_e = c.detach().expand(shape).clone().requires_grad_(True)
            a_e = a.detach().expand(shape).clone().requires_grad_(True)
            d1 = p.dphi(z, c_e, a_e)
            wanted = [z] + ([c_e] if ctx.needs_input_grad[1] else []) + ([a_e] if ctx.needs_input_grad[2] else [])
            grads = torch.autograd.grad(d1.sum(), wanted, allow_unused=True)
        d2 = grads[0] if grads[0] is not None else torch.zeros_like(z)  # phi''(z_i)
        h = d2.sum(-1, keepdim=True)
        ok = h.abs() > _TINY
        h_safe = torch.where(ok, h, torch.ones_like(h))
        weights = torch.where(ok, d2 / h_safe, torch.full_like(d2, 1.0 / x.shape[-1]))
        g = grad.unsqueeze(-1)
        gx = g * weights if ctx.needs_input_grad[0] else None

        def param_grad(mixed: Tensor | None, shape: torch.Size) -> Tensor:
            # dy/dparam = -sum_i d2phi/dz dparam / sum_i phi''; 0 where that sum vanishes
            dy = torch.where(ok, -(mixed if mixed is not None else torch.zeros_like(h)) / h_safe, torch.zeros_like(h))
            return (g * dy).sum_to_size(shape)

        rest = iter(grads[1:])
        gc = param_grad(next(rest), c.shape) if ctx.needs_input_grad[1] else None
        ga = param_grad(next(rest), a.shape) if ctx.needs_input_grad[2] else None
        return gx, gc, ga, None, None, None


def robust_pool(x: Tensor, penalty: str | Penalty, c: Tensor | float = 1.0, a: Tensor | float = 1.0, *,
                tol: float = 1e-7, max_iter: int = 100) -> Tensor:
    """Robust pooling over the last dimension: (..., n) -> (...), differentiable in ``x``, ``c`` and
    ``a`` by implicit differentiation. ``c`` and ``a`` broadcast against (..., 1)."""
    p = get_penalty(penalty) if isinstance(penalty, str) else penalty
    c_t = c if isinstance(c, Tensor) else torch.tensor(float(c), dtype=x.dtype, device=x.device)
    a_t = a if isinstance(a, Tensor) else torch.tensor(float(a), dtype=x.dtype, device=x.device)
    return _RobustPool.apply(x, c_t.to(x.dtype), a_t.to(x.dtype), p, tol, max_iter)


class RobustGlobalPool2d(nn.Module):
    """Robust global pooling of (N, C, H, W) feature maps to (N, C).

    Args:
        penalty (str): ``quadratic``, ``pseudo-huber``, ``huber``, ``welsch``, ``trunc-quad`` or ``adaptive``.
        c (float): the scale / outlier threshold (> 0). Default 1.0.
        a (float): the adaptive penalty's shape, in (0, 3). Default 1.0.
        learnable (bool): learn ``c`` (and ``a`` for ``adaptive``), per channel when ``channels`` is
            given, else one for the layer. Default False.
        channels (int | None): channels, for per-channel learnable parameters. Default None.
        c_min (float): the smallest learnable ``c`` (``softplus(raw) + c_min``). Default 1e-3.
        tol (float), max_iter (int): the solver's tolerance (relative to the values' spread) and cap.
    """

    c_fixed: Tensor
    a_fixed: Tensor

    def __init__(self, penalty: str = "huber", c: float = 1.0, a: float = 1.0, *, learnable: bool = False,
                 channels: int | None = None, c_min: float = 1e-3, tol: float = 1e-7, max_iter: int = 100) -> None:
        super().__init__()
        self.penalty = get_penalty(penalty)
        if not c > 0:
            raise ValueError(f"c: must be > 0, got {c}")
        if not 0 < a < 3:
            raise ValueError(f"a: must be in (0, 3), got {a}")
        if learnable and c <= c_min:
            raise ValueError(f"c: a learnable c must exceed c_min={c_min}, got {c}")
        self.learnable, self.c_min, self.tol, self.max_iter = learnable, c_min, tol, max_iter
        shape = (channels, 1) if channels else ()
        if learnable:
            self.c_raw = nn.Parameter(torch.full(shape, softplus_inverse(c - c_min)))
            a_raw = torch.logit(torch.tensor(a / 3.0))
            self.a_raw = nn.Parameter(torch.full(shape, float(a_raw))) if self.penalty.uses_a else None
        else:
            self.register_buffer("c_fixed", torch.full(shape, float(c)))
            self.register_buffer("a_fixed", torch.full(shape, float(a)))

    @property
    def c(self) -> Tensor:
        """The current scale (> 0)."""
        if self.learnable:
            return nn.functional.softplus(self.c_raw) + self.c_min
        return self.c_fixed

    @property
    def a(self) -> Tensor:
        """The current shape of the adaptive penalty (in (0, 3))."""
        if self.learnable and self.a_raw is not None:
            return 3.0 * torch.sigmoid(self.a_raw)
        return self.a_fixed if not self.learnable else torch.ones((), device=self.c_raw.device)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)  # (N, C, H*W)
        return robust_pool(flat, self.penalty, self.c, self.a, tol=self.tol, max_iter=self.max_iter)

    def extra_repr(self) -> str:
        return f"penalty={self.penalty.name}, learnable={self.learnable}"

"""Fused autograd functions: the decoupled response at close to the cost of a convolution.

The generic path (:func:`~robustbench_dc.operators.functional.decoupled_response`) lets
autograd record every element-wise step on the ``(N, C_out, H, W)`` response and keeps
several of those tensors for the backward pass. For the cosine angular function the
response factorises into rank-1 pieces,

    f = clip(<w_hat, x> / ||x||, -1, 1) * h(||x||) * s,   w_hat = w / ||w||,

where ``1/||x||`` and ``h`` have one value per (example, position) and ``s`` one per output
channel (``1``, ``||w||`` for ``weighted="linear"``, ``tanh(||w||/rho)`` for
``"separable"``). :class:`CosResponse` computes it with one multiplication and in-place
clip/scale on the big tensor, and its backward needs two passes. When ``h`` cannot vanish
it keeps only its own output (which the following batch-norm keeps anyway) instead of
the inner products, so the memory cost is that of a convolution. The small factors
``1/||x||``, ``h``, ``s`` are computed with ordinary autograd, so every magnitude function,
built-in or user-registered, takes this path.

The clip only acts at rounding level (it keeps ``|cos| <= 1`` exactly, so bounded
operators stay bounded, also in bfloat16); its gradient is passed straight through.

:class:`SquaredChannelSum` is ``sum_c x_c^2`` with a one-pass backward ``2 x g``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["CosResponse", "DecoupledResponse", "SquaredChannelSum"]


def _reduce_except(t: Tensor, dim: int) -> Tensor:
    dims = [d for d in range(t.dim()) if d != dim % t.dim()]
    return t.sum(dims)


class CosResponse(torch.autograd.Function):
    """``clip(dot_hat * inv, -1, 1) * h * s`` with a memory- and pass-lean backward.

    Args (to ``apply``):
        dot_hat: ``<w_hat, x>``, e.g. ``(N, O, H, W)`` or ``(N, O)``.
        inv: ``1 / ||x||``, broadcastable (``(N, 1, H, W)`` / ``(N, 1)``).
        h: the magnitude ``h(||x||)``, broadcastable (full shape for a per-channel radius).
        s: per-channel scale broadcastable against ``dot_hat``, or None.
        channel_dim: the output-channel dimension (1 for convolutions, -1 for linear layers).
        keep_output: save the output instead of ``dot_hat`` (only valid when ``h`` and
            ``s`` have no zeros, e.g. built-in magnitudes with ``alpha > 0``).

    Forward: in-place scalings of the convolution output and an in-place clip to [-1, 1]
    (with ``keep_output``; otherwise one new tensor). Backward: ``grad * (inv h s)`` and one channel reduction
    ``P = sum_c grad * out``, from which ``d/dh = P / h`` and ``d/dinv = P / inv``.
    """

    @staticmethod
    def forward(ctx: Any, dot_hat: Tensor, inv: Tensor, h: Tensor, s: Tensor | None,  # type: ignore[override]
                channel_dim: int, keep_output: bool) -> Tensor:
        if keep_output:
            # dot_hat is this function's own temporary (the convolution output): scale it in
            # place instead of allocating a second (N, O, H, W) tensor.
            ctx.mark_dirty(dot_hat)
            out = dot_hat.mul_(inv)
        else:
            out = dot_hat * inv
        out.clamp_(-1.0, 1.0)
        out.mul_(h)
        if s is not None:
            out.mul_(s)
        ctx.channel_dim, ctx.keep_output, ctx.s_none = channel_dim, keep_output, s is None
        ctx.save_for_backward(out if keep_output else dot_hat, inv, h, s if s is not None else inv.new_ones(()))
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        saved, inv, h, s = ctx.saved_tensors
        dim = ctx.channel_dim
        need_dot, need_inv, need_h, need_s = ctx.needs_input_grad[:4]
        g_dot = g_inv = g_h = g_s = None
        if need_dot:
            g_dot = grad * (inv * h)
            if not ctx.s_none:
                g_dot.mul_(s)
        if ctx.keep_output:
            # saved = out = cos * h * s (the clip acts at rounding level only, gradient passes).
            if need_inv or need_h:
                if h.shape[dim] == 1:  # h shared by all channels: reduce over them in one pass
                    p = torch.linalg.vecdot(grad, saved, dim=dim).unsqueeze(dim)
                    g_inv = p / inv if need_inv else None
                    g_h = p / h if need_h else None
                else:  # per-channel radius: h is a full tensor
                    p = grad * saved
                    g_inv = (p / inv).sum_to_size(inv.shape) if need_inv else None
                    g_h = (p / h).sum_to_size(h.shape) if need_h else None
            if need_s and not ctx.s_none:
                g_s = _reduce_except(grad * saved, dim).view_as(s).div_(s)
        else:
            # saved = dot_hat; out = dot_hat * inv * h * s.
            scaled = grad if ctx.s_none else grad * s
            if need_inv or need_h:
                if h.shape[dim] == 1:
                    p = torch.linalg.vecdot(scaled, saved, dim=dim).unsqueeze(dim)
                else:
                    p = scaled * saved
                g_inv = (p * h).sum_to_size(inv.shape) if need_inv else None
                g_h = (p * inv).sum_to_size(h.shape) if need_h else None
            if need_s and not ctx.s_none:
                g_s = _reduce_except(grad * saved * (inv * h), dim).view_as(s)
        return g_dot, g_inv, g_h, g_s, None, None


class SquaredChannelSum(torch.autograd.Function):
    """``sum_c x_c^2`` over ``dim`` (kept), backward ``2 x g`` in one pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        ctx.dim = dim
        ctx.save_for_backward(x)
        return torch.linalg.vecdot(x, x, dim=dim).unsqueeze(dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x * (2.0 * grad), None


# ----------------------------------------------------------------------------- the general fused response


def _magnitude_and_derivatives(name: str, u: Tensor, rho: Tensor, alpha: float,
                               beta: float) -> tuple[Tensor, Tensor, Tensor | None]:
    """``h(u; rho)``, ``dh/du`` and ``dh/drho`` (None when h does not read rho) of a built-in magnitude."""
    if name == "sphere":
        return torch.full_like(u, alpha), torch.zeros_like(u), None
    if name == "ball":
        inside = u < rho
        h = torch.where(inside, alpha * u / rho, alpha)
        return h, torch.where(inside, alpha / rho, 0.0), torch.where(inside, -alpha * u / (rho * rho), 0.0)
    if name == "tanh":
        t = torch.tanh(u / rho)
        sech2 = 1.0 - t * t
        return alpha * t, alpha * sech2 / rho, -alpha * sech2 * u / (rho * rho)
    if name == "linear":
        return alpha * u, torch.full_like(u, alpha), None
    if name == "seg":
        inside = u <= rho
        h = torch.where(inside, alpha * u, beta * u + (alpha - beta) * rho)
        below = inside.to(h.dtype)
        return h, beta + (alpha - beta) * below, (alpha - beta) * (1.0 - below)
    if name == "log":
        return alpha * torch.log1p(u), alpha / (1.0 + u), None
    if name == "mix":
        return alpha * u + beta * torch.log1p(u), alpha + beta / (1.0 + u), None
    raise KeyError(name)


def _angular_and_derivative(name: str, c: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """``g(c)`` and ``dg/dc`` of a built-in angular function (c = cos theta, already clipped)."""
    if name == "cos":
        return c, torch.ones_like(c)
    if name == "sqcos":
        return c * c.abs(), 2.0 * c.abs()
    inv_sin = torch.rsqrt((1.0 - c * c).clamp_min(torch.finfo(c.dtype).tiny))
    theta = torch.acos(c)
    if name == "linear":
        return 1.0 - (2.0 / math.pi) * theta, (2.0 / math.pi) * inv_sin
    if name == "sigmoid":
        big_t = math.tanh(math.pi / (4.0 * k))
        z = torch.tanh((0.5 * math.pi - theta) / (2.0 * k))
        return z / big_t, (1.0 - z * z) / (2.0 * k * big_t) * inv_sin
    raise KeyError(name)


class DecoupledResponse(torch.autograd.Function):
    """``g(clip(dot_hat / ||x||)) * h(u; rho) * s`` for the built-in magnitude and angular functions.

    ``u`` is ``||x||`` (or ``||x|| ||w||`` for ``weighted="nonlinear"``) and ``s`` is 1,
    ``||w||`` (``"linear"``) or ``tanh(||w||/rho)`` (``"separable"``). Everything element-wise
    happens inside, with analytic derivatives, so autograd keeps only the clipped cosines
    and the small norm tensors, and the backward
    recomputes ``g``, ``g'``, ``h`` and ``dh`` in a few passes. Once differentiable: code
    that needs second derivatives switches layers to the generic path
    (:func:`~robustbench_dc.operators.generic_path`).

    Args (to ``apply``): ``dot_hat`` (the convolution of ``x`` with ``w / ||w||``), ``xnorm`` (``||x||``), ``wnorm`` (``||w||`` broadcastable per channel), ``rho``
    (a 0-d tensor or per-channel), then ``magnitude``, ``angular``, ``weighted`` names and
    ``alpha``, ``beta``, ``k``.
    """

    @staticmethod
    def forward(ctx: Any, dot_hat: Tensor, xnorm: Tensor, wnorm: Tensor, rho: Tensor,  # type: ignore[override]
                magnitude: str, angular: str, weighted: str | None, alpha: float, beta: float, k: float) -> Tensor:
        c = (dot_hat / xnorm).clamp_(-1.0, 1.0)
        u = xnorm * wnorm if weighted == "nonlinear" else xnorm
        h, _, _ = _magnitude_and_derivatives(magnitude, u, rho, alpha, beta)
        g, _ = _angular_and_derivative(angular, c, k)
        out = g * h
        if weighted == "linear":
            out = out * wnorm
        elif weighted == "separable":
            out = out * torch.tanh(wnorm / rho)
        ctx.cfg = (magnitude, angular, weighted, alpha, beta, k)
        ctx.save_for_backward(c, xnorm, wnorm, rho)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        c, xnorm, wnorm, rho = ctx.saved_tensors
        magnitude, angular, weighted, alpha, beta, k = ctx.cfg
        u = xnorm * wnorm if weighted == "nonlinear" else xnorm
        h, h_u, h_rho = _magnitude_and_derivatives(magnitude, u, rho, alpha, beta)
        g, g_c = _angular_and_derivative(angular, c, k)
        s = None
        if weighted == "linear":
            s = wnorm
        elif weighted == "separable":
            s = torch.tanh(wnorm / rho)
        t = grad if s is None else grad * s            # d out / d (g h)
        grad_c = t * h * g_c                            # d out / d c (clip passed through)
        inv = xnorm.reciprocal()
        grad_dot = grad_c * inv
        tg = t * g                                      # d out / d h
        # c = dot_hat / ||x||  ->  dc/d||x|| = -c / ||x||
        grad_x = (-(grad_c * c) * inv + tg * (h_u * wnorm if weighted == "nonlinear" else h_u)).sum_to_size(
            xnorm.shape)
        grad_w = None
        if ctx.needs_input_grad[2]:
            if weighted == "nonlinear":
                grad_w = (tg * h_u * xnorm).sum_to_size(wnorm.shape)
            elif weighted == "linear":
                grad_w = (grad * g * h).sum_to_size(wnorm.shape)
            elif weighted == "separable":
                grad_w = ((grad * g * h).sum_to_size(wnorm.shape) * (1.0 - s * s) / rho)
            else:
                grad_w = torch.zeros_like(wnorm)
        grad_rho = None
        if ctx.needs_input_grad[3]:
            total = torch.zeros_like(grad) if h_rho is None else tg * h_rho
            if weighted == "separable":
                total = total + (grad * g * h) * (-(1.0 - s * s) * wnorm / (rho * rho))
            grad_rho = total.sum_to_size(rho.shape)
        return grad_dot, grad_x, grad_w, grad_rho, None, None, None, None, None, None

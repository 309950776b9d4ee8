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

from typing import Any

import torch
from torch import Tensor

__all__ = ["CosResponse", "SquaredChannelSum"]


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
    def forward(ctx: Any, dot_hat: Tensor, inv: Tensor, h: Tensor, s: Tensor | None,
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
    def backward(ctx: Any, grad: Tensor):
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
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        ctx.save_for_backward(x)
        return torch.linalg.vecdot(x, x, dim=dim).unsqueeze(dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        (x,) = ctx.saved_tensors
        # In x's dtype: under autocast the sum may be float32 while x is bfloat16, and a float32
        # gradient would be a second full-size tensor for autograd to convert and accumulate.
        return x * (2.0 * grad).to(x.dtype), None

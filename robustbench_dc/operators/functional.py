"""Functional core of the decoupled operators.

A decoupled operator replaces ``<w, x> = ||w|| ||x|| cos(theta)`` by
``f_d(w, x) = h(||w||, ||x||) * g(theta)`` (Liu et al., CVPR 2018). The quantities are
computed as in the authors' code:

- ``||w|| = sqrt(sum(w^2) + eps)`` per output filter;
- ``||x|| = sqrt(conv2d(x*x, ones) + eps)`` per output position, with the stride,
  padding and dilation of the main convolution (zero padding counts as zeros). The
  channel sum is taken first, so the extra convolution has one input and one output
  channel;
- ``cos(theta) = <w, x> / (||w|| ||x||)``, clipped to [-1, 1].

Weighted variants put ``||w||`` back: ``"linear"`` multiplies the magnitude by ``||w||``,
``"nonlinear"`` feeds ``||x|| * ||w||`` to the magnitude in place of ``||x||`` and
``"separable"`` multiplies the magnitude by ``tanh(||w|| / rho)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_dc.operators import angular as angular_functions
from robustbench_dc.operators import magnitude as magnitude_functions
from robustbench_dc.operators.angular import Angular
from robustbench_dc.operators.compiled import compiled_cos_response, compiled_response
from robustbench_dc.operators.fused import CosResponse, SquaredChannelSum
from robustbench_dc.operators.magnitude import Magnitude
from robustbench_dc.operators.response import WEIGHTED, decoupled_response

__all__ = [
    "WEIGHTED",
    "fused_applicable",
    "filter_norm",
    "patch_norm2d",
    "decoupled_response",
    "decoupled_conv2d",
    "decoupled_linear",
]

IntOr2 = int | Sequence[int]


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; a pair stays a pair (a convolution's kernel size, stride, padding, dilation)."""
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def filter_norm(weight: Tensor, eps: float = 1e-4) -> Tensor:
    """``||w|| = sqrt(sum(w^2) + eps)`` per output filter (first dimension), shape ``(O,)``."""
    return torch.sqrt(weight.pow(2).flatten(1).sum(1) + eps)


def patch_norm2d(x: Tensor, kernel_size: tuple[int, int], stride: IntOr2 = 1, padding: IntOr2 | str = 0,
                 dilation: IntOr2 = 1, eps: float = 1e-4) -> Tensor:
    """``||x||`` of every input patch under a ``kernel_size`` window, shape ``(N, 1, H', W')``.

    Computed as ``sqrt(conv2d(sum_c x_c^2, ones[1, 1, kh, kw]) + eps)`` with the given
    stride, padding and dilation. In float32 without autocast (attacks, evaluation) the window sums
    are a sum pooling (``avg_pool2d(..., divisor_override=1)``) where pooling can express the
    geometry (no dilation, integer padding of at most half the window): the same sums, with a
    forward and backward pass ~2.5x cheaper than the single-channel convolution's on the CPU
    (an attack step of a decoupled CNN-9 ~6-15% cheaper, benchmarks/attack_fold.py). Otherwise,
    and in bfloat16 training where the convolution measured faster, that convolution.
    """
    sq = SquaredChannelSum.apply(x, 1)
    total = _window_sum(sq, kernel_size, stride, padding, dilation)
    # Fast convolution algorithms may round a sum of squares slightly below zero.
    return torch.sqrt(total.clamp_min(0.0) + eps)


def _window_sum(sq: Tensor, kernel_size: tuple[int, int], stride: IntOr2, padding: IntOr2 | str,
                dilation: IntOr2) -> Tensor:
    """``conv2d(sq, ones[1, 1, kh, kw])`` for a single-channel ``sq``, as a sum pooling where it can be."""
    if (sq.dtype != torch.float32 or torch.is_autocast_enabled(sq.device.type) or isinstance(padding, str)
            or pair(dilation) != (1, 1) or any(p > k // 2 for p, k in zip(pair(padding), kernel_size))):
        return F.conv2d(sq, sq.new_ones((1, 1, *kernel_size)), None, stride, padding, dilation)
    return F.avg_pool2d(sq, kernel_size, pair(stride), pair(padding), count_include_pad=True, divisor_override=1)


_POSITIVE_MAGNITUDES = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")


def fused_applicable(angular: Angular, weighted: str | None) -> bool:
    """Whether :class:`~robustbench_dc.operators.fused.CosResponse` computes this operator."""
    return angular.fn is angular_functions.cos and weighted in (None, "linear", "separable")


def _keeps_output(magnitude: Magnitude, alpha: float, beta: float, eps: float) -> bool:
    """Whether ``h`` can never vanish (built-in positive magnitudes), so that a cosine
    response can keep its output instead of the inner products for the backward."""
    builtin = magnitude_functions.MAGNITUDES.get(magnitude.name) is magnitude and magnitude.name in _POSITIVE_MAGNITUDES
    return builtin and alpha > 0 and beta >= 0 and eps > 0


def response_route(angular: Angular, weighted: str | None, magnitude: Magnitude, rho: float | Tensor, alpha: float,
           beta: float, eps: float, fused: bool, compiled: bool) -> str:
    """Which implementation computes the response: ``"fused"`` (:class:`CosResponse`),
    ``"cos-compiled"`` (:func:`compiled_cos_response`: the cosine with a per-channel radius,
    whose magnitude is a full-size tensor the fused path leaves to autograd), ``"compiled"``
    (:func:`compiled_response`) or ``"generic"`` (autograd on :func:`decoupled_response`)."""
    if fused and fused_applicable(angular, weighted):
        per_channel = isinstance(rho, Tensor) and rho.numel() > 1 and magnitude.uses_rho
        if not (compiled and per_channel):
            return "fused"
        if _keeps_output(magnitude, alpha, beta, eps):
            return "cos-compiled"
    return "compiled" if compiled else "generic"


def _generic(dot: Tensor, xnorm: Tensor, wnorm: Tensor, compiled: bool, **kwargs) -> Tensor:
    return (compiled_response if compiled else decoupled_response)(dot, xnorm, wnorm, **kwargs)


def _fused_cos(dot_hat: Tensor, xnorm: Tensor, wnorm: Tensor, *, magnitude: Magnitude, weighted: str | None,
               alpha: float, beta: float, rho: float | Tensor, eps: float, channel_dim: int,
               compiled: bool = False, affine: tuple[Tensor, Tensor] | None = None, relu: bool = False) -> Tensor:
    """``clip(cos) * h * s`` (``dot_hat`` uses normalised filters) through :class:`CosResponse`,
    or with ``compiled`` (a per-channel radius) through :func:`compiled_cos_response`, which also
    applies ``affine`` (per-channel scale and shift of the output) and then, with ``relu``, a ReLU
    (only there)."""
    s = None
    if weighted == "linear":
        s = wnorm
    elif weighted == "separable":
        s = torch.tanh(wnorm / rho)
    if compiled:
        shift = None
        if affine is not None:
            s = affine[0] if s is None else s * affine[0]
            shift = affine[1]
        return compiled_cos_response(dot_hat, xnorm, rho, s, magnitude=magnitude, alpha=alpha,  # type: ignore[arg-type]
                                     beta=beta, shift=shift, relu=relu)
    h = magnitude(xnorm, alpha=alpha, beta=beta, rho=rho)
    keep_output = _keeps_output(magnitude, alpha, beta, eps)
    return CosResponse.apply(dot_hat, xnorm.reciprocal(), h, s, channel_dim, keep_output)


def decoupled_conv2d(x: Tensor, weight: Tensor, *, magnitude: Magnitude, angular: Angular,
                     stride: IntOr2 = 1, padding: IntOr2 | str = 0, dilation: IntOr2 = 1,
                     weighted: str | None = None, alpha: float = 1.0, beta: float = 0.5,
                     rho: float | Tensor = 1.0, k: float = 0.3, eps: float = 1e-4,
                     xnorm: Tensor | None = None, fused: bool = True, compiled: bool = False,
                     affine: tuple[Tensor, Tensor] | None = None, relu: bool = False) -> Tensor:
    """Decoupled 2-D convolution of ``x`` (N, C, H, W) with ``weight`` (O, C, kh, kw).

    ``rho`` may be a float or a tensor of shape ``(O,)`` (per filter). ``xnorm`` may be
    passed when already computed (it must come from :func:`patch_norm2d` with the same
    geometry). ``fused=False`` forces the generic autograd path (same values);
    ``compiled=True`` runs the generic path through ``torch.compile``
    (:mod:`~robustbench_dc.operators.compiled`; same values, no double backward).
    ``affine``: frozen per-channel ``(scale, shift)`` of shape ``(1, O, 1, 1)`` applied to the
    response in its compiled kernel (a folded batch norm; only on the route of
    :func:`compiled_cos_response`, i.e. cosine, per-channel radius, ``compiled``; else an error);
    ``relu``: a ReLU after ``affine``, in the same kernel (only with ``affine``).
    """
    if xnorm is None:
        xnorm = patch_norm2d(x, tuple(weight.shape[2:]), stride, padding, dilation, eps)  # type: ignore[arg-type]
    wnorm = filter_norm(weight, eps).view(1, -1, 1, 1)
    if isinstance(rho, Tensor) and rho.dim() == 1:
        rho = rho.view(1, -1, 1, 1)
    route = response_route(angular, weighted, magnitude, rho, alpha, beta, eps, fused, compiled)
    if affine is not None and route != "cos-compiled":
        raise ValueError(f"affine: needs the compiled cosine path with a per-channel radius, this call takes {route!r}")
    if relu and affine is None:
        raise ValueError("relu: only with affine (a folded batch norm and its ReLU)")
    if route in ("fused", "cos-compiled"):
        dot_hat = F.conv2d(x, weight / wnorm.view(-1, 1, 1, 1), None, stride, padding, dilation)
        return _fused_cos(dot_hat, xnorm, wnorm, magnitude=magnitude, weighted=weighted, alpha=alpha, beta=beta,
                          rho=rho, eps=eps, channel_dim=1, compiled=route == "cos-compiled", affine=affine,
                          relu=relu)
    dot = F.conv2d(x, weight, None, stride, padding, dilation)
    return _generic(dot, xnorm, wnorm, compiled, magnitude=magnitude, angular=angular,
                    weighted=weighted, alpha=alpha, beta=beta, rho=rho, k=k)


def decoupled_linear(x: Tensor, weight: Tensor, *, magnitude: Magnitude, angular: Angular,
                     weighted: str | None = None, alpha: float = 1.0, beta: float = 0.5,
                     rho: float | Tensor = 1.0, k: float = 0.3, eps: float = 1e-4,
                     xnorm: Tensor | None = None, fused: bool = True, compiled: bool = False) -> Tensor:
    """Decoupled fully-connected map of ``x`` (..., in) with ``weight`` (out, in); keywords
    as :func:`decoupled_conv2d`."""
    if xnorm is None:
        xnorm = torch.sqrt(SquaredChannelSum.apply(x, -1) + eps)
    wnorm = filter_norm(weight, eps)
    route = response_route(angular, weighted, magnitude, rho, alpha, beta, eps, fused, compiled)
    if route in ("fused", "cos-compiled"):
        dot_hat = F.linear(x, weight / wnorm.view(-1, 1))
        return _fused_cos(dot_hat, xnorm, wnorm, magnitude=magnitude, weighted=weighted, alpha=alpha, beta=beta,
                          rho=rho, eps=eps, channel_dim=-1, compiled=route == "cos-compiled")
    dot = F.linear(x, weight)
    return _generic(dot, xnorm, wnorm, compiled, magnitude=magnitude, angular=angular,
                    weighted=weighted, alpha=alpha, beta=beta, rho=rho, k=k)

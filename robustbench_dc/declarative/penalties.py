"""Penalty functions ``phi(z; c, a)`` of robust pooling (Gould et al., "Deep Declarative Networks";
Barron, "A General and Adaptive Robust Loss Function", CVPR 2019).

Each penalty gives its value ``phi``, its first and second derivatives ``dphi`` and ``d2phi`` (in
``z``; the solver's Newton steps) and its IRLS weight ``weight = dphi(z) / z`` (the half-quadratic
weight: a minimiser of ``sum_i phi(u - x_i)`` is a fixed point of ``u = sum_i w_i x_i / sum_i w_i``).
The derivatives that implicit differentiation needs (in ``z``, ``c`` and ``a``) are taken by
autograd from ``dphi`` (:mod:`~robustbench_dc.declarative.pooling`); tests check ``d2phi`` against them.

=================  ===================================================  ========  ==========
name               phi(z)                                               convex    parameters
=================  ===================================================  ========  ==========
``quadratic``      z^2 / 2                                              yes       -
``pseudo-huber``   c^2 (sqrt(1 + (z/c)^2) - 1)                          yes       c
``huber``          z^2 / 2 if |z| <= c, else c (|z| - c / 2)            yes       c
``welsch``         1 - exp(-z^2 / (2 c^2))                              no        c
``trunc-quad``     min(z^2, c^2) / 2                                    no        c
``adaptive``       (|a-2|/a) (((z/c)^2 / |a-2| + 1)^(a/2) - 1)          a >= 1    c, a in (0, 3)
=================  ===================================================  ========  ==========
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Penalty", "PENALTIES", "get_penalty"]

_A_EPS = 1e-5  # |a - 2| is kept this far from 0 (the adaptive penalty's formula is 0/0 at a = 2)


def _abs_am2(a: Tensor) -> Tensor:
    d = (a - 2.0).abs()
    return torch.where(d < _A_EPS, torch.full_like(d, _A_EPS), d)


@dataclass(frozen=True)
class Penalty:
    """One robust penalty: ``phi``, ``dphi`` and the IRLS weight, each ``f(z, c, a)`` elementwise
    (``c``, ``a`` broadcast against ``z``; penalties without them ignore them)."""

    name: str
    formula: str
    convex: bool
    uses_c: bool
    uses_a: bool
    phi: Callable[[Tensor, Tensor, Tensor], Tensor]
    dphi: Callable[[Tensor, Tensor, Tensor], Tensor]
    d2phi: Callable[[Tensor, Tensor, Tensor], Tensor]
    weight: Callable[[Tensor, Tensor, Tensor], Tensor]


def _adaptive_phi(z: Tensor, c: Tensor, a: Tensor) -> Tensor:
    b = _abs_am2(a)
    return b / a * (((z / c) ** 2 / b + 1.0) ** (a / 2) - 1.0)


def _adaptive_weight(z: Tensor, c: Tensor, a: Tensor) -> Tensor:
    b = _abs_am2(a)
    return ((z / c) ** 2 / b + 1.0) ** (a / 2 - 1.0) / c ** 2


def _adaptive_d2(z: Tensor, c: Tensor, a: Tensor) -> Tensor:
    b = _abs_am2(a)
    q = (z / c) ** 2
    t = q / b + 1.0
    return t ** (a / 2 - 2.0) / c ** 2 * (t + (a - 2.0) * q / b)


PENALTIES: dict[str, Penalty] = {
    "quadratic": Penalty(
        "quadratic", "z^2 / 2", True, False, False,
        phi=lambda z, c, a: 0.5 * z * z,
        dphi=lambda z, c, a: z,
        d2phi=lambda z, c, a: torch.ones_like(z),
        weight=lambda z, c, a: torch.ones_like(z)),
    "pseudo-huber": Penalty(
        "pseudo-huber", "c^2 (sqrt(1 + (z/c)^2) - 1)", True, True, False,
        phi=lambda z, c, a: c * c * (torch.sqrt(1.0 + (z / c) ** 2) - 1.0),
        dphi=lambda z, c, a: z / torch.sqrt(1.0 + (z / c) ** 2),
        d2phi=lambda z, c, a: (1.0 + (z / c) ** 2) ** -1.5,
        weight=lambda z, c, a: 1.0 / torch.sqrt(1.0 + (z / c) ** 2)),
    "huber": Penalty(
        "huber", "z^2 / 2 if |z| <= c, else c (|z| - c/2)", True, True, False,
        phi=lambda z, c, a: torch.where(z.abs() <= c, 0.5 * z * z, c * (z.abs() - 0.5 * c)),
        dphi=lambda z, c, a: torch.where(z.abs() <= c, z, c * torch.sign(z)),
        d2phi=lambda z, c, a: (z.abs() <= c).to(z.dtype),
        weight=lambda z, c, a: torch.where(z.abs() <= c, torch.ones_like(z), c / z.abs().clamp_min(1e-30))),
    "welsch": Penalty(
        "welsch", "1 - exp(-z^2 / (2 c^2))", False, True, False,
        phi=lambda z, c, a: 1.0 - torch.exp(-z * z / (2 * c * c)),
        dphi=lambda z, c, a: z / (c * c) * torch.exp(-z * z / (2 * c * c)),
        d2phi=lambda z, c, a: (1.0 - z * z / (c * c)) / (c * c) * torch.exp(-z * z / (2 * c * c)),
        weight=lambda z, c, a: torch.exp(-z * z / (2 * c * c)) / (c * c)),
    "trunc-quad": Penalty(
        "trunc-quad", "min(z^2, c^2) / 2", False, True, False,
        phi=lambda z, c, a: 0.5 * torch.minimum(z * z, c * c),
        dphi=lambda z, c, a: torch.where(z.abs() < c, z, torch.zeros_like(z)),
        d2phi=lambda z, c, a: (z.abs() < c).to(z.dtype),
        weight=lambda z, c, a: (z.abs() < c).to(z.dtype)),
    "adaptive": Penalty(
        "adaptive", "(|a-2|/a) (((z/c)^2/|a-2| + 1)^(a/2) - 1), a in (0, 3)", False, True, True,
        phi=_adaptive_phi,
        dphi=lambda z, c, a: z * _adaptive_weight(z, c, a),
        d2phi=_adaptive_d2,
        weight=_adaptive_weight),
}


def get_penalty(name: str) -> Penalty:
    """The penalty called ``name`` (a key of :data:`PENALTIES`)."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise ValueError(f"penalty: unknown {name!r}; known: {', '.join(PENALTIES)}") from None


def softplus_inverse(v: float) -> float:
    """``log(exp(v) - 1)``: the raw value whose softplus is ``v`` (> 0)."""
    return v + math.log(-math.expm1(-v))

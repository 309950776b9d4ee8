"""Euclidean projections onto L1, L2 and L-inf spheres and balls: declarative feature projections
(Gould et al., "Deep Declarative Networks"; seed 003), a layer before the classifier.

``y = argmin_u ||u - x||^2 / 2`` subject to ``||u||_p = r`` (sphere) or ``||u||_p <= r`` (ball), per
example over the feature dimension, with a fixed or learnable radius ``r > 0``.

Forward, exact:

* L2: ``r x / ||x||`` (sphere; ball: only where ``||x|| > r``);
* L-inf: ``clip(x, -r, r)`` (ball); the sphere also moves the largest ``|x_i|`` to ``r`` when every
  coordinate is inside (``||x||_inf < r``);
* L1: the sort-based projection onto the simplex of the magnitudes (Duchi et al., ICML 2008):
  ``u_i = sign(x_i) max(|x_i| - tau, 0)`` with the threshold ``tau`` from the sorted magnitudes
  (ball: only where ``||x||_1 > r``; sphere: ``tau`` may be negative, which spreads the missing
  mass over every coordinate).

Backward by implicit differentiation of the active constraint, in closed form, never through
the sort: L2 sphere ``dy/dx = (r/||x||)(I - y y^T / r^2)``, ``dy/dr = x / ||x||``; L1 (active
set S, k = |S|) ``dy_S/dx_S = I - s s^T / k``, ``dy/dr = s / k`` on S (``s`` the signs); L-inf
``dy/dx = 1`` on the unclipped coordinates, ``dy/dr = sign(x)`` on the clipped ones. A ball whose
constraint is inactive is the identity.

Example::

    >>> proj = FeatureProjection("l2", "sphere", radius=10.0, learnable=True)
    >>> proj(torch.randn(4, 64)).norm(dim=1)
    tensor([10., 10., 10., 10.], grad_fn=...)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from robustbench_dc.declarative.penalties import softplus_inverse

__all__ = ["project", "FeatureProjection", "NORMS", "SETS"]

NORMS = ("l1", "l2", "linf")
SETS = ("sphere", "ball")
_TINY = 1e-12


def _l1_threshold(v: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """For magnitudes ``v`` (N, d) >= 0 and radii ``r`` (N, 1): the threshold ``tau`` (N, 1) with
    ``sum_i max(v_i - tau, 0) = r`` (over the active set) and the active-set mask (N, d)."""
    srt, _ = v.sort(dim=1, descending=True)
    cs = srt.cumsum(1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = srt - (cs - r) / k > 0
    rho = cond.to(v.dtype).cumsum(1).argmax(1, keepdim=True)  # last index where cond holds (cond is a prefix)
    rho = torch.where(cond.any(1, keepdim=True), rho, torch.zeros_like(rho))
    tau = (cs.gather(1, rho) - r) / (rho + 1).to(v.dtype)
    return tau, v > tau


def _forward(x: Tensor, r: Tensor, norm: str, kind: str) -> tuple[Tensor, Tensor]:
    """(y, active): the projection and where the constraint is active, per example (N, 1)."""
    if norm == "l2":
        n = x.norm(dim=1, keepdim=True).clamp_min(_TINY)
        active = torch.ones_like(n, dtype=torch.bool) if kind == "sphere" else n > r
        return torch.where(active, x * (r / n), x), active
    if norm == "linf":
        y = torch.maximum(torch.minimum(x, r), -r)
        if kind == "sphere":
            inside = x.abs().amax(1, keepdim=True) < r
            j = x.abs().argmax(1, keepdim=True)
            sgn = torch.sign(x.gather(1, j))
            sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)
            pushed = y.scatter(1, j, sgn * r)
            y = torch.where(inside, pushed, y)
            return y, torch.ones_like(inside)
        return y, (x.abs() > r).any(1, keepdim=True)
    # l1
    v = x.abs()
    l1 = v.sum(1, keepdim=True)
    if kind == "sphere":
        # below the sphere every coordinate grows by the same amount (tau < 0, all coordinates active)
        d = x.shape[1]
        tau_in = (l1 - r) / d
        tau_out, _ = _l1_threshold(v, r)
        tau = torch.where(l1 >= r, tau_out, tau_in)
        sgn = torch.sign(x)
        sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)
        return sgn * (v - tau).clamp_min(0.0), torch.ones_like(l1, dtype=torch.bool)
    tau, _ = _l1_threshold(v, r)
    active = l1 > r
    return torch.where(active, torch.sign(x) * (v - tau).clamp_min(0.0), x), active


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, r: Tensor, norm: str, kind: str) -> Tensor:
        r_b = r.expand(x.shape[0], 1) if r.dim() <= 1 else r
        y, active = _forward(x, r_b.to(x.dtype), norm, kind)
        ctx.norm, ctx.kind, ctx.r_shape = norm, kind, r.shape
        ctx.save_for_backward(x, y, r_b, active)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, y, r, active = ctx.saved_tensors
        norm = ctx.norm
        if norm == "l2":
            n = x.norm(dim=1, keepdim=True).clamp_min(_TINY)
            u = y / r  # unit vector along x
            gx_act = (r / n) * (g - u * (g * u).sum(1, keepdim=True))
            gr_act = (g * x / n).sum(1, keepdim=True)
        elif norm == "linf":
            clipped = y.abs() >= r  # on the face of the box: y_i = +-r whatever x_i
            gx_act = torch.where(clipped, torch.zeros_like(g), g)
            gr_act = (torch.where(clipped, g * torch.sign(y), torch.zeros_like(g))).sum(1, keepdim=True)
        else:
            s = torch.sign(y)
            on = y != 0
            k = on.to(g.dtype).sum(1, keepdim=True).clamp_min(1.0)
            gs = torch.where(on, g, torch.zeros_like(g))
            gx_act = gs - torch.where(on, s, torch.zeros_like(s)) * (gs * s).sum(1, keepdim=True) / k
            gr_act = (gs * s).sum(1, keepdim=True) / k
        gx = torch.where(active, gx_act, g) if ctx.needs_input_grad[0] else None
        gr = None
        if ctx.needs_input_grad[1]:
            gr = torch.where(active, gr_act, torch.zeros_like(gr_act)).sum_to_size(ctx.r_shape)
        return gx, gr, None, None


def project(x: Tensor, radius: Tensor | float, norm: str = "l2", kind: str = "sphere") -> Tensor:
    """Project every row of ``x`` (N, d) onto the ``norm`` ``kind`` (sphere or ball) of ``radius``
    (a float, a scalar tensor or (N, 1)); differentiable in ``x`` and ``radius``."""
    if norm not in NORMS or kind not in SETS:
        raise ValueError(f"projection: norm in {NORMS} and kind in {SETS}, got {norm!r}, {kind!r}")
    r = radius if isinstance(radius, Tensor) else torch.tensor(float(radius), dtype=x.dtype, device=x.device)
    return _Project.apply(x, r.to(x.dtype).reshape(-1, 1) if r.dim() else r.reshape(1), norm, kind)


class FeatureProjection(nn.Module):
    """Projection of (N, d) features onto an L1/L2/L-inf sphere or ball, before the classifier.

    Args:
        norm (str): ``l1``, ``l2`` or ``linf``. kind (str): ``sphere`` or ``ball``.
        radius (float): the radius (> 0). learnable (bool): learn it (``softplus(raw) + r_min``). Default False.
        r_min (float): the smallest learnable radius. Default 1e-3.
    """

    r_fixed: Tensor

    def __init__(self, norm: str = "l2", kind: str = "sphere", radius: float = 1.0, *, learnable: bool = False,
                 r_min: float = 1e-3) -> None:
        super().__init__()
        if norm not in NORMS or kind not in SETS:
            raise ValueError(f"projection: norm in {NORMS} and kind in {SETS}, got {norm!r}, {kind!r}")
        if not radius > (r_min if learnable else 0):
            raise ValueError(f"radius: must be > {r_min if learnable else 0}, got {radius}")
        self.norm, self.kind, self.learnable, self.r_min = norm, kind, learnable, r_min
        if learnable:
            self.r_raw = nn.Parameter(torch.tensor(softplus_inverse(radius - r_min)))
        else:
            self.register_buffer("r_fixed", torch.tensor(float(radius)))

    @property
    def radius(self) -> Tensor:
        """The current radius (> 0)."""
        return nn.functional.softplus(self.r_raw) + self.r_min if self.learnable else self.r_fixed

    def forward(self, x: Tensor) -> Tensor:
        return project(x.flatten(1), self.radius, self.norm, self.kind)

    def extra_repr(self) -> str:
        return f"norm={self.norm}, kind={self.kind}, learnable={self.learnable}"

"""Shared helpers: norm names, evaluation mode, sampling in and projecting onto Lp balls, margins."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from robustbench_dc.attacks.utils import eval_mode  # noqa: F401  (re-exported: one implementation)

__all__ = ["NORMS", "check_norm", "dual_name", "dual_norm", "eval_mode", "model_device_dtype", "sample_ball",
           "project_ball", "clip_domain", "margin_from_logits", "margin_and_grad", "jacobian", "chunks",
           "example_generator"]

NORMS = ("l2", "linf")
_ALIASES = {"l2": "l2", "2": "l2", "linf": "linf", "inf": "linf", "l_inf": "linf", "infinity": "linf"}

Clip = tuple[float, float] | None


def check_norm(norm: str | float) -> str:
    """Canonical perturbation norm name: ``"l2"`` or ``"linf"`` (accepts ``2``, ``"inf"``, ``float("inf")``)."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        norm = "inf" if math.isinf(norm) else str(int(norm))
    key = str(norm).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"norm: must be one of {NORMS}, got {norm!r}")
    return _ALIASES[key]


def dual_name(norm: str) -> str:
    """The dual norm of the gradient: L2 -> L2, Linf -> L1 (``sup_{||d||_p<=1} <g, d> = ||g||_q``)."""
    return "l2" if check_norm(norm) == "l2" else "l1"


def dual_norm(grad: Tensor, norm: str) -> Tensor:
    """Per-example dual norm of ``grad`` (N, ...): ``||g||_2`` for L2 perturbations, ``||g||_1`` for Linf."""
    flat = grad.flatten(1)
    return flat.norm(dim=1) if check_norm(norm) == "l2" else flat.abs().sum(1)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter or buffer (CPU float32 if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def example_generator(seed: int, index: int = 0) -> torch.Generator:
    """A local CPU generator for ``(seed, index)``: no global seeding side effect."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


def sample_ball(center: Tensor, n: int, radius: float, norm: str, gen: torch.Generator) -> Tensor:
    """``n`` points drawn uniformly from the Lp ball of ``radius`` around each example of ``center``.

    ``center`` is (N, ...); the result is (N, n, ...). Linf: uniform in the cube. L2: a Gaussian
    direction scaled by ``radius * U^(1/d)`` (uniform in the ball). Sampling happens on the CPU with
    ``gen`` and the result is moved to ``center``'s device and dtype.
    """
    norm = check_norm(norm)
    shape = (center.shape[0], n, *center.shape[1:])
    d = int(math.prod(center.shape[1:]))
    if norm == "linf":
        delta = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * radius
    else:
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        z = z / z.flatten(2).norm(dim=2).clamp_min(1e-30).view(*shape[:2], *([1] * (len(shape) - 2)))
        u = torch.rand(shape[:2], generator=gen, dtype=torch.float64)
        r = radius * torch.exp(torch.log(u.clamp_min(1e-300)) / d)
        delta = z * r.view(*shape[:2], *([1] * (len(shape) - 2)))
    return center.unsqueeze(1) + delta.to(device=center.device, dtype=center.dtype)


def project_ball(x: Tensor, center: Tensor, radius: float, norm: str) -> Tensor:
    """Project ``x`` onto the Lp ball of ``radius`` around ``center`` (same shape, first dim = examples)."""
    delta = x - center
    if check_norm(norm) == "linf":
        return center + delta.clamp(-radius, radius)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-30)
    factor = (radius / n).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    return center + delta * factor


def clip_domain(x: Tensor, clip: Clip) -> Tensor:
    """Clamp to the input domain (``None``: no clamping). Clamping after projecting onto a ball around
    a centre inside the domain keeps the point in the ball (every coordinate moves towards the centre)."""
    return x if clip is None else x.clamp(clip[0], clip[1])


def margin_from_logits(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """``m = f_y - max_{j != y} f_j`` per example (or ``f_y - f_target`` when ``target`` is given)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    if target is not None:
        return true - logits.gather(1, target.view(-1, 1)).squeeze(1)
    masked = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return true - masked.max(1).values


def margin_and_grad(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Logit margin ``m(x) = f_y(x) - max_{j != y} f_j(x)`` (or ``f_y - f_target``) and its input gradient.

    Examples are independent (evaluation mode), so the gradient of the summed margin is the
    per-example gradient (almost everywhere: the max picks the runner-up class at ``x``).
    """
    xg = x.detach().requires_grad_(True)
    margin = margin_from_logits(model(xg), y, target)
    (grad,) = torch.autograd.grad(margin.sum(), xg)
    return margin.detach(), grad


def jacobian(model: nn.Module, x: Tensor, rows: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Logits (N, K) and the per-example Jacobian (N, len(rows), D) by one reverse pass per logit row.

    Works for any model with a first derivative (no forward-mode or double backward needed).
    """
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    rows = list(range(logits.shape[1])) if rows is None else list(rows)
    grads = []
    for i, k in enumerate(rows):
        (g,) = torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=i < len(rows) - 1)
        grads.append(g.flatten(1))
    return logits.detach(), torch.stack(grads, 1)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))

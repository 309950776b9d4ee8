"""Local empirical Lipschitz estimates: input-gradient norms at the data and over an eps-ball.

For a differentiable scalar function ``m`` and perturbations measured in an Lp norm, the local
Lipschitz constant on a set S is ``sup_{x in S} ||grad m(x)||_q`` with ``1/p + 1/q = 1`` (dual
norm: L2 -> L2, Linf -> L1). Any gradient norm evaluated at a point of S is therefore a LOWER
bound of the true local constant; maximising over more points (the eps-ball search) tightens it.
These are *estimates*, never certificates.

Targets:

- ``"margin"``: ``m(x) = f_y(x) - max_{j != y} f_j(x)`` (true-class logit minus the largest other);
- ``"logits"``: the whole logit map through its Jacobian ``J``: in L2 the top singular value
  ``sigma_max(J) = ||J||_{2->2}``; in Linf the induced norm ``||J||_{inf->inf} = max_k ||grad f_k||_1``.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.lipschitz._utils import (
    Clip,
    check_norm,
    chunks,
    clip_domain,
    dual_name,
    dual_norm,
    eval_mode,
    example_generator,
    jacobian,
    margin_and_grad,
    margin_from_logits,
    model_device_dtype,
    project_ball,
    sample_ball,
)
from robustbench_dc.operators import DecoupledLayer

__all__ = ["Estimate", "gradient_norm_estimate", "jacobian_norms", "second_order_status"]

log = logging.getLogger(__name__)

TARGETS = ("margin", "logits")
JACOBIAN_METHODS = ("auto", "explicit", "power")
SEARCH_METHODS = ("auto", "gradient", "sampling")
EXPLICIT_MAX_CLASSES = 64


@dataclass
class Estimate:
    """A local empirical Lipschitz estimate: a LOWER bound of the true local constant.

    Attributes:
        target: ``"margin"`` or ``"logits"``.
        norm: perturbation geometry, ``"l2"`` or ``"linf"``.
        quantity: what was measured (e.g. ``"||grad m||_1"``).
        ball_eps: radius of the searched ball (``None``: gradients at the data points only).
        method: how the values were obtained.
        values: the per-example estimate (maximum over the points visited for that example).
        evaluations: number of gradient-norm evaluations.
        seed: the seed of the local generator.
        note: fallbacks and caveats, if any.
    """

    target: str
    norm: str
    quantity: str
    ball_eps: float | None
    method: str
    values: list[float]
    evaluations: int
    seed: int
    note: str | None = None
    kind: str = "estimate (lower bound)"

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def where(self) -> str:
        return "data points" if self.ball_eps is None else f"{self.norm} ball eps={self.ball_eps:g}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(max=self.max, mean=self.mean, median=self.median, n=len(self.values))
        return d


def _quantity(target: str, norm: str) -> str:
    if target == "margin":
        return f"||grad m||_{dual_name(norm)[1:]}"
    return "sigma_max(J)" if norm == "l2" else "||J||_inf->inf"


# ----------------------------------------------------------------------------- Jacobian norms


def _top_sv_power(model: nn.Module, x: Tensor, iters: int, tol: float, gen: torch.Generator) -> Tensor:
    """``sigma_max`` of each example's Jacobian by power iteration on ``J^T J`` with
    ``torch.func.jvp`` (``J v``) and ``torch.func.vjp`` (``J^T u``); converges from below."""
    x = x.detach()
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
    shape = (-1, *([1] * (x.dim() - 1)))
    v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(shape)
    vjp_fn = torch.func.vjp(model, x)[1]
    sigma_prev: Tensor | None = None
    sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(max(1, iters)):
        u = torch.func.jvp(model, (x,), (v,))[1]
        sigma = u.flatten(1).norm(dim=1)
        (w,) = vjp_fn(u)
        v = w / w.flatten(1).norm(dim=1).clamp_min(1e-30).view(shape)
        if sigma_prev is not None and bool(((sigma - sigma_prev).abs() <= tol * sigma.abs()).all()):
            break
        sigma_prev = sigma
    return sigma.detach()


def jacobian_norms(model: nn.Module, x: Tensor, norm: str = "l2", method: str = "auto", iters: int = 100,
                   tol: float = 1e-7, seed: int = 0) -> Tensor:
    """Per-example norm of the logit Jacobian ``J = d f / d x`` at ``x`` (N, ...).

    L2: ``sigma_max(J)``; Linf: ``||J||_{inf->inf} = max_k ||grad f_k||_1`` (max absolute row sum).

    ``method``: ``"explicit"`` builds ``J`` with one reverse pass per logit (any model: only a first
    derivative is needed) and takes its exact spectral norm; ``"power"`` runs power iteration with
    ``torch.func.jvp``/``vjp`` (L2 only; for many classes); ``"auto"`` uses ``"explicit"`` up to 64
    classes. The model must be in evaluation mode (examples independent).
    """
    norm = check_norm(norm)
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"method: must be one of {JACOBIAN_METHODS}, got {method!r}")
    if method in ("auto", "power") and norm == "l2":
        if method == "power" or _num_outputs(model, x) > EXPLICIT_MAX_CLASSES:
            try:
                return _top_sv_power(model, x, iters, tol, example_generator(seed))
            except RuntimeError as exc:  # e.g. an autograd.Function without functorch support
                log.info("jacobian_norms: torch.func power iteration failed (%s); using the explicit Jacobian",
                         str(exc).split("\n")[0])
    _, jac = jacobian(model, x)
    if norm == "l2":
        return torch.linalg.matrix_norm(jac.double(), ord=2).to(x.dtype)
    return jac.abs().sum(2).max(1).values


def _num_outputs(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


# ----------------------------------------------------------------------------- second order


def _second_derivative_exact(fn: Callable[[Tensor], Tensor], points: list[float]) -> bool:
    """Does double backward through ``fn`` give its true second derivative (vs finite differences)?"""
    def grad(out: Tensor, t: Tensor, create_graph: bool = False) -> Tensor:
        if not out.requires_grad:  # constant in t
            return torch.zeros_like(t)
        (g,) = torch.autograd.grad(out.sum(), t, create_graph=create_graph, allow_unused=True)
        return torch.zeros_like(t) if g is None else g

    c = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    g2 = grad(grad(fn(c), c, create_graph=True), c)

    def first(t: Tensor) -> Tensor:
        t = t.detach().requires_grad_(True)
        return grad(fn(t), t)

    h = 1e-5
    fd = (first(c.detach() + h) - first(c.detach() - h)) / (2 * h)
    return bool(torch.allclose(g2, fd, rtol=1e-3, atol=1e-4))


def second_order_status(model: nn.Module) -> tuple[bool, str | None]:
    """Whether double backward through ``model``'s decoupled layers is exact.

    A user's magnitude or angular function may be once-differentiable (a custom autograd
    function), in which case double backward silently drops its second derivative. Each
    decoupled layer's angular and magnitude functions are probed against finite differences.
    Returns ``(ok, reason)``.
    """
    for name, layer in model.named_modules():
        if not isinstance(layer, DecoupledLayer):
            continue
        rho = float(getattr(layer, "rho", 1.0))

        def angular(c: Tensor, layer: DecoupledLayer = layer) -> Tensor:
            return layer.angular(c, k=layer.k)

        def magnitude(n: Tensor, layer: DecoupledLayer = layer, rho: float = rho) -> Tensor:
            return layer.magnitude(n, alpha=layer.alpha, beta=layer.beta, rho=rho)

        probes: dict[str, tuple[Callable[[Tensor], Tensor], list[float]]] = {
            f"angular {layer.angular.name!r}": (angular, [-0.55, 0.2, 0.65]),
            f"magnitude {layer.magnitude.name!r}": (magnitude, [0.37 * rho, 1.13 * rho, 2.71 * rho]),
        }
        for what, (fn, points) in probes.items():
            try:
                ok = _second_derivative_exact(fn, points)
            except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
                ok = False
                log.debug("second-order probe of %s in %s failed: %s", what, name, exc)
            if not ok:
                return False, (f"double backward through the {what} function of decoupled layer {name!r} is not "
                               "exact (once-differentiable)")
    return True, None


# ----------------------------------------------------------------------------- estimates


def _values(model: nn.Module, x: Tensor, y: Tensor, norm: str, target: str, jacobian_method: str, iters: int,
            seed: int) -> Tensor:
    if target == "margin":
        _, grad = margin_and_grad(model, x, y)
        return dual_norm(grad, norm).detach()
    return jacobian_norms(model, x, norm, jacobian_method, iters=iters, seed=seed)


def _phi_and_grad(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> tuple[Tensor, Tensor]:
    """``phi(x) = ||grad m(x)||_q`` and ``grad phi(x)`` (double backward)."""
    xg = x.detach().requires_grad_(True)
    margin = margin_from_logits(model(xg), y)
    (g,) = torch.autograd.grad(margin.sum(), xg, create_graph=True)
    phi = dual_norm(g, norm)
    if not phi.requires_grad:  # piecewise-linear everywhere along this graph: zero curvature
        return phi.detach(), torch.zeros_like(xg)
    (h,) = torch.autograd.grad(phi.sum(), xg)
    return phi.detach(), h


def gradient_norm_estimate(model: nn.Module, x: Tensor, y: Tensor, norm: str = "l2", target: str = "margin",
                           ball_eps: float | None = None, steps: int = 10, samples: int = 8,
                           step_size: float | None = None, method: str = "auto", jacobian_method: str = "auto",
                           iters: int = 100, batch_size: int = 128, clip: Clip = (0.0, 1.0), seed: int = 0,
                           progress: bool = False) -> Estimate:
    """Largest input-gradient norm over the data (and optionally an eps-ball around each point).

    Args:
        model: classifier returning logits; evaluated in evaluation mode (flags restored after).
        x, y: inputs (N, ...) and labels (N,).
        norm: perturbation geometry ``"l2"`` or ``"linf"``; the gradient is measured in the dual
            norm (L2 -> ``||g||_2``, Linf -> ``||g||_1``).
        target: ``"margin"`` (``f_y - max_{j != y} f_j``) or ``"logits"`` (Jacobian norm, see
            :func:`jacobian_norms`).
        ball_eps: when given, each example's value is maximised over ``{x' : ||x' - x||_p <= eps}``
            (intersected with ``clip``) by a local search of ``steps`` rounds: each round draws
            ``samples`` points uniformly in a ball around the current best point (radius shrinking
            from eps) and, for the margin with ``method`` ``"auto"``/``"gradient"``, takes one
            projected gradient-ascent step on the gradient norm (double backward). Decoupled layers
            with a once-differentiable angular function (``linear``, ``sigmoid``) and models whose
            double backward fails fall back to the derivative-free search (logged). Piecewise-linear
            (ReLU) networks have zero curvature almost everywhere, so the sampling does the work there.
        step_size: ascent step (default ``2.5 * eps / steps``).
        method: ``"auto"``, ``"gradient"`` (require double backward) or ``"sampling"``.
        jacobian_method: see :func:`jacobian_norms` (``target="logits"``).
        batch_size: points per forward/backward pass.
        clip: input domain (``None``: unbounded).
        seed: seed of the local generator (no global RNG is touched).
        progress: show a progress bar over the search rounds.

    Returns:
        an :class:`Estimate` (a lower bound of the local Lipschitz constant, per example).
    """
    norm = check_norm(norm)
    if target not in TARGETS:
        raise ValueError(f"target: must be one of {TARGETS}, got {target!r}")
    if method not in SEARCH_METHODS:
        raise ValueError(f"method: must be one of {SEARCH_METHODS}, got {method!r}")
    if ball_eps is not None and ball_eps < 0:
        raise InvalidParameterError(f"ball_eps: must be >= 0, got {ball_eps}")
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    y = y.to(device=device, dtype=torch.long)
    quantity = _quantity(target, norm)

    def values(xs: Tensor, ys: Tensor) -> Tensor:
        out = [_values(model, xs[s], ys[s], norm, target, jacobian_method, iters, seed)
               for s in chunks(xs.shape[0], batch_size)]
        return torch.cat(out) if out else torch.zeros(0, device=device, dtype=dtype)

    with eval_mode(model):
        base = values(x, y)
        if ball_eps is None or ball_eps == 0 or steps <= 0:
            how = f"logit Jacobian (method={jacobian_method})" if target == "logits" else "input gradient (autograd)"
            return Estimate(target, norm, quantity, ball_eps, f"{how} at the data points", base.tolist(),
                            int(x.shape[0]), seed)
        use_grad, note = False, None
        if target == "margin" and method in ("auto", "gradient"):
            use_grad, note = second_order_status(model)
            if not use_grad:
                if method == "gradient":
                    raise ValueError(f"method='gradient': {note}")
                note = f"{note}; used the derivative-free sampled search"
                log.info("gradient_norm_estimate: %s", note)
        elif target == "logits" and method == "gradient":
            raise ValueError("method='gradient' is only available for target='margin'")
        best_val, evaluations, note, use_grad = _ball_search(
            model, values, x, y, base, norm, float(ball_eps), steps, samples, step_size, use_grad, batch_size,
            clip, example_generator(seed, 1), progress, note)
    what = "gradient ascent on the gradient norm + random sampling" if use_grad else "random sampling"
    method_str = f"ball search: {what} ({steps} rounds x {samples} samples)"
    return Estimate(target, norm, quantity, float(ball_eps), method_str, torch.maximum(best_val, base).tolist(),
                    int(x.shape[0]) + evaluations, seed, note)


def _ball_search(model: nn.Module, values: Callable[[Tensor, Tensor], Tensor], x0: Tensor, y: Tensor,
                 start: Tensor, norm: str, eps: float, steps: int, samples: int, step_size: float | None,
                 use_grad: bool, batch_size: int,
                 clip: Clip, gen: torch.Generator, progress: bool, note: str | None
                 ) -> tuple[Tensor, int, str | None, bool]:
    """Best value per example found in ``B_p(x0, eps)``: (best values, evaluations, note, gradient used)."""
    n = x0.shape[0]
    step = step_size if step_size is not None else 2.5 * eps / max(1, steps)
    best = x0.clone()
    best_val = start.clone()
    evaluations = 0
    bshape = (-1, *([1] * (x0.dim() - 1)))
    for r in tqdm(range(steps), desc="ball search", disable=not progress, leave=False):
        cands = []
        if use_grad:
            try:
                grads = [_phi_and_grad(model, best[s], y[s], norm)[1] for s in chunks(n, batch_size)]
                h = torch.cat(grads)
                evaluations += n
                if norm == "linf":
                    direction = h.sign()
                else:
                    direction = h / h.flatten(1).norm(dim=1).clamp_min(1e-30).view(bshape)
                moved = clip_domain(project_ball(best + step * direction, x0, eps, norm), clip)
                cands.append(moved.unsqueeze(1))
            except RuntimeError as exc:
                use_grad = False
                msg = f"double backward failed ({str(exc).splitlines()[0]}); used the derivative-free sampled search"
                log.info("gradient_norm_estimate: %s", msg)
                note = msg if note is None else f"{note}; {msg}"
        radius = eps * (1.0 - r / steps)
        if samples > 0:
            pts = sample_ball(best, samples, radius, norm, gen)
            centre = x0.unsqueeze(1).expand_as(pts).flatten(0, 1)
            pts = clip_domain(project_ball(pts.flatten(0, 1), centre, eps, norm), clip)
            cands.append(pts.view(n, samples, *x0.shape[1:]))
        if not cands:
            break
        cand = torch.cat(cands, 1)
        k = cand.shape[1]
        vals = values(cand.flatten(0, 1), y.repeat_interleave(k)).view(n, k)
        evaluations += n * k
        top, idx = vals.max(1)
        better = top > best_val
        if bool(better.any()):
            chosen = cand[torch.arange(n, device=cand.device), idx]
            best = torch.where(better.view(bshape), chosen, best)
            best_val = torch.where(better, top, best_val)
    return best_val, evaluations, note, use_grad

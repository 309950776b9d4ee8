"""One call for a model: empirical estimates (lower bounds), CLEVER, per-layer norms and the product bound."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from robustbench_dc.lipschitz._utils import Clip, check_norm, eval_mode, model_device_dtype
from robustbench_dc.lipschitz.chain import BoundResult, affine_product_bound
from robustbench_dc.lipschitz.clever import DEFAULT_RADIUS, CleverResult, clever_scores, summarize
from robustbench_dc.lipschitz.estimates import Estimate, gradient_norm_estimate
from robustbench_dc.lipschitz.opnorm import LayerNorm, layer_operator_norms
from robustbench_dc.operators import DecoupledLayer

__all__ = ["CleverSummary", "LipschitzReport", "lipschitz_report", "dataset_radii"]

log = logging.getLogger(__name__)


@dataclass
class CleverSummary:
    """CLEVER scores of several examples for one norm (see :func:`~.clever.clever_score`)."""

    norm: str
    radius: float
    n_batches: int
    batch_size: int
    target_class: int | None
    results: list[CleverResult]

    @property
    def summary(self) -> dict:
        return summarize(self.results)

    def to_dict(self) -> dict:
        return {"norm": self.norm, "radius": self.radius, "n_batches": self.n_batches, "batch_size": self.batch_size,
                "target_class": self.target_class, "summary": self.summary,
                "results": [r.to_dict() for r in self.results]}


@dataclass
class LipschitzReport:
    """Everything measured for one model.

    ``estimates`` are empirical LOWER bounds of local Lipschitz constants; ``clever`` holds CLEVER
    scores (extrapolated estimates); ``layers`` and ``bound`` are exact per-layer norms and their
    product (an UPPER bound, or ``computed=False`` with the reason). ``checks`` lists consistency
    problems (an estimate above a computed bound would reveal a bug or an unconverged power iteration).
    """

    model: dict
    data: dict
    seed: int
    estimates: list[Estimate]
    clever: list[CleverSummary]
    layers: list[LayerNorm]
    bound: BoundResult
    checks: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "seed": self.seed,
                "estimates": [e.to_dict() for e in self.estimates],
                "clever": [c.to_dict() for c in self.clever],
                "layers": [asdict(l) for l in self.layers], "bound": self.bound.to_dict(),
                "checks": list(self.checks), "timings": dict(self.timings)}


def _per_norm(value: Mapping[str, float | None] | float | None, norm: str) -> float | None:
    if isinstance(value, Mapping):
        return value.get(norm)
    return value


def _model_info(model: nn.Module) -> dict:
    info = dict(getattr(model, "info", {}) or {})
    decoupled = [n for n, m in model.named_modules() if isinstance(m, DecoupledLayer)]
    return {"class": type(model).__name__, "parameters": int(sum(p.numel() for p in model.parameters())),
            "decoupled_layers": len(decoupled), **({"info": info} if info else {})}


def dataset_radii(dataset: str, ball_eps: Mapping[str, float | None] | None = None,
                  clever_radius: Mapping[str, float | None] | None = None
                  ) -> tuple[dict[str, float | None], dict[str, float]]:
    """The ball-search radii and the CLEVER radii per norm (``"l2"``, ``"linf"``) for ``dataset``:
    each value given, else the dataset's standard budget of that norm (CLEVER without one:
    :data:`~robustbench_dc.lipschitz.clever.DEFAULT_RADIUS`). A ball radius of 0 or None
    disables that ball search."""
    from robustbench_dc.data import dataset_info

    info = dataset_info(dataset)
    budgets = {"l2": info.eps_l2, "linf": info.eps_linf}
    ball_eps, clever_radius = dict(ball_eps or {}), dict(clever_radius or {})
    ball = {k: budgets[k] if ball_eps.get(k) is None else ball_eps[k] for k in budgets}
    radius = {k: clever_radius[k] if clever_radius.get(k) is not None else budgets[k] if budgets[k]
              else DEFAULT_RADIUS[k] for k in budgets}
    return ball, radius  # type: ignore[return-value]


def lipschitz_report(model: nn.Module, x: Tensor, y: Tensor, norms: Sequence[str] = ("l2", "linf"),
                     ball_eps: Mapping[str, float | None] | float | None = None, ball_steps: int = 10,
                     ball_samples: int = 8, clever: bool = True, clever_n: int | None = None,
                     clever_radius: Mapping[str, float | None] | float | None = None, n_batches: int = 50,
                     batch_size: int = 128, target_class: int | None = None, iters: int = 200, tol: float = 1e-7,
                     norm_method: str = "auto", clip: Clip = (0.0, 1.0), seed: int = 0,
                     progress: bool = True) -> LipschitzReport:
    """Estimates, CLEVER scores, per-layer norms and the product bound of ``model`` on ``(x, y)``.

    Args:
        model: classifier returning logits (analysed in evaluation mode; flags restored after).
        x, y: evaluation inputs (N, ...) in the model's input domain and labels (N,).
        norms: perturbation geometries among ``"l2"``, ``"linf"``.
        ball_eps: radius of the ball search per norm (a float for all norms, or ``{"l2": ..}``);
            ``None``: gradients at the data points only.
        ball_steps, ball_samples: ball-search budget (see :func:`gradient_norm_estimate`).
        clever: compute CLEVER scores, on the first ``clever_n`` examples (default: all).
        clever_radius: CLEVER ball radius per norm (default 5.0 for L2, 0.1 for Linf).
        n_batches, batch_size: CLEVER's ``Nb`` and ``Ns`` (CPU defaults 50 x 128; the paper: 500 x 1024).
        target_class: targeted CLEVER for this class (``None``: untargeted).
        iters, tol, norm_method: per-layer operator-norm budget (see :func:`layer_operator_norms`).
        clip: input domain for the ball and CLEVER samples.
        seed: seed of every local generator (the report is deterministic given the seed).
        progress: progress bars (``False`` silences them).
    """
    norms = [check_norm(n) for n in norms]
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    y = y.to(device=device, dtype=torch.long)
    timings: dict[str, float] = {}
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        accuracy = float((logits.argmax(1) == y).double().mean()) if len(y) else float("nan")
        estimates: list[Estimate] = []
        t0 = time.perf_counter()
        for norm in norms:
            for target in ("margin", "logits"):
                estimates.append(gradient_norm_estimate(model, x, y, norm, target, seed=seed, iters=iters,
                                                        batch_size=batch_size))
            eps = _per_norm(ball_eps, norm)
            if eps:
                estimates.append(gradient_norm_estimate(model, x, y, norm, "margin", ball_eps=eps, steps=ball_steps,
                                                        samples=ball_samples, batch_size=batch_size, clip=clip,
                                                        seed=seed, progress=progress))
        timings["estimates_s"] = time.perf_counter() - t0
        summaries: list[CleverSummary] = []
        if clever:
            t0 = time.perf_counter()
            m = x.shape[0] if clever_n is None else min(int(clever_n), x.shape[0])
            for norm in norms:
                radius = _per_norm(clever_radius, norm)
                results = clever_scores(model, x[:m], y[:m], target_class, norm, radius, n_batches, batch_size,
                                        clip=clip, seed=seed, progress=progress)
                r = results[0].radius if results else (radius or 0.0)
                summaries.append(CleverSummary(norm, r, n_batches, batch_size, target_class, results))
            timings["clever_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        shape = tuple(x.shape[1:])
        layers = layer_operator_norms(model, shape, iters=iters, tol=tol, method=norm_method, seed=seed,
                                      progress=progress)
        bound = affine_product_bound(model, shape, iters=iters, tol=tol, method=norm_method, seed=seed,
                                     layers=layers)
        timings["layers_s"] = time.perf_counter() - t0
    checks = _consistency(estimates, bound)
    data = {"n": int(x.shape[0]), "input_shape": list(shape), "accuracy": accuracy}
    return LipschitzReport(_model_info(model), data, seed, estimates, summaries, layers, bound, checks, timings)


def _consistency(estimates: Sequence[Estimate], bound: BoundResult) -> list[str]:
    """Estimates (lower bounds) must not exceed a computed upper bound."""
    if not bound.computed:
        return []
    limits = {("margin", "l2"): bound.margin_l2, ("margin", "linf"): bound.margin_linf,
              ("logits", "l2"): bound.l2, ("logits", "linf"): bound.linf}
    out = []
    for e in estimates:
        limit = limits.get((e.target, e.norm))
        if limit is not None and e.max > limit * (1 + 1e-5) + 1e-12:
            msg = (f"estimate {e.quantity} ({e.where}) = {e.max:.6g} exceeds the product bound {limit:.6g}: "
                   "unconverged power iteration or a bug")
            log.warning(msg)
            out.append(msg)
    return out

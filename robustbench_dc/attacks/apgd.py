"""Native APGD: Auto-PGD with the cross-entropy or DLR loss, untargeted or targeted (APGD-T).

Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse
Parameter-free Attacks", ICML 2020, Algorithm 1 (the reference code is fra31/auto-attack,
``autopgd_base.py``). Per example and per restart:

* start: a random point of the eps-ball (L-inf: ``x + eps * t / ||t||_inf`` with ``t`` uniform
  in [-1, 1]^d; L2: ``x + eps * t / ||t||_2`` with ``t`` Gaussian), clipped to [0, 1], drawn from
  one generator seeded with ``seed`` for the examples still to attack only, in batch order, as
  the reference code draws them: with the same seed, the same starts as Croce & Hein's;
* step size ``eta = 2 eps``; each iteration takes a projected (sign / normalised) gradient
  step ``z``, then the momentum step ``x <- P(x + 0.75 (z - x) + 0.25 (x - x_prev))``
  (no momentum in the first iteration);
* checkpoints after ``p_1 = 0.22 N`` iterations, then every
  ``max(p_j - p_{j-1} - 0.03 N, 0.06 N)`` iterations: where the objective increased in fewer
  than ``rho = 75%`` of the iterations since the last checkpoint, or where the step size was not
  reduced at the last checkpoint and the best objective did not improve since, the step size is
  halved and the iterate and gradient return to the best point found so far;
* the best-objective point and the first misclassified point are tracked.

APGD-T (``targeted=True``, DLR-targeted loss) runs once for each of the ``n_target_classes``
classes with the highest clean logits after the top one (the 2nd, 3rd, ... highest), each time
on the examples still correctly classified: success is a *misclassification*, as in AutoAttack.
``n_target_classes`` defaults to ``min(9, K - 1)`` for a K-class model (AutoAttack's 9 on
CIFAR-10), never a hard-coded 10. The DLR loss needs >= 3 classes (>= 4 targeted).

``target_order="malt"`` ranks the target classes instead by MALT's targeting (Melamed, Yehudai &
Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024): per example, the distance to the
boundary of class ``t`` of the model linearised at the clean input,
``(z_y - z_t) / ||grad z_y - grad z_t||_*`` (``||.||_*`` the dual norm: L1 for L-inf, L2 for L2),
smallest first, among the ``malt_candidates`` classes with the highest clean logits (MALT's
restriction, for many-class models). It costs one forward pass and one backward pass per
candidate class, on the clean batch, before the first target runs (:func:`malt_ranking`).

``eot_iter`` averages the gradient over that many forward-backward passes (Expectation over
Transformation, AutoAttack's ``rand`` version for randomized models).

Budget: one gradient evaluation at the start point plus one per iteration, so a run of
``steps`` iterations costs ``eot_iter * (steps + 1)`` forward-backward passes per restart
(per target class for APGD-T), on the examples still robust.

Like the suite's projected-gradient loop, on the CPU an example leaves the batch as soon as
it is misclassified (every computation in APGD is per example, so the others' trajectories and
the result are unchanged, up to the rounding of a matrix product over a smaller batch); on a GPU
the batch stays whole and the loop has no host-device synchronisation (step-size halving uses
``torch.where``). The model is in eval mode with frozen parameters during the attack; every flag
is restored afterwards.

Example::

    >>> x_adv = apgd(model, x, y, eps=8 / 255)                                  # APGD-CE
    >>> x_adv = apgd(model, x, y, eps=8 / 255, loss="dlr", targeted=True)       # APGD-T
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustbench_dc.attacks.losses import attack_loss
from robustbench_dc.attacks.registry import register_attack
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec
from robustbench_dc.attacks.steps import BestTracker, attack_mode, default_compact, project_onto_ball, step_direction
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.attacks.utils import per_example

__all__ = ["apgd", "apgd_schedule", "default_n_target_classes", "check_dlr_classes", "malt_ranking", "ApgdStats"]

_TINY = 1e-12


def apgd_schedule(steps: int) -> list[int]:
    """Iterations (0-based) after which APGD checks its step size, for ``steps`` iterations.

    The first check comes after ``max(int(0.22 N), 1)`` iterations; the interval then shrinks by
    ``max(int(0.03 N), 1)`` per check down to ``max(int(0.06 N), 1)`` (the reference code's
    integer version of ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``).

    Example::

        >>> apgd_schedule(100)[:4]
        [21, 40, 56, 69]
    """
    k = max(int(0.22 * steps), 1)
    k_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    out, i = [], k - 1
    while i < steps:
        out.append(i)
        k = max(k - decr, k_min)
        i += k
    return out


def default_n_target_classes(n_classes: int) -> int:
    """AutoAttack's 9 target classes, or every other class when the model has fewer than 10."""
    return max(min(9, n_classes - 1), 0)


def check_dlr_classes(n_classes: int, targeted: bool, what: str = "APGD") -> None:
    """Raise :class:`AttackConfigError` (a ``ValueError``) when the DLR loss is undefined for ``n_classes`` classes."""
    need = 4 if targeted else 3
    if n_classes < need:
        kind = "targeted DLR (APGD-T)" if targeted else "DLR"
        raise AttackConfigError(
            f"loss: {what} with the {kind} loss needs at least {need} classes (it divides by the gap "
            f"between the largest and the {'3rd/4th' if targeted else '3rd'} largest logits), the model has "
            f"{n_classes}; use loss 'ce' (untargeted)"
        )


@dataclass
class ApgdStats:
    """What a native APGD run did: gradient evaluations (forward-backward passes of single examples)."""

    gradient_evaluations: int = 0


def _start(x: torch.Tensor, eps: torch.Tensor, threat_model: str, generator: torch.Generator | None) -> torch.Tensor:
    if threat_model == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        scale = t.flatten(1).abs().amax(dim=1).view_as(eps)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = t.flatten(1).norm(dim=1).view_as(eps) + _TINY
    return (x + eps * t / scale).clamp(0.0, 1.0)


def _step(x0: torch.Tensor, x: torch.Tensor, x_prev: torch.Tensor, g: torch.Tensor, eta: torch.Tensor,
          eps: torch.Tensor, threat_model: str, momentum: float) -> torch.Tensor:
    """One APGD update: gradient step and projection, then momentum and projection again."""
    z = project_onto_ball(x0, x + eta * step_direction(g, threat_model), eps, threat_model)
    z = x + (z - x) * momentum + (x - x_prev) * (1 - momentum)
    return project_onto_ball(x0, z, eps, threat_model)


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, target: torch.Tensor | None,
          eot_iter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean input gradient over ``eot_iter`` passes, with the last pass's logits and loss."""
    g = torch.zeros_like(x)
    for _ in range(eot_iter):
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            obj = attack_loss(logits, y, loss, target)
            if obj.requires_grad:
                (gi,) = torch.autograd.grad(obj.sum(), xr, allow_unused=True)
                if gi is not None:
                    g += torch.where(torch.isfinite(gi), gi, torch.zeros_like(gi))
    return g / eot_iter, logits.detach(), obj.detach()


def _run(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, best: BestTracker,
         idx: torch.Tensor | None, start: torch.Tensor, *, steps: int, threat_model: str, loss: str,
         target: torch.Tensor | None, eot_iter: int, rho: float, compact: bool, stats: ApgdStats,
         trace: TraceView | None = None) -> None:
    """One APGD run on the examples ``idx`` of the batch (all when None); offers every iterate to ``best``."""
    checks = set(apgd_schedule(steps))
    x_adv = start
    g, logits, obj = _grad(model, x_adv, y, loss, target, eot_iter)
    stats.gradient_evaluations += eot_iter * x_adv.shape[0]
    success = logits.argmax(1) != y  # success is misclassification, also for APGD-T
    best.update_at(idx, x_adv, obj, success)
    if trace is not None:
        trace.new_segment()
        trace.record(obj, success, idx)
    x_best, g_best, obj_best = x_adv.clone(), g.clone(), obj.clone()
    eta = 2.0 * eps
    x_prev = x_adv.clone()
    hist = torch.zeros(steps, x_adv.shape[0], dtype=obj.dtype, device=obj.device)
    best_last_check = obj_best.clone()
    reduced_last_check = torch.ones_like(success)
    since_check = 0
    for i in range(steps):
        if compact and bool(success.any()):  # misclassified examples leave the batch (CPU only)
            keep = (~success).nonzero().squeeze(1)
            if keep.numel() == 0:
                return
            idx = keep if idx is None else idx.index_select(0, keep)
            (x0, y, eps, eta, x_adv, x_prev, g, x_best, g_best, obj_best, best_last_check,
             reduced_last_check) = (t.index_select(0, keep) for t in (
                x0, y, eps, eta, x_adv, x_prev, g, x_best, g_best, obj_best, best_last_check, reduced_last_check))
            hist = hist.index_select(1, keep)
            target = None if target is None else target.index_select(0, keep)
        with torch.no_grad():
            x_new = _step(x0, x_adv, x_prev, g, eta, eps, threat_model, 1.0 if i == 0 else 0.75)
        x_prev, x_adv = x_adv, x_new
        g, logits, obj = _grad(model, x_adv, y, loss, target, eot_iter)
        stats.gradient_evaluations += eot_iter * x_adv.shape[0]
        with torch.no_grad():
            success = logits.argmax(1) != y
            best.update_at(idx, x_adv, obj, success)
            if trace is not None:
                trace.record(obj, success, idx)
            hist[i] = obj
            better = obj > obj_best
            b4 = better.view(-1, *([1] * (x_adv.dim() - 1)))
            x_best = torch.where(b4, x_adv, x_best)
            g_best = torch.where(b4, g, g_best)
            obj_best = torch.where(better, obj, obj_best)
            since_check += 1
            if i in checks:
                # hist[i - c - 1] wraps to the last row (still 0) at the first check, as in the reference code
                rows = torch.arange(i, i - since_check, -1, device=hist.device)
                increases = (hist[rows] > hist[rows - 1]).sum(0)
                oscillating = increases <= since_check * rho
                no_improvement = ~reduced_last_check & (best_last_check >= obj_best)
                reduce = oscillating | no_improvement
                reduced_last_check = reduce
                best_last_check = obj_best.clone()
                r4 = reduce.view(-1, *([1] * (x_adv.dim() - 1)))
                eta = torch.where(r4, eta / 2.0, eta)
                x_adv = torch.where(r4, x_best, x_adv)
                g = torch.where(r4, g_best, g)
                since_check = 0


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    steps: int = 100,
    threat_model: str = "linf",
    restarts: int = 1,
    loss: str = "ce",
    targeted: bool = False,
    n_target_classes: int | None = None,
    eot_iter: int = 1,
    rho: float = 0.75,
    seed: int = 0,
    compact: bool | None = None,
    stats: ApgdStats | None = None,
    trace: TraceView | None = None,
    target_order: str = "logits",
    malt_candidates: int | None = None,
) -> torch.Tensor:
    """APGD (Croce & Hein, ICML 2020) on one batch; returns the adversarial inputs.

    Args:
        model (nn.Module): (N, ...) inputs in [0, 1] -> (N, K) logits.
        x (Tensor): (N, ...) clean inputs in [0, 1]. y (Tensor): (N,) labels.
        eps (float | Tensor): budget, scalar or per-example (N,).
        steps (int): iterations per run. Default 100 (AutoAttack's).
        threat_model (str): ``"linf"`` (default) or ``"l2"``.
        restarts (int): runs from new random starts, each on the examples still robust. Default 1.
        loss (str): ``"ce"`` (default) or ``"dlr"``; APGD-T uses the targeted DLR loss (``"dlr"``)
            or targeted CE (``"ce"``).
        targeted (bool): APGD-T: one run per target class (the highest clean logits after the top
            one). Default False.
        n_target_classes (int | None): target classes of APGD-T; None -> ``min(9, K - 1)``.
        eot_iter (int): gradient passes averaged per iteration (EOT). Default 1.
        rho (float): the oscillation threshold of the step-size rule. Default 0.75.
        seed (int): seed of the random starts. Default 0.
        compact (bool | None): misclassified examples leave the batch; None -> on the CPU only.
        stats (ApgdStats | None): filled with the gradient evaluations performed.
        trace (TraceView | None): records the objective at every iterate and which were
            adversarial (:mod:`~robustbench_dc.attacks.trace`), one segment per run. Default None.
        target_order (str): how APGD-T ranks the target classes: ``"logits"`` (default,
            AutoAttack's: the highest clean logits after the top one) or ``"malt"`` (MALT's
            linearised distance, :func:`malt_ranking`).
        malt_candidates (int | None): with ``"malt"``, the classes with the highest clean logits
            it ranks; None -> ``min(100, K - 1)``.

    Returns:
        Tensor: (N, ...) per example the first misclassified iterate found, else the
        highest-objective iterate; within the budget and [0, 1].
    """
    if threat_model not in ("linf", "l2"):
        raise ValueError(f"threat_model: must be 'linf' or 'l2', got {threat_model!r}")
    if steps < 1 or restarts < 1 or eot_iter < 1:
        raise ValueError(f"steps/restarts/eot_iter: must be >= 1, got {steps}/{restarts}/{eot_iter}")
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss: APGD uses 'ce' or 'dlr', got {loss!r}")
    stats = stats if stats is not None else ApgdStats()
    x0 = x.detach()
    y = y.detach()
    eps_b = per_example(eps, x0)
    best = BestTracker(x0)
    compact = default_compact(x0) if compact is None else compact
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    with attack_mode(model, x0, compact) as channels_last:
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            clean_logits = model(x0)
        n_classes = clean_logits.shape[1]
        if loss == "dlr":
            check_dlr_classes(n_classes, targeted)
        if targeted:
            if n_classes < 2:
                raise AttackConfigError(f"targeted: needs at least 2 classes, got {n_classes}")
            n_t = default_n_target_classes(n_classes) if n_target_classes is None else n_target_classes
            if not 1 <= n_t <= n_classes - 1:
                raise AttackConfigError(f"n_target_classes: must be in [1, {n_classes - 1}] for {n_classes} classes, got {n_t}")
            if target_order == "malt":
                ranked = malt_ranking(model, x0, y, threat_model, malt_candidates)
            elif target_order == "logits":
                ranked = clean_logits.argsort(dim=1, descending=True)[:, 1:]
            else:
                raise AttackConfigError(f"target_order: 'logits' or 'malt', got {target_order!r}")
            if n_t > ranked.shape[1]:
                raise AttackConfigError(f"n_target_classes: {n_t} is more than the {ranked.shape[1]} classes ranked")
            targets: list[torch.Tensor | None] = [ranked[:, j] for j in range(n_t)]
        else:
            targets = [None]
        # Already misclassified examples are not attacked (they are not robust anyway).
        best.update(x0, torch.full_like(best.loss, float("-inf")), clean_logits.argmax(1) != y)
        for tgt in targets:
            for _ in range(restarts):
                todo = (~best.success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                # random starts for the examples still to attack only, in batch order, as Croce & Hein's
                # code draws them: with the same seed, the same starts as theirs (and with or without compaction)
                start = _start(x0.index_select(0, todo), eps_b.index_select(0, todo), threat_model, gen)
                if compact:
                    idx = todo
                    sub = lambda t: t.index_select(0, todo)  # noqa: E731
                else:
                    idx, sub = None, (lambda t: t)
                    start = x0.index_copy(0, todo, start)
                _run(model, sub(x0), sub(y), sub(eps_b), best, idx, start, steps=steps,
                     threat_model=threat_model, loss=loss, target=None if tgt is None else sub(tgt),
                     eot_iter=eot_iter, rho=rho, compact=compact, stats=stats, trace=trace)
    return best.x.contiguous()


def malt_ranking(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat_model: str = "linf",
                 candidates: int | None = None) -> torch.Tensor:
    """MALT's targeting (Melamed, Yehudai & Shamir, NeurIPS 2024): per example, the classes other
    than ``y`` ordered by the distance to their decision boundary of the model linearised at
    ``x``, ``(z_y - z_t) / ||grad z_y - grad z_t||_*`` (the dual norm of the threat model: L1 for
    L-inf, L2 for L2), closest first. Only the ``candidates`` classes with the highest logits
    (other than ``y``) are ranked: None -> ``min(100, K - 1)``.

    Cost: one forward pass and one backward pass per candidate class (each gives
    ``grad (z_y - z_t)`` for one candidate of every example).

    Returns:
        Tensor: (N, candidates) int64 class indices.
    """
    if threat_model not in ("linf", "l2"):
        raise ValueError(f"threat_model: must be 'linf' or 'l2', got {threat_model!r}")
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        k = logits.shape[1]
        c = min(100, k - 1) if candidates is None else candidates
        if not 1 <= c <= k - 1:
            raise AttackConfigError(f"malt_candidates: must be in [1, {k - 1}] for {k} classes, got {c}")
        z = logits.detach().float()
        zy = z.gather(1, y[:, None])
        cand = z.scatter(1, y[:, None], float("-inf")).topk(c, dim=1).indices  # (N, c), never y
        dual = 1 if threat_model == "linf" else 2
        dist = torch.empty(cand.shape, dtype=torch.float32, device=x.device)
        logit_y = logits.gather(1, y[:, None])   # one node of the graph, shared by every candidate's backward
        for j in range(c):
            t = cand[:, j:j + 1]
            margin = (logit_y - logits.gather(1, t)).sum()
            (g,) = torch.autograd.grad(margin, xg, retain_graph=j + 1 < c)
            norm = g.float().flatten(1).norm(p=dual, dim=1).clamp_min(1e-12)
            dist[:, j] = (zy[:, 0] - z.gather(1, t)[:, 0]) / norm
    # a stable sort: equal distances keep the logit order
    return cand.gather(1, dist.argsort(dim=1, stable=True))


def _check_spec(spec: AttackSpec) -> None:
    """A native ``apgd`` spec: its params in range, a loss APGD has, APGD-T's own targets."""
    p = spec.params
    for key in ("n_target_classes", "eot_iter"):
        v = p.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"params.{key}: must be an integer >= 1, got {v!r}")
    rho = p.get("rho")
    if rho is not None and (isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < 1):
        raise ValueError(f"params.rho: must be a number in (0, 1), got {rho!r}")
    for key in ("n_target_classes", "target_order", "malt_candidates"):
        if key in p and not spec.targeted:
            raise ValueError(f"params.{key}: only used by targeted APGD (APGD-T)")
    if p.get("target_order", "logits") not in ("logits", "malt"):
        raise ValueError(f"params.target_order: 'logits' (AutoAttack's) or 'malt', got {p['target_order']!r}")
    v = p.get("malt_candidates")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"params.malt_candidates: must be an integer >= 1, got {v!r}")
    if "malt_candidates" in p and p.get("target_order") != "malt":
        raise ValueError("params.malt_candidates: only used with params.target_order 'malt'")
    if spec.loss == "margin":
        raise ValueError("loss: APGD uses 'ce' or 'dlr', got 'margin'")
    if spec.targeted and spec.target != "random":
        raise ValueError("target: APGD-T targets the classes with the highest clean logits, or those MALT "
                         "ranks first (params.n_target_classes of them, params.target_order); 'target' "
                         f"cannot be {spec.target!r}")


@register_attack("apgd", params=("n_target_classes", "eot_iter", "rho", "target_order", "malt_candidates"),
                 default_steps=100, own_step_size=True,
                 chooses_targets=True, default_loss=lambda spec: "dlr" if spec.targeted else "ce",
                 validate=_check_spec)
def run_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
             targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
             step_size: float | torch.Tensor | None = None, trace: TraceView | None = None) -> torch.Tensor:
    """APGD (Croce & Hein, ICML 2020) on a resolved spec; APGD-T when the spec is targeted."""
    if spec.eps is None or spec.steps is None:
        raise ValueError(f"spec {spec.label!r} must be resolved first (spec.resolve(dataset))")
    p = spec.params
    return apgd(model, x, y, spec.eps if eps is None else eps, steps=spec.steps, threat_model=spec.threat_model,
                restarts=spec.restarts, loss=spec.loss or "ce", targeted=spec.targeted,
                n_target_classes=p.get("n_target_classes"), eot_iter=p.get("eot_iter", 1),
                rho=p.get("rho", 0.75), seed=spec.seed, trace=trace,
                target_order=p.get("target_order", "logits"), malt_candidates=p.get("malt_candidates"))

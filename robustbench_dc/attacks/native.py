"""Native FGSM, BIM and PGD: one projected-gradient loop, L-inf and L2.

* FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
  ICLR 2015 -- one step of size eps (L-inf: sign of the gradient; L2: the
  normalised gradient, a.k.a. FGM).
* BIM / I-FGSM: Kurakin et al., "Adversarial Examples in the Physical World",
  ICLR-W 2017 -- ``steps`` steps from the clean input.
* PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018 -- random start in the eps-ball and restarts.

All three call :func:`projected_gradient_attack`. Each step is
``x <- Proj_{B_p(x0, eps) ∩ [0,1]^d}(x + alpha * s(g))`` with ``s = sign`` (L-inf)
or ``g / ||g||_2`` (L2), and ``g`` the gradient of the per-example objective
(:mod:`~robustbench_dc.attacks.losses`) with respect to the input only, computed
with :func:`torch.autograd.grad` (parameter ``.grad`` fields are never touched).
Non-finite gradient entries are treated as 0 (the masking diagnostics report
them separately).

Per example, the attack keeps the *first successful* iterate over all steps and
restarts (the clean starting point is never a candidate); where no iterate
succeeds it keeps the highest-objective iterate. On a GPU the step loop contains
no host-device synchronisation; on the CPU, examples that already succeeded leave
the batch (the returned examples are identical, the remaining steps cheaper) and
4-D weights and inputs use the channels-last layout (faster convolutions).
Parameters stop requiring gradients for the duration of the attack.

The model is put in eval mode during the attack and every submodule's previous
train/eval flag is restored afterwards. Inputs are floats in [0, 1], NCHW (any
(N, ...) shape works); the model returns logits of shape (N, K).

Example::

    >>> x_adv = pgd(model, x, y, eps=8 / 255, steps=10)
    >>> (model(x_adv).argmax(1) == y).float().mean()
"""

from __future__ import annotations

import torch
from torch import nn

from robustbench_dc.attacks.losses import attack_loss, attack_success
from robustbench_dc.attacks.registry import native_attack, register_attack
from robustbench_dc.attacks.spec import AttackSpec, default_step_size
from robustbench_dc.attacks.steps import (  # noqa: F401  (re-exported: native is where callers look)
    TINY,
    BestTracker,
    attack_mode,
    default_compact,
    input_gradient,
    project_onto_ball,
    random_start_point,
    step_direction,
)
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.attacks.utils import per_example

__all__ = ["projected_gradient_attack", "fgsm", "bim", "pgd", "run_native", "BestTracker", "attack_mode"]

def projected_gradient_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: int,
    threat_model: str = "linf",
    random_start: bool = False,
    restarts: int = 1,
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    compact: bool | None = None,
    trace: TraceView | None = None,
) -> torch.Tensor:
    """The shared projected-gradient loop behind FGSM, BIM and PGD.

    Args:
        model (nn.Module): maps (N, ...) inputs in [0, 1] to (N, K) logits.
        x (Tensor): (N, ...) clean inputs in [0, 1].
        y (Tensor): (N,) int64 labels.
        eps (float | Tensor): budget, scalar or per-example (N,).
        step_size (float | Tensor): step length alpha, scalar or per-example (N,).
        steps (int): number of gradient steps, >= 1.
        threat_model (str): ``"linf"`` (default) or ``"l2"``.
        random_start (bool): start uniformly in the eps-ball. Default False.
        restarts (int): independent runs; per example the first success is kept. Default 1.
        loss (str): ``"ce"`` (default), ``"margin"`` or ``"dlr"``.
        targets (Tensor | None): (N,) target labels for a targeted attack. Default None.
        generator (torch.Generator | None): RNG for the random start (on x's device).
        compact (bool | None): drop examples from the batch once they succeed (same result,
            fewer computations). Default None: on the CPU only (it syncs with the host).
        trace (TraceView | None): records the objective at every iterate and which iterates were
            adversarial (:mod:`~robustbench_dc.attacks.trace`), one segment per restart. Default None.

    Returns:
        Tensor: (N, ...) adversarial inputs, detached, within the budget and [0, 1].

    Example::

        >>> x_adv = projected_gradient_attack(model, x, y, eps=0.3, step_size=0.01, steps=40,
        ...                                   random_start=True)
    """
    if threat_model not in ("linf", "l2"):
        raise ValueError(f"threat_model: must be 'linf' or 'l2', got {threat_model!r}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps/restarts: must be >= 1, got steps={steps}, restarts={restarts}")
    x0 = x.detach()
    y = y.detach()
    eps_b = per_example(eps, x0)
    alpha = per_example(step_size, x0)
    best = BestTracker(x0)
    # On the CPU, examples whose attack already succeeded leave the batch: the first success
    # is what is returned, so the result is identical and the remaining steps are cheaper.
    # Elsewhere the batch stays whole (compaction would need a host-device sync per step).
    compact = default_compact(x0) if compact is None else compact
    with attack_mode(model, x0, compact) as channels_last:
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        for r in range(restarts):
            start = x0
            if random_start:  # drawn for the whole batch, so the random stream does not depend on compaction
                start = (x0 + random_start_point(x0, eps_b, threat_model, generator)).clamp(0.0, 1.0)
            idx = None
            if compact and r > 0:
                idx = (~best.success).nonzero().squeeze(1)
            sub = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
            x_adv, xs, ys, eps_s, alpha_s = sub(start).clone(), sub(x0), sub(y), sub(eps_b), sub(alpha)
            tg = None if targets is None else sub(targets)
            if trace is not None:
                trace.new_segment()
            for t in range(steps):
                x_adv.requires_grad_(True)
                with torch.enable_grad():
                    logits = model(x_adv)
                    obj = attack_loss(logits, ys, loss, tg)
                    (g,) = torch.autograd.grad(obj.sum(), x_adv)
                x_adv = x_adv.detach()
                with torch.no_grad():
                    success = None
                    if t > 0:  # x_adv is iterate t (the start point is not a candidate)
                        success = attack_success(logits.detach(), ys, tg)
                        best.update_at(idx, x_adv, obj.detach(), success)
                    if trace is not None:
                        trace.record(obj.detach(), success, idx)
                    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
                    x_adv = project_onto_ball(xs, x_adv + alpha_s * step_direction(g, threat_model), eps_s, threat_model)
                    if compact and success is not None and t + 1 < steps and bool(success.any()):
                        keep = (~success).nonzero().squeeze(1)
                        idx = keep if idx is None else idx.index_select(0, keep)
                        x_adv, xs, ys, eps_s, alpha_s = (v.index_select(0, keep) for v in (x_adv, xs, ys, eps_s,
                                                                                           alpha_s))
                        tg = None if tg is None else tg.index_select(0, keep)
            with torch.no_grad():
                if restarts == 1:
                    # The last iterate is the answer wherever no earlier one succeeded: no extra
                    # forward pass is needed to decide.
                    best.take_rest_at(idx, x_adv)
                else:
                    logits = model(x_adv)
                    obj, success = attack_loss(logits, ys, loss, tg), attack_success(logits, ys, tg)
                    best.update_at(idx, x_adv, obj, success)
                    if trace is not None:
                        trace.record(obj, success, idx)
            if r + 1 < restarts and bool(best.success.all()):  # one sync per restart
                break
    return best.x.contiguous()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    threat_model: str = "linf",
    loss: str = "ce",
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """FGSM (Goodfellow et al., ICLR 2015): ``clip(x + eps * sign(grad))`` (L-inf) or
    ``clip(x + eps * grad/||grad||_2)`` (L2).

    Args: see :func:`projected_gradient_attack`; ``threat_model`` default ``"linf"``,
    ``loss`` default ``"ce"``, ``targets`` default None. Returns (N, ...) adversarial inputs.

    Example::

        >>> x_adv = fgsm(model, x, y, eps=8 / 255)
    """
    return projected_gradient_attack(
        model, x, y, eps=eps, step_size=eps, steps=1, threat_model=threat_model,
        random_start=False, restarts=1, loss=loss, targets=targets,
    )


def bim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    threat_model: str = "linf",
    loss: str = "ce",
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """BIM / I-FGSM (Kurakin et al., ICLR-W 2017): ``steps`` projected steps from x,
    no random start; ``step_size`` default eps/steps.

    Example::

        >>> x_adv = bim(model, x, y, eps=8 / 255, steps=10)
    """
    return projected_gradient_attack(
        model, x, y, eps=eps,
        step_size=step_size if step_size is not None else default_step_size("bim", eps, steps),
        steps=steps, threat_model=threat_model, random_start=False, restarts=1,
        loss=loss, targets=targets,
    )


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    threat_model: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """PGD (Madry et al., ICLR 2018) with random start and restarts; ``step_size``
    default 2.5*eps/steps; ``seed`` (default 0) seeds the random start.

    Example::

        >>> x_adv = pgd(model, x, y, eps=0.5, threat_model="l2", steps=20, restarts=2)
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return projected_gradient_attack(
        model, x, y, eps=eps,
        step_size=step_size if step_size is not None else default_step_size("pgd", eps, steps),
        steps=steps, threat_model=threat_model, random_start=random_start, restarts=restarts,
        loss=loss, targets=targets, generator=gen,
    )


def run_native(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    targets: torch.Tensor | None = None,
    eps: float | torch.Tensor | None = None,
    step_size: float | torch.Tensor | None = None,
    trace: TraceView | None = None,
) -> torch.Tensor:
    """Run a *resolved* native spec (see :meth:`AttackSpec.resolve`) through its registered attack
    (:mod:`~robustbench_dc.attacks.registry`); an ensemble is refused (it returns a log too: use
    :func:`~robustbench_dc.attacks.run_attack`).

    ``eps`` / ``step_size`` override the spec's values (scalars or per-example (N,)
    tensors, used by the eps sweep); ``trace`` records the iterates (:mod:`~robustbench_dc.attacks.trace`)."""
    attack = native_attack(spec.name)
    if attack is None or attack.ensemble:
        raise ValueError(f"run_native: {spec.label!r} is not a single native attack")
    out: torch.Tensor = attack.run(model, x, y, spec, targets=targets, eps=eps, step_size=step_size, trace=trace)
    return out


@register_attack("fgsm", family="fgsm", iterative=False)
def run_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
             targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
             step_size: float | torch.Tensor | None = None, trace: TraceView | None = None) -> torch.Tensor:
    """FGSM (Goodfellow et al., ICLR 2015): one step of size eps."""
    return _run_projected(model, x, y, spec, targets, eps, step_size, trace)


@register_attack("bim", family="bim")
def run_bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
            targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
            step_size: float | torch.Tensor | None = None, trace: TraceView | None = None) -> torch.Tensor:
    """BIM / I-FGSM (Kurakin et al., ICLR-W 2017): steps of eps/steps from the clean input."""
    return _run_projected(model, x, y, spec, targets, eps, step_size, trace)


@register_attack("pgd", family="pgd")
def run_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
            targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
            step_size: float | torch.Tensor | None = None, trace: TraceView | None = None) -> torch.Tensor:
    """PGD (Madry et al., ICLR 2018): random start, steps of 2.5 eps/steps, restarts."""
    return _run_projected(model, x, y, spec, targets, eps, step_size, trace)


def _run_projected(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                   targets: torch.Tensor | None, eps: float | torch.Tensor | None,
                   step_size: float | torch.Tensor | None, trace: TraceView | None) -> torch.Tensor:
    """FGSM, BIM and PGD of a resolved spec: :func:`projected_gradient_attack`."""
    if spec.eps is None or spec.steps is None or spec.step_size is None:
        raise ValueError(f"spec {spec.label!r} must be resolved first (spec.resolve(dataset))")
    gen = torch.Generator(device=x.device).manual_seed(spec.seed)
    return projected_gradient_attack(
        model, x, y,
        eps=spec.eps if eps is None else eps,
        step_size=spec.step_size if step_size is None else step_size,
        steps=spec.steps,
        threat_model=spec.threat_model,
        random_start=bool(spec.random_start),
        restarts=spec.restarts,
        loss=spec.loss or "ce",
        targets=targets,
        generator=gen,
        trace=trace,
    )

"""Run a minimum-norm attack on a batch and turn what it returns into checked per-example norms.

A minimum-norm attack reports the smallest perturbation it found; the suite does not take that
report on trust. :func:`minimal_perturbations` checks every returned point the way
:func:`~robustbench_dc.attacks.checks.check_adversarial` checks a fixed-budget batch (finite, in
[0, 1]: a violation raises :class:`~robustbench_dc.attacks.checks.ConstraintViolation`), scores it
with a separate float32 forward pass of the model in eval mode, and computes its norm from the
point itself. An example counts as broken at that norm only if the scoring pass misclassifies it;
otherwise its bound is ``inf`` (and :attr:`MinimumNormResult.not_adversarial` counts it: an attack
whose report the scoring pass contradicts). Clean errors are bounds of ``0``.

The attacks (:data:`MINIMUM_NORM_ATTACKS`): ``fmn`` / ``fab`` untargeted, ``fmn-t`` / ``fab-t``
targeted at the ``n_target_classes`` most likely wrong classes of the clean input (AutoAttack's
FAB-T choice), keeping per example the smallest perturbation over the targets.

Example::

    >>> res = minimal_perturbations(model, x, y, MinimumNormSpec("fmn", "linf"))
    >>> res.norms.median(), res.forward_passes
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from robustbench_dc.attacks.attack import validate_inputs
from robustbench_dc.attacks.checks import check_adversarial, perturbation_norms
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.errors import InvalidParameterError

__all__ = ["MINIMUM_NORM_ATTACKS", "MinimumNormSpec", "MinimumNormResult", "minimal_perturbations"]

#: The native minimum-norm attacks: name -> (algorithm, targeted).
MINIMUM_NORM_ATTACKS: dict[str, tuple[str, bool]] = {
    "fmn": ("fmn", False), "fmn-t": ("fmn", True), "fab": ("fab", False), "fab-t": ("fab", True),
}


@dataclass(frozen=True)
class MinimumNormSpec:
    """A minimum-norm attack: its name (:data:`MINIMUM_NORM_ATTACKS`), norm and budget of iterations.

    Attributes:
        name (str): ``fmn``, ``fmn-t``, ``fab`` or ``fab-t``.
        threat_model (str): ``"linf"`` or ``"l2"``.
        steps (int): iterations per run (per target class for the targeted ones). Default 100
            (FMN's and AutoAttack's FAB's published budget).
        n_target_classes (int): target classes of the targeted versions. Default 9 (AutoAttack).
        seed (int): seeds FAB's random restarts. Default 0.
    """

    name: str
    threat_model: str = "linf"
    steps: int = 100
    n_target_classes: int = 9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in MINIMUM_NORM_ATTACKS:
            from robustbench_dc._text import did_you_mean

            raise InvalidParameterError(f"minimum-norm attack: unknown {self.name!r}"
                                        f"{did_you_mean(self.name, MINIMUM_NORM_ATTACKS)}; "
                                        f"known: {', '.join(MINIMUM_NORM_ATTACKS)}")
        if self.threat_model not in ("linf", "l2"):
            raise InvalidParameterError(f"threat_model: must be 'linf' or 'l2', got {self.threat_model!r}")
        if self.steps < 1 or self.n_target_classes < 1:
            raise InvalidParameterError(f"steps, n_target_classes: must be >= 1, got {self.steps}, "
                                        f"{self.n_target_classes}")

    @property
    def label(self) -> str:
        """``fmn-linf-s100``, ``fab-t-l2-s100``, ..."""
        return f"{self.name}-{self.threat_model}-s{self.steps}"

    @property
    def targeted(self) -> bool:
        return MINIMUM_NORM_ATTACKS[self.name][1]

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, trace: AttackTrace | None = None) -> torch.Tensor:
        """The attack's answer on one batch: per example the adversarial point with the smallest
        norm it found (``x`` where none)."""
        algorithm, targeted = MINIMUM_NORM_ATTACKS[self.name]
        view = None if trace is None else trace.view()
        if algorithm == "fab":
            from robustbench_dc.autoattack.fab import fab

            return fab(model, x, y, threat_model=self.threat_model, steps=self.steps, targeted=targeted,
                       n_target_classes=self.n_target_classes, seed=self.seed, trace=view)
        from robustbench_dc.minimum_norm.fmn import fmn

        if not targeted:
            return fmn(model, x, y, threat_model=self.threat_model, steps=self.steps, trace=view)
        with torch.no_grad(), eval_mode(model):
            logits = model(x).float()
        order = logits.scatter(1, y[:, None], -math.inf).argsort(dim=1, descending=True)
        best = x.detach().clone()
        best_norm = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
        for k in range(min(self.n_target_classes, logits.shape[1] - 1)):
            cand = fmn(model, x, y, threat_model=self.threat_model, steps=self.steps, targets=order[:, k], trace=view)
            norms = _bounds(model, cand, x, y, self.threat_model)[0].to(x.device)
            better = norms < best_norm
            best[better] = cand[better]
            best_norm = torch.minimum(best_norm, norms)
        return best


@dataclass
class MinimumNormResult:
    """What one minimum-norm attack found on a batch.

    Attributes:
        label (str): the attack (:attr:`MinimumNormSpec.label`).
        norms (Tensor): float64 (n,) per-example bounds: 0 for a clean error, the checked norm of the
            adversarial point found, ``inf`` where none was found.
        not_adversarial (int): examples for which the attack returned a perturbed point that the
            scoring pass classifies correctly (bound ``inf``; 0 is the healthy value).
        lost (int): examples for which an iterate was adversarial but the returned point is not
            (the attack lost a success; 0 is the healthy value).
        seconds (float), forward_passes (int), backward_passes (int): the attack's cost.
    """

    label: str
    norms: torch.Tensor = field(repr=False)
    not_adversarial: int = 0
    lost: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0


def _bounds(model: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
            threat_model: str) -> tuple[torch.Tensor, int]:
    """Per-example bounds of ``x_adv`` (float64, on the CPU: see :class:`MinimumNormResult`) and the
    number of perturbed points the scoring pass classifies correctly. Raises
    :class:`ConstraintViolation` for points that are not finite or leave [0, 1]."""
    check_adversarial(x_adv, x, math.inf, threat_model)  # shape, finite, in [0, 1]; no budget
    with torch.no_grad(), eval_mode(model):  # scoring: float32, eval mode, whatever the attack did
        clean_ok = (model(x.float()).float().argmax(1) == y).cpu()
        broken = clean_ok & (model(x_adv.float()).float().argmax(1) != y).cpu()
    norms = perturbation_norms(x_adv.detach().double(), x.detach().double(), threat_model).cpu()
    not_adversarial = int((clean_ok & (norms > 0) & ~broken).sum())
    bounds = torch.where(broken, norms, torch.full_like(norms, math.inf))
    return torch.where(clean_ok, bounds, torch.zeros_like(bounds)), not_adversarial


def minimal_perturbations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: MinimumNormSpec, *,
                          batch_size: int = 250) -> MinimumNormResult:
    """Run ``spec`` on the examples ``x`` (in batches) and return their checked bounds.

    Args:
        model (nn.Module): maps (N, ...) inputs in [0, 1] to (N, K) logits.
        x (Tensor): (N, ...) clean inputs in [0, 1]. y (Tensor): (N,) labels.
        spec (MinimumNormSpec): the attack.
        batch_size (int): examples per batch. Default 250.

    Returns:
        MinimumNormResult: the per-example bounds and the attack's diagnostics and cost.

    Raises:
        ConstraintViolation: a returned point is not finite or leaves [0, 1].
    """
    validate_inputs(x, y)
    dev = model_device(model, x.device)
    norms, not_adv, lost, fwd, bwd = [], 0, 0, 0, 0
    t0 = time.perf_counter()
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size].detach().to(dev), y[start:start + batch_size].detach().to(dev)
        trace = AttackTrace(xb.shape[0])
        with PassCounter(model) as passes:
            x_adv = spec.run(model, xb, yb, trace=trace)
        fwd, bwd = fwd + passes.forward, bwd + passes.backward
        bounds, n_not_adv = _bounds(model, x_adv, xb, yb, spec.threat_model)
        not_adv += n_not_adv
        lost += int((trace.ever_adversarial & torch.isinf(bounds)).sum())  # clean errors are 0
        norms.append(bounds)
    return MinimumNormResult(spec.label, torch.cat(norms) if norms else torch.zeros(0, dtype=torch.float64),
                             not_adversarial=not_adv, lost=lost, seconds=time.perf_counter() - t0,
                             forward_passes=fwd, backward_passes=bwd)

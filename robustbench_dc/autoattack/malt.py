"""``malt``: a fast white-box evaluation that is *not* AutoAttack -- APGD-CE, then APGD-T on the
few target classes that MALT's targeting ranks first (Melamed, Yehudai & Shamir, "MALT Powers Up
Adversarial Attacks", NeurIPS 2024: a target class is chosen by the distance to its boundary of
the model linearised at the input, not by its logit).

=============  ==================================================================================
component      budget
=============  ==================================================================================
apgd-ce        100 iterations, 1 restart (AutoAttack's first component, the same code and seed)
apgd-t-malt    targeted DLR, 100 iterations, 1 restart, on the ``n_target_classes`` classes
               (default 3) with the smallest linearised distance
               ``(z_y - z_t) / ||grad z_y - grad z_t||_1`` (L2: ``||.||_2``) among the
               ``min(100, K - 1)`` highest clean logits
=============  ==================================================================================

It is the suite's own combination in MALT's spirit, not the authors' code: where they attack with
their own APGD variant and budget, this runs the suite's APGD (:func:`~robustbench_dc.attacks.apgd.apgd`
with ``target_order="malt"``) after AutoAttack's APGD-CE. Like AutoAttack, each component runs on
the examples still robust, clean errors are never attacked, the returned points are checked
against the budget, and the result carries the per-component breakdown and the passes each cost.

How close it comes to AutoAttack is measured, not assumed: ``benchmarks/fast_attack.py`` runs
both on the same models and the first 1,000 CIFAR-10 test images (docs/attacks.md gives the
numbers). It never stands in for the AutoAttack number of a protocol or a leaderboard.

Example::

    >>> x_adv, parts = malt(model, x, y, eps=8 / 255)
    >>> AttackSpec(name="malt")            # the same through the registry (rbdc evaluate --attack malt)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_dc.attacks.apgd import check_dlr_classes
from robustbench_dc.attacks.registry import register_attack
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.autoattack.ensemble import COMPONENTS, STEPS, Component, apgd_runner, run_ensemble

__all__ = ["malt", "DEFAULT_TARGETS"]

#: APGD-T's target classes in ``malt`` unless ``n_target_classes`` says otherwise.
DEFAULT_TARGETS = 3



def _apgd_t_malt(n_targets: int) -> Component:
    return Component("apgd-t-malt", "native", apgd_runner("dlr", True, n_targets=n_targets, target_order="malt"),
                     lambda k: {"iterations": STEPS, "restarts": 1, "target_classes": min(n_targets, k - 1),
                                "targeting": "malt", "candidates": min(100, k - 1)})


def malt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, threat_model: str = "linf",
         n_target_classes: int = DEFAULT_TARGETS, seed: int = 0,
         trace: TraceView | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Run ``malt`` on one batch: APGD-CE, then APGD-T on the ``n_target_classes`` classes MALT's
    targeting ranks first. Returns the adversarial inputs (the clean input where both components
    failed) and the per-component breakdown, as :func:`~robustbench_dc.autoattack.autoattack` does."""
    if isinstance(n_target_classes, bool) or not isinstance(n_target_classes, int) or n_target_classes < 1:
        raise AttackConfigError(f"n_target_classes: must be an integer >= 1, got {n_target_classes!r}")
    return run_ensemble(model, x, y, eps, [COMPONENTS["apgd-ce"], _apgd_t_malt(n_target_classes)],
                        threat_model=threat_model, seed=seed, trace=trace,
                        check_classes=lambda k: check_dlr_classes(k, True, "malt's APGD-T"))


def _check_spec(spec: AttackSpec) -> None:
    """A native ``malt`` spec: its one version, none of the budgets it fixes, a valid target count."""
    version = spec.params.get("version", "standard")
    if version != "standard":
        raise ValueError(f"params.version: malt has one version ('standard'), got {version!r}")
    fixed = spec.version_fixed_field()
    if fixed is not None:
        raise ValueError(f"{fixed[0]}: malt's budgets and losses are fixed (APGD-CE and APGD-T, 100 iterations "
                         f"each), got {fixed[1]!r}; set params.n_target_classes, or use name 'apgd'")
    n = spec.params.get("n_target_classes", DEFAULT_TARGETS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"params.n_target_classes: must be an integer >= 1, got {n!r}")


def _work(spec: AttackSpec) -> int:
    """Gradient iterations per example at most: APGD-CE, the ranking (one backward pass per candidate
    class, at most 9 on CIFAR-10, counted as 10) and APGD-T's targets."""
    return (STEPS + 1) * (1 + int(spec.params.get("n_target_classes", DEFAULT_TARGETS))) + 10


@register_attack("malt", params=("version", "n_target_classes"), ensemble=True, own_step_size=True,
                 default_loss=None, validate=_check_spec, work=_work)
def run_malt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
             targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
             step_size: float | torch.Tensor | None = None,
             trace: TraceView | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``malt`` on a resolved spec (``params.n_target_classes``, default :data:`DEFAULT_TARGETS`)."""
    if eps is not None or step_size is not None:
        raise ValueError(f"{spec.label}: malt runs at one budget (no per-example eps or step size)")
    assert spec.eps is not None
    return malt(model, x, y, spec.eps, threat_model=spec.threat_model,
                n_target_classes=int(spec.params.get("n_target_classes", DEFAULT_TARGETS)), seed=spec.seed,
                trace=trace)

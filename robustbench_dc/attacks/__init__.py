"""The attack library: attack specifications, native attacks, APGD and AutoAttack, the third-party
backends, step primitives, losses, budget checks, traces and guards. How a model is judged with
them (white-box and transfer evaluation, sweeps, metrics, masking diagnostics, the binarization
test) is :mod:`robustbench_dc.evaluation`, which imports this package and is never imported by it.

Conventions: models take float inputs in [0, 1] (NCHW), normalise internally and
return logits; evaluation uses the first ``n`` test examples in order; standard
budgets are L-inf 8/255 (CIFAR-10), 0.3 (MNIST) and L2 0.5 (CIFAR-10).

* :class:`AttackSpec` -- validated attack description (native FGSM / BIM / PGD,
  any torchattacks or foolbox attack), :func:`load_attack_config` for the
  repository's ``attacks/*.yaml``; :class:`AttackConfigError` for a configuration that cannot run.
* :func:`register_attack` -- a native attack is one decorated function
  (:mod:`~robustbench_dc.attacks.registry`); :func:`native_attacks` lists them.
* :func:`run_attack` / :func:`run_attack_loader` -- the one entry point; every
  batch passes :func:`check_adversarial` (else :class:`ConstraintViolation`).
* :mod:`~robustbench_dc.attacks.trace` -- the path every attack records while it runs, which the
  evaluation's attack-failure indicators read.

Example::

    >>> from robustbench_dc.attacks import AttackSpec, run_attack
    >>> x_adv = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.3))
"""

from robustbench_dc.attacks.attack import run_attack, run_attack_loader
from robustbench_dc.attacks.backends import (
    BackendMissingError,
    available_attacks,
    foolbox_names,
    run_foolbox,
    run_torchattacks,
    torchattacks_names,
)
from robustbench_dc.attacks.checks import (
    ConstraintViolation,
    check_adversarial,
    perturbation_norms,
)
from robustbench_dc.attacks.losses import attack_loss, ce_loss, dlr_loss, make_targets, margin_loss
from robustbench_dc.attacks.native import bim, fgsm, pgd, projected_gradient_attack
from robustbench_dc.attacks.registry import NativeAttack, native_attack, native_attacks, register_attack, unregister_attack
from robustbench_dc.attacks.spec import (
    STANDARD_EPS,
    AttackConfigError,
    AttackSpec,
    load_attack_config,
    resolve_eps,
)

__all__ = [
    "AttackSpec", "AttackConfigError", "register_attack",
    "unregister_attack", "native_attack", "native_attacks", "NativeAttack", "STANDARD_EPS",
    "resolve_eps", "load_attack_config", "run_attack", "run_attack_loader", "fgsm", "bim", "pgd",
    "projected_gradient_attack", "run_torchattacks", "run_foolbox", "available_attacks", "torchattacks_names",
    "foolbox_names", "BackendMissingError", "ConstraintViolation", "check_adversarial", "perturbation_norms",
    "attack_loss", "ce_loss", "margin_loss", "dlr_loss", "make_targets",
]

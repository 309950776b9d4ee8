"""Adversarial attacks, robustness evaluation and gradient-masking diagnostics.

Conventions: models take float inputs in [0, 1] (NCHW), normalise internally and
return logits; evaluation uses the first ``n`` test examples in order; standard
budgets are L-inf 8/255 (CIFAR-10), 0.3 (MNIST) and L2 0.5 (CIFAR-10).

* :class:`AttackSpec` -- validated attack description (native FGSM / BIM / PGD,
  any torchattacks or foolbox attack), :func:`load_attack_config` for the
  repository's ``attacks/*.yaml``, :func:`configure_attacks` for a named set with overrides;
  :class:`AttackConfigError` for a configuration that cannot run.
* :func:`run_attack` / :func:`run_attack_loader` -- the one entry point; every
  batch passes :func:`check_adversarial` (else :class:`ConstraintViolation`).
* :func:`evaluate_whitebox` -> :class:`EvalResult` (metrics + masking flags),
  :func:`evaluate_transfer` -> :class:`TransferResult` (source x target matrix,
  disk cache), :func:`worst_case`, :func:`run_eps_sweep`.
* :mod:`~robustbench_dc.attacks.masking` -- the fifteen gradient-masking flags and
  attack-failure indicators, documented in ``docs/masking_flags.md``, read in part from the
  paths the attacks record (:mod:`~robustbench_dc.attacks.trace`);
  :mod:`~robustbench_dc.attacks.binarization` -- the binarization test of an attack.

Example::

    >>> from robustbench_dc.attacks import AttackSpec, evaluate_whitebox
    >>> res = evaluate_whitebox(model, x, y, [AttackSpec(name="fgsm"), AttackSpec(name="pgd")], dataset="mnist")
"""

from robustbench_dc.attacks._utils import data_fingerprint, model_fingerprint
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
    NonFiniteModelError,
    check_adversarial,
    check_finite_logits,
    perturbation_norms,
)
from robustbench_dc.attacks.evaluate import EvalResult, evaluate_whitebox
from robustbench_dc.attacks.losses import attack_loss, ce_loss, dlr_loss, make_targets, margin_loss
from robustbench_dc.attacks.masking import (
    DOC_PATH,
    FLAG_NAMES,
    MaskingConfig,
    MaskingFlag,
    diagnose_masking,
    flag_large_eps,
    flag_noise_beats_gradient,
    flag_one_step_beats_iterative,
    flag_randomness,
    flag_transfer_beats_whitebox,
    flag_zero_gradients,
)
from robustbench_dc.attacks.metrics import AttackResult, attack_result, worst_case
from robustbench_dc.attacks.native import bim, fgsm, pgd, projected_gradient_attack
from robustbench_dc.attacks.spec import (
    DEFAULT_ATTACKS,
    LARGE_EPS,
    NATIVE_ATTACKS,
    STANDARD_EPS,
    AttackConfigError,
    AttackSpec,
    configure_attacks,
    load_attack_config,
    resolve_eps,
)
from robustbench_dc.attacks.sweep import SweepResult, run_eps_sweep
from robustbench_dc.attacks.transfer import TransferResult, evaluate_transfer

__all__ = [
    "AttackSpec",
    "AttackConfigError",
    "DEFAULT_ATTACKS",
    "configure_attacks",
    "NATIVE_ATTACKS",
    "STANDARD_EPS",
    "LARGE_EPS",
    "resolve_eps",
    "load_attack_config",
    "run_attack",
    "run_attack_loader",
    "fgsm",
    "bim",
    "pgd",
    "projected_gradient_attack",
    "run_torchattacks",
    "run_foolbox",
    "available_attacks",
    "torchattacks_names",
    "foolbox_names",
    "BackendMissingError",
    "ConstraintViolation", "NonFiniteModelError", "check_finite_logits",
    "check_adversarial",
    "perturbation_norms",
    "attack_loss",
    "ce_loss",
    "margin_loss",
    "dlr_loss",
    "make_targets",
    "AttackResult",
    "attack_result",
    "worst_case",
    "EvalResult",
    "evaluate_whitebox",
    "TransferResult",
    "evaluate_transfer",
    "SweepResult",
    "run_eps_sweep",
    "MaskingConfig",
    "MaskingFlag",
    "FLAG_NAMES",
    "DOC_PATH",
    "diagnose_masking",
    "flag_one_step_beats_iterative",
    "flag_transfer_beats_whitebox",
    "flag_large_eps",
    "flag_zero_gradients",
    "flag_randomness",
    "flag_noise_beats_gradient",
    "model_fingerprint",
    "data_fingerprint",
]

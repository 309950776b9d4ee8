"""How the benchmark judges a model with the attack library (:mod:`robustbench_dc.attacks`).

Conventions: models take float inputs in [0, 1] (NCHW), normalise internally and return logits;
evaluation uses the first ``n`` test examples in order; standard budgets are L-inf 8/255
(CIFAR-10), 0.3 (MNIST) and L2 0.5 (CIFAR-10).

* :func:`evaluate_whitebox` -> :class:`EvalResult` (per-attack metrics, the per-example worst
  case, masking flags and attack-failure indicators);
* :func:`evaluate_transfer` -> :class:`TransferResult` (source x target matrix, disk cache);
* :func:`run_eps_sweep` -> :class:`SweepResult` (robust accuracy against eps);
* :mod:`~robustbench_dc.evaluation.metrics` -- :class:`AttackResult`, :func:`worst_case`;
* :mod:`~robustbench_dc.evaluation.masking` -- the fifteen gradient-masking flags and
  attack-failure indicators, documented in ``docs/masking_flags.md``;
* :mod:`~robustbench_dc.evaluation.binarization` -- the binarization test of an attack.

This package imports :mod:`robustbench_dc.attacks`; the attack library never imports it.

Example::

    >>> from robustbench_dc.attacks import AttackSpec
    >>> from robustbench_dc.evaluation import evaluate_whitebox
    >>> res = evaluate_whitebox(model, x, y, [AttackSpec(name="fgsm"), AttackSpec(name="pgd")], dataset="mnist")
"""

from robustbench_dc.evaluation.attack_set import DEFAULT_ATTACKS, LARGE_EPS, configure_attacks
from robustbench_dc.evaluation.checks import NonFiniteModelError, check_finite_logits
from robustbench_dc.evaluation.fingerprints import data_fingerprint, model_fingerprint
from robustbench_dc.evaluation.masking import (
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
from robustbench_dc.evaluation.metrics import AttackResult, attack_result, worst_case
from robustbench_dc.evaluation.sweep import SweepResult, run_eps_sweep
from robustbench_dc.evaluation.transfer import TransferResult, evaluate_transfer
from robustbench_dc.evaluation.whitebox import EvalResult, evaluate_whitebox

__all__ = [
    "DEFAULT_ATTACKS", "LARGE_EPS", "configure_attacks", "NonFiniteModelError", "check_finite_logits",
    "model_fingerprint", "data_fingerprint",
    "AttackResult", "attack_result", "worst_case",
    "EvalResult", "evaluate_whitebox",
    "TransferResult", "evaluate_transfer",
    "SweepResult", "run_eps_sweep",
    "MaskingConfig", "MaskingFlag", "FLAG_NAMES", "DOC_PATH", "diagnose_masking",
    "flag_one_step_beats_iterative", "flag_transfer_beats_whitebox", "flag_large_eps", "flag_zero_gradients",
    "flag_randomness", "flag_noise_beats_gradient",
]

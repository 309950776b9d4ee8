"""The flag record, the thresholds and the names of the gradient-masking diagnostics."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from robustbench_dc.attacks.metrics import AttackResult
from robustbench_dc.attacks.spec import AttackSpec

__all__ = ["MaskingFlag", "MaskingConfig", "FLAG_NAMES", "DOC_PATH"]

logger = logging.getLogger("robustbench_dc.attacks.masking")  # one logger for the diagnostics

#: Where every flag is documented (one anchor per flag name).
DOC_PATH = "docs/masking_flags.md"

FLAG_NAMES: tuple[str, ...] = (
    "one-step-beats-iterative",
    "transfer-beats-whitebox",
    "accuracy-not-zero-at-large-eps",
    "zero-or-nonfinite-gradients",
    "randomized-forward",
    "noise-beats-gradient-attack",
)


@dataclass(frozen=True)
class MaskingConfig:
    """Thresholds and budgets of the masking diagnostics (all fractions in [0, 1]).

    Attributes:
        one_step_tol (float): allowed excess of FGSM over BIM/PGD success. Default 0.01.
        transfer_tol (float): allowed excess of transfer over white-box success. Default 0.01.
        large_eps (float | None): L-inf budget of the large-eps check; None (default)
            -> 0.5 (CIFAR-10), 1.0 (MNIST, Fashion-MNIST), 0.5 if the dataset is unknown.
        large_eps_steps (int): PGD steps at the large eps. Default 20.
        large_eps_random_start (bool): random start for that PGD. Default False: at
            eps 0.5-1.0 a random start is itself a near-random image, which would let
            the check pass without the gradient doing anything.
        large_eps_threshold (float): max robust accuracy at the large eps. Default 0.10.
        zero_grad_threshold (float): max fraction of degenerate gradients. Default 0.10.
        zero_grad_atol (float): an example's gradient counts as zero if max |g| <= this. Default 0.0.
        randomness_tol (float): max relative logit difference between two passes. Default 1e-5.
        noise_draws (int): random-noise draws per budget. Default 10.
        noise_threshold (float): max fraction of clean-correct examples fooled by noise
            but not by the gradient attacks. Default 0.0 (any such example triggers).
        max_examples (int): diagnostics use the first ``max_examples`` examples. Default 512.
        seed (int): seed of the noise draws and the large-eps PGD. Default 0.
    """

    one_step_tol: float = 0.01
    transfer_tol: float = 0.01
    large_eps: float | None = None
    large_eps_steps: int = 20
    large_eps_random_start: bool = False
    large_eps_threshold: float = 0.10
    zero_grad_threshold: float = 0.10
    zero_grad_atol: float = 0.0
    randomness_tol: float = 1e-5
    noise_draws: int = 10
    noise_threshold: float = 0.0
    max_examples: int = 512
    seed: int = 0


@dataclass
class MaskingFlag:
    """Result of one masking diagnostic.

    Attributes:
        name (str): one of :data:`FLAG_NAMES` (also the doc anchor).
        triggered (bool): the diagnostic suspects gradient masking.
        value (float | None): the measured quantity (None if not evaluated).
        threshold (float): the value above which the flag triggers.
        message (str): explanation, ending with the doc link.
        doc (str): ``docs/masking_flags.md#<name>``.
        evaluated (bool): False when the diagnostic could not run (e.g. no FGSM in the set).
    """

    name: str
    triggered: bool
    value: float | None
    threshold: float
    message: str
    doc: str
    evaluated: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return asdict(self)


def _make_flag(
    name: str, value: float | None, threshold: float, detail: str, *, evaluated: bool = True
) -> MaskingFlag:
    doc = f"{DOC_PATH}#{name}"
    triggered = bool(evaluated and value is not None and value > threshold)
    if not evaluated:
        message = f"{name}: not evaluated ({detail}); see {doc}"
    elif triggered:
        message = f"{name}: POSSIBLE GRADIENT MASKING -- {detail} (value {value:.4g} > threshold {threshold:.4g}); see {doc}"
        logger.warning(message)
    else:
        message = f"{name}: ok -- {detail} (value {value:.4g} <= threshold {threshold:.4g}); see {doc}"
    return MaskingFlag(name, triggered, value, threshold, message, doc, evaluated)


def _spec(r: AttackResult) -> AttackSpec | None:
    try:
        return AttackSpec.model_validate(r.spec)
    except Exception:  # worst-case results etc.
        return None


def _family(r: AttackResult) -> str | None:
    spec = _spec(r)
    return None if spec is None else spec.family


def _iterative(r: AttackResult) -> bool:
    spec = _spec(r)
    return spec is not None and spec.iterative


def _group(results: list[AttackResult]) -> dict[tuple[str, float | None], list[AttackResult]]:
    groups: dict[tuple[str, float | None], list[AttackResult]] = defaultdict(list)
    for r in results:
        groups[(r.threat_model, None if r.eps is None else round(r.eps, 10))].append(r)
    return groups

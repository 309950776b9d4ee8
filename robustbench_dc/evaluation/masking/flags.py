"""The flag record, the thresholds and the names of the gradient-masking diagnostics."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any

from robustbench_dc.attacks.spec import AttackSpec
from robustbench_dc.evaluation.metrics import AttackResult

__all__ = ["MaskingFlag", "MaskingConfig", "FLAG_NAMES", "DOC_PATH", "masking_config"]

log = logging.getLogger(__name__)

#: Where every flag is documented (one anchor per flag name).
DOC_PATH = "docs/masking_flags.md"

FLAG_NAMES: tuple[str, ...] = (
    "one-step-beats-iterative",
    "transfer-beats-whitebox",
    "accuracy-not-zero-at-large-eps",
    "zero-or-nonfinite-gradients",
    "randomized-forward",
    "noise-beats-gradient-attack",
    "silent-success",
    "incomplete-optimization",
    "budget-sensitivity",
    "non-monotone-eps-curve",
    "unconstrained-attack-failure",
    "unstable-predictions",
    "softmax-output",
    "square-beats-whitebox",
    "dynamic-forward",
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
        silent_success_threshold (float): max fraction of clean-correct examples counted robust
            although an iterate of the attack was adversarial. Default 0.0.
        incomplete_window (float): the fraction of a trajectory's iterations, at its end, where the
            objective must have stopped improving (at least 2 iterations). Default 0.1.
        incomplete_min_iterations (int): shorter trajectories are not judged. Default 20.
        incomplete_tol (float): improvement of the range-normalised running maximum over the window
            that counts as still improving. Default 0.05.
        incomplete_threshold (float): max fraction of unbroken examples whose optimisation was
            incomplete. Default 0.10.
        budget_check (bool): run the budget-sensitivity check (two more runs of the strongest native
            BIM/PGD/APGD attack). Default True.
        budget_tol (float): max change of robust accuracy with twice the iterations or restarts. Default 0.02.
        budget_examples (int): the check runs on the first that many examples. Default 256.
        eps_curve_factors (tuple[float, ...]): multiples of the evaluation's eps on the eps curve (which
            also holds the large eps and the unconstrained eps). Default (0.5, 1, 2).
        eps_curve_tol (float): max rise of robust accuracy between consecutive budgets. Default 0.01.
        unconstrained_eps (float): L-inf budget of the unconstrained attack. Default 1.0 (the whole
            [0, 1] box).
        unconstrained_threshold (float): max fraction of clean-correct examples it leaves unbroken. Default 0.0.
        unstable_draws (int): random draws per point of the unstable-predictions check. Default 20.
        unstable_radius (float | None): their radius (uniform in [-r/2, r/2]); None (default) -> the
            evaluation's eps.
        unstable_threshold (float): max mean relative loss change. Default 0.25.
        square_tol (float): max fraction of examples broken by Square only. Default 0.002 (AutoAttack's).
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
    silent_success_threshold: float = 0.0
    incomplete_window: float = 0.1
    incomplete_min_iterations: int = 20
    incomplete_tol: float = 0.05
    incomplete_threshold: float = 0.10
    budget_check: bool = True
    budget_tol: float = 0.02
    budget_examples: int = 256
    eps_curve_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    eps_curve_tol: float = 0.01
    unconstrained_eps: float = 1.0
    unconstrained_threshold: float = 0.0
    unstable_draws: int = 20
    unstable_radius: float | None = None
    unstable_threshold: float = 0.25
    square_tol: float = 0.002
    max_examples: int = 512
    seed: int = 0


_OPTIONAL = ("large_eps", "unstable_radius")  # None: derived from the dataset / the evaluation's eps


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def masking_config(value: bool | dict[str, Any] | MaskingConfig | None) -> MaskingConfig | None:
    """The diagnostics' configuration from a protocol's ``evaluation.masking``: None for ``false``,
    the defaults for ``true``, else a mapping of :class:`MaskingConfig` fields.

    Raises:
        ValueError: an unknown field, or a value of the wrong type or out of range.
    """
    if value is False:
        return None
    if value is None or value is True:
        return MaskingConfig()
    if isinstance(value, MaskingConfig):
        return value
    known = {f.name: f for f in fields(MaskingConfig)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"masking: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    out: dict[str, Any] = {}
    for key, v in value.items():
        default = known[key].default
        if key == "eps_curve_factors":
            if not isinstance(v, (list, tuple)) or not v or not all(_number(e) and e > 0 for e in v):
                raise ValueError(f"masking.{key}: a list of positive numbers, got {v!r}")
            v = tuple(float(e) for e in v)
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise ValueError(f"masking.{key}: true or false, got {v!r}")
        elif v is None and key in _OPTIONAL:
            pass
        elif isinstance(default, int):
            low = 0 if key == "seed" else 1
            if not _number(v) or int(v) != v or v < low:
                raise ValueError(f"masking.{key}: an integer >= {low}, got {v!r}")
            v = int(v)
        elif not _number(v) or v < 0:
            raise ValueError(f"masking.{key}: a finite number >= 0, got {v!r}")
        out[key] = v
    return MaskingConfig(**out)


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


def make_flag(
    name: str, value: float | None, threshold: float, detail: str, *, evaluated: bool = True
) -> MaskingFlag:
    doc = f"{DOC_PATH}#{name}"
    triggered = bool(evaluated and value is not None and value > threshold)
    if not evaluated:
        message = f"{name}: not evaluated ({detail}); see {doc}"
    elif triggered:
        message = f"{name}: POSSIBLE GRADIENT MASKING -- {detail} (value {value:.4g} > threshold {threshold:.4g}); see {doc}"
        log.warning(message)
    else:
        message = f"{name}: ok -- {detail} (value {value:.4g} <= threshold {threshold:.4g}); see {doc}"
    return MaskingFlag(name, triggered, value, threshold, message, doc, evaluated)


def spec_of(r: AttackResult) -> AttackSpec | None:
    try:
        return AttackSpec.model_validate(r.spec)
    except Exception:  # worst-case results etc.
        return None


def attack_family(r: AttackResult) -> str | None:
    spec = spec_of(r)
    return None if spec is None else spec.family


def is_iterative(r: AttackResult) -> bool:
    spec = spec_of(r)
    return spec is not None and spec.iterative


def group_by_budget(results: list[AttackResult]) -> dict[tuple[str, float | None], list[AttackResult]]:
    groups: dict[tuple[str, float | None], list[AttackResult]] = defaultdict(list)
    for r in results:
        groups[(r.threat_model, None if r.eps is None else round(r.eps, 10))].append(r)
    return groups

"""The robustness curve of a model: robust accuracy as a function of eps, from per-example norms.

Every attack that ran on an example gives an upper bound on the perturbation that example needs:
a minimum-norm attack (FMN, FAB) the norm of the adversarial point it found, a fixed-budget attack
(FGSM, PGD, AutoAttack at eps) the norm of its perturbation where it broke the example. Per
example, the *minimal perturbation* is the smallest of these bounds: ``0`` for an example the model
already misclassifies, ``inf`` for one no attack broke. From the vector of minimal perturbations:

* robust accuracy at eps: the fraction of examples whose minimal perturbation exceeds eps (an
  example broken at exactly eps is not robust at eps); at eps = 0 it is the clean accuracy;
* the median minimal perturbation (the average of the two middle values for an even count; ``inf``
  when half the examples or more were never broken);
* the area under the curve on [0, eps_max], normalised by eps_max: the mean over examples of
  ``min(norm, eps_max) / eps_max`` (1 for a model no attack breaks below eps_max, 0 for one that is
  always wrong);

each with a percentile bootstrap interval over the test examples (resampled with replacement,
seeded). Every quantity is an upper bound on the model's true robustness: a stronger attack can
only lower it.

Example::

    >>> curve = robustness_curve({"fmn": fmn_norms, "pgd-linf-eps0.3000-s40": pgd_norms}, "linf", eps_max=0.3)
    >>> curve.median, curve.median_interval, curve.robust_accuracy_at(0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["RobustnessCurve", "robustness_curve", "budget_norms", "bootstrap_interval", "median_of",
           "overlapping", "CURVE_POINTS"]

#: Points of the stored curve on [0, eps_max] (the per-example norms are stored too: any other
#: eps can be read from them).
CURVE_POINTS = 61


def median_of(values: torch.Tensor) -> torch.Tensor:
    """The median along the last dimension: the average of the two middle values for an even count
    (``inf`` stays ``inf``; no NaN arises, norms are never ``-inf``)."""
    s = values.sort(dim=-1).values
    n = s.shape[-1]
    return (s[..., (n - 1) // 2] + s[..., n // 2]) / 2


def bootstrap_interval(values: torch.Tensor, statistic: Callable[[torch.Tensor], torch.Tensor], *,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` over the examples of ``values``.

    Args:
        values (Tensor): (n,) per-example values.
        statistic (Callable): maps (B, n) resamples to (B,) statistics (one per row).
        n_boot (int): resamples. Default 1000.
        level (float): coverage. Default 0.95.
        seed (int): seeds the resampling. Default 0.

    Returns:
        tuple[float, float]: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        resampled statistic (``inf`` where the statistic is).
    """
    n = values.shape[0]
    if n == 0:
        return (math.nan, math.nan)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for start in range(0, n_boot, 250):  # in chunks: (250, n) indices at a time
        idx = torch.randint(0, n, (min(250, n_boot - start), n), generator=g)
        rows.append(statistic(values.double()[idx]))
    stats = torch.cat(rows).sort().values
    lo_i = max(0, math.floor((1 - level) / 2 * n_boot))
    hi_i = min(n_boot - 1, math.ceil((1 + level) / 2 * n_boot) - 1)
    return (float(stats[lo_i]), float(stats[hi_i]))


def budget_norms(clean_correct: torch.Tensor, robust_correct: torch.Tensor, norms: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """The per-example upper bounds a fixed-budget attack at ``eps`` gives: ``0`` where the clean input
    is misclassified, the perturbation's norm where the attack broke the example, ``inf`` elsewhere. A
    norm is at most ``eps`` (the attack's output was checked against its budget; a float32 perturbation
    of exactly eps measures up to a few ulps above it)."""
    broken = norms.double().clamp(max=eps)
    out = torch.where(clean_correct & ~robust_correct, broken, torch.full_like(broken, math.inf))
    return torch.where(clean_correct, out, torch.zeros_like(out))


def overlapping(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point (an interval that is missing overlaps everything)."""
    if a is None or b is None or any(isinstance(v, float) and math.isnan(v) for v in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]


def _json_norm(v: float) -> float | None:
    return None if math.isinf(v) or math.isnan(v) else v


@dataclass
class RobustnessCurve:
    """The robustness curve of one model under one threat model (JSON via :meth:`to_dict`).

    Attributes:
        threat_model (str): ``"linf"`` or ``"l2"``.
        eps_max (float): the curve's range, [0, eps_max] (the dataset's standard budget).
        n (int): examples.
        norms (list[float]): per example, the minimal perturbation found (``inf`` = never broken).
        found_by (list[str]): per example, the attack that found it (``"clean"`` for a clean error,
            ``""`` where none did).
        attacks (list[str]): the attacks whose bounds were combined.
        clean_accuracy (float): the curve at eps = 0.
        median (float), median_interval (tuple): the median minimal perturbation and its interval.
        auc (float), auc_interval (tuple): the normalised area under the curve on [0, eps_max].
        robust_accuracy_eps_max (float), robust_accuracy_interval (tuple): robust accuracy at eps_max.
        eps (list[float]), robust_accuracy (list[float]): the curve at :data:`CURVE_POINTS` budgets.
        unbroken (int): examples no attack broke.
        missed (dict[str, int]): per fixed-budget attack, the examples it broke at its eps that the
            minimum-norm attacks alone left robust at that eps (a minimum-norm attack that fell short:
            0 is the healthy value).
        n_boot (int), level (float), seed (int): the bootstrap's settings.
    """

    threat_model: str
    eps_max: float
    n: int
    norms: list[float] = field(repr=False)
    found_by: list[str] = field(repr=False)
    attacks: list[str]
    clean_accuracy: float
    median: float
    median_interval: tuple[float, float]
    auc: float
    auc_interval: tuple[float, float]
    robust_accuracy_eps_max: float
    robust_accuracy_interval: tuple[float, float]
    eps: list[float] = field(repr=False)
    robust_accuracy: list[float] = field(repr=False)
    unbroken: int = 0
    missed: dict[str, int] = field(default_factory=dict)
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def robust_accuracy_at(self, eps: float) -> float:
        """The fraction of examples whose minimal perturbation exceeds ``eps``."""
        return sum(v > eps for v in self.norms) / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``inf`` norms (and an ``inf`` median or bound) become ``None``."""
        d = asdict(self)
        d["norms"] = [_json_norm(v) for v in self.norms]
        for k in ("median", "median_interval"):
            d[k] = [_json_norm(v) for v in d[k]] if isinstance(d[k], (list, tuple)) else _json_norm(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RobustnessCurve:
        """The inverse of :meth:`to_dict`."""
        inf = math.inf
        data = dict(d)
        data["norms"] = [inf if v is None else float(v) for v in data["norms"]]
        data["median"] = inf if data["median"] is None else data["median"]
        for k in ("median_interval", "auc_interval", "robust_accuracy_interval"):
            data[k] = tuple(inf if v is None else v for v in data[k])
        return cls(**data)


def robustness_curve(per_attack: Mapping[str, torch.Tensor], threat_model: str, eps_max: float, *,
                     budgets: Mapping[str, float] | None = None, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> RobustnessCurve:
    """Combine per-attack, per-example norm bounds into a :class:`RobustnessCurve`.

    Args:
        per_attack (Mapping[str, Tensor]): attack label -> (n,) per-example bounds (``0`` for a clean
            error, ``inf`` where the attack did not break the example), in one order of examples.
        threat_model (str): the norm the bounds are in.
        eps_max (float): the curve's range (the dataset's standard budget).
        budgets (Mapping[str, float] | None): the eps of each fixed-budget attack in ``per_attack``
            (the others are minimum-norm attacks); used for :attr:`RobustnessCurve.missed`.
        n_boot (int), level (float), seed (int): the bootstrap (see :func:`bootstrap_interval`).

    Raises:
        ValueError: no attacks, bounds of different lengths, or a negative or NaN bound.
    """
    if not per_attack:
        raise ValueError("per_attack: at least one attack's bounds are needed")
    names = list(per_attack)
    stacked = torch.stack([per_attack[a].detach().double().cpu().reshape(-1) for a in names])
    if bool(torch.isnan(stacked).any()) or bool((stacked < 0).any()):
        raise ValueError("per_attack: bounds must be >= 0 (inf where not broken), got a negative or NaN value")
    norms, which = stacked.min(dim=0)
    n = norms.shape[0]
    clean_error = (stacked == 0).all(dim=0)  # every attack saw a clean error
    found_by = ["clean" if c else ("" if math.isinf(v) else names[int(w)])
                for c, v, w in zip(clean_error.tolist(), norms.tolist(), which.tolist())]
    budgets = dict(budgets or {})
    minimum_norm = [i for i, a in enumerate(names) if a not in budgets]
    missed: dict[str, int] = {}
    if minimum_norm:
        mn = stacked[minimum_norm].min(dim=0).values
        for a, eps in budgets.items():
            if a in per_attack:
                broke = per_attack[a].double().cpu() <= eps
                missed[a] = int((broke & (mn > eps)).sum())
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed}
    grid = torch.linspace(0, eps_max, CURVE_POINTS, dtype=torch.float64)
    curve = (norms[None, :] > grid[:, None]).double().mean(dim=1)
    return RobustnessCurve(
        threat_model=threat_model, eps_max=float(eps_max), n=n, norms=norms.tolist(), found_by=found_by,
        attacks=names, clean_accuracy=float((norms > 0).double().mean()),
        median=float(median_of(norms)), median_interval=bootstrap_interval(norms, median_of, **boot),
        auc=float(_auc(norms, eps_max)), auc_interval=bootstrap_interval(norms, lambda v: _auc(v, eps_max), **boot),
        robust_accuracy_eps_max=float((norms > eps_max).double().mean()),
        robust_accuracy_interval=bootstrap_interval(norms, lambda v: (v > eps_max).double().mean(-1), **boot),
        eps=grid.tolist(), robust_accuracy=curve.tolist(), unbroken=int(torch.isinf(norms).sum()), missed=missed,
        n_boot=n_boot, level=level, seed=seed,
    )


def _auc(norms: torch.Tensor, eps_max: float) -> torch.Tensor:
    return norms.clamp(max=eps_max).mean(-1) / eps_max

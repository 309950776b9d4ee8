"""Per-model, per-attack robustness metrics and the per-example worst case.

Definitions (over the first ``n`` examples):

* clean accuracy: fraction classified correctly without attack;
* robust accuracy: fraction classified correctly *and* still correctly after the
  attack (a clean error counts as non-robust);
* attack success rate: fraction of the clean-correct examples that the attack
  makes misclassified;
* mean / max perturbation: the threat model's norm of ``x_adv - x`` over the
  clean-correct (i.e. attacked) examples.

:func:`worst_case` takes the per-example AND of robust correctness over several
attacks on the same model and data (AutoAttack-style ensemble).

Example::

    >>> res = attack_result("model", spec, clean_correct, adv_correct, norms)
    >>> worst_case([res_fgsm, res_pgd]).robust_accuracy
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from robustbench_dc.attacks.spec import AttackSpec

__all__ = ["AttackResult", "attack_result", "prefix", "worst_case"]


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


@dataclass
class AttackResult:
    """Metrics of one attack against one model (JSON-serialisable via :meth:`to_dict`).

    Attributes:
        model (str): evaluated (target) model name.
        attack (str): attack label (``spec.label``).
        spec (dict): the resolved spec's fields.
        threat_model (str): ``"linf"`` / ``"l2"`` (``"mixed"`` for a worst case over both).
        eps (float | None): budget (None for a worst case over different budgets).
        n (int): number of examples.
        clean_accuracy (float), robust_accuracy (float), attack_success_rate (float):
            fractions in [0, 1]; success rate is NaN (``None`` in JSON) without clean-correct examples.
        mean_perturbation (float | None), max_perturbation (float | None): norms over
            the clean-correct examples (None if there are none).
        clean_correct (list[bool]), robust_correct (list[bool]): per-example vectors.
        perturbation_norms (list[float]): per-example norms (all examples).
        source (str | None): source model for a transfer attack, None for white-box.
        seconds (float): wall time spent crafting (0 when loaded from cache).
        components (list[dict] | None): for an ensemble (native ``autoattack``), per component
            in the order they ran: ``component``, ``backend``, ``budget`` (iterations / queries /
            target classes), ``attacked``, ``robust`` and ``robust_accuracy`` after it (AutoAttack's
            log), ``seconds``; the first entry (``clean``) is the clean accuracy. None otherwise.
        precision (str): the precision the adversarial examples were crafted in (``"fp32"`` or
            ``"bf16"``; ``"mixed"`` for a worst case over both); scoring is always float32.
        binarization (dict | None): the binarization test of this attack
            (:class:`~robustbench_dc.evaluation.binarization.BinarizationResult` as a dict), when run.
        forward_passes (int | None), backward_passes (int | None): the examples that went forward /
            backward through the model while the attack crafted (examples x passes), as counted by
            :class:`~robustbench_dc.attacks.passes.PassCounter`.
    """

    model: str
    attack: str
    spec: dict[str, Any]
    threat_model: str
    eps: float | None
    n: int
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    mean_perturbation: float | None
    max_perturbation: float | None
    clean_correct: list[bool] = field(repr=False)
    robust_correct: list[bool] = field(repr=False)
    perturbation_norms: list[float] = field(repr=False)
    source: str | None = None
    seconds: float = 0.0
    components: list[dict[str, Any]] | None = None
    precision: str = "fp32"
    binarization: dict[str, Any] | None = None
    #: examples x passes through the model while crafting (None where not counted: a transfer cell,
    #: a worst case)
    forward_passes: int | None = None
    backward_passes: int | None = None

    @property
    def robust_correct_tensor(self) -> torch.Tensor:
        """Per-example robust correctness as a bool tensor (n,)."""
        return torch.tensor(self.robust_correct, dtype=torch.bool)

    @property
    def clean_correct_tensor(self) -> torch.Tensor:
        """Per-example clean correctness as a bool tensor (n,)."""
        return torch.tensor(self.clean_correct, dtype=torch.bool)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (NaN -> None)."""
        d = asdict(self)
        d["attack_success_rate"] = _nan_to_none(d["attack_success_rate"])
        return d

    def summary(self) -> str:
        """One line: ``model attack: clean 98.0% robust 12.0%``."""
        src = f" (from {self.source})" if self.source else ""
        return (
            f"{self.model} {self.attack}{src}: clean {100 * self.clean_accuracy:.1f}% "
            f"robust {100 * self.robust_accuracy:.1f}%"
        )


def _statistics(cc: torch.Tensor, rc: torch.Tensor, norms: torch.Tensor) -> dict[str, Any]:
    """The per-example vectors and the numbers derived from them: ``cc`` clean-correct, ``rc``
    robust-correct (a subset of ``cc``), ``norms`` perturbation norms (statistics over ``cc``)."""
    n, n_cc, n_rc = int(cc.numel()), int(cc.sum()), int(rc.sum())
    attacked = norms[cc]
    return {"n": n, "clean_accuracy": n_cc / n if n else float("nan"),
            "robust_accuracy": n_rc / n if n else float("nan"),
            "attack_success_rate": (n_cc - n_rc) / n_cc if n_cc else float("nan"),
            "mean_perturbation": float(attacked.mean()) if attacked.numel() else None,
            "max_perturbation": float(attacked.max()) if attacked.numel() else None,
            "clean_correct": cc.tolist(), "robust_correct": rc.tolist(), "perturbation_norms": norms.tolist()}


def attack_result(
    model: str,
    spec: AttackSpec,
    clean_correct: torch.Tensor,
    adv_correct: torch.Tensor,
    norms: torch.Tensor,
    *,
    source: str | None = None,
    seconds: float = 0.0,
    components: list[dict[str, Any]] | None = None,
    precision: str = "fp32",
) -> AttackResult:
    """Build an :class:`AttackResult`.

    Args:
        model (str): target model name.
        spec (AttackSpec): resolved spec.
        clean_correct (Tensor): bool (n,), clean prediction == label.
        adv_correct (Tensor): bool (n,), prediction on the adversarial input == label.
        norms (Tensor): (n,) perturbation norms in ``spec.threat_model``.
        source (str | None): source model of a transfer attack. Default None.
        seconds (float): crafting time. Default 0.
        components (list[dict] | None): an ensemble's per-component breakdown. Default None.
        precision (str): the crafting precision. Default ``"fp32"``.
    """
    cc = clean_correct.detach().cpu().bool()
    return AttackResult(
        model=model,
        attack=spec.label,
        spec=spec.model_dump(mode="json"),
        threat_model=spec.threat_model,
        eps=spec.eps,
        **_statistics(cc, cc & adv_correct.detach().cpu().bool(), norms.detach().cpu().double()),
        source=source,
        seconds=seconds,
        components=components,
        precision=precision,
    )


def prefix(result: AttackResult, m: int) -> AttackResult:
    """``result`` restricted to its first ``m`` examples (unchanged when ``m >= result.n``).

    Used to compare attacks run on different prefixes of the test set (a protocol may run a
    slow attack on the first 500 of 1,000 images) on the examples they share. The
    per-component breakdown of an ensemble and the pass counts cover all its examples, so they
    are dropped.
    """
    if m >= result.n:
        return result
    return replace(result, **_statistics(torch.tensor(result.clean_correct[:m], dtype=torch.bool),
                                         torch.tensor(result.robust_correct[:m], dtype=torch.bool),
                                         torch.tensor(result.perturbation_norms[:m], dtype=torch.float64)),
                   components=None, forward_passes=None, backward_passes=None)


def worst_case(results: list[AttackResult], name: str | None = None) -> AttackResult:
    """Per-example worst case over attacks on the same model and examples.

    An example is robust only if it is robust to every attack (per-example AND).
    Its perturbation norm is that of the first attack (in list order) that broke
    it, else the largest norm over attacks. Norm statistics are None when the
    attacks use different threat models.

    Args:
        results (list[AttackResult]): >= 1 results with the same ``n`` and clean vector.
        name (str | None): label; default ``"worst-case(a, b, ...)"``.

    Example::

        >>> worst_case([fgsm_res, pgd_res, aa_res]).robust_accuracy
    """
    if not results:
        raise ValueError("results: need at least one AttackResult")
    first = results[0]
    for r in results[1:]:
        if r.n != first.n or r.clean_correct != first.clean_correct:
            raise ValueError(
                f"results: {r.attack!r} on {r.model!r} is not on the same model/examples as "
                f"{first.attack!r} on {first.model!r} (n or clean predictions differ)"
            )
    cc = torch.tensor(first.clean_correct, dtype=torch.bool)
    robust = torch.stack([torch.tensor(r.robust_correct, dtype=torch.bool) for r in results])
    norms = torch.tensor([r.perturbation_norms for r in results], dtype=torch.float64)
    rc = robust.all(dim=0)
    broken = ~robust & cc[None]
    any_broken = broken.any(dim=0)
    first_idx = broken.to(torch.int8).argmax(dim=0)
    chosen = torch.where(any_broken, norms.gather(0, first_idx[None]).squeeze(0), norms.max(dim=0).values)
    tms = {r.threat_model for r in results}
    epss = {r.eps for r in results}
    same_tm = len(tms) == 1
    stats = _statistics(cc, rc, chosen)
    if not same_tm:  # norms in different threat models are not comparable
        stats.update(mean_perturbation=None, max_perturbation=None)
    label = name or f"worst-case({', '.join(r.attack for r in results)})"
    return AttackResult(
        model=first.model,
        attack=label,
        spec={"worst_case_of": [r.spec for r in results]},
        threat_model=first.threat_model if same_tm else "mixed",
        eps=first.eps if len(epss) == 1 else None,
        **stats,
        source=first.source if len({r.source for r in results}) == 1 else None,
        seconds=sum(r.seconds for r in results),
        precision=first.precision if len({r.precision for r in results}) == 1 else "mixed",
    )

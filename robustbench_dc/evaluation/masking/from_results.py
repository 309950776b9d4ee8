"""Masking flags read from stored attack results (no model queries)."""

from __future__ import annotations

from robustbench_dc.evaluation.masking.flags import MaskingFlag, attack_family, group_by_budget, is_iterative, make_flag
from robustbench_dc.evaluation.metrics import AttackResult

__all__ = ["flag_one_step_beats_iterative", "flag_transfer_beats_whitebox"]

# ---------------------------------------------------------------------- (a)
def flag_one_step_beats_iterative(results: list[AttackResult], tol: float = 0.01) -> MaskingFlag:
    """(a) FGSM robust accuracy lower than an iterative attack's (BIM, PGD, APGD, AutoAttack; same threat
    model and eps) by > ``tol``.

    Args:
        results (list[AttackResult]): white-box results of one model.
        tol (float): tolerance (fraction). Default 0.01.
    """
    name = "one-step-beats-iterative"
    worst: tuple[float, str] | None = None
    for (tm, eps), rs in group_by_budget(results).items():
        one = [r for r in rs if attack_family(r) == "fgsm"]
        it = [r for r in rs if is_iterative(r)]
        for a in one:
            for b in it:
                gap = b.robust_accuracy - a.robust_accuracy
                if worst is None or gap > worst[0]:
                    worst = (gap, f"{a.attack} robust acc {a.robust_accuracy:.3f} vs {b.attack} {b.robust_accuracy:.3f}")
    if worst is None:
        return make_flag(name, None, tol, "needs an FGSM and a BIM/PGD attack with the same threat model and eps",
                          evaluated=False)
    return make_flag(name, worst[0], tol, f"iterative minus one-step robust accuracy: {worst[1]}")


# ---------------------------------------------------------------------- (b)
def flag_transfer_beats_whitebox(
    whitebox: list[AttackResult], transfer: list[AttackResult], tol: float = 0.01
) -> MaskingFlag:
    """(b) A transfer attack (crafted on another model) gets lower robust accuracy than
    the per-example worst case of the white-box attacks with the same threat model and eps.

    Args:
        whitebox (list[AttackResult]): white-box results on the target model.
        transfer (list[AttackResult]): transfer results on the same target (``source`` set,
            not the target itself).
        tol (float): tolerance. Default 0.01.
    """
    from robustbench_dc.evaluation.metrics import worst_case

    name = "transfer-beats-whitebox"
    wb = group_by_budget(whitebox)
    tr = group_by_budget([r for r in transfer if r.source is not None and r.source != r.model])
    worst: tuple[float, str] | None = None
    for key, trs in tr.items():
        if key not in wb:
            continue
        w = worst_case(wb[key])
        best_tr = min(trs, key=lambda r: r.robust_accuracy)
        gap = w.robust_accuracy - best_tr.robust_accuracy
        if worst is None or gap > worst[0]:
            worst = (
                gap,
                f"white-box robust acc {w.robust_accuracy:.3f} vs transfer {best_tr.attack} from "
                f"{best_tr.source} {best_tr.robust_accuracy:.3f}",
            )
    if worst is None:
        return make_flag(name, None, tol, "needs transfer results with the same threat model and eps", evaluated=False)
    return make_flag(name, worst[0], tol, worst[1])

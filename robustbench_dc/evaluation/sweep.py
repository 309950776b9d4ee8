"""Robust accuracy as a function of eps, reusing work across budgets.

* Native FGSM (no random start): the input gradient is computed once per batch
  and every eps is a rescaling of the same direction; all eps are scored in one
  stacked forward pass.
* Native BIM / PGD: all eps run *together*: the batch is stacked E times with a
  per-example budget and step size, so one loop of ``steps`` forward/backward
  passes serves every eps.
* Third-party backends: one :func:`run_attack` per eps.

The step size follows the spec at every eps: the default rule (fgsm eps, bim
eps/steps, pgd 2.5*eps/steps), or, if ``spec.step_size`` is set together with
``spec.eps``, the same ratio step_size/eps.

Every per-eps batch is constraint-checked. :class:`SweepResult` reports the raw
per-eps outcome and a *monotone* one: an adversarial example found at a smaller
eps is also inside every larger ball, so an example broken at eps_i counts as
broken at all eps_j >= eps_i.

Example::

    >>> sw = run_eps_sweep(model, x, y, AttackSpec(name="pgd", steps=20), [1/255, 2/255, 4/255, 8/255])
    >>> sw.robust_accuracy, sw.monotone_robust_accuracy
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_dc.attacks.attack import run_attack, validate_inputs
from robustbench_dc.attacks.checks import check_adversarial, perturbation_norms
from robustbench_dc.attacks.losses import attack_loss, make_targets
from robustbench_dc.attacks.native import input_gradient, project_onto_ball, run_native, step_direction
from robustbench_dc.attacks.spec import AttackSpec
from robustbench_dc.attacks.utils import eval_mode, model_device

__all__ = ["SweepResult", "run_eps_sweep"]


@dataclass
class SweepResult:
    """Per-eps, per-example results of an eps sweep.

    Attributes:
        attack (str): label of the spec (at its own eps, if set).
        spec (dict): the spec's fields.
        eps (list[float]): budgets, in the given order (E of them).
        clean_correct (Tensor): bool (n,).
        adv_correct (Tensor): bool (E, n), prediction on the eps-adversarial input == label.
        norms (Tensor): float64 (E, n) perturbation norms.
        x_adv (Tensor | None): (E, n, ...) adversarial inputs if requested.
    """

    attack: str
    spec: dict[str, Any]
    eps: list[float]
    clean_correct: torch.Tensor
    adv_correct: torch.Tensor
    norms: torch.Tensor
    x_adv: torch.Tensor | None = None

    @property
    def robust_correct(self) -> torch.Tensor:
        """bool (E, n): clean-correct and correct after the attack at that eps."""
        return self.clean_correct[None] & self.adv_correct

    @property
    def monotone_robust_correct(self) -> torch.Tensor:
        """bool (E, n): robust at eps_j only if robust at every eps_i <= eps_j."""
        rc = self.robust_correct
        order = torch.tensor(self.eps).argsort()
        out = torch.empty_like(rc)
        acc = torch.ones_like(rc[0])
        for j in order.tolist():
            acc = acc & rc[j]
            out[j] = acc
        return out

    @property
    def robust_accuracy(self) -> list[float]:
        """Raw robust accuracy per eps."""
        return self.robust_correct.float().mean(dim=1).tolist()

    @property
    def monotone_robust_accuracy(self) -> list[float]:
        """Robust accuracy per eps, counting smaller-eps adversarials (non-increasing in eps)."""
        return self.monotone_robust_correct.float().mean(dim=1).tolist()

    @property
    def clean_accuracy(self) -> float:
        n = self.clean_correct.numel()
        return int(self.clean_correct.sum()) / n if n else float("nan")  # exact, like evaluate_whitebox

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (per-example vectors as lists)."""
        return {
            "attack": self.attack,
            "spec": self.spec,
            "eps": self.eps,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "monotone_robust_accuracy": self.monotone_robust_accuracy,
            "clean_correct": self.clean_correct.tolist(),
            "robust_correct": self.robust_correct.tolist(),
            "perturbation_norms": self.norms.tolist(),
        }


def _spec_at(spec: AttackSpec, eps: float) -> AttackSpec:
    step = spec.step_size
    if step is not None and spec.eps is not None:
        step = step * eps / spec.eps
    return spec.model_copy(update={"eps": eps, "step_size": step}).resolve()


def run_eps_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    eps_list: list[float],
    *,
    batch_size: int = 256,
    return_adv: bool = False,
    progress: bool = False,
) -> SweepResult:
    """Run ``spec`` at every eps of ``eps_list`` on (x, y).

    Args:
        model (nn.Module): (N, C, H, W) in [0, 1] -> (N, K) logits; eval mode during the
            sweep, previous mode restored.
        x (Tensor): (N, C, H, W) clean inputs in [0, 1]; y (Tensor): (N,) labels.
        spec (AttackSpec): the attack (its ``eps`` is replaced by each sweep value).
        eps_list (list[float]): budgets, each > 0.
        batch_size (int): examples per chunk (a chunk is stacked E times for native
            iterative attacks). Default 256.
        return_adv (bool): keep the (E, N, ...) adversarial inputs. Default False.
        progress (bool): tqdm bar over chunks. Default False.

    Returns:
        SweepResult.

    Example::

        >>> sw = run_eps_sweep(model, x, y, AttackSpec(name="fgsm"), [0.05, 0.1, 0.2, 0.3])
        >>> sw.robust_accuracy
    """
    validate_inputs(x, y)
    eps_list = [float(e) for e in eps_list]
    if not eps_list or any(not e > 0 for e in eps_list):
        raise ValueError(f"eps_list: must be non-empty with every eps > 0, got {eps_list}")
    specs = [_spec_at(spec, e) for e in eps_list]
    n, E = x.shape[0], len(eps_list)
    dev = model_device(model, x.device)
    adv_correct = torch.empty(E, n, dtype=torch.bool)
    clean_correct = torch.empty(n, dtype=torch.bool)
    norms = torch.empty(E, n, dtype=torch.float64)
    advs: list[torch.Tensor] = []
    native = spec.backend == "native" and spec.family is not None  # the projected-gradient loop, eps per example
    fgsm_fast = native and specs[0].family == "fgsm" and not specs[0].random_start
    bar = tqdm(total=(n + batch_size - 1) // batch_size, disable=not progress, desc=f"eps sweep {spec.name}")
    try:
        with eval_mode(model):
            for i in range(0, n, batch_size):
                xb, yb = x[i : i + batch_size].to(dev).detach(), y[i : i + batch_size].to(dev)
                b = xb.shape[0]
                with torch.no_grad():
                    clean_logits = model(xb)
                clean_correct[i : i + b] = (clean_logits.argmax(1) == yb).cpu()
                targets = None
                if spec.targeted:
                    gen = torch.Generator(device=dev).manual_seed(spec.seed)
                    targets = make_targets(clean_logits, yb, spec.target, gen)
                eps_vec = torch.tensor(eps_list, dtype=xb.dtype, device=dev).repeat_interleave(b)
                xs = xb.repeat(E, *([1] * (xb.dim() - 1)))
                if fgsm_fast:
                    xg = xb.clone().requires_grad_(True)
                    with torch.enable_grad():
                        obj = attack_loss(model(xg), yb, specs[0].loss or "ce", targets)
                        g = input_gradient(obj, xg)
                    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
                    d = step_direction(g, spec.threat_model).repeat(E, *([1] * (xb.dim() - 1)))
                    ev = eps_vec.view(-1, *([1] * (xb.dim() - 1)))
                    x_adv = project_onto_ball(xs, xs + ev * d, ev, spec.threat_model)
                elif native:
                    steps_vec = torch.tensor([s.step_size for s in specs], dtype=xb.dtype, device=dev)
                    x_adv = run_native(
                        model, xs, yb.repeat(E), specs[0],
                        targets.repeat(E) if targets is not None else None,
                        eps=eps_vec, step_size=steps_vec.repeat_interleave(b),
                    )
                else:
                    x_adv = torch.cat([run_attack(model, xb, yb, s, targets=targets) for s in specs])
                check_adversarial(x_adv, xs, eps_vec, spec.threat_model)
                with torch.no_grad():
                    pred = model(x_adv).argmax(1)
                adv_correct[:, i : i + b] = (pred == yb.repeat(E)).view(E, b).cpu()
                norms[:, i : i + b] = perturbation_norms(x_adv, xs, spec.threat_model).double().view(E, b).cpu()
                if return_adv:
                    advs.append(x_adv.view(E, b, *xb.shape[1:]).cpu())
                bar.update(1)
    finally:
        bar.close()
    return SweepResult(
        attack=spec.label,
        spec=spec.model_dump(mode="json"),
        eps=eps_list,
        clean_correct=clean_correct,
        adv_correct=adv_correct,
        norms=norms,
        x_adv=torch.cat(advs, dim=1) if return_adv else None,
    )

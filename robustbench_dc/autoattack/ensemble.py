"""AutoAttack as published: Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an
Ensemble of Diverse Parameter-free Attacks", ICML 2020 (reference code: fra31/auto-attack).

Versions (L-inf and L2):

=========  ==================================================================================
standard   APGD-CE (100 iterations, 1 restart), APGD-T (targeted DLR, 100 iterations, the
           9 classes with the highest clean logits after the top one), FAB-T (100 iterations,
           9 target classes), Square (5,000 queries, p_init 0.8)
rand       APGD-CE and APGD-DLR, 100 iterations each, gradients averaged over 20 passes (EOT),
           for randomized models
=========  ==================================================================================

Each component runs only on the examples that are still correctly classified after the
previous ones (clean errors are never attacked), and the robust accuracy is the per-example
worst case over the components. The number of target classes follows the model:
``min(9, K - 1)`` for K classes, never a hard-coded 10; APGD-T needs K >= 4.

Every component is native: APGD-CE, APGD-T and APGD-DLR are the suite's APGD
(:mod:`~robustbench_dc.attacks.apgd`), FAB-T its FAB (:mod:`~robustbench_dc.autoattack.fab`, at
AutoAttack's budget: 100 iterations per target, 9 targets, an example leaving the batch once it is
broken within ``eps``) and Square its Square Attack (:mod:`~robustbench_dc.autoattack.square`,
5,000 queries, ``p_init`` 0.8, AutoAttack's schedule of ``p``). Each runs with the model in attack
mode (batch norms folded, parameters frozen, channels-last where it pays), records its iterates in
the trace and has its returned points checked (:func:`~robustbench_dc.attacks.checks.check_adversarial`).
torchattacks' FAB and Square stay reachable by name (``AttackSpec(name="fab", backend="torchattacks")``);
Croce & Hein's own code runs beside the suite's through :mod:`robustbench_dc.evaluation.reference`.

:func:`autoattack` returns the adversarial inputs (the clean input where every component
failed, as AutoAttack does) and the per-component breakdown that AutoAttack's own log prints:
for each component its budget and the robust accuracy after it.

Example::

    >>> x_adv, parts = autoattack(model, x, y, eps=8 / 255)
    >>> [(p["component"], p["robust"]) for p in parts]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from robustbench_dc.attacks.apgd import apgd, check_dlr_classes, default_n_target_classes
from robustbench_dc.attacks.checks import check_adversarial
from robustbench_dc.attacks.native import attack_mode
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.attacks.registry import register_attack
from robustbench_dc.attacks.spec import AttackSpec
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.autoattack.fab import fab
from robustbench_dc.autoattack.square import square

__all__ = ["autoattack", "run_ensemble", "apgd_runner", "Component", "COMPONENTS", "VERSIONS", "AUTOATTACK_VERSIONS"]

#: AutoAttack versions the suite implements (Croce & Hein, ICML 2020).
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "rand")

#: (model, x, y, eps, threat_model, seed, n_classes, trace) -> adversarial inputs
Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, str, int, int, "TraceView | None"], torch.Tensor]

#: Iterations of each gradient component (AutoAttack's budget; malt's components use it too).
STEPS = 100
_SQUARE_QUERIES = 5000
_SQUARE_P_INIT = 0.8
_EOT_RAND = 20


@dataclass(frozen=True)
class Component:
    """One attack of the ensemble: its name in AutoAttack's log, backend, budget and runner."""

    name: str
    backend: str
    run: Runner
    budget: Callable[[int], dict[str, Any]]


def apgd_runner(loss: str, targeted: bool, eot_iter: int = 1, n_targets: int | None = None,
                target_order: str = "logits") -> Runner:
    """A component running the suite's APGD at AutoAttack's budget (100 iterations, 1 restart); APGD-T
    on ``min(n_targets, K - 1)`` target classes (None: AutoAttack's ``min(9, K - 1)``) in ``target_order``."""
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, threat_model: str, seed: int,
            n_classes: int, trace: TraceView | None) -> torch.Tensor:
        n_t = None if n_targets is None else min(n_targets, n_classes - 1)
        return apgd(model, x, y, eps, steps=STEPS, threat_model=threat_model, restarts=1, loss=loss,
                    targeted=targeted, n_target_classes=n_t, eot_iter=eot_iter, seed=seed, trace=trace,
                    target_order=target_order)
    return run


def _fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, threat_model: str, seed: int,
           n_classes: int, trace: TraceView | None) -> torch.Tensor:
    return fab(model, x, y, threat_model=threat_model, steps=STEPS, restarts=1, targeted=True,
               n_target_classes=default_n_target_classes(n_classes), eps=eps, seed=seed, trace=trace)


def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, threat_model: str, seed: int,
            n_classes: int, trace: TraceView | None) -> torch.Tensor:
    return square(model, x, y, eps, threat_model=threat_model, queries=_SQUARE_QUERIES, p_init=_SQUARE_P_INIT,
                  seed=seed, trace=trace)


#: The components, by the names AutoAttack's log uses.
COMPONENTS: dict[str, Component] = {
    "apgd-ce": Component("apgd-ce", "native", apgd_runner("ce", False),
                         lambda k: {"iterations": STEPS, "restarts": 1}),
    "apgd-t": Component("apgd-t", "native", apgd_runner("dlr", True),
                        lambda k: {"iterations": STEPS, "restarts": 1,
                                   "target_classes": default_n_target_classes(k)}),
    "fab-t": Component("fab-t", "native", _fab_t,
                       lambda k: {"iterations": STEPS, "restarts": 1,
                                  "target_classes": default_n_target_classes(k)}),
    "square": Component("square", "native", _square,
                        lambda k: {"queries": _SQUARE_QUERIES, "p_init": _SQUARE_P_INIT, "restarts": 1}),
    "apgd-ce-eot": Component("apgd-ce", "native", apgd_runner("ce", False, _EOT_RAND),
                             lambda k: {"iterations": STEPS, "restarts": 1, "eot_iter": _EOT_RAND}),
    "apgd-dlr-eot": Component("apgd-dlr", "native", apgd_runner("dlr", False, _EOT_RAND),
                              lambda k: {"iterations": STEPS, "restarts": 1, "eot_iter": _EOT_RAND}),
}

#: The components of each version, in the order they run.
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce-eot", "apgd-dlr-eot"),
}


def _check_classes(version: str, n_classes: int) -> None:
    if version == "standard":
        check_dlr_classes(n_classes, True, "AutoAttack's APGD-T")
    else:
        check_dlr_classes(n_classes, False, "AutoAttack's APGD-DLR")


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    threat_model: str = "linf",
    version: str = "standard",
    seed: int = 0,
    trace: TraceView | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Run AutoAttack ``version`` on one batch.

    Args:
        model (nn.Module): (N, C, H, W) inputs in [0, 1] -> (N, K) logits.
        x (Tensor): (N, C, H, W) clean inputs. y (Tensor): (N,) labels.
        eps (float): the budget. threat_model (str): ``"linf"`` (default) or ``"l2"``.
        version (str): ``"standard"`` (default) or ``"rand"``.
        seed (int): seed of every component's randomness. Default 0.
        trace (TraceView | None): records the iterates of every component, one segment per
            run (:mod:`~robustbench_dc.attacks.trace`). Default None.

    Returns:
        (Tensor, list[dict]): adversarial inputs (N, C, H, W), and per component, in order:
        ``component``, ``backend``, ``budget``, ``attacked`` (examples it ran on), ``robust``
        (examples still correctly classified after it, of the N), ``seconds`` and the
        ``forward_passes`` / ``backward_passes`` it cost (examples x passes). The first
        entry, component ``clean``, counts the correctly classified clean examples.
    """
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"version: must be one of {', '.join(AUTOATTACK_VERSIONS)}, got {version!r}")
    return run_ensemble(model, x, y, eps, [COMPONENTS[key] for key in VERSIONS[version]],
                        threat_model=threat_model, seed=seed, trace=trace,
                        check_classes=lambda k: _check_classes(version, k))


def run_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, components: list[Component], *,
                 threat_model: str = "linf", seed: int = 0, trace: TraceView | None = None,
                 check_classes: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Run ``components`` in order, each on the examples still robust after the previous ones, as
    :func:`autoattack` runs its version's (which see for what is returned); ``check_classes(K)``
    refuses a model whose number of classes the components cannot attack."""
    x, y = x.detach(), y.detach()
    x_adv = x.clone()
    eps_t = torch.tensor(eps, dtype=x.dtype, device=x.device)
    with attack_mode(model, x):  # folded once for all components (FAB and Square nest their own)
        with torch.no_grad(), _float32(x):
            clean_logits = model(x)
        n_classes = clean_logits.shape[1]
        if check_classes is not None:
            check_classes(n_classes)
        robust = clean_logits.argmax(1) == y
        parts: list[dict[str, Any]] = [{"component": "clean", "backend": None, "budget": {},
                                        "attacked": 0, "robust": int(robust.sum()), "seconds": 0.0,
                                        "forward_passes": x.shape[0], "backward_passes": 0}]
        for comp in components:
            _run_component(comp, model, x, y, x_adv, robust, eps, eps_t, threat_model, seed, n_classes, parts, trace)
    return x_adv, parts


def _check_spec(spec: AttackSpec) -> None:
    """A native ``autoattack`` spec: a known version, and none of the budgets its version fixes."""
    version = spec.params.get("version", "standard")
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"params.version: must be one of {', '.join(map(repr, AUTOATTACK_VERSIONS))}, "
                         f"got {version!r}")
    fixed = spec.version_fixed_field()
    if fixed is not None:
        raise ValueError(f"{fixed[0]}: AutoAttack's budgets and losses are fixed by its version "
                         f"({version!r}), got {fixed[1]!r}; use name 'apgd' for a configurable APGD")


#: Iterations per example of each version, at most (APGD-CE + 9 x APGD-T + 9 x FAB-T + Square's 5,000
#: forward-only queries, counted as 1,000 gradient iterations), for the evaluation's ``compile="auto"``.
_WORK = {"standard": 100 + 900 + 900 + 1000, "rand": 2 * 100 * 20}


@register_attack("autoattack", params=("version",), ensemble=True, own_step_size=True, default_loss=None,
                 validate=_check_spec, work=lambda spec: _WORK[spec.version or "standard"])
def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
                   targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
                   step_size: float | torch.Tensor | None = None,
                   trace: TraceView | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Croce & Hein's AutoAttack (the standard or rand version) on a resolved spec."""
    if eps is not None or step_size is not None:
        raise ValueError(f"{spec.label}: AutoAttack runs at one budget (no per-example eps or step size)")
    assert spec.eps is not None
    return autoattack(model, x, y, spec.eps, threat_model=spec.threat_model, version=spec.version or "standard",
                      seed=spec.seed, trace=trace)


def _float32(x: torch.Tensor) -> torch.autocast:
    """No autocast: the ensemble's bookkeeping (clean predictions, which points a component broke)
    runs in float32 whatever precision the components craft in."""
    return torch.autocast(x.device.type, enabled=False)


def _run_component(comp: Component, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   robust: torch.Tensor, eps: float, eps_t: torch.Tensor, threat_model: str, seed: int,
                   n_classes: int, parts: list[dict[str, Any]], trace: TraceView | None = None) -> None:
    """Run one component on the still-robust examples; update ``x_adv``, ``robust`` and ``parts`` in place."""
    t0 = time.perf_counter()
    idx = robust.nonzero().squeeze(1)
    passes = PassCounter(model)
    if idx.numel():
        xs, ys = x.index_select(0, idx), y.index_select(0, idx)
        with passes:
            adv = comp.run(model, xs, ys, eps, threat_model, seed, n_classes,
                           None if trace is None else trace.view(idx))
        check_adversarial(adv, xs, eps_t, threat_model)
        with torch.no_grad(), _float32(x):  # which points are broken is decided in float32, also when
            broken = model(adv).argmax(1) != ys  # the components craft under bfloat16 autocast
        rows = idx[broken]
        x_adv[rows] = adv[broken].to(x_adv.dtype)
        robust[rows] = False
    parts.append({"component": comp.name, "backend": comp.backend, "budget": comp.budget(n_classes),
                  "attacked": int(idx.numel()), "robust": int(robust.sum()),
                  "seconds": time.perf_counter() - t0, "forward_passes": passes.forward,
                  "backward_passes": passes.backward})


def _check_square_spec(spec: AttackSpec) -> None:
    if spec.targeted:
        raise ValueError("targeted: the native Square Attack is untargeted (AutoAttack's); "
                         "use backend 'torchattacks' for a targeted Square")
    if spec.restarts != 1:
        raise ValueError(f"restarts: the native Square Attack runs once (AutoAttack's), got {spec.restarts}")


@register_attack("square", params=("p_init",), iterative=False, default_steps=_SQUARE_QUERIES, default_loss="margin",
                 own_step_size=True, validate=_check_square_spec)
def run_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
               targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
               step_size: float | torch.Tensor | None = None, trace: TraceView | None = None) -> torch.Tensor:
    """The Square Attack on a resolved spec: ``steps`` queries (default 5,000), ``params.p_init`` (0.8)."""
    if eps is not None or step_size is not None:
        raise ValueError(f"{spec.label}: the Square Attack runs at one budget (no per-example eps or step size)")
    assert spec.eps is not None and spec.steps is not None
    return square(model, x, y, spec.eps, threat_model=spec.threat_model, queries=spec.steps,
                  p_init=float(spec.params.get("p_init", _SQUARE_P_INIT)), seed=spec.seed, trace=trace)

"""White-box evaluation of one model against a list of attacks, with masking flags.

Every adversarial batch comes from :func:`~robustbench_dc.attacks.attack.run_attack`
and is therefore constraint-checked before it is scored. The gradient-masking
diagnostics of :mod:`~robustbench_dc.evaluation.masking` run with every evaluation
(``masking=False`` turns them off) and are stored in :attr:`EvalResult.flags`.

Example::

    >>> res = evaluate_whitebox(model, x, y, [load_attack_config("fgsm-linf"),
    ...                                       load_attack_config("pgd-linf")], dataset="cifar10")
    >>> res.to_dict()["worst"]["linf-eps0.0314"]["robust_accuracy"], res.triggered
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_dc.attacks.attack import run_attack_detailed, validate_inputs
from robustbench_dc.attacks.backends import check_installed
from robustbench_dc.attacks.checks import perturbation_norms
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.attacks.registry import native_attack
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.evaluation.binarization import (
    BinarizationConfig,
    Readouts,
    binarization_test,
    build_readouts,
    supports_binarization,
)
from robustbench_dc.evaluation.checks import check_finite_logits
from robustbench_dc.evaluation.fingerprints import batched_logits
from robustbench_dc.evaluation.masking import (
    MaskingConfig,
    MaskingFlag,
    diagnose_masking,
    flag_transfer_beats_whitebox,
)
from robustbench_dc.evaluation.metrics import AttackResult, attack_result, prefix, worst_case
from robustbench_dc.operators import compiled_responses, resolve_compile

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from robustbench_dc.evaluation.transfer import TransferResult

__all__ = ["EvalResult", "evaluate_whitebox", "worst_cases", "merge_breakdowns", "group_key", "CRAFT_PRECISIONS",
           "crafting_precision"]

#: Precisions in which adversarial examples can be crafted (scoring is always float32).
CRAFT_PRECISIONS = ("fp32", "bf16")


def crafting_precision(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """The context an attack crafts its examples in: ``"fp32"`` (nothing) or ``"bf16"`` (bfloat16
    autocast on ``device``: the model's forward and backward passes in bfloat16, the attack's own
    arithmetic -- steps, projections, clipping -- in float32)."""
    if precision not in CRAFT_PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(map(repr, CRAFT_PRECISIONS))}, got {precision!r}")
    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def group_key(threat_model: str, eps: float | None) -> str:
    """Key of a (threat model, eps) group, e.g. ``"linf-eps0.0314"``."""
    return f"{threat_model}-eps{eps:.4f}" if eps is not None else f"{threat_model}-eps?"


@dataclass
class EvalResult:
    """White-box evaluation of one model.

    Attributes:
        model (str): model name.
        n (int): number of examples (the first n of the split, in order).
        clean_accuracy (float): fraction correct without attack.
        results (list[AttackResult]): one per attack, in the given order.
        worst (dict[str, AttackResult]): per-example worst case per (threat model, eps)
            group, keyed by :func:`group_key`.
        flags (list[MaskingFlag]): masking diagnostics (empty if ``masking=False``).
    """

    model: str
    n: int
    clean_accuracy: float
    results: list[AttackResult]
    worst: dict[str, AttackResult]
    flags: list[MaskingFlag] = field(default_factory=list)

    def __getitem__(self, attack: str) -> AttackResult:
        for r in self.results:
            if r.attack == attack:
                return r
        raise KeyError(f"attack {attack!r} not evaluated; have: {[r.attack for r in self.results]}")

    def flag(self, name: str) -> MaskingFlag:
        """The flag called ``name``."""
        for f in self.flags:
            if f.name == name:
                return f
        raise KeyError(f"flag {name!r} not computed; have: {[f.name for f in self.flags]}")

    @property
    def triggered(self) -> list[str]:
        """Names of the triggered masking flags."""
        return [f.name for f in self.flags if f.triggered]

    def add_transfer(self, transfer: TransferResult | list[AttackResult], tol: float = 0.01) -> MaskingFlag:
        """(Re)compute the ``transfer-beats-whitebox`` flag from transfer results
        whose target is this model; returns the flag."""
        new = flag_transfer_beats_whitebox(self.results, _cells_targeting(transfer, self.model), tol)
        if any(f.name == new.name for f in self.flags):
            self.flags = [new if f.name == new.name else f for f in self.flags]
        else:
            self.flags.append(new)
        return new

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return {
            "model": self.model,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "results": [r.to_dict() for r in self.results],
            "worst": {k: v.to_dict() for k, v in self.worst.items()},
            "flags": [f.to_dict() for f in self.flags],
        }


#: Smallest attack job (attacked examples x attack iterations, summed over the attack set)
#: for which ``compile="auto"`` compiles the decoupled responses (10-30 s per operator).
COMPILE_MIN_ATTACK_WORK = 100_000


def attack_work(specs: list[AttackSpec], n: int) -> int:
    """Attacked examples x iterations (steps x restarts, or what an ensemble declares: its registry
    entry's ``work``) summed over ``specs`` (resolved)."""
    def per_example(s: AttackSpec) -> int:
        attack = s.native
        if attack is not None and attack.ensemble and attack.work is None:
            attack = native_attack("autoattack")  # an ensemble that declares no work counts as AutoAttack
        return attack.work(s) if attack is not None and attack.work is not None else (s.steps or 1) * s.restarts
    return n * sum(per_example(s) for s in specs)


def _cells_targeting(transfer: TransferResult | list[AttackResult], model: str) -> list[AttackResult]:
    """The transfer cells (a :class:`TransferResult` or its cells) whose target is ``model``."""
    cells = transfer if isinstance(transfer, list) else transfer.cells
    return [c for c in cells if c.model == model]


def _worst_on_shared(results: list[AttackResult], name: str) -> AttackResult:
    """The per-example worst case over the examples every attack of ``results`` ran on."""
    shared = min(r.n for r in results)
    return worst_case([prefix(r, shared) for r in results], name=name)


def evaluate_whitebox(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[AttackSpec],
    batch_size: int = 256,
    progress: bool = False,
    *,
    dataset: str | None = None,
    model_name: str = "model",
    masking: bool | MaskingConfig = True,
    transfer: TransferResult | list[AttackResult] | None = None,
    compile: bool | str = "auto",
    n_examples: list[int | None] | None = None,
    precision: str | list[str] = "fp32",
    binarization: bool | BinarizationConfig = False,
) -> EvalResult:
    """Evaluate ``model`` on (x, y) under each attack, plus masking diagnostics.

    Args:
        model (nn.Module): (N, C, H, W) in [0, 1] -> (N, K) logits; eval mode is used
            and the previous mode restored.
        x (Tensor): (N, C, H, W) clean inputs in [0, 1] (the first N test examples).
        y (Tensor): (N,) int64 labels.
        attacks (list[AttackSpec]): the attack set (eps=None -> ``dataset``'s standard eps).
        batch_size (int): attack batch size. Default 256.
        progress (bool): tqdm bar over attacks x batches. Default False.
        dataset (str | None): dataset name for standard / large eps. Default None.
        model_name (str): name stored in the results. Default ``"model"``.
        masking (bool | MaskingConfig): run the diagnostics (with this config). Default True.
        transfer (TransferResult | list[AttackResult] | None): transfer results whose
            target is ``model_name``, for the ``transfer-beats-whitebox`` flag. Default None.
        compile (bool | str): craft the adversarial examples with compiled decoupled
            responses (:func:`robustbench_dc.operators.compiled_responses`; same values).
            ``"auto"`` (default): when the attack set's work, examples x iterations, is at
            least ``COMPILE_MIN_ATTACK_WORK`` and ``torch.compile`` works here. Scoring, the
            clean pass and the masking diagnostics' gradient checks run eagerly.
        n_examples (list[int | None] | None): per attack, run it on the first that many
            examples only (None: all); the worst case and the masking diagnostics use the
            prefix every attack ran on. Default None (every attack on all examples).
        precision (str | list[str]): the precision the adversarial examples are crafted in,
            one for all attacks or one per attack: ``"fp32"`` (default) or ``"bf16"``
            (:func:`crafting_precision`). Whatever the crafting precision, every returned
            point is checked against the budget and scored in float32, so a point counts as
            broken only if it fools the float32 model; recorded per result. bfloat16 crafting
            is for measurements, not for reported numbers: on CIFAR-10 CNN-9s it broke fewer
            points than float32 crafting (AutoAttack and PGD-20x5, 1-2 of 100 examples, never
            more) and was at most 1.5x faster (benchmarks/attack_precision.py), so protocols
            and ``rbdc evaluate`` craft in float32.

    Returns:
        EvalResult.

    Example::

        >>> res = evaluate_whitebox(model, x, y, [AttackSpec(name="pgd")], dataset="mnist")
        >>> res.results[0].robust_accuracy, res.triggered
    """
    validate_inputs(x, y)
    dev = model_device(model, x.device)
    n = x.shape[0]
    specs, sizes, precisions = _attack_plan(attacks, dataset, n, n_examples, precision, dev)
    compiled = resolve_compile(compile, model, dev.type, sum(attack_work([s], k) for s, k in zip(specs, sizes)),
                               COMPILE_MIN_ATTACK_WORK)
    compiling = (lambda: compiled_responses(model)) if compiled else contextlib.nullcontext
    with eval_mode(model):
        clean_logits = batched_logits(model, x.to(dev), batch_size)
    check_finite_logits(clean_logits, model_name)  # a model that is not a function is refused before any attack
    clean_correct = clean_logits.argmax(1).cpu() == y.cpu()
    cfg = None if masking is False else (masking if isinstance(masking, MaskingConfig) else MaskingConfig())
    results, traces, adversarial = _craft(model, x, y, specs, sizes, precisions, clean_correct,
                                          model_name=model_name, batch_size=batch_size, progress=progress,
                                          compiling=compiling, record=cfg is not None,
                                          keep=0 if cfg is None else cfg.max_examples)
    if binarization is not False:
        _binarization(model, x, specs, results, binarization, dataset, batch_size, compiling)
    flags: list[MaskingFlag] = []
    if cfg is not None:
        tr_cells = [] if transfer is None else _cells_targeting(transfer, model_name)
        shared = min(sizes)
        flags = diagnose_masking(
            model, x[:shared], y[:shared], [prefix(r, shared) for r in results], dataset=dataset, config=cfg,
            transfer=[prefix(c, shared) for c in tr_cells], batch_size=batch_size, traces=traces,
            adversarial=adversarial, attack_context=compiling,
        )
    return EvalResult(
        model=model_name,
        n=n,
        clean_accuracy=int(clean_correct.sum()) / n if n else float("nan"),  # exact, like the per-attack numbers
        results=results,
        worst=worst_cases(results),
        flags=flags,
    )


def _attack_plan(attacks: list[AttackSpec], dataset: str | None, n: int, n_examples: list[int | None] | None,
                 precision: str | list[str], dev: torch.device) -> tuple[list[AttackSpec], list[int], list[str]]:
    """The attack set resolved for ``dataset`` (no two with one label), each attack's number of
    examples (a prefix of the ``n``) and its crafting precision (validated)."""
    if not attacks:
        raise ValueError("attacks: need at least one AttackSpec")
    specs = [s.resolve(dataset) for s in attacks]
    for s in specs:
        check_installed(s)  # before the first attack, not after the others ran
    labels = [s.label for s in specs]
    dup = {lab for lab in labels if labels.count(lab) > 1}
    if dup:
        raise AttackConfigError(f"attacks: duplicate attack labels {sorted(dup)}")
    if n_examples is not None and len(n_examples) != len(specs):
        raise ValueError(f"n_examples: one entry per attack ({len(specs)}), got {len(n_examples)}")
    sizes = [n if k is None else min(int(k), n) for k in (n_examples or [None] * len(specs))]
    if any(k < 1 for k in sizes):
        raise ValueError(f"n_examples: every entry must be >= 1 or None, got {n_examples}")
    precisions = [precision] * len(specs) if isinstance(precision, str) else list(precision)
    if len(precisions) != len(specs):
        raise ValueError(f"precision: one entry per attack ({len(specs)}), got {len(precisions)}")
    for p in precisions:
        crafting_precision(p, dev)  # validates
    return specs, sizes, precisions


def _craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, specs: list[AttackSpec], sizes: list[int],
           precisions: list[str], clean_correct: torch.Tensor, *, model_name: str, batch_size: int, progress: bool,
           compiling: Callable[[], contextlib.AbstractContextManager[Any]], record: bool, keep: int,
           ) -> tuple[list[AttackResult], dict[str, AttackTrace], dict[str, torch.Tensor]]:
    """Craft every attack batch by batch and score it in float32: the results, and (``record``: for the
    diagnostics) each attack's recorded path and its first ``keep`` returned points."""
    dev = model_device(model, x.device)
    results: list[AttackResult] = []
    traces: dict[str, AttackTrace] = {}
    adversarial: dict[str, torch.Tensor] = {}
    bar = tqdm(total=sum((k + batch_size - 1) // batch_size for k in sizes), disable=not progress,
               desc=f"white-box {model_name}")
    try:
        for spec, n_spec, prec in zip(specs, sizes, precisions):
            bar.set_postfix_str(spec.label)
            t0 = time.perf_counter()
            adv_correct = torch.empty(n_spec, dtype=torch.bool)
            norms = torch.empty(n_spec, dtype=torch.float64)
            parts: list[list[dict[str, Any]]] = []
            trace = AttackTrace(n_spec) if record else None
            kept: list[torch.Tensor] = []
            passes = PassCounter(model)
            for i in range(0, n_spec, batch_size):
                stop = min(i + batch_size, n_spec)
                xb, yb = x[i:stop].to(dev), y[i:stop].to(dev)
                view = None if trace is None else trace.view(torch.arange(i, stop))
                with compiling(), crafting_precision(prec, dev), passes:
                    x_adv, batch_parts = run_attack_detailed(model, xb, yb, spec, trace=view)
                if i < keep:
                    kept.append(x_adv[:keep - i].detach().cpu())
                if batch_parts is not None:
                    parts.append(batch_parts)
                with torch.no_grad(), eval_mode(model):
                    adv_correct[i:stop] = (model(x_adv).argmax(1) == yb).cpu()
                norms[i:stop] = perturbation_norms(x_adv, xb, spec.threat_model).double().cpu()
                bar.update(1)
            result = attack_result(model_name, spec, clean_correct[:n_spec], adv_correct, norms,
                                   seconds=time.perf_counter() - t0,
                                   components=merge_breakdowns(parts, n_spec) or None, precision=prec)
            result.forward_passes, result.backward_passes = passes.forward, passes.backward
            results.append(result)
            if trace is not None:
                traces[spec.label], adversarial[spec.label] = trace, torch.cat(kept)
    finally:
        bar.close()
    return results, traces, adversarial


def merge_breakdowns(batches: list[list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    """Sum per-batch breakdowns of :func:`autoattack` over the ``n`` examples of an evaluation and add
    each component's ``robust_accuracy`` (robust examples after it / n), as AutoAttack's log does."""
    if not batches:
        return []
    out = []
    for j, first in enumerate(batches[0]):
        rows = [b[j] for b in batches]
        robust = sum(r["robust"] for r in rows)
        out.append({"component": first["component"], "backend": first["backend"], "budget": first["budget"],
                    "attacked": sum(r["attacked"] for r in rows), "robust": robust,
                    "robust_accuracy": robust / n if n else float("nan"),
                    "seconds": sum(r["seconds"] for r in rows),
                    "forward_passes": sum(r.get("forward_passes", 0) for r in rows),
                    "backward_passes": sum(r.get("backward_passes", 0) for r in rows)})
    return out


def worst_cases(results: list[AttackResult]) -> dict[str, AttackResult]:
    """The per-example worst case over the attacks of each (threat model, eps) group, on the
    examples every attack of the group ran on."""
    groups: dict[str, list[AttackResult]] = {}
    for r in results:
        groups.setdefault(group_key(r.threat_model, r.eps), []).append(r)
    return {k: _worst_on_shared(v, name=f"worst-case[{k}]") for k, v in groups.items()}


def _binarization(model: nn.Module, x: torch.Tensor, specs: list[AttackSpec],
                  results: list[AttackResult], config: bool | BinarizationConfig, dataset: str | None,
                  batch_size: int, compiling: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
    """The binarization test of every supported attack, stored with its result; the attacks of one
    budget share its construction (the readouts and the noise baseline)."""
    cfg = config if isinstance(config, BinarizationConfig) else BinarizationConfig()
    built: dict[tuple[str, float], Readouts] = {}
    ran = False
    for spec, r in zip(specs, results):
        if supports_binarization(spec):
            assert spec.eps is not None
            key = (spec.threat_model, float(spec.eps))
            with compiling():
                if key not in built:
                    built[key] = build_readouts(model, x, key[1], key[0], config=cfg, batch_size=batch_size)
                r.binarization = binarization_test(model, x, spec, config=cfg, dataset=dataset, batch_size=batch_size,
                                                   readouts=built[key]).to_dict()
            ran = True
    if not ran:
        log.warning("binarization test: no attack of the set supports it (native FGSM/BIM/PGD/APGD with the "
                       "'ce' or 'margin' loss)")

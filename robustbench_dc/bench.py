"""``benchmark(model, dataset=...)``: the suite's trusted evaluation of any model in one call, with
the argument names of RobustBench's ``benchmark`` where they overlap.

Example::

    >>> from robustbench_dc import benchmark
    >>> result = benchmark(model, dataset="cifar10", threat_model="Linf", eps="8/255", n_examples=1000)
    >>> print(result)                       # clean and robust accuracy, components, diagnostics, passes
    >>> result.to_json(); result.model_info()
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from robustbench_dc._text import table
from robustbench_dc.errors import InvalidParameterError

__all__ = ["benchmark", "BenchmarkResult"]

_THREAT_MODELS = ("linf", "l2")


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` measured, with the per-example vectors (``evaluation``) behind every number.

    ``str()`` is a short table: clean and robust accuracy per attack and the per-example worst case,
    AutoAttack's components, the diagnostics that triggered, seconds and forward/backward passes.
    """

    model: str
    architecture: str
    dataset: str
    threat_model: str
    eps: float
    n: int
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    worst_case: float | None
    components: dict[str, list[dict[str, Any]]]
    triggered: list[str]
    seconds: float
    forward_passes: int
    backward_passes: int
    evaluation: Any = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the robustness curve (``minimum_norm=[...]``): :func:`~robustbench_dc.minimum_norm.evaluate.evaluate_curves`
    #: result (``curves``: threat model -> the curve's numbers; ``attacks``: each minimum-norm attack's log)
    curve: dict[str, Any] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        rows = [(r.attack, f"{100 * r.robust_accuracy:.1f}", f"{r.seconds:.1f}", r.forward_passes, r.backward_passes)
                for r in self.evaluation.results]
        lines = [f"{self.model}: {self.dataset}, first {self.n} test examples, {self.threat_model} eps {self.eps:.4g}",
                 f"clean accuracy {100 * self.clean_accuracy:.1f}%"
                 + ("" if self.worst_case is None else
                    f", robust accuracy (worst case over the attacks) {100 * self.worst_case:.1f}%"), "",
                 table(rows, ("attack", "robust %", "seconds", "forward passes", "backward passes"))]
        for label, parts in self.components.items():
            lines += ["", f"{label}, per component (robust accuracy after it):"]
            lines += [f"  {p['component']:<10} {100 * p['robust_accuracy']:.1f}%  ({p['attacked']} attacked, "
                      f"{p['seconds']:.1f} s, {p.get('forward_passes', '?')} forward / "
                      f"{p.get('backward_passes', '?')} backward passes)" for p in parts]
        if self.curve is not None:
            from robustbench_dc.minimum_norm.evaluate import curves_text

            lines += ["", curves_text(self.curve)]
        lines += ["", "diagnostics: " + (", ".join(self.triggered) + " triggered (docs/masking_flags.md)"
                                         if self.triggered else f"none of {len(self.evaluation.flags)} triggered"),
                  f"{self.seconds:.1f} s, {self.forward_passes} forward and {self.backward_passes} backward passes "
                  "(examples x passes)"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: the numbers, the per-example vectors and the provenance."""
        return {"model": self.model, "architecture": self.architecture, "dataset": self.dataset,
                "threat_model": self.threat_model, "eps": self.eps,
                "n": self.n, "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "worst_case": self.worst_case, "components": self.components, "triggered": self.triggered,
                "seconds": self.seconds, "forward_passes": self.forward_passes,
                "backward_passes": self.backward_passes, "evaluation": self.evaluation.to_dict(),
                "curve": self.curve, "provenance": self.provenance}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False, default=str)

    def model_info(self, name: str | None = None) -> dict[str, Any]:
        """RobustBench's ``model_info`` fields for this evaluation (``autoattack_acc`` only when the
        suite's AutoAttack ran), plus the suite's extras under ``robustbench_dc``."""
        from robustbench_dc.results import LeaderboardEntry
        from robustbench_dc.results.robustbench import model_info

        entry = LeaderboardEntry(
            name=name or self.model, architecture=self.architecture,
            operator="", dataset=self.dataset, threat_model=self.threat_model, eps=self.eps,
            clean_accuracy=self.clean_accuracy, robust_accuracy=dict(self.robust_accuracy),
            worst_case_robust_accuracy=self.worst_case, flags=list(self.triggered), n_test=self.n,
            protocol="benchmark()", version=str(self.provenance.get("versions", {}).get("robustbench_dc") or ""),
            components=self.components)
        info = model_info(entry)
        info["robustbench_dc"]["forward_passes"] = self.forward_passes
        info["robustbench_dc"]["backward_passes"] = self.backward_passes
        return info


def _attack_specs(attacks: str | list[Any], threat_model: str, eps: float) -> list[Any]:
    from robustbench_dc.attacks import AttackSpec, load_attack_config, native_attacks
    from robustbench_dc.attacks.spec import attack_config_dir

    names = [attacks] if isinstance(attacks, (str, AttackSpec)) else list(attacks)
    specs = []
    for a in names:
        if isinstance(a, AttackSpec):
            spec = a
        elif (attack_config_dir() / f"{a}-{threat_model}.yaml").is_file():
            # "autoattack" on L2 is the configuration "autoattack-l2", as RobustBench's threat model names it
            spec = load_attack_config(f"{a}-{threat_model}")
        elif a in native_attacks():  # a native attack without a configuration: in the benchmark's threat model
            spec = AttackSpec(name=a, threat_model=threat_model)
        else:
            spec = load_attack_config(a)
        if spec.threat_model != threat_model:
            raise InvalidParameterError(f"attacks: {spec.label} is a {spec.threat_model} attack, the threat model is "
                                        f"{threat_model}")
        specs.append(spec.model_copy(update={"eps": eps}))  # the benchmark's budget, for every attack
    return [type(s)(**s.model_dump()) for s in specs]  # validated again with the budget


def benchmark(model: nn.Module, *, dataset: str = "cifar10", threat_model: str = "Linf",
              eps: float | str | None = None, n_examples: int = 1000, attacks: str | list[Any] = "autoattack",
              batch_size: int = 500, device: str | torch.device | None = None, data_dir: str | None = None,
              progress: bool = True, masking: bool = True, model_name: str = "model",
              minimum_norm: list[str] | None = None) -> BenchmarkResult:
    """Evaluate ``model`` (any ``nn.Module`` taking [0, 1] inputs and returning logits) on the first
    ``n_examples`` test examples of ``dataset`` under ``attacks``, with every diagnostic.

    Args:
        model: the network; put in eval mode for the evaluation (its mode is restored).
        dataset: ``"cifar10"``, ``"mnist"``, ``"fashion-mnist"`` or ``"mnist-sample"``.
        threat_model: ``"Linf"`` or ``"L2"`` (RobustBench's names; lower case works too).
        eps: the budget, a number or a fraction string (``"8/255"``); default the dataset's standard
            one (L-inf 8/255 on CIFAR-10, 0.3 on MNIST; L2 0.5 on CIFAR-10).
        n_examples: the first n test examples, in order.
        attacks: ``"autoattack"`` (Croce & Hein's standard version, the default), another attack
            configuration's or native attack's name, an :class:`~robustbench_dc.attacks.AttackSpec`,
            or a list of them; every one runs at ``eps`` in ``threat_model``.
        batch_size: attack batch size.
        device: where to run (default: the model's device).
        data_dir: folder holding the dataset files (default: ``$RBDC_DATA``, the cache, a download).
        progress: a progress bar.
        masking: run the gradient-masking flags and attack-failure indicators.
        model_name: the model's name in the result.
        minimum_norm: minimum-norm attacks (``["fmn", "fab"]``; also ``fmn-t``, ``fab-t``) whose per-example
            norms, with the fixed-eps attacks', give the robustness curve on [0, eps] (``result.curve``):
            the median minimal perturbation and the area under the curve with 95% bootstrap intervals.
            Default None: no curve.

    Returns:
        BenchmarkResult: ``print()`` it; ``to_json()``; ``model_info()`` for RobustBench.

    Raises:
        InvalidParameterError: an unknown threat model, an attack of another threat model.
        NonFiniteModelError: the model's logits on the clean examples are NaN or infinite.
    """
    from robustbench_dc.attacks import STANDARD_EPS
    from robustbench_dc.attacks.spec import canonical_dataset
    from robustbench_dc.data import load_dataset
    from robustbench_dc.evaluation import evaluate_whitebox
    from robustbench_dc.params import parse_eps
    from robustbench_dc.provenance import provenance

    tm = str(threat_model).lower()
    if tm not in _THREAT_MODELS:
        raise InvalidParameterError(f"threat_model: 'Linf' or 'L2', got {threat_model!r}")
    base = canonical_dataset(dataset)
    budget = parse_eps(eps) if eps is not None else STANDARD_EPS.get(base, {}).get(tm)
    if budget is None or isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise InvalidParameterError(f"eps: a budget > 0 (a number or a fraction like 8/255), got {eps!r}"
                                    if eps is not None else f"eps: {dataset} has no standard {threat_model} budget; "
                                                            "pass eps")
    specs = _attack_specs(attacks, tm, float(budget))
    if device is not None:
        model = model.to(device)
    data = load_dataset(dataset, "test", n=n_examples, data_dir=data_dir)
    x, y = data.to_float(), data.labels
    t0 = time.perf_counter()
    res = evaluate_whitebox(model, x, y, specs, batch_size=batch_size, progress=progress, dataset=base,
                            model_name=model_name, masking=masking)
    curve = None
    if minimum_norm:
        from robustbench_dc.minimum_norm.evaluate import evaluate_curves

        out = evaluate_curves(model, x, y, list(minimum_norm), {tm: float(budget)},
                              fixed=[r.to_dict() for r in res.results], batch_size=batch_size)
        curve = out
    seconds = time.perf_counter() - t0
    worst = [w.robust_accuracy for w in res.worst.values()]
    prov = provenance(command=None, seed=0, data_sha256=data.checksum)
    prov.update({"dataset": dataset, "n_examples": len(y), "finished": datetime.now(timezone.utc).isoformat()})
    return BenchmarkResult(
        model=model_name, architecture=type(model).__name__, dataset=dataset, threat_model=tm, eps=float(budget), n=res.n,
        clean_accuracy=res.clean_accuracy, robust_accuracy={r.attack: r.robust_accuracy for r in res.results},
        worst_case=min(worst) if worst and all(math.isfinite(w) for w in worst) else None,
        components={r.attack: r.components for r in res.results if r.components},
        triggered=list(res.triggered), seconds=seconds,
        forward_passes=sum(r.forward_passes or 0 for r in res.results)
        + sum(a["forward_passes"] for a in (curve or {}).get("attacks", {}).values()),
        backward_passes=sum(r.backward_passes or 0 for r in res.results)
        + sum(a["backward_passes"] for a in (curve or {}).get("attacks", {}).values()),
        evaluation=res, provenance=prov, curve=curve)

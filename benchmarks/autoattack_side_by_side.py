#!/usr/bin/env python
"""The suite's AutoAttack beside Croce & Hein's original and torchattacks' components: same model,
same first n test images, same machine, one process.

Three implementations of AutoAttack's standard version (L-inf; APGD-CE, APGD-T, FAB-T, Square at
the published budgets, each on the examples the previous ones left robust), run one after the
other on the same model:

* ``suite``: ``evaluate_whitebox(model, x, y, [AttackSpec(name="autoattack", eps)])``, the way the
  suite evaluates (every component native; compiled decoupled responses where the suite compiles
  them, the compilation included in the time);
* ``original``: ``pyautoattack.AutoAttack(model, version="standard", seed=0)
  .run_standard_evaluation(x, y, batch_size=n)``, Croce & Hein's code as RobustBench runs it; its
  components are timed and their passes counted by wrapping the ``perturb`` method of each attack
  object (the sanity checks it makes before attacking count in its total, not in a component);
* ``torchattacks``: ``APGD(loss="ce")``, ``APGDT``, ``FAB(multi_targeted=True)`` and ``Square``
  with AutoAttack's budgets given explicitly (100 iterations, 9 target classes, 5,000 queries,
  ``p_init`` 0.8), each on the examples still robust.

Per implementation: robust accuracy, seconds and forward / backward passes (examples x passes,
:class:`~robustbench_dc.attacks.passes.PassCounter`) per component and in total, the seconds per
pass (which separates fewer passes from cheaper ones), and per example whether it stayed robust;
then the agreement of each with the suite (examples robust under one only) and the time ratios
``original / suite`` and ``torchattacks / suite``.

Usage (a finished Tables 7-8 run; or ``--card NAME --dataset D`` for a model card)::

    RBDC_DATA=../shared/data python -m benchmarks.autoattack_side_by_side --run runs/table7-8-cpu \\
        --models baseline-at tanhconv-at --n 500 --out benchmarks/results/autoattack-side-by-side.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustbench_dc.attacks import AttackSpec
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.data import dataset_info, load_dataset
from robustbench_dc.evaluation import evaluate_whitebox
from robustbench_dc.evaluation.metrics import AttackResult
from robustbench_dc.provenance import package_versions, provenance
from robustbench_dc.runtime import machine_info
from robustbench_dc.zoo import resolve_model

IMPLEMENTATIONS = ("suite", "original", "torchattacks")
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


def _robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def run_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, dataset: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = evaluate_whitebox(model, x, y, [AttackSpec(name="autoattack", eps=eps, seed=0)], batch_size=x.shape[0],
                            dataset=dataset, masking=False)
    seconds = time.perf_counter() - t0
    (r,) = res.results
    return {"robust": [bool(v) for v in r.robust_correct], "seconds": seconds, "components": component_log(r),
            "forward_passes": r.forward_passes, "backward_passes": r.backward_passes}


def component_log(r: AttackResult) -> list[dict[str, Any]]:
    """An ensemble result's components (without the clean entry): examples attacked, robust after it,
    seconds and passes."""
    return [{k: p[k] for k in ("component", "attacked", "robust", "seconds", "forward_passes", "backward_passes")}
            for p in r.components or [] if p["component"] != "clean"]


def robust_only(a: list[bool], b: list[bool]) -> tuple[list[int], list[int]]:
    """The examples robust under ``a`` only and under ``b`` only (per-example robust flags)."""
    return ([i for i, (u, v) in enumerate(zip(a, b)) if u and not v],
            [i for i, (u, v) in enumerate(zip(a, b)) if v and not u])


class _Timed:
    """Wraps an attack object's ``perturb``: time, passes, examples attacked and broken per call."""

    def __init__(self, name: str, attack: Any, model: nn.Module, log: list[dict[str, Any]]) -> None:
        self.name, self.inner, self.model, self.log = name, attack.perturb, model, log

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with PassCounter(self.model) as passes:
            adv = self.inner(x, y)
        seconds = time.perf_counter() - t0
        broken = int((~_robust(self.model, adv, y)).sum())
        self.log.append({"component": self.name, "attacked": int(x.shape[0]), "broken": broken, "seconds": seconds,
                         "forward_passes": passes.forward, "backward_passes": passes.backward})
        return adv


def run_original(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device=x.device)
    adversary.verbose = False
    log: list[dict[str, Any]] = []
    for name, attr in (("apgd-ce", "apgd"), ("apgd-t", "apgd_targeted"), ("fab-t", "fab"), ("square", "square")):
        attack = getattr(adversary, attr)
        attack.perturb = _Timed(name, attack, model, log)
    t0 = time.perf_counter()
    with PassCounter(model) as passes:
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
    seconds = time.perf_counter() - t0
    robust = _robust(model, x_adv, y) & _robust(model, x, y)
    return {"robust": robust.tolist(), "seconds": seconds, "components": _with_robust(log, int(_robust(model, x, y).sum())),
            "forward_passes": passes.forward, "backward_passes": passes.backward}


def _with_robust(log: list[dict[str, Any]], clean: int) -> list[dict[str, Any]]:
    left = clean
    for p in log:
        left -= p.pop("broken")
        p["robust"] = left
    return log


def run_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    import torchattacks

    with torch.no_grad():
        k = int(model(x[:1]).shape[1])
    n_t = min(9, k - 1)

    def make(cls: Callable[..., Any], **kw: Any) -> Any:
        atk = cls(model, eps=eps, seed=0, **kw)
        if hasattr(atk, "n_target_classes"):
            atk.n_target_classes = n_t   # torchattacks' default is n_classes - 1
        return atk

    attacks = {"apgd-ce": make(torchattacks.APGD, steps=100, n_restarts=1, loss="ce"),
               "apgd-t": make(torchattacks.APGDT, steps=100, n_restarts=1, n_classes=k),
               "fab-t": make(torchattacks.FAB, steps=100, n_restarts=1, multi_targeted=True, n_classes=k),
               "square": make(torchattacks.Square, n_queries=5000, n_restarts=1, p_init=0.8)}
    robust = _robust(model, x, y)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    fwd = bwd = 0
    for name, atk in attacks.items():
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        torch.manual_seed(0)
        t1 = time.perf_counter()
        with PassCounter(model) as passes:
            adv = atk(x[idx], y[idx])
        seconds = time.perf_counter() - t1
        broken = ~_robust(model, adv, y[idx])
        robust[idx[broken]] = False
        fwd, bwd = fwd + passes.forward, bwd + passes.backward
        log.append({"component": name, "attacked": int(idx.numel()), "robust": int(robust.sum()), "seconds": seconds,
                    "forward_passes": passes.forward, "backward_passes": passes.backward})
    return {"robust": robust.tolist(), "seconds": time.perf_counter() - t0, "components": log,
            "forward_passes": fwd, "backward_passes": bwd}


RUNNERS = {"suite": run_suite, "original": run_original, "torchattacks": run_torchattacks}


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, dataset: str,
            implementations: tuple[str, ...]) -> dict[str, Any]:
    model.eval()
    out: dict[str, Any] = {"n": int(x.shape[0]), "clean_accuracy": float(_robust(model, x, y).float().mean())}
    for name in implementations:
        torch.manual_seed(0)
        r = RUNNERS[name](model, x, y, eps) if name != "suite" else run_suite(model, x, y, eps, dataset)
        r["robust_accuracy"] = sum(r["robust"]) / len(r["robust"])
        for c in r["components"]:   # the cost of one pass: separates fewer passes from cheaper ones
            passes = (c["forward_passes"] or 0) + (c["backward_passes"] or 0)
            c["microseconds_per_pass"] = 1e6 * c["seconds"] / passes if passes else None
        out[name] = r
    if "suite" in out:
        ours = out["suite"]
        for name in implementations:
            if name == "suite":
                continue
            other = out[name]
            only_suite, only_other = robust_only(ours["robust"], other["robust"])
            out[f"{name}_vs_suite"] = {
                "seconds_ratio": other["seconds"] / ours["seconds"],
                "robust_only_in_suite": only_suite,
                "robust_only_in_other": only_other,
                "robust_accuracy_difference": ours["robust_accuracy"] - other["robust_accuracy"],
            }
    return out


def _load(args: argparse.Namespace) -> tuple[str, dict[str, tuple[nn.Module, dict[str, Any]]]]:
    """The models to attack: a model card, or models of a run folder."""
    if args.card:
        choice = resolve_model(card=args.card)
        return args.dataset, {args.card: (choice.model, {"card": args.card})}
    return load_models(args.run, args.models, args.protocol)


def load_models(run: Path, names: list[str],
                protocol: Path | None = None) -> tuple[str, dict[str, tuple[nn.Module, dict[str, Any]]]]:
    """The dataset and the models ``names`` of the run folder ``run`` with the weights it trained, their
    settings from the run's ``summary.json`` (or from ``protocol`` for a run that did not finish)."""
    if protocol is not None:
        import yaml

        proto = yaml.safe_load(protocol.read_text())
        dataset = proto["dataset"]["name"]
        entries = {m["name"]: {"arch": m["arch"], "operator": m["operator"], "params": m.get("params") or {}}
                   for m in proto["models"]}
        run_id = None
    else:
        summary = json.loads((run / "summary.json").read_text())
        dataset, run_id = summary["dataset"], summary.get("run_id")
        entries = {name: {"arch": m["arch"], "operator": m["operator"],
                          "params": {**(m.get("arch_params") or {}), **(m.get("operator_params") or {})}}
                   for name, m in summary["models"].items()}
    models = {}
    for name in names:
        m = entries[name]
        ckpt = run / "models" / name / "model.pt"
        choice = resolve_model(arch=m["arch"], operator=m["operator"], dataset=dataset, params=m["params"],
                               checkpoint=ckpt)
        models[name] = (choice.model, {"run_id": run_id, "arch": m["arch"], "operator": m["operator"],
                                       "params": m["params"],
                                       "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()})
    return dataset, models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a finished protocol run folder")
    src.add_argument("--card", help="a model card of the zoo (e.g. mnist2d-baseline-mnist)")
    ap.add_argument("--models", nargs="+", default=[], help="models of --run")
    ap.add_argument("--protocol", type=Path, default=None,
                    help="the protocol file of --run, for a run without summary.json (one that did not finish)")
    ap.add_argument("--dataset", default="mnist-sample", help="test set of --card (default mnist-sample)")
    ap.add_argument("--n", type=int, default=500, help="first N test images (default 500)")
    ap.add_argument("--eps", type=float, default=None, help="L-inf budget (default: the dataset's standard eps)")
    ap.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    impls = tuple(s for s in args.implementations.split(",") if s)
    unknown = set(impls) - set(IMPLEMENTATIONS)
    if unknown:
        ap.error(f"--implementations: unknown {sorted(unknown)}; known: {', '.join(IMPLEMENTATIONS)}")
    dataset, models = _load(args)
    ds = load_dataset(dataset, "test", n=args.n)
    x, y = ds.to_float(), ds.labels
    eps = args.eps if args.eps is not None else dataset_info(dataset).eps_linf
    command = shlex.join(["python", "-m", "benchmarks.autoattack_side_by_side", *(argv if argv is not None else sys.argv[1:])])
    result: dict[str, Any] = {
        **provenance(command=command, seed=0, data_sha256=ds.checksum),
        "versions": package_versions("torchattacks", "pyautoattack"), "machine": machine_info(),
        "torch_threads": torch.get_num_threads(), "dataset": dataset, "n": int(x.shape[0]), "eps": eps,
        "threat_model": "linf", "implementations": list(impls), "models": {},
    }
    for name, (model, info) in models.items():
        result["models"][name] = {**info, **compare(model, x, y, eps, dataset, impls)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")   # after each model: a partial report survives
        print(report_line(name, result["models"][name]), flush=True)
    return 0


def report_line(name: str, r: dict[str, Any]) -> str:
    parts = [f"{name}: clean {100 * r['clean_accuracy']:.1f}%"]
    for impl in IMPLEMENTATIONS:
        if impl in r:
            comps = ", ".join(f"{p['component']} {p['seconds']:.0f}s" for p in r[impl]["components"])
            parts.append(f"{impl} robust {100 * r[impl]['robust_accuracy']:.1f}% in {r[impl]['seconds']:.0f}s ({comps})")
        vs = r.get(f"{impl}_vs_suite")
        if vs:
            parts.append(f"{impl}/suite time {vs['seconds_ratio']:.2f}x, robust only in suite "
                         f"{len(vs['robust_only_in_suite'])}, only in {impl} {len(vs['robust_only_in_other'])}")
    return "; ".join(parts)


def markdown(results: list[dict[str, Any]]) -> str:
    """The report's table: per model and implementation, robust accuracy, total seconds and their
    ratio to the suite's, each component's seconds (and microseconds per pass), the examples robust
    under one of the two only (``python -m benchmarks.autoattack_side_by_side --table FILE...``)."""
    head = ("| model | implementation | robust accuracy | seconds | / suite | "
            + " | ".join(f"{c} s (us/pass)" for c in COMPONENTS) + " | robust only in suite / only in it |")
    lines = [head, "|" + "---|" * (6 + len(COMPONENTS))]
    for res in results:
        for name, r in res["models"].items():
            for impl in IMPLEMENTATIONS:
                if impl not in r:
                    continue
                q = r[impl]
                comps = {c["component"]: c for c in q["components"]}
                cells = [f"{comps[c]['seconds']:.1f} ({comps[c]['microseconds_per_pass']:.0f})"
                         if c in comps and comps[c].get("microseconds_per_pass") else "-" for c in COMPONENTS]
                vs = r.get(f"{impl}_vs_suite")
                ratio = f"{vs['seconds_ratio']:.2f}" if vs else "1"
                agree = f"{len(vs['robust_only_in_suite'])} / {len(vs['robust_only_in_other'])}" if vs else ""
                lines.append(f"| {name} | {impl} | {100 * q['robust_accuracy']:.1f}% | {q['seconds']:.0f} | {ratio} | "
                             + " | ".join(cells) + f" | {agree} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(markdown([json.loads(Path(f).read_text()) for f in sys.argv[2:]]))
        raise SystemExit(0)
    raise SystemExit(main())

"""Sections ``attacks``, ``strong`` and ``quickstart``: the suite's attacks against torchattacks and
foolbox on the same model and batch, and an end-to-end command."""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.harness.common import REPO, Timer, interleaved, seed_everything, summarize
from benchmarks.harness.settings import Settings


def attack_model(s: Settings, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A small model trained for a few seconds on the bundled MNIST sample."""
    from robustbench_dc.data import load_dataset
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    train_ds = load_dataset("mnist-sample", "train")
    seed_everything(s.seed)
    kw: dict[str, Any] = {"width": s.attack_width}
    if s.attack_arch == "mnist2d":
        kw["feature_dim"] = s.attack_feature_dim
    model = build_model(s.attack_arch, s.attack_operator, dataset="mnist", **kw).to(device)
    recipe: dict[str, Any] = {"base": "mnist-fast", "seed": s.seed}
    if s.attack_iterations is not None:
        recipe["iterations"] = s.attack_iterations
        recipe["epochs"] = None
    else:
        recipe["epochs"] = s.attack_epochs
    t0 = time.perf_counter()
    train(model, train_ds, recipe, device=device)
    info = {"arch": s.attack_arch, "operator": s.attack_operator, "params": kw, "recipe": recipe,
            "train_seconds": time.perf_counter() - t0, "train_checksum": train_ds.checksum}
    return model.eval(), info


def run_attacks(s: Settings, device: torch.device) -> dict[str, Any]:
    """Native PGD-10 / FGSM (``run_attack`` and the raw functions) vs torchattacks and foolbox."""
    import foolbox as fb
    import torchattacks

    from robustbench_dc.attacks import AttackSpec, fgsm, pgd, run_attack
    from robustbench_dc.data import load_dataset

    model, model_info = attack_model(s, device)
    for p in model.parameters():
        p.requires_grad_(True)
    test = load_dataset("mnist-sample", "test", n=s.attack_n)
    x, y = test.to_float().to(device), test.labels.to(device)
    eps, steps = s.attack_eps, s.attack_steps
    step_size = 2.5 * eps / steps  # the suite's PGD default, given to every backend explicitly
    pgd_spec = AttackSpec(name="pgd", eps=eps, steps=steps, step_size=step_size, random_start=True, seed=s.seed)
    fgsm_spec = AttackSpec(name="fgsm", eps=eps, seed=s.seed)
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=device)
    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
    ta_fgsm = torchattacks.FGSM(model, eps=eps)
    fb_pgd = fb.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=True)
    fb_fgsm = fb.attacks.FGSM()  # LinfFastGradientAttack, random_start=False

    runners: dict[str, dict[str, Callable[[], torch.Tensor]]] = {
        "pgd": {
            "native-run_attack": lambda: run_attack(model, x, y, pgd_spec),
            "native-raw": lambda: pgd(model, x, y, eps, steps=steps, step_size=step_size, random_start=True,
                                      seed=s.seed),
            "torchattacks": lambda: ta_pgd(x, y),
            "foolbox": lambda: fb_pgd(fmodel, x, y, epsilons=eps)[0],
        },
        "fgsm": {
            "native-run_attack": lambda: run_attack(model, x, y, fgsm_spec),
            "native-raw": lambda: fgsm(model, x, y, eps),
            "torchattacks": lambda: ta_fgsm(x, y),
            "foolbox": lambda: fb_fgsm(fmodel, x, y, epsilons=eps)[0],
        },
    }
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    out: dict[str, Any] = {"model": model_info, "n": x.shape[0], "eps": eps, "threat_model": "linf",
                           "clean_accuracy": clean_acc, "data_checksum": test.checksum,
                           "settings": {"pgd": {"steps": steps, "step_size": step_size, "random_start": True},
                                        "fgsm": {"steps": 1, "step_size": eps, "random_start": False}}}
    pairs = [(n, lib) for n in ("native-run_attack", "native-raw") for lib in ("torchattacks", "foolbox")]
    for attack, fns in runners.items():
        out[attack] = compare_runners(s, device, model, x, y, fns, pairs, reference="native-raw")
    return out


def compare_runners(s: Settings, device: torch.device, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    fns: dict[str, Callable[[], torch.Tensor]], pairs: list[tuple[str, str]],
                    reference: str) -> dict[str, Any]:
    """Time attack implementations interleaved on one model and batch: images/s, ratios for ``pairs``
    (a / b, > 1 = a faster), robust accuracies (must agree within the tolerance) and the distance of
    each adversarial batch from ``reference``'s."""
    acc: dict[str, list[float]] = {k: [] for k in fns}
    linf: dict[str, float] = {}
    first_adv: dict[str, torch.Tensor] = {}

    def measure(k: str) -> float:
        seed_everything(s.seed)  # torchattacks / foolbox draw their random start from torch's RNG
        with Timer(device) as t:
            x_adv = fns[k]()
        x_adv = x_adv.detach()
        with torch.no_grad():
            acc[k].append(float((model(x_adv).argmax(1) == y).float().mean()))
        linf[k] = max(linf.get(k, 0.0), float((x_adv - x).abs().amax()))
        first_adv.setdefault(k, x_adv.detach())
        for p in model.parameters():
            p.grad = None
        return t.seconds

    for k in fns:  # warm-up (and first-call costs) outside the timings
        fns[k]()
    raw = interleaved(list(fns), s.attack_repeats, measure)
    ips = {k: [x.shape[0] / t for t in v] for k, v in raw.items()}
    ratios: dict[str, dict[str, Any]] = {}
    for a, b in pairs:
        per = [u / v for u, v in zip(ips[a], ips[b])]
        ratios[f"{a}/{b}"] = {"per_repeat": per, **summarize(per)}
    first = {k: v[0] for k, v in acc.items()}
    tol = max(s.acc_tol, 3.0 / x.shape[0])
    spread = max(first.values()) - min(first.values())
    return {
        "seconds": raw, "images_per_second": {k: summarize(v) for k, v in ips.items()},
        "images_per_second_raw": ips, "ratios": ratios,
        "robust_accuracy": first, "robust_accuracy_per_repeat": acc, "max_linf": linf,
        # how far each backend's adversarial batch is from the reference one (same seed: the
        # random starts may coincide, so near-identical batches are expected, not a bug)
        f"max_abs_diff_vs_{reference}": {k: float((v - first_adv[reference]).abs().amax())
                                         for k, v in first_adv.items()},
        f"fraction_examples_differing_vs_{reference}": {
            k: float(((v - first_adv[reference]).flatten(1).abs().amax(1) > 1e-6).float().mean())
            for k, v in first_adv.items()},
        "robust_accuracy_spread": spread, "tolerance": tol, "mismatch": bool(spread > tol),
        "note": (f"robust accuracies differ by {100 * spread:.1f} pp > {100 * tol:.1f} pp"
                 if spread > tol else f"robust accuracies agree within {100 * tol:.1f} pp"),
        "mean_robust_accuracy": statistics.fmean(first.values()),
    }


def run_strong(s: Settings, device: torch.device) -> dict[str, Any]:
    """Native APGD-CE, APGD-T and AutoAttack vs torchattacks' components at equal strength (AutoAttack's
    budgets: 100 iterations, 9 target classes, 5,000 Square queries, set explicitly on every backend)."""
    import torchattacks

    from robustbench_dc.attacks import AttackSpec, run_attack
    from robustbench_dc.attacks.apgd import default_n_target_classes
    from robustbench_dc.data import load_dataset

    model, model_info = attack_model(s, device)
    test = load_dataset("mnist-sample", "test", n=s.strong_n)
    x, y = test.to_float().to(device), test.labels.to(device)
    eps = s.strong_eps
    with torch.no_grad():
        k = int(model(x[:1]).shape[1])
    n_t = default_n_target_classes(k)

    def ta(cls: type, **kw: Any) -> Any:
        atk = cls(model, eps=eps, seed=s.seed, **kw)
        if hasattr(atk, "n_target_classes"):
            atk.n_target_classes = n_t  # torchattacks' default is n_classes - 1
        return atk

    ta_apgd = ta(torchattacks.APGD, steps=100, n_restarts=1, loss="ce")
    ta_apgdt = ta(torchattacks.APGDT, steps=100, n_restarts=1, n_classes=k)
    ta_aa = torchattacks.MultiAttack([
        ta_apgd, ta_apgdt, ta(torchattacks.FAB, steps=100, n_restarts=1, multi_targeted=True, n_classes=k),
        ta(torchattacks.Square, n_queries=5000, n_restarts=1, p_init=0.8)])
    specs = {"apgd-ce": AttackSpec(name="apgd", eps=eps, seed=s.seed),
             "apgd-t": AttackSpec(name="apgd", eps=eps, targeted=True, seed=s.seed),
             "autoattack": AttackSpec(name="autoattack", eps=eps, seed=s.seed)}
    libs = {"apgd-ce": ta_apgd, "apgd-t": ta_apgdt, "autoattack": ta_aa}
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    out: dict[str, Any] = {"model": model_info, "n": x.shape[0], "eps": eps, "threat_model": "linf",
                           "clean_accuracy": clean_acc, "data_checksum": test.checksum, "n_target_classes": n_t,
                           "settings": {"apgd": {"steps": 100, "restarts": 1}, "square": {"queries": 5000},
                                        "fab": {"steps": 100, "targets": n_t}}}
    for name, spec in specs.items():
        fns = {"native": (lambda sp=spec: run_attack(model, x, y, sp)),
               "torchattacks": (lambda atk=libs[name]: atk(x, y))}
        out[name] = compare_runners(s, device, model, x, y, fns, [("native", "torchattacks")], reference="native")
    return out


def run_quickstart(s: Settings) -> dict[str, Any]:
    """Wall time of ``s.quickstart`` run as a subprocess (no shell)."""
    assert s.quickstart is not None
    cmd = shlex.split(s.quickstart)
    runs = []
    for _ in range(s.quickstart_repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        runs.append({"seconds": time.perf_counter() - t0, "returncode": proc.returncode,
                     "stderr_tail": proc.stderr[-1000:] if proc.returncode else ""})
    return {"command": s.quickstart, "argv": cmd, "runs": runs,
            "seconds": summarize(r["seconds"] for r in runs if r["returncode"] == 0),
            "ok": all(r["returncode"] == 0 for r in runs)}

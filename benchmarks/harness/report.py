"""Provenance of a benchmark result and its ratio table."""

from __future__ import annotations

import json
import math
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.common import REPO, STRONG_ATTACKS
from robustbench_dc.provenance import package_versions
from robustbench_dc.runtime import cpu_model as _cpu_model
from robustbench_dc.runtime import usable_cores as _usable_cores


def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|@.*$|\bcpu\b|\bprocessor\b|\d+-core", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40].strip("-")


def host_kind(device: torch.device) -> str:
    """e.g. ``cpu-amd-epyc-2c`` or ``cuda-nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        return "cuda-" + _slug(torch.cuda.get_device_name(device))
    return f"cpu-{_slug(_cpu_model()) or platform.machine()}-{_usable_cores()}c"


def git_commit(checkout: Path = REPO) -> str | None:
    """The commit checked out in ``checkout``, ``+dirty`` when tracked files differ from it; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def versions() -> dict[str, str | None]:
    """The library's versions record (:func:`robustbench_dc.provenance.package_versions`: robustbench_dc,
    torch, python, numpy and the attack backends) plus the git commit of the checkout."""
    out: dict[str, str | None] = dict(package_versions("numpy", "torchattacks", "foolbox"))
    out["git_commit"] = git_commit()
    return out


def write_result(path: Path, result: dict[str, Any]) -> Path:
    """Write a benchmark's result as indented JSON (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return path


RATIO_MEANING = {
    "train": "training-step time, decoupled / nn.Conv2d (same mode); > 1 = slower",
    "train-mode": "training-step time fp32 / cl-bf16 (same network); > 1 = cl-bf16 faster",
    "memory": "peak training-step memory increase, decoupled / nn.Conv2d; > 1 = more memory",
    "saved": "bytes autograd keeps for the backward (activations), decoupled / nn.Conv2d; > 1 = more",
    "eval": "inference time per batch, decoupled / nn.Conv2d (same mode); > 1 = slower",
    "attacks": "adversarial images/s, native / library (same model, batch, settings); > 1 = native faster",
    "strong": "APGD / AutoAttack images/s, native / torchattacks at AutoAttack's budgets; > 1 = native faster",
}


def flat_ratios(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio of the run as rows ``{section, name, mode, min, median, max, n, meaning}``."""
    rows: list[dict[str, Any]] = []

    def add(section: str, name: str, mode: str, summ: dict[str, Any], meaning: str) -> None:
        rows.append({"section": section, "name": name, "mode": mode, "min": summ["min"],
                     "median": summ["median"], "max": summ["max"], "n": summ["n"], "meaning": meaning})

    configs = res.get("configs", {})
    label = {k: (f"{k} ({v})" if k.startswith("slowest") else k) for k, v in configs.items()}
    if "train" in res:
        for mode, d in res["train"]["ratios"].items():
            for k, summ in d.items():
                add("train", label.get(k, k), mode, summ, RATIO_MEANING["train"])
        for k, summ in res["train"]["fp32_over_cl_bf16"].items():
            add("train-mode", label.get(k, k), "fp32/cl-bf16", summ, RATIO_MEANING["train-mode"])
    if "memory" in res:
        for mode, d in res["memory"]["ratios"].items():
            for k, summ in d.items():
                add("memory", label.get(k, k), mode, summ, RATIO_MEANING["memory"])
        for mode, d in res["memory"].get("saved_ratios", {}).items():
            for k, summ in d.items():
                add("saved", label.get(k, k), mode, summ, RATIO_MEANING["saved"])
    if "eval" in res:
        for mode, d in res["eval"]["ratios"].items():
            for k, summ in d.items():
                add("eval", label.get(k, k), mode, summ, RATIO_MEANING["eval"])
    if "attacks" in res:
        for attack in ("pgd", "fgsm"):
            for k, summ in res["attacks"][attack]["ratios"].items():
                add("attacks", f"{attack}: {k}", "fp32", summ, RATIO_MEANING["attacks"])
    if "strong" in res:
        for attack in STRONG_ATTACKS:
            for k, summ in res["strong"][attack]["ratios"].items():
                add("strong", f"{attack}: {k}", "fp32", summ, RATIO_MEANING["strong"])
    return rows


def render_table(res: dict[str, Any]) -> str:
    """Human-readable table of the ratios and the side facts (robust accuracy, slowest operator)."""
    lines = []
    w = max([len(r["name"]) for r in res["ratios"]] + [20])
    head = f"{'section':<11} {'name':<{w}} {'mode':<13} {'min':>7} {'median':>7} {'max':>7}  n"
    lines += [head, "-" * len(head)]
    last = None
    for r in res["ratios"]:
        if last is not None and r["section"] != last:
            lines.append("")
        last = r["section"]
        lines.append(f"{r['section']:<11} {r['name']:<{w}} {r['mode']:<13} {r['min']:>7.3f} {r['median']:>7.3f} "
                     f"{r['max']:>7.3f}  {r['n']}")
    lines.append("")
    for key, meaning in RATIO_MEANING.items():
        lines.append(f"  {key:<11} {meaning}")
    if "scan" in res:
        top = ", ".join(f"{op} {ratio:.2f}x" for op, ratio in res["scan"]["top5"])
        lines.append(f"scan (width {res['scan']['width']}, batch {res['scan']['batch']}, fp32): slowest {top}")
        c = res["scan"]["confirm"]
        conf = ", ".join(f"{op} {c['ratios'][op]['median']:.2f}x" for op in c["candidates"])
        lines.append(f"  re-timed at width {c['width']}, batch {c['batch']} ({c['repeats']} repeats, median): {conf}"
                     f" -> slowest {c['slowest']}")
    if "attacks" in res:
        a = res["attacks"]
        lines.append(f"attacks on {a['model']['arch']} (clean acc {a['clean_accuracy']:.3f}, n={a['n']}, "
                     f"L-inf eps={a['eps']}):")
        for attack in ("pgd", "fgsm"):
            d = a[attack]
            accs = ", ".join(f"{k} {v:.3f}" for k, v in d["robust_accuracy"].items())
            ips = ", ".join(f"{k} {v['median']:.0f}/s" for k, v in d["images_per_second"].items())
            lines.append(f"  {attack}: robust acc {accs} -> {'MISMATCH: ' if d['mismatch'] else ''}{d['note']}")
            lines.append(f"  {attack}: median images/s {ips}")
    if "strong" in res:
        a = res["strong"]
        lines.append(f"strong attacks on {a['model']['arch']} (clean acc {a['clean_accuracy']:.3f}, n={a['n']}, "
                     f"L-inf eps={a['eps']}, {a['n_target_classes']} target classes):")
        for attack in STRONG_ATTACKS:
            d = a[attack]
            accs = ", ".join(f"{k} {v:.3f}" for k, v in d["robust_accuracy"].items())
            secs = ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in d["seconds"].items())
            lines.append(f"  {attack}: robust acc {accs} -> {'MISMATCH: ' if d['mismatch'] else ''}{d['note']}")
            lines.append(f"  {attack}: median seconds {secs}")
    if "eval" in res:
        ips = ", ".join(f"{k} {v['median']:.0f}/s" for k, v in res["eval"]["images_per_second"].items())
        lines.append(f"eval images/s (median): {ips}")
    if res.get("quickstart"):
        q = res["quickstart"]
        lines.append(f"quickstart: {q['command']!r}: median {q['seconds']['median']:.2f} s, ok={q['ok']}")
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj

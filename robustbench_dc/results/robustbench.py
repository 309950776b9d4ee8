"""Leaderboard entries in RobustBench's ``model_info`` format, one JSON file per entry.

RobustBench lists a model by a JSON file ``model_info/<dataset>/<Linf|L2>/<Name>.json`` with the
fields ``link, name, authors, additional_data, number_forward_passes, dataset, venue,
architecture, eps, clean_acc, reported, autoattack_acc, footnote`` (accuracies as strings in %,
eps as ``"8/255"`` on CIFAR-10). An entry of this suite fills those fields from its stored
results -- ``autoattack_acc`` only when the run evaluated the suite's ``autoattack`` (else
``null``: the worst case of other attacks is not an AutoAttack number) -- and keeps its own
extras (operator, worst-case accuracy over the protocol's attacks, masking flags, protocol,
run, AutoAttack's components with the forward and backward passes each cost) under the key
``robustbench_dc``, so a RobustBench user reads the file as usual. RobustBench's own
``number_forward_passes`` is the passes one *prediction* of the model needs (1 here: the suite's
models are deterministic), not what the attack cost, and stays 1.

Example::

    >>> write_model_info(store.entries(), "model_info")   # model_info/cifar10/Linf/<name>.json
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from robustbench_dc._atomic import atomic_write_text
from robustbench_dc.results.leaderboard import LeaderboardEntry

__all__ = ["model_info", "write_model_info"]

_THREAT = {"linf": "Linf", "l2": "L2"}


def _eps_text(eps: float | None) -> str | None:
    if eps is None:
        return None
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and round(k) > 0 else f"{eps:g}"


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def model_info(entry: LeaderboardEntry) -> dict[str, Any]:
    """RobustBench's ``model_info`` fields for one entry, plus the suite's extras under ``robustbench_dc``."""
    aa = [v for k, v in entry.robust_accuracy.items() if k.startswith("autoattack") and v is not None]
    autoattack = min(aa) if aa else None
    return {
        "link": "",
        "name": entry.label or entry.name,
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": entry.dataset,
        "venue": f"robustbench-dc {entry.version or ''}".strip(),
        "architecture": entry.architecture,
        "eps": _eps_text(entry.eps),
        "clean_acc": _pct(entry.clean_accuracy),
        "reported": _pct(autoattack),
        "autoattack_acc": _pct(autoattack),
        "footnote": ((f"{entry.operator} operator, {entry.training or 'unknown'} training; " if entry.operator else "")
                     + f"evaluated by robustbench-dc ({entry.protocol}) on the first {entry.n_test} test examples"),
        "robustbench_dc": {
            "model": entry.name, "operator": entry.operator, "operator_params": entry.operator_params,
            "training": entry.training, "threat_model": entry.threat_model, "eps": entry.eps,
            "worst_case_acc": _pct(entry.worst_case_robust_accuracy),
            "robust_acc": {k: _pct(v) for k, v in entry.robust_accuracy.items()},
            "flags": list(entry.flags), "n_test": entry.n_test, "protocol": entry.protocol, "run_id": entry.run_id,
            "seed": entry.seed,
            # AutoAttack's log: per component its robust accuracy and the forward / backward passes it cost
            "autoattack_components": next((c for k, c in entry.components.items() if k.startswith("autoattack")), None),
        },
    }


def write_model_info(entries: Iterable[LeaderboardEntry], out_dir: str | Path) -> list[Path]:
    """Write ``out_dir/<dataset>/<Linf|L2>/<name>.json`` for each entry (atomically); returns the paths."""
    paths = []
    for entry in entries:
        folder = Path(out_dir) / (entry.dataset or "unknown") / _THREAT.get(entry.threat_model, entry.threat_model
                                                                             or "unknown")
        path = folder / f"{entry.name}.json"
        atomic_write_text(path, json.dumps(model_info(entry), indent=2) + "\n")
        paths.append(path)
    return paths

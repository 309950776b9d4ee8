"""Transfer (black-box) evaluation: a full source x target matrix per attack.

Adversarial examples are crafted once per (source model, attack) on the given
data and scored on every target (Papernot et al., "Transferability in Machine
Learning", 2016; Tramèr et al., "Ensemble Adversarial Training", ICLR 2018).
The diagonal (source == target) is the white-box result of the same attack;
with the same ``batch_size`` it reproduces :func:`evaluate_whitebox` per example
(the random starts are seeded per batch).

Crafted examples are cached on disk (``cache_dir``) under
``sha256(source key | attack key | data key).pt`` where

* source key = ``model_keys[name]`` if given, else a sha256 of the model's
  class and ``state_dict``,
* attack key = ``spec.resolve(dataset).key()``,
* data key = sha256 of the bytes of ``x`` and ``y``,

written atomically (temporary file then :func:`os.replace`) with
:func:`torch.save` and read back with ``torch.load(..., weights_only=True)``.
Cached examples are constraint-checked again when loaded.

Example::

    >>> tr = evaluate_transfer({"a": m1, "b": m2}, {"a": m1, "b": m2}, x, y,
    ...                        [AttackSpec(name="pgd")], dataset="cifar10", cache_dir="runs/adv")
    >>> tr.matrix("pgd-linf-eps0.0314-s10")  # {source: {target: robust accuracy}}
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_dc._atomic import atomic_write
from robustbench_dc.attacks.attack import run_attack, validate_inputs
from robustbench_dc.attacks.checks import check_adversarial, perturbation_norms
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.evaluation.checks import check_finite_logits
from robustbench_dc.evaluation.fingerprints import batched_logits, data_fingerprint, model_fingerprint
from robustbench_dc.evaluation.masking import MaskingFlag, flag_transfer_beats_whitebox
from robustbench_dc.evaluation.metrics import AttackResult, attack_result

__all__ = ["TransferResult", "evaluate_transfer", "craft_cached", "cache_path"]

log = logging.getLogger(__name__)


@dataclass
class TransferResult:
    """Source x target matrix of transfer results.

    Attributes:
        sources (list[str]), targets (list[str]), attacks (list[str]): names / labels.
        cells (list[AttackResult]): one per (source, target, attack); ``model`` is the
            target, ``source`` the source.
        flags (dict[str, MaskingFlag]): ``transfer-beats-whitebox`` per target (evaluated
            only for targets that are also sources, whose diagonal is the white-box result).
        n_crafted (int): (source, attack) pairs crafted in this call.
        n_cached (int): pairs loaded from the disk cache.
    """

    sources: list[str]
    targets: list[str]
    attacks: list[str]
    cells: list[AttackResult]
    flags: dict[str, MaskingFlag] = field(default_factory=dict)
    n_crafted: int = 0
    n_cached: int = 0

    def cell(self, source: str, target: str, attack: str) -> AttackResult:
        """The result of ``attack`` crafted on ``source`` and scored on ``target``."""
        for c in self.cells:
            if c.source == source and c.model == target and c.attack == attack:
                return c
        raise KeyError(f"no cell ({source!r}, {target!r}, {attack!r})")

    def matrix(self, attack: str, metric: str = "robust_accuracy") -> dict[str, dict[str, float]]:
        """``{source: {target: metric}}`` for one attack label."""
        if attack not in self.attacks:
            raise KeyError(f"attack {attack!r} not evaluated; have: {self.attacks}")
        return {
            s: {t: getattr(self.cell(s, t, attack), metric) for t in self.targets} for s in self.sources
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return {
            "sources": self.sources,
            "targets": self.targets,
            "attacks": self.attacks,
            "matrices": {a: self.matrix(a) for a in self.attacks},
            "cells": [c.to_dict() for c in self.cells],
            "flags": {k: v.to_dict() for k, v in self.flags.items()},
            "n_crafted": self.n_crafted,
            "n_cached": self.n_cached,
        }


def cache_path(cache_dir: str | Path, source_key: str, spec_key: str, data_key: str) -> Path:
    """File of the cached adversarial examples for one (source, attack, data)."""
    h = hashlib.sha256(f"{source_key}|{spec_key}|{data_key}".encode()).hexdigest()
    return Path(cache_dir) / f"{h}.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def _craft(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, batch_size: int,
    bar: Any,
) -> torch.Tensor:
    dev = model_device(model, x.device)
    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(run_attack(model, x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev), spec).cpu())
        bar.update(1)
    return torch.cat(out)


def craft_cached(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    source_key: str,
    data_key: str,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    bar: Any = None,
) -> tuple[torch.Tensor, bool]:
    """Adversarial examples of a *resolved* ``spec`` on ``model``, from the cache if present.

    Returns ``(x_adv on CPU, loaded_from_cache)``. A corrupt or mismatched cache file
    is logged and re-crafted.
    """
    bar = bar if bar is not None else tqdm(disable=True)
    path = cache_path(cache_dir, source_key, spec.key(), data_key) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            x_adv = obj["x_adv"]
            if obj.get("spec_key") != spec.key() or obj.get("data_key") != data_key:
                raise ValueError("key mismatch")
            if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
                raise ValueError(f"shape/dtype mismatch {tuple(x_adv.shape)} {x_adv.dtype}")
            assert spec.eps is not None
            check_adversarial(x_adv, x.cpu(), spec.eps, spec.threat_model)
            bar.update((x.shape[0] + batch_size - 1) // batch_size)
            return x_adv, True
        except Exception as e:  # corrupt, stale or invalid: recraft
            log.warning("ignoring cache file %s (%s); re-crafting", path, e)
    x_adv = _craft(model, x, y, spec, batch_size, bar)
    if path is not None:
        _atomic_save(
            {"x_adv": x_adv, "source_key": source_key, "spec_key": spec.key(),
             "spec": spec.canonical_json(), "data_key": data_key},
            path,
        )
    return x_adv, False


def evaluate_transfer(
    sources: dict[str, nn.Module],
    targets: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[AttackSpec],
    cache_dir: str | Path | None = None,
    *,
    model_keys: dict[str, str] | None = None,
    batch_size: int = 256,
    dataset: str | None = None,
    progress: bool = False,
    transfer_tol: float = 0.01,
) -> TransferResult:
    """Craft each attack on each source once and score it on every target.

    Args:
        sources (dict[str, nn.Module]): source models by name.
        targets (dict[str, nn.Module]): target models by name (a name present in both
            must be the same model: its cell is the white-box result).
        x (Tensor): (N, C, H, W) clean inputs in [0, 1]; y (Tensor): (N,) labels.
        attacks (list[AttackSpec]): attacks (eps=None -> ``dataset``'s standard eps).
        cache_dir (str | Path | None): disk cache of crafted examples; None (default)
            crafts every time (each pair still once per call).
        model_keys (dict[str, str] | None): cache keys of sources by name; default: a
            hash of each model's class and state_dict.
        batch_size (int): default 256. dataset (str | None): default None.
        progress (bool): tqdm bar. Default False.
        transfer_tol (float): tolerance of the ``transfer-beats-whitebox`` flag. Default 0.01.

    Returns:
        TransferResult: every source x target x attack cell.

    Example::

        >>> tr = evaluate_transfer({"std": m}, {"std": m, "dc": m_dc}, x, y, [AttackSpec(name="pgd", eps=0.3)])
        >>> tr.matrix("pgd-linf-eps0.3000-s10")["std"]["dc"]
    """
    validate_inputs(x, y)
    if not sources or not targets or not attacks:
        raise ValueError("sources, targets and attacks must all be non-empty")
    for name in set(sources) & set(targets):
        if sources[name] is not targets[name]:
            log.warning("model %r differs between sources and targets; its diagonal is not white-box", name)
    specs = [s.resolve(dataset) for s in attacks]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise AttackConfigError(f"attacks: duplicate attack labels {labels}")
    xc, yc = x.detach().cpu(), y.detach().cpu()
    data_key = data_fingerprint(xc, yc)
    keys = dict(model_keys or {})
    for name, m in sources.items():
        keys.setdefault(name, model_fingerprint(m))

    clean_correct: dict[str, torch.Tensor] = {}
    for tname, tm in targets.items():
        with eval_mode(tm):
            logits = batched_logits(tm, xc.to(model_device(tm, xc.device)), batch_size)
        check_finite_logits(logits, tname)  # refused before any attack runs
        clean_correct[tname] = logits.argmax(1).cpu() == yc
    for sname, sm in sources.items():
        if sname not in targets:
            with eval_mode(sm):
                check_finite_logits(batched_logits(sm, xc.to(model_device(sm, xc.device)), batch_size), sname)

    n_batches = (xc.shape[0] + batch_size - 1) // batch_size
    bar = tqdm(total=len(sources) * len(specs) * n_batches, disable=not progress, desc="transfer: crafting")
    cells: list[AttackResult] = []
    n_crafted = n_cached = 0
    try:
        for sname, sm in sources.items():
            for spec in specs:
                t0 = time.perf_counter()
                x_adv, cached = craft_cached(
                    sm, xc, yc, spec, source_key=keys[sname], data_key=data_key,
                    cache_dir=cache_dir, batch_size=batch_size, bar=bar,
                )
                seconds = 0.0 if cached else time.perf_counter() - t0
                n_cached += int(cached)
                n_crafted += int(not cached)
                assert spec.eps is not None
                check_adversarial(x_adv, xc, spec.eps, spec.threat_model)
                norms = perturbation_norms(x_adv, xc, spec.threat_model).double()
                for tname, tm in targets.items():
                    with eval_mode(tm):
                        adv_logits = batched_logits(tm, x_adv.to(model_device(tm, xc.device)), batch_size)
                    adv_correct = adv_logits.argmax(1).cpu() == yc
                    cells.append(
                        attack_result(tname, spec, clean_correct[tname], adv_correct, norms,
                                      source=sname, seconds=seconds)
                    )
    finally:
        bar.close()
    result = TransferResult(
        sources=list(sources), targets=list(targets), attacks=labels, cells=cells,
        n_crafted=n_crafted, n_cached=n_cached,
    )
    for tname in targets:
        diag = [c for c in cells if c.model == tname and c.source == tname]
        others = [c for c in cells if c.model == tname and c.source != tname]
        if diag:
            result.flags[tname] = flag_transfer_beats_whitebox(diag, others, transfer_tol)
        else:
            result.flags[tname] = flag_transfer_beats_whitebox([], [], transfer_tol)
    return result

"""Sections ``scan``, ``train`` and ``eval``: training-step and inference time, decoupled / baseline."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch
from torch import nn

from benchmarks.harness.common import (
    ANGULARS,
    MAGNITUDES,
    WEIGHTED,
    OpConfig,
    Timer,
    TrainCase,
    autocast_ctx,
    build_cnn9,
    interleaved,
    parse_op,
    summarize,
)
from benchmarks.harness.settings import Settings


def scan_grid(kind: str) -> list[OpConfig]:
    """Operators scanned for the slowest one: magnitudes x angulars x weightings
    (``quick``: every magnitude with cos / sqcos and no / separable weighting)."""
    angs: Sequence[str] = ANGULARS if kind == "full" else ("cos", "sqcos")
    wts: Sequence[str | None] = WEIGHTED if kind == "full" else (None, "separable")
    out = []
    for m in MAGNITUDES:
        for a in angs:
            for w in wts:
                params = {} if w is None else {"weighted": w}
                cfg = OpConfig("", f"{m}+{a}", params)
                cfg.key = cfg.spec
                out.append(cfg)
    return out


def run_scan(s: Settings, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Time one training step (fp32, ``scan_width``) of every operator of the grid; the
    slowest is measured at full width by :func:`run_train`."""
    grid = scan_grid(s.scan_grid)
    xb, yb = x[: s.scan_batch], y[: s.scan_batch]
    base = OpConfig("baseline", "baseline")

    def one(cfg: OpConfig) -> float:
        case = TrainCase(build_cnn9(cfg, s.scan_width, s.seed, device, "fp32"), xb, yb, "fp32", s.lr, device)
        case.step()  # warm-up
        return case.time_steps(s.scan_steps)

    t_base_before = one(base)
    rows: list[dict[str, Any]] = []
    for cfg in grid:
        try:
            rows.append({"operator": cfg.spec, "seconds_per_step": one(cfg)})
        except Exception as exc:  # noqa: BLE001 - record and go on
            rows.append({"operator": cfg.spec, "seconds_per_step": None, "error": f"{type(exc).__name__}: {exc}"})
    t_base_after = one(base)
    t_base = statistics.fmean([t_base_before, t_base_after])
    for r in rows:
        r["ratio_vs_baseline"] = r["seconds_per_step"] / t_base if r["seconds_per_step"] else None
    ok = [r for r in rows if r["seconds_per_step"] is not None]
    ranked = sorted(ok, key=lambda r: -r["seconds_per_step"])
    confirm = confirm_slowest(s, device, x, y, [r["operator"] for r in ranked[: s.scan_confirm]])
    return {"width": s.scan_width, "batch": xb.shape[0], "steps": s.scan_steps, "mode": "fp32", "grid": s.scan_grid,
            "baseline_seconds_per_step": [t_base_before, t_base_after], "results": rows,
            "slowest": confirm["slowest"], "confirm": confirm,
            "top5": [(r["operator"], r["ratio_vs_baseline"]) for r in ranked[:5]]}


def confirm_slowest(s: Settings, device: torch.device, x: torch.Tensor, y: torch.Tensor,
                    candidates: list[str]) -> dict[str, Any]:
    """Re-time the scan's slowest candidates at the full width and batch (fp32), interleaved
    with the baseline over ``scan_confirm_repeats`` repeats: a single step at a small width
    is noisy and does not weigh element-wise work against convolutions as the full network
    does. The slowest is the candidate with the largest median ratio."""
    xb, yb = x[: s.batch], y[: s.batch]
    configs = [OpConfig("baseline", "baseline")] + [OpConfig(c, *parse_op(c)) for c in candidates]
    cases = {c.key: TrainCase(build_cnn9(c, s.width, s.seed, device, "fp32"), xb, yb, "fp32", s.lr, device)
             for c in configs}
    for case in cases.values():
        case.step()  # warm-up
    raw = interleaved(list(cases), s.scan_confirm_repeats, lambda k: cases[k].time_steps(1))
    ratios = {c: summarize([t / b for t, b in zip(raw[c], raw["baseline"])]) for c in candidates}
    slowest = max(candidates, key=lambda c: ratios[c]["median"])
    return {"width": s.width, "batch": xb.shape[0], "repeats": s.scan_confirm_repeats, "candidates": candidates,
            "seconds_per_step": raw, "ratios": ratios, "slowest": slowest}


def run_train(s: Settings, device: torch.device, configs: list[OpConfig], x: torch.Tensor,
              y: torch.Tensor) -> dict[str, Any]:
    """Interleaved training-step times of every (config, mode); ratios decoupled / baseline."""
    cases: dict[str, TrainCase] = {}
    for mode in s.modes:
        for i, cfg in enumerate(configs):
            model = build_cnn9(cfg, s.width, s.seed + i, device, mode)
            cases[f"{mode}/{cfg.key}"] = TrainCase(model, x[: s.batch], y[: s.batch], mode, s.lr, device)
    for case in cases.values():  # warm-up (lazy init, allocator, Adam state)
        for _ in range(s.warmup):
            case.step()
    raw = interleaved(list(cases), s.repeats, lambda k: cases[k].time_steps(s.steps))
    ratios: dict[str, dict[str, Any]] = {}
    for mode in s.modes:
        base = raw[f"{mode}/baseline"]
        ratios[mode] = {}
        for cfg in configs[1:]:
            per = [t / b for t, b in zip(raw[f"{mode}/{cfg.key}"], base)]
            ratios[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
    speedup: dict[str, dict[str, Any]] = {}
    if "fp32" in s.modes and "cl-bf16" in s.modes:
        for cfg in configs:
            per = [a / b for a, b in zip(raw[f"fp32/{cfg.key}"], raw[f"cl-bf16/{cfg.key}"])]
            speedup[cfg.key] = {"per_repeat": per, **summarize(per)}
    return {"width": s.width, "batch": s.batch, "warmup": s.warmup, "repeats": s.repeats, "steps": s.steps,
            "optimizer": f"Adam(lr={s.lr})", "modes": s.modes,
            "configs": {c.key: c.spec for c in configs},
            "seconds_per_step": raw, "ratios": ratios, "fp32_over_cl_bf16": speedup}


def run_eval(s: Settings, device: torch.device, configs: list[OpConfig], x: torch.Tensor) -> dict[str, Any]:
    """Interleaved clean-inference times (eval mode, no grad); ratios decoupled / baseline."""
    models: dict[str, tuple[nn.Module, torch.Tensor, str]] = {}
    xb = x[: s.eval_batch].to(device)
    for mode in s.modes:
        xin = xb.contiguous(memory_format=torch.channels_last) if mode == "cl-bf16" else xb
        for i, cfg in enumerate(configs):
            models[f"{mode}/{cfg.key}"] = (build_cnn9(cfg, s.width, s.seed + i, device, mode).eval(), xin, mode)

    def forward(key: str) -> None:
        model, xin, mode = models[key]
        with torch.no_grad(), autocast_ctx(mode, device):
            model(xin)

    def measure(key: str) -> float:
        with Timer(device) as t:
            for _ in range(s.eval_steps):
                forward(key)
        return t.seconds / s.eval_steps

    for key in models:
        forward(key)  # warm-up
    raw = interleaved(list(models), s.repeats, measure)
    ratios: dict[str, dict[str, Any]] = {}
    ips: dict[str, dict[str, float]] = {}
    for mode in s.modes:
        base = raw[f"{mode}/baseline"]
        ratios[mode] = {}
        for cfg in configs:
            ips[f"{mode}/{cfg.key}"] = summarize(xb.shape[0] / t for t in raw[f"{mode}/{cfg.key}"])
            if cfg.key == "baseline":
                continue
            per = [t / b for t, b in zip(raw[f"{mode}/{cfg.key}"], base)]
            ratios[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
    return {"width": s.width, "batch": xb.shape[0], "steps": s.eval_steps, "repeats": s.repeats,
            "seconds_per_batch": raw, "images_per_second": ips, "ratios": ratios}

"""Constants, helpers, the benchmark data and the CNN-9 training-step cases shared by the sections."""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.params import parse_params

REPO = Path(__file__).resolve().parents[2]  #: the checkout

SCHEMA = "robustbench-dc-benchmark/1"


RESULTS_DIR = REPO / "benchmarks" / "results"


SECTIONS = ("scan", "train", "memory", "eval", "attacks", "strong", "quickstart")


MODES = ("fp32", "cl-bf16")


MAGNITUDES = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")


ANGULARS = ("linear", "cos", "sigmoid", "sqcos")


WEIGHTED: tuple[str | None, ...] = (None, "linear", "nonlinear", "separable")


CHILD_MARK = "RBDC_BENCH_CHILD_RESULT "


STRONG_ATTACKS = ("apgd-ce", "apgd-t", "autoattack")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """min / median / max of finite values (NaN when there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def parse_op(spec: str) -> tuple[str, dict[str, Any]]:
    """``"mix+sigmoid,weighted=separable,rho=0.5"`` -> ``("mix+sigmoid", {"weighted": "separable", "rho": 0.5})``
    (the values read by the library's ``KEY=VALUE`` parser, as ``rbdc --param`` reads them)."""
    name, *rest = [part.strip() for part in spec.split(",")]
    return name, parse_params(rest, what=f"operator spec {spec!r}")


def format_op(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_op` (parameters sorted, ``None`` values left out)."""
    items = [f"{k}={v}" for k, v in sorted(params.items()) if v is not None]
    return ",".join([name, *items])


class Timer:
    """``with Timer(device) as t: ...`` -> ``t.seconds`` (perf_counter; CUDA synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = float("nan")

    def __enter__(self) -> "Timer":
        if self.cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._t0


def autocast_ctx(mode: str, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast for ``cl-bf16``, nothing for ``fp32``."""
    if mode == "cl-bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def interleaved(names: Sequence[str], repeats: int, measure: Callable[[str], float]) -> dict[str, list[float]]:
    """Call ``measure(name)`` for every name in every repeat, reversing the order on odd
    repeats (so a config is not always first / last); returns per-name lists of results."""
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = list(names) if r % 2 == 0 else list(reversed(names))
        for n in order:
            out[n].append(measure(n))
    return out


def cifar_batch(n: int, seed: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The first ``n`` CIFAR-10 test images (float [0, 1]) and labels, or seeded random
    data of the same shape when CIFAR-10 is not available locally (never downloads)."""
    from robustbench_dc.data import load_dataset

    info: dict[str, Any] = {"dataset": "cifar10", "split": "test", "n": n}
    try:
        ds = load_dataset("cifar10", "test", n=n, data_dir=data_dir, download=False)
        info.update(real=True, checksum=ds.checksum, source=ds.source)
        return ds.to_float(), ds.labels.clone(), info
    except Exception as exc:  # noqa: BLE001 - any failure means: no local CIFAR-10
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        info.update(real=False, checksum=None,
                    note=f"CIFAR-10 not available ({type(exc).__name__}: {str(exc)[:300]}); "
                         f"used torch.rand data seeded with {seed} (set RBDC_DATA or --data-dir)")
        return x, y, info


@dataclass
class OpConfig:
    """One network variant: a key in the results, an operator spec and its parameters."""

    key: str
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False  # decoupled responses through torch.compile (set_compiled)

    @property
    def spec(self) -> str:
        return format_op(self.operator, self.params) + (" [compiled]" if self.compiled else "")


def build_cnn9(cfg: OpConfig, width: float, seed: int, device: torch.device, mode: str) -> nn.Module:
    """CNN-9 (CIFAR-10 shapes) with ``cfg``'s operator, seeded, on ``device``, in ``mode``'s layout."""
    from robustbench_dc.zoo import build_model

    seed_everything(seed)
    model = build_model("cnn9", cfg.operator, dataset="cifar10", width=width, **cfg.params).to(device)
    if cfg.compiled:
        from robustbench_dc.operators import set_compiled

        set_compiled(model)
    if mode == "cl-bf16":
        model = model.to(memory_format=torch.channels_last)
    return model


class TrainCase:
    """A model, its Adam optimiser and one batch, ready for timed training steps."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, lr: float,
                 device: torch.device) -> None:
        self.model = model.train()
        self.mode = mode
        self.device = device
        self.x = x.to(device)
        if mode == "cl-bf16":
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = y.to(device)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self) -> None:
        """One training step: forward + loss (autocast in cl-bf16), backward, Adam step."""
        self.opt.zero_grad(set_to_none=True)
        with autocast_ctx(self.mode, self.device):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def time_steps(self, n: int) -> float:
        """Seconds per step over ``n`` consecutive steps."""
        with Timer(self.device) as t:
            for _ in range(n):
                self.step()
        return t.seconds / n


def _compile_available(device: torch.device) -> bool:
    from robustbench_dc.operators import compile_available

    return compile_available(device.type)


def op_configs(slowest: str, compiled: bool = False) -> list[OpConfig]:
    """baseline, TanhConv, TanhConv with the learnable relative radius, the slowest operator and,
    with ``compiled``, the last two again with compiled responses (TanhConv with a shared
    radius takes the fused path, which compilation does not change)."""
    name, params = parse_op(slowest)
    relative = {"rho_mode": "relative", "learnable_rho": True}
    configs = [
        OpConfig("baseline", "baseline"),
        OpConfig("tanh+cos", "tanh+cos"),
        OpConfig("tanh+cos-relative-learnable-rho", "tanh+cos", relative),
        OpConfig("slowest", name, params),
    ]
    if compiled:
        configs += [OpConfig("tanh+cos-relative-learnable-rho+compiled", "tanh+cos", relative, compiled=True),
                    OpConfig("slowest+compiled", name, params, compiled=True)]
    return configs


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)

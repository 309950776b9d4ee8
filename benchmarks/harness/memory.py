"""Section ``memory``: peak memory of a training step, each configuration in a fresh child process."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness.common import CHILD_MARK, REPO, OpConfig, TrainCase, autocast_ctx, build_cnn9, seed_everything, summarize
from benchmarks.harness.settings import Settings
from robustbench_dc.runtime import configure_allocator


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def saved_activation_bytes(case: "TrainCase") -> int:
    """Bytes of the tensors autograd keeps for the backward during one forward pass (each
    storage counted once, parameters and the input included): the activation memory of a
    step, exact and independent of the allocator, unlike the peak RSS."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    case.opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_ctx(case.mode, case.device):
        F.cross_entropy(case.model(case.x), case.y)
    return sum(storages.values())


def _trim_heap() -> bool:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``), so VmRSS = live memory."""
    gc.collect()
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_main(payload: str) -> int:
    """Hidden ``--_child`` mode: one config's peak training-step memory in this fresh process."""
    job = json.loads(payload)
    allocator = configure_allocator()
    torch.set_num_threads(int(job["threads"]))
    device = torch.device(job["device"])
    seed_everything(int(job["seed"]))
    cfg = OpConfig(job["key"], job["operator"], job["params"], bool(job.get("compiled")))
    gen = torch.Generator().manual_seed(int(job["seed"]))
    x = torch.rand(int(job["batch"]), 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (int(job["batch"]),), generator=gen)
    case = TrainCase(build_cnn9(cfg, float(job["width"]), int(job["seed"]), device, job["mode"]), x, y,
                     job["mode"], float(job["lr"]), device)
    out: dict[str, Any] = {"key": cfg.key, "mode": job["mode"], "allocator_configured": allocator}
    # One untimed step first, in every config: it allocates the gradients and Adam's state
    # (steady-state memory, the same for all networks of a shape) and, for compiled configs,
    # compiles. Then the heap's free memory goes back to the OS, so the peak that follows is
    # the memory of training steps alone.
    case.step()
    _trim_heap()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(int(job["steps"])):
            case.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        out.update(method="torch.cuda.max_memory_allocated", before_bytes=before, peak_bytes=peak,
                   increase_bytes=peak - before)
    else:
        rss_before = (_status_kib("VmRSS") or 0) * 1024
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        reset = _reset_hwm()
        for _ in range(int(job["steps"])):
            case.step()
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        hwm = _status_kib("VmHWM") if reset else None
        out.update(rss_before_bytes=rss_before, ru_maxrss_before_bytes=maxrss_before,
                   ru_maxrss_after_bytes=maxrss_after, ru_maxrss_increase_bytes=maxrss_after - rss_before)
        if hwm is not None:
            out.update(method="VmHWM (reset via /proc/self/clear_refs) - VmRSS after one warm-up step and malloc_trim",
                       vmhwm_after_bytes=hwm * 1024, increase_bytes=hwm * 1024 - rss_before)
        else:
            out.update(method="ru_maxrss - VmRSS after one warm-up step and malloc_trim",
                       increase_bytes=maxrss_after - rss_before)
    out["saved_bytes"] = saved_activation_bytes(case)
    print(CHILD_MARK + json.dumps(out), flush=True)
    return 0


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--_child", json.dumps(job)],
                          capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    raise RuntimeError(f"memory child {job['mode']}/{job['key']} failed (rc {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout)[-2000:]}")


def run_memory(s: Settings, configs: list[OpConfig]) -> dict[str, Any]:
    """Peak memory of training steps per config, each in a fresh child process; ratios decoupled / baseline."""
    jobs = []
    for r in range(s.memory_repeats):
        for mode in s.memory_modes:
            for cfg in configs:
                jobs.append({"key": cfg.key, "operator": cfg.operator, "params": cfg.params,
                             "compiled": cfg.compiled, "mode": mode,
                             "width": s.width, "batch": s.batch, "steps": s.memory_steps, "lr": s.lr,
                             "seed": s.seed, "threads": s.threads, "device": s.device, "repeat": r})
    with ThreadPoolExecutor(max_workers=s.memory_jobs) as pool:
        results = list(pool.map(_run_child, jobs))
    raw: dict[str, list[int]] = {}
    saved: dict[str, list[int]] = {}
    children: list[dict[str, Any]] = []
    for job, res in zip(jobs, results):
        raw.setdefault(f"{job['mode']}/{job['key']}", []).append(int(res["increase_bytes"]))
        saved.setdefault(f"{job['mode']}/{job['key']}", []).append(int(res["saved_bytes"]))
        children.append({**res, "repeat": job["repeat"]})

    def ratios_of(values: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for mode in s.memory_modes:
            out[mode] = {}
            base = values[f"{mode}/baseline"]
            for cfg in configs[1:]:
                per = [a / b if b > 0 else float("nan") for a, b in zip(values[f"{mode}/{cfg.key}"], base)]
                out[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
        return out

    return {"width": s.width, "batch": s.batch, "steps": s.memory_steps, "repeats": s.memory_repeats,
            "modes": s.memory_modes, "method": results[0].get("method") if results else None,
            "increase_bytes": raw, "saved_bytes": saved, "children": children, "ratios": ratios_of(raw),
            "saved_ratios": ratios_of(saved)}

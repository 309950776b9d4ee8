"""Process-level runtime settings that make CPU work faster without changing any result.

:func:`configure_allocator` keeps large tensors in the heap instead of fresh ``mmap``
regions. glibc serves every allocation above 32 MB (a batch-128 activation of a 128-channel
32x32 layer is 64 MB) with a new ``mmap``, so each one page-faults on first touch and is
returned to the system when freed. Measured on the development machine: an allocating
element-wise multiply of such a tensor took 22 ms with the default and 4 ms with the heap
reused; a CNN-9 training step 2.92 s -> 2.52 s. The suite's entry points (the ``rbdc``
command, the benchmarks) call it once; library users call it themselves if they want it.
Set ``RBDC_NO_ALLOCATOR_TUNING=1`` to leave the allocator alone. The cost: freed memory
stays with the process, so its resident size does not shrink after a peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - torch is imported lazily (this module must load without it)
    import torch

__all__ = ["configure_allocator", "cpu_bf16_native", "cpu_model", "machine_info", "usable_cores", "rbdc_home",
           "timings_log", "machine_kind", "record_timing", "read_timings"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_state: dict[str, bool] = {}


def configure_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Raise glibc's mmap and trim thresholds (Linux only; idempotent).

    Returns ``True`` when the settings are in effect, ``False`` where they do not apply
    (not Linux/glibc, or disabled with ``RBDC_NO_ALLOCATOR_TUNING=1``).
    """
    if "configured" in _state:
        return _state["configured"]
    ok = False
    if os.environ.get("RBDC_NO_ALLOCATOR_TUNING", "").strip() not in ("", "0") or not sys.platform.startswith("linux"):
        log.debug("allocator tuning disabled or not applicable")
    else:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
                bool(libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
        except (OSError, AttributeError) as exc:  # musl or no mallopt
            log.debug("mallopt unavailable: %s", exc)
    _state["configured"] = ok
    return ok


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX-512 BF16 or AMX). Without
    it bfloat16 is emulated, slower than float32, and ``precision="auto"`` trains in float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine_info(device: "torch.device | str | None" = None) -> dict[str, Any]:
    """CPU model, cores, memory, the CPU's vector capability and whether it computes bfloat16
    natively (both change the speed and, through ``precision="auto"``, the numbers of a run), and
    the GPU (if ``device`` is a CUDA device): recorded beside results."""
    import torch

    device = torch.device(device or "cpu")
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": usable_cores(),
        "memory_bytes": _mem_total_bytes(), "platform": platform.platform(), "machine": platform.machine(),
        "gpu_used": device.type == "cuda", "cuda_available": torch.cuda.is_available(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_native": cpu_bf16_native(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory, cuda_version=torch.version.cuda)
    return info


def rbdc_home() -> Path:
    """The suite's per-user folder (trained zoo weights, the timing log of finished jobs):
    ``$RBDC_HOME``, else ``~/.cache/robustbench_dc``."""
    return Path(os.environ.get("RBDC_HOME") or Path.home() / ".cache" / "robustbench_dc")


def timings_log() -> Path:
    """This machine's log of finished jobs and trainings (JSON lines), for the estimates of dry runs
    and of ``rbdc zoo list``."""
    return rbdc_home() / "timings.jsonl"


def machine_kind(machine: dict[str, Any] | None = None) -> str:
    """``"AMD EPYC, avx512 (native bf16), 2 cores"``: what makes two machines' job times comparable."""
    if machine is None:
        machine = _this_machine()
    bf16 = machine.get("cpu_bf16_native")
    native = "" if bf16 is None else (" (native bf16)" if bf16 else " (no native bf16)")
    gpu = f", GPU {machine['gpu_name']}" if machine.get("gpu_used") else ""
    return (f"{machine.get('cpu_model')}, {str(machine.get('cpu_capability') or '?').lower()}{native}, "
            f"{machine.get('usable_cores')} cores{gpu}")


_THIS_MACHINE: dict[str, Any] = {}


def _this_machine() -> dict[str, Any]:
    if not _THIS_MACHINE:
        _THIS_MACHINE.update(machine_info())
    return _THIS_MACHINE


def record_timing(record: dict[str, Any]) -> None:
    """Append one finished job to this machine's timing log (the machine's kind added). Best effort:
    a log that cannot be written (a full disk, a read-only home) never fails the work it measures."""
    import json

    try:
        path = timings_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "machine": machine_kind()}, sort_keys=True) + "\n")
    except OSError as exc:
        log.debug("timing log not written: %s", exc)


def read_timings(path: Path | None = None) -> list[dict[str, Any]]:
    """The records of a timing log (default: this machine's); lines a killed run cut are skipped."""
    import json

    records = []
    try:
        lines = (path or timings_log()).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed run
        if isinstance(r, dict) and isinstance(r.get("seconds"), (int, float)) and isinstance(r.get("job"), str):
            records.append(r)
    return records

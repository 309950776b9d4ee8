"""Data-parallel training of one model with ``torch.distributed`` (DistributedDataParallel).

Launched with torchrun, every process trains the same model on its share of each batch::

    torchrun --standalone --nproc_per_node 2 -m robustbench_dc train --arch cnn9 --dataset cifar10 ...

:func:`init_from_env` joins the process group that torchrun describes in the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): ``nccl`` on GPUs (one
per process, by local rank), ``gloo`` on CPUs. :func:`robustbench_dc.training.train` then

* draws the global batch of every step exactly as a single process would (same order, same
  augmentation), and each of the ``W`` processes trains on its contiguous ``batch_size / W``
  slice; DDP averages the gradients, so a step is the single-process step on the whole batch
  (up to floating-point summation order);
* reports the loss and accuracy over the whole batch, checks divergence on every process
  alike, and writes checkpoints, ``model.pt`` and ``train.json`` from rank 0 only.

What differs from one process: BatchNorm statistics are per process unless the layers are
synchronised (done on GPUs with ``SyncBatchNorm``; gloo has no SyncBatchNorm, so on CPUs the
statistics stay per process, a warning says so), and adversarial training crafts the
adversarial share of each process's slice (the same ratio of the batch, different examples
than one process would pick).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["World", "init_from_env", "world", "wrap", "all_reduce_sum", "barrier", "is_main", "leave", "device_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0


def world() -> World:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def is_main() -> bool:
    return world().rank == 0


def init_from_env() -> World:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); a no-op otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    log.info("joined %s process group: rank %d of %d", backend, dist.get_rank(), size)
    return world()


def device_for(w: World) -> torch.device:
    """The device of a distributed process: its GPU (by local rank) where there are GPUs, else the CPU."""
    return torch.device("cuda", w.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (BatchNorm synchronised where the backend can)."""
    from torch.nn.parallel import DistributedDataParallel

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif has_bn and is_main():
        log.warning("BatchNorm statistics are per process on CPUs (gloo has no SyncBatchNorm): training is "
                    "not identical to one process with the same global batch")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the process group (``t`` itself when not distributed)."""
    if world().size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def leave() -> None:
    """Leave the process group joined by :func:`init_from_env` (a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().size > 1:
        dist.barrier()

"""Natural and adversarial training with resumable, atomically written checkpoints.

Every random choice of a run (batch order, augmentation, the training attack's random
start) is drawn from a generator seeded by ``(recipe.seed, epoch)``, so resuming from the
checkpoint of epoch ``e`` replays epochs ``e+1, ...`` exactly as an uninterrupted run
would (on CPU, where kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_dc._atomic import atomic_write_bytes, atomic_write_text
from robustbench_dc.attacks.native import projected_gradient_attack
from robustbench_dc.errors import InvalidParameterError, UsageError, UserError
from robustbench_dc.operators import (
    WeightProjection,
    compiled_responses,
    enable_weighted_gradients,
    orthogonality_penalty,
    recalibrate_xnorm,
    resolve_compile,
)
from robustbench_dc.runtime import cpu_bf16_native
from robustbench_dc.training.augment import augment
from robustbench_dc.training.distributed import all_reduce_sum, barrier, device_for, world, wrap
from robustbench_dc.training.recipe import Recipe, get_recipe
from robustbench_dc.zoo.isonet import orthogonal_conv_penalty

__all__ = ["train", "TrainResult", "TrainingDiverged", "evaluate_accuracy", "atomic_torch_save",
           "CHECKPOINT_NAME", "MODEL_NAME"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint-last.pt"
MODEL_NAME = "model.pt"


#: A training loss above this has diverged: cross-entropy at chance is ln(K) (2.3 for 10 classes) and
#: stays within a few units in any sane run; 1e4 needs logit margins of ten thousand.
DIVERGED_LOSS = 1e4


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN, infinite or larger than :data:`DIVERGED_LOSS` (a learning rate or an
    operator parameter out of range: the user's setting, reported as one line); the last good
    checkpoint is kept on disk."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained network (the same object that was passed in).
        history: one record per epoch (loss, accuracy, learning rate, images/s, ...).
        checkpoint: path of the final weights (``model.pt``) when ``out_dir`` was given.
        sha256: sha256 of that file.
        iterations: optimiser steps taken in total.
        resumed_from: the epoch the run resumed after (0 for a fresh run).
        compiled: whether the decoupled responses ran compiled (the recipe's ``compile``, resolved).
        precision: ``"bf16"`` or ``"fp32"``: what the recipe's ``precision`` resolved to here.
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    sha256: str | None = None
    iterations: int = 0
    resumed_from: int = 0
    compiled: bool = False
    precision: str = "fp32"


def atomic_torch_save(obj: Any, path: str | Path) -> str:
    """``torch.save`` to a temporary file in the same folder, then rename; returns the sha256.

    Serialised in memory first: torch's zip writer turns a failed write (a full disk) into an
    opaque ``RuntimeError``, while our own write reports it as a :class:`StorageError`; the digest
    is taken from the same bytes, without reading the file back."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getbuffer()).hexdigest()


def _atomic_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def _as_tensors(data: Any) -> tuple[Tensor, Tensor]:
    """(images, labels) from an ImageDataset (uint8) or a pair of tensors."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    x, y = data
    return x, y


def _to_float(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _lr_factor(recipe: Recipe, it: int, total: int) -> float:
    s = recipe.schedule
    if s.name == "constant":
        return 1.0
    if s.name == "step":
        marks = [m * total if m < 1 else m for m in s.milestones]
        return s.gamma ** sum(1 for m in marks if it >= m)
    if s.name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * it / total))
    warm = max(1, int(s.warmup * total))  # onecycle
    if it < warm:
        return (it + 1) / warm
    return max(0.0, (total - it) / max(1, total - warm))


def _make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    o = recipe.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def resolve_precision(precision: str, device: torch.device) -> bool:
    """Whether to train under bfloat16 autocast for ``precision`` on ``device``."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_bf16_native()


#: Shortest run for which ``compile="auto"`` compiles (compiling costs 10-30 s per operator).
COMPILE_MIN_STEPS = 1000


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Any, batch_size: int = 500,
                      device: str | torch.device | None = None) -> float:
    """Clean top-1 accuracy in evaluation mode (the model's mode is restored)."""
    x, y = _as_tensors(data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            xb = _to_float(x[i:i + batch_size].to(device))
            correct += int((model(xb).argmax(1) == y[i:i + batch_size].to(device)).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(y))


def _adversarial_batch(model: nn.Module, x: Tensor, y: Tensor, recipe: Recipe,
                       gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace the first ``ratio`` of the batch by adversarial examples; per-example loss weights."""
    adv = recipe.adversarial
    assert adv is not None
    k = max(1, int(round(adv.ratio * x.shape[0])))
    x_adv = projected_gradient_attack(
        model, x[:k], y[:k], eps=adv.eps, step_size=adv.resolved_step_size(), steps=adv.steps,
        threat_model=adv.threat_model, random_start=adv.method in ("pgd", "fgsm-rs"), generator=gen)
    mixed = torch.cat([x_adv, x[k:]]) if k < x.shape[0] else x_adv
    weights = torch.ones(x.shape[0], device=x.device)
    weights[:k] = adv.adv_weight
    return mixed, weights


def train(model: nn.Module, data: Any, recipe: Recipe | str | dict[str, Any], *,
          out_dir: str | Path | None = None, resume: bool = True, eval_data: Any = None,
          progress: bool = False, device: str | torch.device | None = None,
          on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` with ``recipe``, naturally or adversarially.

    Args:
        model: a network taking [0, 1] inputs (e.g. from :func:`robustbench_dc.zoo.build_model`).
            Its initial weights are the caller's (seed before building it).
        data: an :class:`~robustbench_dc.data.ImageDataset` or a pair ``(images, labels)``;
            uint8 images are scaled to [0, 1].
        recipe: a :class:`Recipe`, a named recipe or a mapping (see :mod:`.recipe`).
        out_dir: where ``checkpoint-last.pt`` (after every epoch), ``model.pt`` and
            ``train.json`` go; ``None`` keeps everything in memory.
        resume: continue from ``out_dir/checkpoint-last.pt`` when it exists (the recipe
            must be the same).
        eval_data: optional held-out data; its clean accuracy is recorded every epoch.
        progress: show a progress bar with images/s, running loss and accuracy.
        device: where to train (default: the model's device).
        on_epoch_end: called with each epoch's record.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint stays).
    """
    recipe = get_recipe(recipe)
    w = world()  # launched with torchrun: data-parallel over the process group (see .distributed)
    if device is None and w.size > 1:
        device = device_for(w)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    x_all, y_all = _as_tensors(data)
    n = len(y_all)
    if n == 0:
        raise InvalidParameterError("data: no training examples")
    bs = min(recipe.batch_size, n)
    if bs % w.size:
        raise InvalidParameterError(f"batch_size: {bs} is not divisible by the {w.size} training processes")
    shard = slice(w.rank * bs // w.size, (w.rank + 1) * bs // w.size)  # this process's share of each batch
    steps_per_epoch = n // bs  # drop the last incomplete batch (BatchNorm needs > 1 example)
    total = recipe.iterations if recipe.iterations is not None else recipe.epochs * steps_per_epoch  # type: ignore[operator]
    n_epochs = math.ceil(total / steps_per_epoch)

    amp = resolve_precision(recipe.precision, device)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks the keyword
    net = wrap(model, device) if w.size > 1 else model  # what the training forward passes run through
    optimizer = _make_optimizer(model, recipe)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    tricks = recipe.tricks
    projection = (WeightProjection(model, tricks.weight_projection_every, tricks.weight_projection_scale)
                  if tricks.weight_projection_every else None)
    handles = enable_weighted_gradients(model) if tricks.weighted_gradients else []

    out = Path(out_dir) if out_dir is not None else None
    result = TrainResult(model=model)
    start_epoch, it = 0, 0
    recipe_json = recipe.model_dump(mode="json")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / CHECKPOINT_NAME
        if resume and ckpt_path.is_file():
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            if state.get("recipe") != recipe_json:
                raise UsageError(f"resume: {ckpt_path} was written by a different recipe; "
                                 "delete it or use another out_dir (rbdc train: --restart)")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if projection is not None:
                projection.load_state_dict(state["projection"])
            start_epoch, it = int(state["epoch"]), int(state["iteration"])
            result.history = list(state["history"])
            result.resumed_from = start_epoch
            log.info("resuming %s after epoch %d (iteration %d)", ckpt_path, start_epoch, it)

    compiled = resolve_compile(recipe.compile, model, device.type, total - it, COMPILE_MIN_STEPS)
    if compiled:
        log.info("training with compiled decoupled responses (recipe compile=%s)", recipe.compile)
    # Only the training forward passes (and the crafting of adversarial examples) are compiled:
    # the per-epoch evaluation and recalibration run eagerly and need no compilation of their own.
    compiling = (lambda: compiled_responses(model)) if compiled else contextlib.nullcontext
    # the training forward passes and the crafting of adversarial examples share one precision
    in_precision = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    bar = None
    if progress and w.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=it, unit="it", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, n_epochs + 1):
            gen = _epoch_generator(recipe.seed, epoch, device)
            order = torch.randperm(n, generator=gen, device=device)
            model.train()
            t0 = time.perf_counter()
            sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
            steps_this_epoch = min(steps_per_epoch, total - it)
            for step in range(steps_this_epoch):
                idx = order[step * bs:(step + 1) * bs]
                xb = _to_float(x_all[idx.to(x_all.device)].to(device))
                yb = y_all[idx.to(y_all.device)].to(device)
                xb = augment(xb, recipe.augmentation.crop_padding, recipe.augmentation.flip, gen)
                if w.size > 1:
                    xb, yb = xb[shard], yb[shard]
                weights = None
                if recipe.adversarial is not None:  # crafted in the training precision (Wong et al. 2020)
                    with in_precision(), compiling():
                        xb, weights = _adversarial_batch(model, xb, yb, recipe, gen)
                    model.train()
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * _lr_factor(recipe, it, total)
                if recipe.channels_last:
                    xb = xb.contiguous(memory_format=memory_format)
                with in_precision(), compiling():
                    logits = net(xb)
                    per_example = F.cross_entropy(logits.float(), yb, label_smoothing=recipe.label_smoothing,
                                                  reduction="none")
                loss = per_example.mean() if weights is None else (per_example * weights).sum() / weights.sum()
                if tricks.orthogonality:
                    loss = loss + orthogonality_penalty(model, tricks.orthogonality)
                if tricks.isometry:
                    loss = loss + tricks.isometry * orthogonal_conv_penalty(model)
                correct = (logits.argmax(1) == yb).sum()
                if w.size > 1:  # the whole batch's loss and accuracy, identical on every process
                    both = all_reduce_sum(torch.stack([loss.detach().double(), correct.double()]))
                    value, n_correct = float(both[0]) / w.size, float(both[1])
                else:
                    value, n_correct = float(loss.detach()), float(correct)
                if not math.isfinite(value) or value > DIVERGED_LOSS:
                    last = f"{out / CHECKPOINT_NAME} (epoch {epoch - 1})" if out is not None and epoch > 1 \
                        else "none (no epoch completed)"
                    raise TrainingDiverged(f"training diverged: loss became {value:.4g} at epoch {epoch}, "
                                           f"iteration {it + 1}; last good checkpoint: {last}. "
                                           "Lower the learning rate or check the operator's parameters.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if projection is not None:
                    projection.step()
                it += 1
                sums += torch.tensor([value * bs, n_correct, bs], dtype=torch.float64)
                if bar is not None:
                    elapsed = time.perf_counter() - t0
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.3f}",
                                    img_s=f"{sums[2] / max(elapsed, 1e-9):.0f}")
            seconds = time.perf_counter() - t0
            if recipe.recalibrate_batches:
                k = min(n, recipe.recalibrate_batches * bs)
                recalibrate_xnorm(model, (_to_float(x_all[i:i + bs].to(device)) for i in range(0, k, bs)))
            record: dict[str, Any] = {
                "epoch": epoch, "iteration": it, "loss": float(sums[0] / sums[2]),
                "train_accuracy": float(sums[1] / sums[2]), "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds, "images_per_second": float(sums[2]) / max(seconds, 1e-9),
            }
            if eval_data is not None and w.rank == 0:
                record["eval_accuracy"] = evaluate_accuracy(model, eval_data, device=device)
            result.history.append(record)
            log.info("epoch %d/%d: %s", epoch, n_epochs, record)
            if on_epoch_end is not None:
                on_epoch_end(record)
            if out is not None and w.rank == 0:
                atomic_torch_save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    "iteration": it, "history": result.history, "recipe": recipe_json,
                    "projection": projection.state_dict() if projection is not None else {},
                }, out / CHECKPOINT_NAME)
    finally:
        if bar is not None:
            bar.close()
        for h in handles:
            h.remove()
    model.eval()
    if recipe.channels_last:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    result.iterations = it
    result.compiled = compiled
    result.precision = "bf16" if amp else "fp32"
    if out is not None and w.rank == 0:
        result.checkpoint = out / MODEL_NAME
        result.sha256 = atomic_torch_save(model.state_dict(), result.checkpoint)
        _atomic_json({"recipe": recipe_json, "history": result.history, "iterations": it, "compiled": compiled,
                      "precision": result.precision,
                      "model_sha256": result.sha256, "torch": torch.__version__}, out / "train.json")
    barrier()  # the other processes return once rank 0 has written the weights
    return result

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
from robustbench_dc.training.distributed import World, all_reduce_sum, barrier, device_for, world, wrap
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


@dataclass
class _Schedule:
    """How many examples, steps and epochs a run has, and this process's share of each batch."""

    n: int
    batch_size: int
    shard: slice
    steps_per_epoch: int
    total: int
    n_epochs: int

    @classmethod
    def of(cls, recipe: Recipe, n: int, processes: int, rank: int) -> _Schedule:
        if n == 0:
            raise InvalidParameterError("data: no training examples")
        bs = min(recipe.batch_size, n)
        if bs % processes:
            raise InvalidParameterError(f"batch_size: {bs} is not divisible by the {processes} training processes")
        shard = slice(rank * bs // processes, (rank + 1) * bs // processes)
        steps_per_epoch = n // bs  # drop the last incomplete batch (BatchNorm needs > 1 example)
        if recipe.iterations is not None:
            total = recipe.iterations
        else:
            assert recipe.epochs is not None  # the recipe's validation: one of epochs and iterations
            total = recipe.epochs * steps_per_epoch
        return cls(n, bs, shard, steps_per_epoch, total, math.ceil(total / steps_per_epoch))


class _Trainer:
    """One training run: the model, its optimizer and the recipe's tricks, one method per part of
    the loop (setup, resume, a step, an epoch, a checkpoint, the end)."""

    def __init__(self, model: nn.Module, recipe: Recipe, device: torch.device, out: Path | None, group: World) -> None:
        self.model, self.recipe, self.device, self.out = model, recipe, device, out
        self.world = group  # launched with torchrun: data-parallel over the process group (see .distributed)
        model.to(device)
        self.amp = resolve_precision(recipe.precision, device)
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        if recipe.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks the keyword
        self.net = wrap(model, device) if self.world.size > 1 else model  # what the training forward passes run
        self.optimizer = _make_optimizer(model, recipe)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        tricks = recipe.tricks
        self.projection = (WeightProjection(model, tricks.weight_projection_every, tricks.weight_projection_scale)
                           if tricks.weight_projection_every else None)
        self.handles = enable_weighted_gradients(model) if tricks.weighted_gradients else []
        self.recipe_json = recipe.model_dump(mode="json")
        self.result = TrainResult(model=model)
        self.it = 0
        self.compiling: Callable[[], Any] = contextlib.nullcontext
        self.compiled = False

    def in_precision(self) -> torch.autocast:
        """The training forward passes and the crafting of adversarial examples share one precision."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def resume(self, enabled: bool) -> int:
        """Load ``out/checkpoint-last.pt`` when asked and present; the epoch to continue after."""
        if self.out is None:
            return 0
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.out / CHECKPOINT_NAME
        if not (enabled and ckpt_path.is_file()):
            return 0
        state = torch.load(ckpt_path, map_location=self.device, weights_only=True)
        if state.get("recipe") != self.recipe_json:
            raise UsageError(f"resume: {ckpt_path} was written by a different recipe; "
                             "delete it or use another out_dir (rbdc train: --restart)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])
        start_epoch, self.it = int(state["epoch"]), int(state["iteration"])
        self.result.history = list(state["history"])
        self.result.resumed_from = start_epoch
        log.info("resuming %s after epoch %d (iteration %d)", ckpt_path, start_epoch, self.it)
        return start_epoch

    def compile_for(self, steps_left: int) -> None:
        """Compile the decoupled responses when the recipe asks for it and the run is long enough.
        Only the training forward passes (and the crafting of adversarial examples) are compiled: the
        per-epoch evaluation and recalibration run eagerly and need no compilation of their own."""
        self.compiled = resolve_compile(self.recipe.compile, self.model, self.device.type, steps_left,
                                        COMPILE_MIN_STEPS)
        if self.compiled:
            log.info("training with compiled decoupled responses (recipe compile=%s)", self.recipe.compile)
            model = self.model
            self.compiling = lambda: compiled_responses(model)

    def step(self, xb: Tensor, yb: Tensor, gen: torch.Generator, epoch: int, total: int) -> tuple[float, float]:
        """One optimisation step on a batch; its loss and number of correct predictions (the whole
        batch's under data parallelism)."""
        recipe, model = self.recipe, self.model
        weights = None
        if recipe.adversarial is not None:  # crafted in the training precision (Wong et al. 2020)
            with self.in_precision(), self.compiling():
                xb, weights = _adversarial_batch(model, xb, yb, recipe, gen)
            model.train()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * _lr_factor(recipe, self.it, total)
        if recipe.channels_last:
            xb = xb.contiguous(memory_format=self.memory_format)
        with self.in_precision(), self.compiling():
            logits = self.net(xb)
            per_example = F.cross_entropy(logits.float(), yb, label_smoothing=recipe.label_smoothing,
                                          reduction="none")
        loss = per_example.mean() if weights is None else (per_example * weights).sum() / weights.sum()
        tricks = recipe.tricks
        if tricks.orthogonality:
            loss = loss + orthogonality_penalty(model, tricks.orthogonality)
        if tricks.isometry:
            loss = loss + tricks.isometry * orthogonal_conv_penalty(model)
        correct = (logits.argmax(1) == yb).sum()
        if self.world.size > 1:  # the whole batch's loss and accuracy, identical on every process
            both = all_reduce_sum(torch.stack([loss.detach().double(), correct.double()]))
            value, n_correct = float(both[0]) / self.world.size, float(both[1])
        else:
            value, n_correct = float(loss.detach()), float(correct)
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            last = f"{self.out / CHECKPOINT_NAME} (epoch {epoch - 1})" if self.out is not None and epoch > 1 \
                else "none (no epoch completed)"
            raise TrainingDiverged(f"training diverged: loss became {value:.4g} at epoch {epoch}, "
                                   f"iteration {self.it + 1}; last good checkpoint: {last}. "
                                   "Lower the learning rate or check the operator's parameters.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.projection is not None:
            self.projection.step()
        self.it += 1
        return value, n_correct

    def epoch(self, epoch: int, x_all: Tensor, y_all: Tensor, plan: _Schedule, bar: Any) -> dict[str, Any]:
        """One epoch (its batch order and augmentation drawn from the epoch's own generator); its record."""
        recipe, device, bs = self.recipe, self.device, plan.batch_size
        gen = _epoch_generator(recipe.seed, epoch, device)
        order = torch.randperm(plan.n, generator=gen, device=device)
        self.model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        for step in range(min(plan.steps_per_epoch, plan.total - self.it)):
            idx = order[step * bs:(step + 1) * bs]
            xb = _to_float(x_all[idx.to(x_all.device)].to(device))
            yb = y_all[idx.to(y_all.device)].to(device)
            xb = augment(xb, recipe.augmentation.crop_padding, recipe.augmentation.flip, gen)
            if self.world.size > 1:
                xb, yb = xb[plan.shard], yb[plan.shard]
            value, n_correct = self.step(xb, yb, gen, epoch, plan.total)
            sums += torch.tensor([value * bs, n_correct, bs], dtype=torch.float64)
            if bar is not None:
                elapsed = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.3f}",
                                img_s=f"{sums[2] / max(elapsed, 1e-9):.0f}")
        seconds = time.perf_counter() - t0
        if recipe.recalibrate_batches:
            k = min(plan.n, recipe.recalibrate_batches * bs)
            recalibrate_xnorm(self.model, (_to_float(x_all[i:i + bs].to(device)) for i in range(0, k, bs)))
        return {"epoch": epoch, "iteration": self.it, "loss": float(sums[0] / sums[2]),
                "train_accuracy": float(sums[1] / sums[2]), "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": seconds, "images_per_second": float(sums[2]) / max(seconds, 1e-9)}

    def checkpoint(self, epoch: int) -> None:
        """``out/checkpoint-last.pt``, written atomically by rank 0 after every epoch."""
        if self.out is not None and self.world.rank == 0:
            atomic_torch_save({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch,
                "iteration": self.it, "history": self.result.history, "recipe": self.recipe_json,
                "projection": self.projection.state_dict() if self.projection is not None else {},
            }, self.out / CHECKPOINT_NAME)

    def finish(self) -> TrainResult:
        """The trained model in eval mode, ``model.pt`` and ``train.json`` written (rank 0)."""
        result, model = self.result, self.model
        model.eval()
        if self.recipe.channels_last:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        result.iterations, result.compiled = self.it, self.compiled
        result.precision = "bf16" if self.amp else "fp32"
        if self.out is not None and self.world.rank == 0:
            result.checkpoint = self.out / MODEL_NAME
            result.sha256 = atomic_torch_save(model.state_dict(), result.checkpoint)
            _atomic_json({"recipe": self.recipe_json, "history": result.history, "iterations": self.it,
                          "compiled": self.compiled, "precision": result.precision,
                          "model_sha256": result.sha256, "torch": torch.__version__}, self.out / "train.json")
        return result


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

    Returns:
        TrainResult: the model, its history, checkpoint and sha256.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint stays).
    """
    recipe = get_recipe(recipe)
    w = world()
    if device is None and w.size > 1:
        device = device_for(w)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x_all, y_all = _as_tensors(data)
    plan = _Schedule.of(recipe, len(y_all), w.size, w.rank)
    trainer = _Trainer(model, recipe, device, Path(out_dir) if out_dir is not None else None, w)
    start_epoch = trainer.resume(resume)
    trainer.compile_for(plan.total - trainer.it)
    bar = None
    if progress and w.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.total, initial=trainer.it, unit="it", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, plan.n_epochs + 1):
            record = trainer.epoch(epoch, x_all, y_all, plan, bar)
            if eval_data is not None and w.rank == 0:
                record["eval_accuracy"] = evaluate_accuracy(model, eval_data, device=device)
            trainer.result.history.append(record)
            log.info("epoch %d/%d: %s", epoch, plan.n_epochs, record)
            if on_epoch_end is not None:
                on_epoch_end(record)
            trainer.checkpoint(epoch)
    finally:
        if bar is not None:
            bar.close()
        for h in trainer.handles:
            h.remove()
    result = trainer.finish()
    barrier()  # the other processes return once rank 0 has written the weights
    return result

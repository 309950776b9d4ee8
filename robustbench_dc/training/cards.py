"""Train a zoo card with its recipe into the user's cache (``rbdc zoo train CARD``), where
:func:`~robustbench_dc.zoo.load_model` and ``--model CARD`` find the weights afterwards."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from robustbench_dc.runtime import machine_kind, read_timings, record_timing
from robustbench_dc.zoo import CardError, ModelCard, sha256_file
from robustbench_dc.zoo.weights import PROVENANCE_NAME, WEIGHTS_NAME, card_config, weights_dir

__all__ = ["train_card", "measured_training_seconds"]


def train_card(card: ModelCard, *, data_dir: str | Path | None = None, progress: bool = False, restart: bool = False,
               command: str | None = None, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train ``card`` with its recipe on its dataset's training set (seed 0) into the cache, resuming
    an interrupted training; write ``weights.json`` (sha256, the card, the recipe, the data checksum,
    versions, machine, seconds) last. Returns the weights file.

    Raises:
        CardError: the card names no recipe.
    """
    from robustbench_dc.data import load_dataset
    from robustbench_dc.provenance import provenance
    from robustbench_dc.runtime import machine_info
    from robustbench_dc.training.loop import train
    from robustbench_dc.training.recipe import get_recipe

    if card.recipe is None:
        raise CardError(f"model {card.name!r}: the card names no training recipe")
    recipe = get_recipe(card.recipe)
    torch.manual_seed(0)  # the initial weights, as rbdc train --model CARD --seed 0 draws them
    model = card.build()
    data = load_dataset(card.dataset, "train", data_dir=data_dir, progress=progress)
    folder = weights_dir(card)
    (folder / PROVENANCE_NAME).unlink(missing_ok=True)  # the weights are not finished until it is written again
    t0 = time.perf_counter()
    result = train(model, data, recipe, out_dir=folder, resume=not restart, progress=progress,
                   on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - t0
    path = folder / WEIGHTS_NAME
    info = {"card": card.name, "card_config": card_config(card), "sha256": sha256_file(path),
            "recipe": recipe.model_dump(mode="json"), "history": result.history, "seconds": seconds,
            "machine": machine_info(), "finished": datetime.now(timezone.utc).isoformat(),
            **provenance(command=command, seed=0, data_sha256=data.checksum)}
    (folder / PROVENANCE_NAME).write_text(json.dumps(info, indent=1, default=str) + "\n")
    if result.resumed_from is None:  # a whole training: what `rbdc zoo list` estimates the next one by
        record_timing({"protocol": "zoo", "job": f"train:{card.name}", "kind": "train", "seconds": round(seconds, 3),
                       "threads": torch.get_num_threads(), "finished": info["finished"]})
    return path


def measured_training_seconds(card_name: str) -> float | None:
    """How long the last whole ``rbdc zoo train CARD`` took on this kind of machine (its timing
    log), or None when it never ran here."""
    here = machine_kind()
    times = [r["seconds"] for r in read_timings()
             if r.get("protocol") == "zoo" and r.get("job") == f"train:{card_name}" and r.get("machine") == here]
    return float(times[-1]) if times else None

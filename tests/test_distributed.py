"""Data-parallel training under torchrun: 2 CPU processes (gloo) follow the single-process loss curve
with the same global batch, and end at the same weights, within floating-point tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthetic import write_learnable_mnist

REPO = Path(__file__).resolve().parents[1]
# ISONet has no BatchNorm: with gloo (no SyncBatchNorm) it is the architecture for which data-parallel
# training is the single-process computation exactly (up to summation order).
TRAIN = ["train", "--arch", "isonet", "--dataset", "mnist", "--param", "width=0.25", "--param", "blocks=1",
         "--recipe", "mnist-fast", "--set", "batch_size=32", "--set", "epochs=2", "--set", "optimizer.lr=0.003",
         "--set", "compile=off", "--set", "precision=fp32", "--n-train", "256", "--n-test", "64", "--quiet"]


def _train(cmd: list[str], out: Path, data: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*cmd, *TRAIN, "--data-dir", str(data), "--out", str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"log": proc.stdout, "train": json.loads((out / "train.json").read_text()),
            "weights": torch.load(out / "model.pt", weights_only=True)}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_processes_follow_the_single_process_loss_curve(tmp_path):
    data = write_learnable_mnist(tmp_path / "data")
    single = _train([sys.executable, "-m", "robustbench_dc"], tmp_path / "single", data)
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  "-m", "robustbench_dc"], tmp_path / "ddp", data)
    one, two = single["train"]["history"], ddp["train"]["history"]
    assert [r["iteration"] for r in two] == [r["iteration"] for r in one] == [8, 16]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-9)
        assert b["eval_accuracy"] == pytest.approx(a["eval_accuracy"], abs=1 / 64 + 1e-9)
    assert one[-1]["loss"] < one[0]["loss"]  # it learned: the curve is not flat
    assert single["weights"].keys() == ddp["weights"].keys()
    for k, v in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][k], v, rtol=1e-3, atol=1e-4, msg=k)
    # rank 0 alone prints and writes: one report, not two
    assert ddp["log"].count("weights:") == 1 and single["log"].count("weights:") == 1


def test_a_batch_that_the_processes_cannot_share_is_refused(monkeypatch):
    from robustbench_dc.errors import InvalidParameterError
    from robustbench_dc.training import distributed, loop

    monkeypatch.setattr(loop, "world", lambda: distributed.World(rank=0, size=3))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.rand(64, 1, 2, 2), torch.randint(0, 2, (64,))
    with pytest.raises(InvalidParameterError, match="batch_size: 32 is not divisible by the 3 training processes"):
        loop.train(model, (x, y), {"base": "mnist-fast", "batch_size": 32, "epochs": 1}, device="cpu")

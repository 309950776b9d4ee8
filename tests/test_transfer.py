"""Tests of robustbench_dc.evaluation.whitebox_transfer: full matrix, disk cache,
white-box diagonal and the transfer-beats-whitebox masking flag."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_dc.attacks import AttackSpec, ConstraintViolation
from robustbench_dc.evaluation import evaluate_transfer, evaluate_whitebox, model_fingerprint
from robustbench_dc.evaluation.transfer import cache_path

from synthetic import mnist_sample_tensors, train_small

DATASET = "mnist-sample"


class Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.1307))
        self.register_buffer("std", torch.tensor(0.3081))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Scale(nn.Module):
    """Multiplies logits by a huge constant: the float32 softmax saturates and the
    cross-entropy input gradient becomes exactly zero (defensive-distillation-style
    masking), while predictions are unchanged."""

    def __init__(self, inner: nn.Module, factor: float = 1e4) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


class CraftCounter(nn.Module):
    """Wraps a model and counts forward passes that build a graph (i.e. crafting)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.grad_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += 1
        return self.inner(x)


def _load_data() -> tuple[torch.Tensor, ...]:
    return mnist_sample_tensors(120)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> nn.Module:
    return train_small(model, x, y, epochs, lr, reseed=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup() -> dict:
    xtr, ytr, xte, yte = _load_data()
    torch.manual_seed(0)
    cnn = _train(
        nn.Sequential(Normalize(), nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
                      nn.Flatten(), nn.Linear(8 * 14 * 14, 10)),
        xtr, ytr, epochs=1, lr=3e-3,
    )
    torch.manual_seed(1)
    lin = _train(nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(784, 10)), xtr, ytr, epochs=1, lr=1e-3)
    return {"cnn": cnn, "lin": lin, "x": xte, "y": yte}


ATTACKS = [AttackSpec(name="fgsm", eps=0.15), AttackSpec(name="pgd", eps=0.15, steps=5)]


def test_matrix_complete_cached_and_diagonal_is_whitebox(setup: dict, tmp_path: Path) -> None:
    x, y = setup["x"], setup["y"]
    cnn, lin = CraftCounter(setup["cnn"]), CraftCounter(setup["lin"])
    models = {"cnn": cnn, "lin": lin}
    tr = evaluate_transfer(models, models, x, y, ATTACKS, cache_dir=tmp_path, batch_size=64)
    labels = [s.label for s in ATTACKS]
    assert tr.attacks == labels
    assert len(tr.cells) == 2 * 2 * 2
    for a in labels:
        m = tr.matrix(a)
        assert set(m) == {"cnn", "lin"} and all(set(row) == {"cnn", "lin"} for row in m.values())
    assert (tr.n_crafted, tr.n_cached) == (4, 0)
    files = sorted(tmp_path.glob("*.pt"))
    assert len(files) == 4 and not list(tmp_path.glob("*.tmp"))
    for f in files:
        obj = torch.load(f, weights_only=True)
        assert obj["x_adv"].shape == x.shape
    calls = (cnn.grad_calls, lin.grad_calls)
    assert min(calls) > 0

    # second call: everything from the cache, nothing crafted
    tr2 = evaluate_transfer(models, models, x, y, ATTACKS, cache_dir=tmp_path, batch_size=64)
    assert (tr2.n_crafted, tr2.n_cached) == (0, 4)
    assert (cnn.grad_calls, lin.grad_calls) == calls
    assert sorted(tmp_path.glob("*.pt")) == files
    for c1, c2 in zip(tr.cells, tr2.cells):
        assert (c1.source, c1.model, c1.attack) == (c2.source, c2.model, c2.attack)
        assert c1.robust_correct == c2.robust_correct

    # diagonal == white-box evaluation of the same attack on the same model
    for name, model in models.items():
        wb = evaluate_whitebox(model, x, y, ATTACKS, batch_size=64, model_name=name, masking=False)
        for r in wb.results:
            cell = tr.cell(name, name, r.attack)
            assert cell.robust_correct == r.robust_correct
            assert cell.robust_accuracy == r.robust_accuracy
            assert cell.perturbation_norms == pytest.approx(r.perturbation_norms)
    # off-diagonal transfer is weaker than white-box for the PGD attack on these models
    m = tr.matrix(labels[1])
    assert m["lin"]["cnn"] >= m["cnn"]["cnn"] and m["cnn"]["lin"] >= m["lin"]["lin"]
    d = json.loads(json.dumps(tr.to_dict()))
    assert d["matrices"][labels[0]]["cnn"]["lin"] == tr.matrix(labels[0])["cnn"]["lin"]


def test_cache_keys_model_attack_and_data(setup: dict, tmp_path: Path) -> None:
    x, y, cnn = setup["x"][:32], setup["y"][:32], setup["cnn"]
    spec = [AttackSpec(name="fgsm", eps=0.1)]
    evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, spec, cache_dir=tmp_path)
    # same model under another explicit key -> new entry
    tr = evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, spec, cache_dir=tmp_path, model_keys={"a": "other"})
    assert tr.n_crafted == 1
    # a different data slice -> new entry; different attack -> new entry
    assert evaluate_transfer({"a": cnn}, {"a": cnn}, x[:31], y[:31], spec, cache_dir=tmp_path).n_crafted == 1
    assert evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, [AttackSpec(name="fgsm", eps=0.2)],
                             cache_dir=tmp_path).n_crafted == 1
    # the default key is the state_dict hash: the same model under another name hits the cache
    assert evaluate_transfer({"b": cnn}, {"b": cnn}, x, y, spec, cache_dir=tmp_path).n_cached == 1
    assert len(list(tmp_path.glob("*.pt"))) == 4
    assert model_fingerprint(cnn) != model_fingerprint(setup["lin"])


def test_tampered_or_corrupt_cache_is_rejected_and_recrafted(setup: dict, tmp_path: Path, caplog) -> None:
    x, y, cnn = setup["x"][:16], setup["y"][:16], setup["cnn"]
    spec = AttackSpec(name="fgsm", eps=0.1)
    tr = evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, [spec], cache_dir=tmp_path)
    (f,) = list(tmp_path.glob("*.pt"))
    obj = torch.load(f, weights_only=True)
    obj["x_adv"] = (x + 0.5).clamp(0, 1)  # out of budget
    torch.save(obj, f)
    with caplog.at_level(logging.WARNING, logger="robustbench_dc.evaluation.transfer"):
        tr2 = evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, [spec], cache_dir=tmp_path)
    assert tr2.n_crafted == 1 and "budget" in caplog.text
    assert tr2.cells[0].robust_correct == tr.cells[0].robust_correct
    f.write_bytes(b"not a torch file")
    assert evaluate_transfer({"a": cnn}, {"a": cnn}, x, y, [spec], cache_dir=tmp_path).n_crafted == 1
    obj = torch.load(f, weights_only=True)  # rewritten, valid again
    assert obj["x_adv"].shape == x.shape


def test_no_cache_dir_crafts_each_pair_once(setup: dict) -> None:
    x, y = setup["x"][:24], setup["y"][:24]
    cnn = CraftCounter(setup["cnn"])
    tr = evaluate_transfer({"cnn": cnn}, {"cnn": cnn, "lin": setup["lin"]}, x, y,
                           [AttackSpec(name="fgsm", eps=0.1)])
    assert tr.n_crafted == 1 and cnn.grad_calls == 1  # one FGSM gradient for both targets
    assert len(tr.cells) == 2


def test_transfer_beats_whitebox_flag_on_masked_target(setup: dict) -> None:
    x, y, lin = setup["x"], setup["y"], setup["lin"]
    masked = Scale(lin).eval()  # saturated CE: white-box BIM is stuck, transfer from lin is not
    models = {"lin": lin, "masked": masked}
    spec = [AttackSpec(name="bim", eps=0.1, steps=5)]
    tr = evaluate_transfer(models, models, x, y, spec)
    m = tr.matrix(spec[0].label)
    assert m["lin"]["masked"] < m["masked"]["masked"] - 0.2
    assert m["lin"]["masked"] == m["lin"]["lin"]  # same decision function
    f = tr.flags["masked"]
    assert f.evaluated and f.triggered and f.value == pytest.approx(m["masked"]["masked"] - m["lin"]["masked"])
    assert f.doc == "docs/masking_flags.md#transfer-beats-whitebox"
    assert not tr.flags["lin"].triggered
    # the same flag through the white-box evaluation
    wb = evaluate_whitebox(masked, x, y, spec, model_name="masked", transfer=tr, dataset=DATASET)
    assert wb.flag("transfer-beats-whitebox").triggered
    wb2 = evaluate_whitebox(masked, x, y, spec, model_name="masked", masking=False)
    assert wb2.add_transfer(tr).triggered


def test_transfer_rejects_bad_inputs(setup: dict) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_transfer({}, {"a": setup["cnn"]}, setup["x"][:4], setup["y"][:4], ATTACKS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_transfer({"a": setup["cnn"]}, {"a": setup["cnn"]}, setup["x"][:4] * 3 - 1, setup["y"][:4], ATTACKS)
    assert issubclass(ConstraintViolation, ValueError)
    assert os.path.basename(str(cache_path("d", "s", "a", "x"))).endswith(".pt")

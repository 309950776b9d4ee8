"""Tests of robustbench_dc.attacks: specs, native attacks, backends, checker,
sweep, white-box evaluation and masking flags.

Models are tiny and trained for a few hundred milliseconds on the bundled MNIST
sample (synthetic separable data if the data package is unavailable).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import robustbench_dc.attacks.attack as attack_mod
from robustbench_dc.attacks import (
    AttackSpec,
    ConstraintViolation,
    attack_loss,
    check_adversarial,
    load_attack_config,
    make_targets,
    perturbation_norms,
    resolve_eps,
    run_attack,
    run_attack_loader,
)
from robustbench_dc.attacks.native import BestTracker, projected_gradient_attack
from robustbench_dc.evaluation import (
    DOC_PATH,
    FLAG_NAMES,
    MaskingConfig,
    attack_result,
    evaluate_whitebox,
    flag_one_step_beats_iterative,
    run_eps_sweep,
    worst_case,
)

from synthetic import mnist_sample_tensors, train_small

REPO = Path(__file__).resolve().parents[1]
DATASET = "mnist-sample"


# ----------------------------------------------------------------------------- fixtures
class Normalize(nn.Module):
    def __init__(self, mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _load_data() -> tuple[torch.Tensor, ...]:
    return mnist_sample_tensors(200)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 2, lr: float = 3e-3) -> nn.Module:
    return train_small(model, x, y, epochs, lr, reseed=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _load_data()


@pytest.fixture(scope="module")
def cnn(data: tuple[torch.Tensor, ...]) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        Normalize(),
        nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )
    return _train(m, data[0], data[1])


@pytest.fixture(scope="module")
def linear(data: tuple[torch.Tensor, ...]) -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(28 * 28, 10))
    return _train(m, data[0], data[1], epochs=1, lr=1e-3)


@pytest.fixture(scope="module")
def test_xy(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return data[2], data[3]


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_fixture_models_are_trained(cnn: nn.Module, linear: nn.Module, test_xy) -> None:
    x, y = test_xy
    assert _acc(cnn, x, y) >= 0.9
    assert _acc(linear, x, y) >= 0.8


# ----------------------------------------------------------------------------- spec
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "pgd", "eps": -1}, "eps: must be > 0, got -1"),
        ({"name": "pgd", "eps": 0}, "eps: must be > 0, got 0"),
        ({"name": "pgd", "eps": float("nan")}, "eps: must be > 0, got nan"),
        ({"name": "pgd", "step_size": -0.1}, "step_size: must be > 0, got -0.1"),
        ({"name": "pgd", "steps": 0}, "steps: must be >= 1, got 0"),
        ({"name": "pgd", "restarts": 0}, "restarts: must be >= 1, got 0"),
        ({"name": "pgd", "threat_model": "l3"}, "threat_model: must be one of 'linf', 'l2', got 'l3'"),
        ({"name": "pgd", "loss": "hinge"}, "loss: must be one of 'ce', 'margin', 'dlr', got 'hinge'"),
        ({"name": "pgd", "backend": "art"}, "backend: must be one of"),
        ({"name": "pgd", "target": "best"}, "target: must be one of"),
        ({"name": "deepfool"}, "name: unknown native attack 'deepfool'; available: fgsm, bim, pgd"),
        ({"name": "fgsm", "steps": 5}, "steps: fgsm is a one-step attack, got 5"),
        ({"name": "pgd", "params": {"x": 1}}, "params: native pgd accepts no params"),
        ({"name": "pgd", "epsilon": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_spec_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        AttackSpec(**kwargs)
    assert message in str(exc.value)


def test_spec_is_frozen_and_defaults_resolve() -> None:
    spec = AttackSpec(name="PGD", eps=0.1)
    assert spec.name == "pgd"
    with pytest.raises(ValidationError):
        spec.eps = 0.2  # type: ignore[misc]
    r = spec.resolve()
    assert (r.steps, r.random_start, r.loss) == (10, True, "ce")
    assert r.step_size == pytest.approx(2.5 * 0.1 / 10)
    b = AttackSpec(name="bim", eps=0.1, steps=5).resolve()
    assert (b.step_size, b.random_start) == (pytest.approx(0.02), False)
    f = AttackSpec(name="fgsm", eps=0.1).resolve()
    assert (f.steps, f.step_size, f.random_start) == (1, 0.1, False)
    # explicit values survive resolution
    e = AttackSpec(name="pgd", eps=0.1, step_size=0.05, random_start=False).resolve()
    assert (e.step_size, e.random_start) == (0.05, False)


def test_resolve_eps_standard_budgets() -> None:
    assert resolve_eps(AttackSpec(name="pgd"), "cifar10") == pytest.approx(8 / 255)
    assert resolve_eps(AttackSpec(name="pgd"), "mnist") == pytest.approx(0.3)
    assert resolve_eps(AttackSpec(name="pgd"), "mnist-sample") == pytest.approx(0.3)
    assert resolve_eps(AttackSpec(name="pgd", threat_model="l2"), "cifar10") == pytest.approx(0.5)
    assert resolve_eps(AttackSpec(name="pgd", eps=0.05), "cifar10") == 0.05
    with pytest.raises(ValueError, match="eps: None means the dataset's standard eps"):
        resolve_eps(AttackSpec(name="pgd"))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        resolve_eps(AttackSpec(name="pgd"), "imagenet")


def test_spec_key_and_label() -> None:
    a = AttackSpec(name="pgd", eps=8 / 255, steps=10)
    assert a.label == "pgd-linf-eps0.0314-s10"
    assert re.fullmatch(r"[0-9a-f]{64}", a.key())
    assert a.key() == AttackSpec(name="PGD", eps=8 / 255, steps=10).key()
    assert a.key() != AttackSpec(name="pgd", eps=8 / 255, steps=11).key()
    assert a.key() != AttackSpec(name="pgd", eps=8 / 255, steps=10, seed=1).key()
    assert AttackSpec(name="autoattack-10it", backend="torchattacks", eps=0.3).label == \
        "autoattack-10it-linf-eps0.3000@torchattacks"
    assert AttackSpec(name="autoattack", eps=0.3).label == "autoattack-linf-eps0.3000"
    assert AttackSpec(name="autoattack", eps=0.3, params={"version": "rand"}).label == "autoattack-linf-eps0.3000-rand"
    assert AttackSpec(name="apgd", eps=0.3, targeted=True).label == "apgd-linf-eps0.3000-s100-tgt"
    assert AttackSpec(name="apgd", eps=0.3, targeted=True).label == AttackSpec(
        name="apgd", eps=0.3, targeted=True).resolve().label
    assert AttackSpec(name="apgd", eps=0.3, targeted=True, loss="ce").label == "apgd-linf-eps0.3000-s100-ce-tgt"
    assert AttackSpec(name="pgd", threat_model="l2", eps=0.5, restarts=3, loss="dlr").label == "pgd-l2-eps0.5000-s10-r3-dlr"


def test_yaml_configs_load() -> None:
    names = {p.stem for p in (REPO / "attacks").glob("*.yaml")}
    assert {"fgsm-linf", "bim-linf", "pgd-linf", "pgd-l2", "autoattack-linf"} <= names
    for name in names:
        spec = load_attack_config(name)
        assert spec.eps is None  # dataset standard
        assert spec.resolve("cifar10").eps in (pytest.approx(8 / 255), pytest.approx(0.5))
    assert load_attack_config("pgd-l2").resolve("cifar10").eps == pytest.approx(0.5)
    assert load_attack_config("autoattack-linf").backend == "native"
    # a native name works too, and means the same attack (the same cache key once resolved)
    assert load_attack_config("autoattack").resolve("cifar10").key() == \
        load_attack_config("autoattack-linf").resolve("cifar10").key()
    assert load_attack_config("torchattacks-autoattack-10it").backend == "torchattacks"
    with pytest.raises(ValueError, match="available in .*: .*pgd-linf"):
        load_attack_config("pgd-l7")


# ----------------------------------------------------------------------------- losses
def test_losses_values() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    t = torch.tensor([2])
    assert attack_loss(z, y, "margin").item() == pytest.approx(1.0 - 3.0)
    assert attack_loss(z, y, "margin", t).item() == pytest.approx(0.0 - 3.0)
    assert attack_loss(z, y, "dlr").item() == pytest.approx(-(3.0 - 1.0) / (3.0 - 0.0))
    assert attack_loss(z, y, "dlr", t).item() == pytest.approx(-(3.0 - 0.0) / (3.0 - 0.5 * (0.0 - 1.0)))
    assert attack_loss(z, y, "ce").item() == pytest.approx(F.cross_entropy(z, y).item())
    with pytest.raises(ValueError, match="at least 3 classes"):
        attack_loss(torch.zeros(1, 2), torch.tensor([0]), "dlr")
    logits = torch.randn(50, 10)
    yy = torch.randint(0, 10, (50,))
    assert (make_targets(logits, yy, "random", torch.Generator().manual_seed(0)) != yy).all()
    ll = make_targets(logits, yy, "least-likely")
    assert (ll != yy).all()
    masked = logits.scatter(1, yy[:, None], float("inf"))
    assert torch.equal(ll, masked.argmin(1))


# ----------------------------------------------------------------------------- backends agree
def test_fgsm_native_torchattacks_foolbox_identical(cnn: nn.Module, test_xy) -> None:
    model = copy.deepcopy(cnn).double()
    x, y = test_xy[0][:64].double(), test_xy[1][:64]
    eps = 0.1
    advs = {
        be: run_attack(model, x, y, AttackSpec(name=name, backend=be, eps=eps))
        for be, name in [("native", "fgsm"), ("torchattacks", "FGSM"), ("foolbox", "FGSM")]
    }
    d = advs["native"] - x
    assert float(d.abs().max()) == pytest.approx(eps)
    assert float((d.abs() > 0).float().mean()) > 0.5  # a real perturbation, not x itself
    for be in ("torchattacks", "foolbox"):
        assert float((advs[be] - advs["native"]).abs().max()) <= 1e-6, be


def test_pgd_robust_accuracy_agrees_across_backends(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy
    eps, steps = 0.08, 30
    accs = {}
    for be, name in [("native", "pgd"), ("torchattacks", "PGD"), ("foolbox", "LinfPGD")]:
        spec = AttackSpec(name=name, backend=be, eps=eps, steps=steps, step_size=2.5 * eps / steps)
        accs[be] = _acc(cnn, run_attack(cnn, x, y, spec), y)
    assert 0.1 < accs["native"] < 0.9, accs  # informative regime
    assert max(accs.values()) - min(accs.values()) <= 0.02, accs


def test_pgd_l2_backends_agree(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:100], test_xy[1][:100]
    accs = {}
    for be, name in [("native", "pgd"), ("torchattacks", "PGDL2"), ("foolbox", "L2PGD")]:
        spec = AttackSpec(name=name, backend=be, threat_model="l2", eps=1.0, steps=20)
        x_adv = run_attack(cnn, x, y, spec)
        assert float(perturbation_norms(x_adv, x, "l2").max()) <= 1.0 + 1e-5
        accs[be] = _acc(cnn, x_adv, y)
    assert max(accs.values()) - min(accs.values()) <= 0.03, accs


def test_backend_names_case_insensitive_and_helpful() -> None:
    with pytest.raises(ValueError, match=r"unknown torchattacks attack 'pgdx' \(did you mean 'PGD'\?\); available: .*AutoAttack"):
        run_attack(nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1]),
                   AttackSpec(name="PGDX", backend="torchattacks", eps=0.1))
    with pytest.raises(ValueError, match=r"unknown foolbox attack 'linfpgdx'( \(did you mean '\w+'\?\))?; available: .*LinfPGD"):
        run_attack(nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1]),
                   AttackSpec(name="LinfPGDx", backend="foolbox", eps=0.1))
    with pytest.raises(ValueError, match="threat_model: torchattacks PGD is a linf attack.*PGDL2"):
        run_attack(nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1]),
                   AttackSpec(name="pgd", backend="torchattacks", threat_model="l2", eps=0.1))
    with pytest.raises(ValueError,
                       match=r"threat_model: foolbox LinfPGD \(LinfProjectedGradientDescentAttack\) is a linf attack"):
        run_attack(nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1]),
                   AttackSpec(name="linfpgd", backend="foolbox", threat_model="l2", eps=0.1))
    with pytest.raises(ValueError, match="params: PGD does not accept"):
        run_attack(nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1]),
                   AttackSpec(name="pgd", backend="torchattacks", eps=0.1, params={"bogus": 1}))


def test_autoattack_and_min_norm_attacks_respect_budget(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:12], test_xy[1][:12]
    aa = load_attack_config("autoattack-linf")
    x_adv = run_attack(cnn, x, y, aa, dataset=DATASET)  # eps 0.3, checked inside
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert _acc(cnn, x_adv, y) <= 0.1
    cw = AttackSpec(name="L2CarliniWagnerAttack", backend="foolbox", threat_model="l2", eps=1.0,
                    params={"steps": 30, "binary_search_steps": 2})
    x_cw = run_attack(cnn, x, y, cw)
    assert float(perturbation_norms(x_cw, x, "l2").max()) <= 1.0 + 1e-6
    df = AttackSpec(name="DeepFool", backend="torchattacks", threat_model="l2", eps=0.5,
                    params={"steps": 10})
    x_df = run_attack(cnn, x, y, df)
    assert float(perturbation_norms(x_df, x, "l2").max()) <= 0.5 + 1e-6


# ----------------------------------------------------------------------------- linear model
def _two_class_linear(d: int = 20, seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=g, dtype=torch.float64))
        lin.bias.copy_(-0.5 * lin.weight.sum(dim=1))  # decision boundary through x = 0.5
    return lin.eval()


def test_fgsm_on_two_class_linear_model_is_minus_eps_sign(test_xy) -> None:
    lin = _two_class_linear()
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.02 * torch.randn(64, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (64,), generator=g)
    eps = 0.05
    w = lin.weight.detach()
    diff = w[y] - w[1 - y]  # w_y - w_other, per example
    d = run_attack(lin, x, y, AttackSpec(name="fgsm", eps=eps)) - x
    assert torch.allclose(d, -eps * diff.sign(), atol=1e-12)
    d2 = run_attack(lin, x, y, AttackSpec(name="fgsm", threat_model="l2", eps=eps)) - x
    assert torch.allclose(d2, -eps * diff / diff.norm(dim=1, keepdim=True), atol=1e-10)


def test_eps_sweep_monotone_and_consistent() -> None:
    lin = _two_class_linear()
    g = torch.Generator().manual_seed(2)
    x = 0.5 + 0.02 * torch.randn(200, 20, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = lin(x).argmax(1)  # clean accuracy 100%
    eps_list = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.03]
    for name in ("fgsm", "pgd"):
        sw = run_eps_sweep(lin, x, y, AttackSpec(name=name, steps=10 if name == "pgd" else None),
                           eps_list, batch_size=64, return_adv=True)
        acc = sw.robust_accuracy
        assert acc[0] > 0.8 and acc[-1] == 0.0, acc  # informative range
        assert all(a >= b for a, b in zip(acc, acc[1:])), acc
        assert all(m <= r for m, r in zip(sw.monotone_robust_accuracy, acc))
        assert sw.x_adv is not None and sw.x_adv.shape == (len(eps_list), 200, 20)
        json.dumps(sw.to_dict())
    # FGSM sweep (gradient reused) == one run_attack per eps
    sw = run_eps_sweep(lin, x, y, AttackSpec(name="fgsm"), eps_list, return_adv=True)
    for k, e in enumerate(eps_list):
        assert torch.allclose(sw.x_adv[k], run_attack(lin, x, y, AttackSpec(name="fgsm", eps=e)), atol=1e-12)


def test_eps_sweep_stacked_bim_equals_separate_runs(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:40], test_xy[1][:40]
    eps_list = [0.05, 0.1, 0.2]
    sw = run_eps_sweep(cnn, x, y, AttackSpec(name="bim", steps=5), eps_list, return_adv=True)
    for k, e in enumerate(eps_list):
        sep = run_attack(cnn, x, y, AttackSpec(name="bim", steps=5, eps=e))
        assert float((sw.x_adv[k] - sep).abs().max()) <= 1e-5
    assert sw.robust_accuracy[0] > sw.robust_accuracy[-1]


def test_undefended_model_broken_at_large_eps(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy
    x_adv = run_attack(cnn, x, y, AttackSpec(name="pgd", steps=20), dataset=DATASET)  # eps 0.3
    assert _acc(cnn, x_adv, y) <= 0.02


# ----------------------------------------------------------------------------- native details
def test_targeted_attack_reaches_targets(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:64], test_xy[1][:64]
    spec = AttackSpec(name="pgd", eps=0.3, steps=20, targeted=True, target="random", seed=3)
    x_adv = run_attack(cnn, x, y, spec)
    with torch.no_grad():
        clean_logits = cnn(x)
        pred = cnn(x_adv).argmax(1)
    t = make_targets(clean_logits, y, "random", torch.Generator().manual_seed(3))
    assert (t != y).all()
    assert float((pred == t).float().mean()) >= 0.8
    ll = AttackSpec(name="pgd", eps=0.3, steps=20, targeted=True, target="least-likely")
    t_ll = make_targets(clean_logits, y, "least-likely")
    assert float((cnn(run_attack(cnn, x, y, ll)).argmax(1) == t_ll).float().mean()) >= 0.7


def test_restarts_keep_first_success(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:100], test_xy[1][:100]
    eps = 0.07
    one = run_attack(cnn, x, y, AttackSpec(name="pgd", eps=eps, steps=5, restarts=1))
    three = run_attack(cnn, x, y, AttackSpec(name="pgd", eps=eps, steps=5, restarts=3))
    with torch.no_grad():
        broken1 = cnn(one).argmax(1) != y
        broken3 = cnn(three).argmax(1) != y
    # the first restart is identical (same seed), so every success survives
    assert bool((broken1 <= broken3).all())
    assert int(broken3.sum()) >= int(broken1.sum())
    # generic restarts of a third-party backend obey the same rule
    fb1 = run_attack(cnn, x, y, AttackSpec(name="LinfPGD", backend="foolbox", eps=eps, steps=5))
    fb3 = run_attack(cnn, x, y, AttackSpec(name="LinfPGD", backend="foolbox", eps=eps, steps=5, restarts=3))
    with torch.no_grad():
        assert bool(((cnn(fb1).argmax(1) != y) <= (cnn(fb3).argmax(1) != y)).all())


def test_best_tracker_keeps_first_success_else_highest_loss() -> None:
    x = torch.zeros(3, 2)
    bt = BestTracker(x)
    c = [torch.full((3, 2), float(k)) for k in range(1, 5)]
    bt.update(c[0], torch.tensor([1.0, 5.0, 1.0]), torch.tensor([True, False, False]))
    bt.update(c[1], torch.tensor([9.0, 2.0, 3.0]), torch.tensor([False, False, False]))
    bt.update(c[2], torch.tensor([0.0, 0.0, 2.0]), torch.tensor([True, True, False]))
    bt.update(c[3], torch.tensor([9.0, 9.0, 1.0]), torch.tensor([True, True, False]))
    # ex 0: first success (c0) kept; ex 1: first success c2; ex 2: never succeeds -> highest loss c1
    assert bt.x[:, 0].tolist() == [1.0, 3.0, 2.0]
    assert bt.success.tolist() == [True, True, False]


@pytest.mark.parametrize(
    "spec",
    [
        AttackSpec(name="pgd", eps=0.1, steps=3),
        AttackSpec(name="pgd", eps=0.1, steps=3, backend="torchattacks"),
        AttackSpec(name="linfpgd", eps=0.1, steps=3, backend="foolbox"),
        AttackSpec(name="fgsm", eps=0.1, backend="torchattacks"),
    ],
    ids=lambda s: s.label,
)
def test_model_mode_restored_and_no_param_grads(spec: AttackSpec, test_xy) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(784, 32), nn.Dropout(0.0), nn.ReLU(), nn.Linear(32, 10))
    x, y = test_xy[0][:8], test_xy[1][:8]
    model.train()
    model[3].eval()  # mixed modes must come back exactly
    before = [m.training for m in model.modules()]
    run_attack(model, x, y, spec)
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    run_attack(model, x, y, spec)
    assert not any(m.training for m in model.modules())


def test_attack_sees_eval_mode(test_xy) -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training)
            return self.lin(x.flatten(1))

    m = Probe().train()
    run_attack(m, test_xy[0][:4], test_xy[1][:4], AttackSpec(name="pgd", eps=0.1, steps=2))
    assert seen and not any(seen)
    assert m.training


def _conv_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(Normalize(), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    for bn in (net[2], net[5]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return net


def test_attacks_fold_batch_norms_into_convolutions_and_restore_the_model(test_xy) -> None:
    from robustbench_dc.attacks.steps import attack_mode

    net = _conv_bn_net().train()
    x, y = test_xy[0][:8], test_xy[1][:8]
    modules = list(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        ref = net.eval()(x)
    net.train()
    xg = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.cross_entropy(net.eval()(xg), y), xg)
    net.train()
    with attack_mode(net, x):
        assert [type(m) for m in net[1:3]] == [nn.Conv2d, nn.Identity] and isinstance(net[5], nn.Identity)
        torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
        xg = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(net(xg), y), xg)
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-4)
    assert all(a is b for a, b in zip(net, modules)) and net.training and net[2].training
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    run_attack(net, x, y, AttackSpec(name="pgd", eps=0.1, steps=3))
    assert all(a is b for a, b in zip(net, modules)) and all(p.grad is None for p in net.parameters())


def test_batch_norm_with_a_hook_is_not_folded(test_xy) -> None:
    from robustbench_dc.attacks.steps import attack_mode, folded_batch_norm

    net = _conv_bn_net().eval()
    calls: list[int] = []
    net[5].register_forward_hook(lambda *_: calls.append(1))
    with attack_mode(net, test_xy[0][:4]):
        assert isinstance(net[2], nn.Identity) and isinstance(net[5], nn.BatchNorm2d)
        net(test_xy[0][:4])
    assert calls == [1]
    with folded_batch_norm(net.train()) as n:  # training-mode batch norms use batch statistics
        assert n == 0


# ----------------------------------------------------------------------------- checker
def _valid_pair(threat_model: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(6, 1, 8, 8, generator=g)
    if threat_model == "linf":
        d = eps * torch.randn(x.shape, generator=g).sign()
    else:
        d = torch.randn(x.shape, generator=g)
        d = eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return x + d, x


@pytest.mark.parametrize("threat_model, eps", [("linf", 0.1), ("l2", 0.5)])
def test_checker_accepts_exactly_eps(threat_model: str, eps: float) -> None:
    x_adv, x = _valid_pair(threat_model, eps)
    assert float(perturbation_norms(x_adv, x, threat_model).max()) == pytest.approx(eps, rel=1e-6)
    check_adversarial(x_adv, x, eps, threat_model)  # no exception
    check_adversarial(x.clone(), x, eps, threat_model)


@pytest.mark.parametrize("threat_model, eps", [("linf", 0.1), ("l2", 0.5)])
def test_checker_rejects_out_of_budget(threat_model: str, eps: float) -> None:
    x_adv, x = _valid_pair(threat_model, eps)
    x_adv[2] = x[2] + 1.5 * (x_adv[2] - x[2])
    with pytest.raises(ConstraintViolation) as exc:
        check_adversarial(x_adv, x, eps, threat_model)
    e = exc.value
    assert (e.check, e.n_violations, e.n_total, e.indices) == ("budget", 1, 6, [2])
    assert e.worst == pytest.approx(1.5 * eps, rel=1e-5)
    assert "budget" in str(e) and "1/6" in str(e)
    # just above the tolerance is rejected, within it accepted
    x_adv, x = _valid_pair(threat_model, eps)
    d = (x_adv - x).double()
    check_adversarial(x.double() + d * (1 + 5e-7 / eps), x.double(), eps, threat_model)
    with pytest.raises(ConstraintViolation):
        check_adversarial(x.double() + d * (1 + 1e-5 / eps), x.double(), eps, threat_model)


@pytest.mark.parametrize("value, check", [(-0.01, "range"), (1.01, "range"), (float("nan"), "finite"), (float("inf"), "finite")])
def test_checker_rejects_out_of_range_and_nonfinite(value: float, check: str) -> None:
    x = torch.full((4, 1, 3, 3), 0.0)
    x[1:] = 0.5
    x_adv = x.clone()
    x_adv[0, 0, 1, 1] = value  # budget-wise tiny for the 0.0 example, but invalid
    with pytest.raises(ConstraintViolation) as exc:
        check_adversarial(x_adv, x, eps=10.0, threat_model="linf")
    assert exc.value.check == check
    assert exc.value.n_violations == 1 and exc.value.indices == [0]
    if check == "range":
        assert exc.value.worst == pytest.approx(value)


def test_run_attack_checks_every_backend(monkeypatch: pytest.MonkeyPatch, cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:4], test_xy[1][:4]
    from robustbench_dc.attacks import register_attack, unregister_attack

    @register_attack("overshoot")
    def overshoot(model, xx, yy, spec, **kw):  # a native attack that leaves its budget
        return (xx + 2 * spec.eps).clamp(0, 1)

    try:
        with pytest.raises(ConstraintViolation, match="budget"):
            run_attack(cnn, x, y, AttackSpec(name="overshoot", eps=0.1))
    finally:
        unregister_attack("overshoot")
    monkeypatch.setattr(attack_mod, "run_torchattacks", lambda m, xx, yy, s, t: xx * float("nan"))
    with pytest.raises(ConstraintViolation, match="finite"):
        run_attack(cnn, x, y, AttackSpec(name="pgd", eps=0.1, backend="torchattacks"))
    monkeypatch.setattr(attack_mod, "run_foolbox", lambda m, xx, yy, s, t: xx + 1.0)
    with pytest.raises(ConstraintViolation, match="range"):
        run_attack(cnn, x, y, AttackSpec(name="linfpgd", eps=1.0, backend="foolbox"))


def test_run_attack_rejects_unnormalised_inputs(cnn: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"x: clean inputs must be finite and in \[0, 1\]"):
        run_attack(cnn, torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), AttackSpec(name="fgsm", eps=0.1))


def test_run_attack_loader_first_n_in_order(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    x_adv, yy = run_attack_loader(cnn, loader, AttackSpec(name="fgsm"), dataset=DATASET, n=40)
    assert x_adv.shape == (40, 1, 28, 28) and torch.equal(yy, y[:40])
    assert torch.allclose(x_adv, run_attack(cnn, x[:40], y[:40], AttackSpec(name="fgsm", eps=0.3)), atol=1e-6)


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_whitebox_metrics_and_worst_case(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:100], test_xy[1][:100]
    attacks = [AttackSpec(name="fgsm", eps=0.1), AttackSpec(name="pgd", eps=0.1, steps=10)]
    res = evaluate_whitebox(cnn, x, y, attacks, batch_size=32, model_name="cnn")
    assert [r.attack for r in res.results] == ["fgsm-linf-eps0.1000-s1", "pgd-linf-eps0.1000-s10"]
    for r in res.results:
        rc = torch.tensor(r.robust_correct)
        cc = torch.tensor(r.clean_correct)
        assert r.n == 100 and bool((rc <= cc).all())
        assert r.robust_accuracy == pytest.approx(float(rc.float().mean()))
        assert r.clean_accuracy == pytest.approx(_acc(cnn, x, y))
        assert r.attack_success_rate == pytest.approx(1 - r.robust_accuracy / r.clean_accuracy)
        assert r.max_perturbation is not None and r.max_perturbation <= 0.1 + 1e-6
    fg, pg = res.results
    assert pg.robust_accuracy <= fg.robust_accuracy  # PGD at least as strong here
    w = res.worst["linf-eps0.1000"]
    manual = torch.tensor(fg.robust_correct) & torch.tensor(pg.robust_correct)
    assert w.robust_correct == manual.tolist()
    assert w.robust_accuracy <= min(fg.robust_accuracy, pg.robust_accuracy)
    assert worst_case([fg, pg]).robust_accuracy == w.robust_accuracy
    d = json.loads(json.dumps(res.to_dict()))
    assert d["results"][1]["robust_correct"] == pg.robust_correct
    assert [f["name"] for f in d["flags"]] == list(FLAG_NAMES)


def test_an_attack_on_a_prefix_equals_the_full_run_on_those_examples(cnn: nn.Module, test_xy) -> None:
    from robustbench_dc.evaluation.metrics import prefix

    x, y = test_xy[0][:60], test_xy[1][:60]
    attacks = [AttackSpec(name="fgsm", eps=0.1), AttackSpec(name="pgd", eps=0.1, steps=5)]
    full = evaluate_whitebox(cnn, x, y, attacks, batch_size=32, masking=False)
    part = evaluate_whitebox(cnn, x, y, attacks, batch_size=32, masking=False, n_examples=[None, 25])
    assert [r.n for r in part.results] == [60, 25]
    assert part.results[0].robust_correct == full.results[0].robust_correct
    # batches of 32 over 25 examples: the same per-example outcome as the first 25 of the full run
    assert part.results[1].robust_correct == full.results[1].robust_correct[:25]
    assert dataclasses.asdict(prefix(full.results[1], 25)) == dataclasses.asdict(part.results[1]) | {
        "seconds": full.results[1].seconds, "forward_passes": None, "backward_passes": None}
    w = part.worst["linf-eps0.1000"]
    assert w.n == 25 and w.robust_correct == full.worst["linf-eps0.1000"].robust_correct[:25]
    assert prefix(full.results[0], 60) is full.results[0]
    with pytest.raises(ValueError, match="one entry per attack"):
        evaluate_whitebox(cnn, x, y, attacks, n_examples=[10])
    with pytest.raises(ValueError, match=">= 1 or None"):
        evaluate_whitebox(cnn, x, y, attacks, n_examples=[0, None])


class _AutocastProbe(nn.Module):
    """Records, for every forward pass, whether gradients and bfloat16 autocast were on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return self.inner(x)


def test_attacks_craft_in_the_requested_precision_and_are_scored_in_float32(cnn: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:40], test_xy[1][:40]
    attacks = [AttackSpec(name="fgsm", eps=0.1), AttackSpec(name="pgd", eps=0.1, steps=3)]
    probe = _AutocastProbe(cnn)
    res = evaluate_whitebox(probe, x, y, attacks, batch_size=40, masking=False, compile=False,
                            precision=["fp32", "bf16"])
    assert [r.precision for r in res.results] == ["fp32", "bf16"]
    assert res.worst["linf-eps0.1000"].precision == "mixed"
    gradient_passes = [amp for grad, amp in probe.calls if grad]
    assert gradient_passes == [False] + [True] * 3  # FGSM's one step in float32, PGD's three under bf16
    assert not any(amp for grad, amp in probe.calls if not grad)  # clean pass and scoring in float32
    ref = evaluate_whitebox(cnn, x, y, attacks[1:], batch_size=40, masking=False, compile=False)
    assert abs(ref.results[0].robust_accuracy - res.results[1].robust_accuracy) <= 0.1  # as strong, roughly
    assert json.loads(json.dumps(res.to_dict()))["results"][1]["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision: must be one of 'fp32', 'bf16', got 'fp16'"):
        evaluate_whitebox(cnn, x, y, attacks, precision="fp16")
    with pytest.raises(ValueError, match="precision: one entry per attack"):
        evaluate_whitebox(cnn, x, y, attacks, precision=["bf16"])


@pytest.mark.parametrize("name, kw", [("square", {"params": {"n_queries": 20}}),
                                      ("fab", {"steps": 3, "params": {"multi_targeted": True}})])
def test_third_party_attacks_craft_under_bf16_with_float32_logits(cnn: nn.Module, test_xy, name: str, kw: dict) -> None:
    # under autocast the logits are bfloat16; torchattacks mixes them with its float32 buffers
    # (Square's index_put fails on the dtype mismatch) unless the backend hands it float32 logits
    x, y = test_xy[0][:12], test_xy[1][:12]
    spec = AttackSpec(name=name, backend="torchattacks", eps=0.1, **kw)
    res = evaluate_whitebox(cnn, x, y, [spec], masking=False, compile=False, precision="bf16")
    r = res.results[0]
    assert r.precision == "bf16" and 0.0 <= r.robust_accuracy <= r.clean_accuracy
    assert r.max_perturbation is None or r.max_perturbation <= 0.1 + 1e-6


def test_masking_flags_documented_once_with_anchors() -> None:
    doc = (REPO / DOC_PATH).read_text(encoding="utf-8")
    for name in FLAG_NAMES:
        assert doc.count(f'<a id="{name}"></a>') == 1, name
        assert f"## {name}" in doc


# ----------------------------------------------------------------------------- masking flags
class SignLayer(nn.Module):
    """Binarises the input: a step function whose gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sign(x - 0.5) + 0.5


class AlwaysDropout(nn.Module):
    """Dropout that stays active in eval mode (a randomised defence)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.3, training=True)


def _flags(res) -> dict:
    return {f.name: f for f in res.flags}


def test_masking_flags_on_step_function_model(linear: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:100], test_xy[1][:100]
    masked = nn.Sequential(SignLayer(), linear).eval()
    assert _acc(masked, x, y) > 0.6
    res = evaluate_whitebox(masked, x, y, [AttackSpec(name="bim", eps=0.3, steps=5)], dataset=DATASET)
    f = _flags(res)
    assert f["zero-or-nonfinite-gradients"].triggered and f["zero-or-nonfinite-gradients"].value == 1.0
    assert f["accuracy-not-zero-at-large-eps"].triggered
    assert f["noise-beats-gradient-attack"].triggered
    assert f["zero-or-nonfinite-gradients"].doc == "docs/masking_flags.md#zero-or-nonfinite-gradients"
    assert "docs/masking_flags.md#zero-or-nonfinite-gradients" in f["zero-or-nonfinite-gradients"].message
    assert not f["randomized-forward"].triggered


def test_masking_flag_saturating_layer(linear: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:50], test_xy[1][:50]
    sat = nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(784, 784), nn.Hardtanh(-1e-3, 1e-3)).eval()
    with torch.no_grad():
        sat[2].weight.copy_(torch.eye(784) * 100.0)
        sat[2].bias.zero_()
    model = nn.Sequential(sat, nn.Unflatten(1, (1, 28, 28)), linear).eval()
    res = evaluate_whitebox(model, x, y, [AttackSpec(name="fgsm", eps=0.1)], masking=MaskingConfig(max_examples=50))
    assert _flags(res)["zero-or-nonfinite-gradients"].value > 0.9


def test_masking_flag_randomness(linear: nn.Module, test_xy) -> None:
    x, y = test_xy[0][:64], test_xy[1][:64]
    rnd = nn.Sequential(Normalize(), nn.Flatten(), AlwaysDropout(), *list(linear.children())[2:]).eval()
    res = evaluate_whitebox(rnd, x, y, [AttackSpec(name="fgsm", eps=0.1)], dataset=DATASET)
    f = _flags(res)["randomized-forward"]
    assert f.triggered and f.value > 1e-3


def test_plain_linear_model_triggers_no_flag(linear: nn.Module, test_xy) -> None:
    x, y = test_xy
    attacks = [AttackSpec(name="fgsm", eps=0.05), AttackSpec(name="pgd", eps=0.05, steps=20)]
    res = evaluate_whitebox(linear, x, y, attacks, dataset=DATASET)
    assert res.triggered == [], [f.message for f in res.flags if f.triggered]
    evaluated = {f.name for f in res.flags if f.evaluated}
    assert evaluated == set(FLAG_NAMES) - {"transfer-beats-whitebox", "square-beats-whitebox"}
    assert not res.flag("transfer-beats-whitebox").evaluated


def test_one_step_beats_iterative_flag_triggers() -> None:
    n = 100
    cc = torch.ones(n, dtype=torch.bool)
    fg = attack_result("m", AttackSpec(name="fgsm", eps=0.1).resolve(), cc, torch.arange(n) < 20, torch.zeros(n))
    pg = attack_result("m", AttackSpec(name="pgd", eps=0.1).resolve(), cc, torch.arange(n) < 50, torch.zeros(n))
    f = flag_one_step_beats_iterative([fg, pg], tol=0.01)
    assert f.triggered and f.value == pytest.approx(0.3)
    fg_equal = attack_result("m", AttackSpec(name="fgsm", eps=0.1).resolve(), cc, torch.arange(n) < 50, torch.zeros(n))
    ok = flag_one_step_beats_iterative([fg_equal, pg], tol=0.01)
    assert ok.evaluated and not ok.triggered and ok.value == 0.0
    other_eps = attack_result("m", AttackSpec(name="pgd", eps=0.2).resolve(), cc, torch.arange(n) < 50, torch.zeros(n))
    assert not flag_one_step_beats_iterative([fg, other_eps]).evaluated


def test_nan_gradient_model_is_flagged_and_attack_stays_valid(test_xy) -> None:
    class DivNorm(nn.Module):  # decoupled-style x / ||x||: NaN input gradient at x == 0
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = x.flatten(1)
            return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + 1e-12)

    torch.manual_seed(0)
    model = nn.Sequential(DivNorm(), nn.Linear(784, 10)).eval()
    x, y = test_xy[0][:16].clone(), test_xy[1][:16]
    x[:8] = 0.0  # zero images: ||x|| = 0
    x_adv = run_attack(model, x, y, AttackSpec(name="pgd", eps=0.1, steps=3))  # checked: finite
    assert torch.isfinite(x_adv).all()
    res = evaluate_whitebox(model, x, y, [AttackSpec(name="fgsm", eps=0.1)], masking=MaskingConfig(max_examples=16))
    f = _flags(res)["zero-or-nonfinite-gradients"]
    assert f.triggered and f.value == pytest.approx(0.5)
    assert "8 non-finite" in f.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_loop_has_no_host_sync(cnn: nn.Module, test_xy) -> None:  # pragma: no cover - GPU only
    model = copy.deepcopy(cnn).cuda()
    x, y = test_xy[0][:32].cuda(), test_xy[1][:32].cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    projected_gradient_attack(model, x, y, eps=0.1, step_size=0.02, steps=2, random_start=True, generator=gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        projected_gradient_attack(model, x, y, eps=0.1, step_size=0.02, steps=5, random_start=True,
                                  generator=gen, loss="dlr")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(1.0)


@pytest.mark.parametrize("kw", [dict(steps=7, random_start=True, restarts=2, threat_model="linf"),
                                dict(steps=5, random_start=False, restarts=1, threat_model="l2"),
                                dict(steps=4, random_start=True, restarts=1, threat_model="linf", targeted=True)])
def test_dropping_succeeded_examples_returns_exactly_the_same_adversarial_examples(kw):
    from robustbench_dc.attacks import make_targets, projected_gradient_attack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.rand(40, 1, 8, 8)
    y = model(x).argmax(1)
    targets = make_targets(model(x), y, "random", torch.Generator().manual_seed(1)) if kw.pop("targeted", False) \
        else None
    eps = 0.3 if kw["threat_model"] == "linf" else 1.5
    runs = [projected_gradient_attack(model, x, y, eps=eps, step_size=eps / 4, targets=targets, compact=c,
                                      generator=torch.Generator().manual_seed(2), **kw) for c in (True, False)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert (runs[0] != x).any()


def test_a_native_attack_is_one_decorated_function(tmp_path, capsys, monkeypatch) -> None:
    """A throwaway attack registered through the public registry runs through `rbdc evaluate` and a
    protocol, with its label, budget check and metrics, and leaves no trace once unregistered."""
    import json

    import yaml

    from robustbench_dc.attacks import native_attacks, register_attack, unregister_attack
    from robustbench_dc.cli import main

    @register_attack("corner-noise", iterative=False, default_steps=1)
    def corner_noise(model, x, y, spec, *, targets=None, eps=None, step_size=None, trace=None):
        """Uniform noise at the corners of the eps-ball (a weak attack, for the test)."""
        g = torch.Generator(device=x.device).manual_seed(spec.seed)
        sign = torch.randint(0, 2, x.shape, generator=g, device=x.device) * 2 - 1
        return (x + (spec.eps if eps is None else eps) * sign).clamp(0, 1)

    try:
        assert native_attacks()[:5] == ("fgsm", "bim", "pgd", "apgd", "autoattack")
        assert "corner-noise" in native_attacks()
        spec = AttackSpec(name="corner-noise").resolve("mnist")
        assert spec.label == "corner-noise-linf-eps0.3000-s1" and spec.loss == "ce" and not spec.iterative
        out = tmp_path / "r.json"
        assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width=0.125", "--data",
                     "mnist-sample", "-n", "16", "--attack", "corner-noise", "--attack", "fgsm", "--no-masking",
                     "--quiet", "--json", str(out)]) == 0
        assert "corner-noise-linf-eps0.3000-s1" in capsys.readouterr().out
        results = {r["attack"]: r for r in json.loads(out.read_text())["whitebox"]["results"]}
        assert results["corner-noise-linf-eps0.3000-s1"]["max_perturbation"] <= 0.3 + 1e-6
        monkeypatch.chdir(tmp_path)
        proto = {"name": "registry", "seed": 0, "dataset": {"name": "mnist-sample", "n_train": 64, "n_test": 16},
                 "models": [{"name": "m", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125},
                             "recipe": {"base": "mnist-fast", "epochs": 1, "batch_size": 32}}],
                 "evaluation": {"attacks": ["corner-noise", {"name": "corner-noise", "eps": 0.1}], "masking": False},
                 "figures": []}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
        assert main(["run", "p.yaml", "--quiet"]) == 0
        summary = json.loads((tmp_path / "runs" / "registry" / "summary.json").read_text())
        assert set(summary["models"]["m"]["whitebox"]) == {"corner-noise-linf-eps0.3000-s1",
                                                           "corner-noise-linf-eps0.1000-s1"}
    finally:
        unregister_attack("corner-noise")
    assert "corner-noise" not in native_attacks()
    with pytest.raises(ValueError, match="unknown native attack 'corner-noise'"):
        AttackSpec(name="corner-noise")

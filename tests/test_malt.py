"""``malt`` (APGD-CE, then APGD-T on the targets MALT's targeting ranks first) and the targeting
itself: exact on a linear model, its budget counted, never mistaken for AutoAttack."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robustbench_dc.attacks.apgd as apgd_mod
from robustbench_dc.attacks import AttackSpec, load_attack_config, native_attacks, run_attack
from robustbench_dc.attacks.apgd import apgd, malt_ranking
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.attacks.registry import register_attack, unregister_attack
from robustbench_dc.autoattack import autoattack, malt
from robustbench_dc.evaluation import evaluate_whitebox

from counting_models import Counter, Unbreakable
from synthetic import mnist_sample_tensors, train_small

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(d: int = 12, k: int = 6, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():   # rows of very different norms: the logit order and MALT's order differ
        lin.weight.mul_(torch.logspace(-1, 1, k)[:, None])
    return lin


def _expected_order(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """MALT's ranking of a linear model by hand: (z_y - z_t) / ||w_y - w_t||_p over t != y."""
    z = lin(x).detach()
    w = lin.weight.detach()
    rows = []
    for i in range(x.shape[0]):
        others = [t for t in range(w.shape[0]) if t != int(y[i])]
        d = [float((z[i, y[i]] - z[i, t]) / (w[y[i]] - w[t]).norm(p=p)) for t in others]
        rows.append([others[j] for j in sorted(range(len(others)), key=lambda j: d[j])])
    return torch.tensor(rows)


@pytest.mark.parametrize("threat_model, dual", [("linf", 1), ("l2", 2)])
def test_malt_ranking_is_the_exact_boundary_distance_of_a_linear_model(threat_model: str, dual: float) -> None:
    lin = _linear()
    x = torch.randn(20, 12)
    y = lin(x).argmax(1)
    order = malt_ranking(lin, x, y, threat_model)
    assert order.shape == (20, 5) and not (order == y[:, None]).any()
    assert torch.equal(order, _expected_order(lin, x, y, dual))
    logit_order = lin(x).detach().scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :5]
    assert not torch.equal(order, logit_order)   # the test would not tell the two apart otherwise


def test_malt_ranking_ranks_only_the_highest_logit_candidates() -> None:
    lin = _linear()
    x = torch.randn(20, 12)
    y = lin(x).argmax(1)
    order = malt_ranking(lin, x, y, "linf", candidates=2)
    top2 = lin(x).detach().scatter(1, y[:, None], float("-inf")).topk(2, dim=1).indices
    assert order.shape == (20, 2)
    assert torch.equal(order.sort(1).values, top2.sort(1).values)   # the same two classes, MALT's order
    with pytest.raises(ValueError, match="malt_candidates"):
        malt_ranking(lin, x, y, "linf", candidates=6)


def test_apgd_t_with_malt_order_attacks_the_targets_malt_ranks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    lin = _linear()
    x = torch.rand(8, 12)
    y = lin(x).argmax(1)
    seen: list[torch.Tensor] = []
    real_run = apgd_mod._run

    def spy(*args, target=None, **kw):
        seen.append(target.clone())
        return real_run(*args, target=target, **kw)

    monkeypatch.setattr(apgd_mod, "_run", spy)
    apgd(lin, x, y, 1e-4, steps=3, loss="dlr", targeted=True, n_target_classes=2, target_order="malt")
    expected = _expected_order(lin, x, y, 1)
    assert len(seen) == 2 and torch.equal(seen[0], expected[:, 0]) and torch.equal(seen[1], expected[:, 1])
    seen.clear()
    apgd(lin, x, y, 1e-4, steps=3, loss="dlr", targeted=True, n_target_classes=1)   # AutoAttack's order
    assert torch.equal(seen[0], lin(x).detach().argsort(1, descending=True)[:, 1])


def test_malt_runs_its_two_components_at_their_budget() -> None:
    counter = Counter(Unbreakable(16, 10))
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with PassCounter(counter) as passes:
        x_adv, parts = malt(counter, x, y, 0.3)
    assert [p["component"] for p in parts] == ["clean", "apgd-ce", "apgd-t-malt"]
    assert all(p["robust"] == 4 and p["backend"] in (None, "native") for p in parts)
    # APGD-CE 101 gradient evaluations; the targeting: one forward with autograd (9 backward
    # passes through it); APGD-T 3 x 101
    assert counter.grad["setup"] == 101 + 1 + 3 * 101
    assert parts[2]["budget"] == {"iterations": 100, "restarts": 1, "target_classes": 3, "targeting": "malt",
                                  "candidates": 9}
    assert parts[2]["backward_passes"] == 4 * (9 + 3 * 101)
    assert passes.backward == sum(p["backward_passes"] for p in parts)
    torch.testing.assert_close(x_adv, x)
    _, parts = malt(counter, x, y, 0.3, n_target_classes=20)   # capped at K - 1
    assert parts[2]["budget"]["target_classes"] == 9


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    xtr, ytr, xte, yte = mnist_sample_tensors(200)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    return train_small(m, xtr, ytr, 2, 3e-3, reseed=True).eval(), xte[:60], yte[:60]


def test_malt_breaks_what_autoattack_breaks_on_a_trained_model(cnn) -> None:
    """At an eps where AutoAttack leaves part of the examples robust, malt with 3 targets leaves
    the same number robust, up to one example (the targets and their order differ)."""
    model, x, y = cnn
    x_aa, parts_aa = autoattack(model, x, y, 0.1)
    x_m, parts_m = malt(model, x, y, 0.1)
    with torch.no_grad():
        r_aa, r_m = model(x_aa).argmax(1) == y, model(x_m).argmax(1) == y
    assert 0 < int(r_aa.sum()) < parts_aa[0]["robust"]            # something broken, something left
    assert parts_m[-1]["robust"] == int(r_m.sum()) and parts_m[1]["robust"] == parts_aa[1]["robust"]  # same APGD-CE
    assert abs(int(r_m.sum()) - int(r_aa.sum())) <= 1
    assert sum(p["backward_passes"] for p in parts_m) < sum(p["backward_passes"] for p in parts_aa)


def test_malt_is_a_registered_attack_with_its_own_label(cnn) -> None:
    model, x, y = cnn
    assert "malt" in native_attacks()
    spec = load_attack_config("malt-linf")
    assert spec.name == "malt" and spec.resolve("mnist").label == "malt-linf-eps0.3000"
    assert AttackSpec(name="malt", params={"n_target_classes": 1}).resolve("mnist").label == "malt-linf-eps0.3000-t1"
    assert AttackSpec(name="apgd", targeted=True, params={"target_order": "malt"}).resolve("mnist").label.endswith(
        "-tgt-malt")
    for bad, match in [(dict(steps=10), "steps"), (dict(params={"n_target_classes": 0}), "n_target_classes"),
                       (dict(params={"version": "rand"}), "version")]:
        with pytest.raises(ValueError, match=match):
            AttackSpec(name="malt", **bad)
    with pytest.raises(ValueError, match="target_order"):
        AttackSpec(name="apgd", targeted=True, params={"target_order": "confidence"})
    with pytest.raises(ValueError, match="only used by targeted"):
        AttackSpec(name="apgd", params={"target_order": "malt"})
    res = evaluate_whitebox(model, x[:20], y[:20], [AttackSpec(name="malt", eps=0.1)], masking=False)
    (r,) = res.results
    assert [c["component"] for c in r.components] == ["clean", "apgd-ce", "apgd-t-malt"]
    assert r.backward_passes == sum(c["backward_passes"] for c in r.components) > 0
    x_adv = run_attack(model, x[:20], y[:20], AttackSpec(name="malt", eps=0.1))
    assert (x_adv - x[:20]).abs().max() <= 0.1 + 1e-6


def test_malt_declares_its_own_work_for_the_compile_decision() -> None:
    from robustbench_dc.evaluation.whitebox import attack_work

    specs = [AttackSpec(name=name, **kw).resolve("cifar10") for name, kw in
             [("malt", {}), ("malt", {"params": {"n_target_classes": 1}}), ("autoattack", {}), ("pgd", {"steps": 20})]]
    assert [attack_work([s], 10) for s in specs] == [10 * (101 * 4 + 10), 10 * (101 * 2 + 10), 10 * 2900, 10 * 20]
    rand = AttackSpec(name="autoattack", params={"version": "rand"}).resolve("cifar10")
    assert attack_work([rand], 10) == 10 * 2 * 100 * 20

    @register_attack("undeclared-ensemble", ensemble=True, own_step_size=True, default_loss=None)
    def run(model, x, y, spec, *, targets=None, eps=None, step_size=None, trace=None):  # pragma: no cover
        raise AssertionError("not run")

    try:   # an ensemble that declares no work counts as AutoAttack's standard version
        assert attack_work([AttackSpec(name="undeclared-ensemble").resolve("cifar10")], 10) == 10 * 2900
    finally:
        unregister_attack("undeclared-ensemble")

"""Native Square Attack (robustbench_dc.autoattack.square): AutoAttack's schedule, what it returns,
the registry entry, and per-example agreement with Croce & Hein's own Square (``pyautoattack``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_dc.attacks import AttackSpec, run_attack
from robustbench_dc.attacks.checks import perturbation_norms
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.autoattack.square import p_schedule, square

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist():
    from robustbench_dc.data import load_examples
    from robustbench_dc.zoo import load_model

    model = load_model("mnist2d-baseline-mnist")
    x, y = load_examples("mnist-sample", 100)
    return model, x, y


def test_p_schedule_is_autoattacks():
    # AutoAttack runs Square with resc_schedule=False: p halves after queries 10, 50, 200, 500, ...
    got = [p_schedule(it, 0.8, 5000) for it in (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001,
                                                  4000, 4001, 4999)]
    assert got == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125,
                   0.00625, 0.00625]
    assert p_schedule(9000, 0.8, 10000) == 0.8 / 512
    # the reference's default stretches the 10,000-query schedule over the budget
    assert p_schedule(700, 0.8, 1000, rescale=True) == 0.8 / 256
    assert p_schedule(5, 0.8, 1000, rescale=True) == 0.4
    square_ref = pytest.importorskip("pyautoattack.square")
    for rescale in (False, True):
        ref = square_ref.SquareAttack(nn.Identity(), eps=0.1, n_queries=5000, resc_schedule=rescale)
        assert all(p_schedule(it, 0.8, 5000, rescale) == ref.p_selection(it) for it in range(0, 10001, 7))


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tm: str, eps: float, queries: int) -> torch.Tensor:
    square_ref = pytest.importorskip("pyautoattack.square")
    attack = square_ref.SquareAttack(model, norm={"linf": "Linf", "l2": "L2"}[tm], n_queries=queries, eps=eps,
                                     p_init=0.8, n_restarts=1, seed=0, resc_schedule=False, device="cpu")
    return attack.perturb(x, y)


@pytest.mark.parametrize("tm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_breaks_what_the_original_breaks(mnist, tm, eps):
    """Same seed, same draws in the same order: the same queries, so per example the same outcome.
    Tolerance: 2 of the 100 examples, for acceptance decisions that float rounding can flip (ours
    runs the model with batch norms folded; the original as it is). Measured at 300 queries: 0
    disagreements (L-inf 0.1: 77 of 99 broken by both, the points equal to 6e-8; L2 1.0: 35, to 2.4e-7)."""
    model, x, y = mnist
    model.eval()
    ours = square(model, x, y, eps, threat_model=tm, queries=300, seed=0)
    ref = _reference(model, x, y, tm, eps, 300)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        a, b = (model(ours).argmax(1) != y) & clean, (model(ref).argmax(1) != y) & clean
    assert int(b.sum()) >= 10                     # the comparison has something to compare
    assert int((a != b).sum()) <= 2, (int(a.sum()), int(b.sum()), int((a & b).sum()))
    assert int(a.sum()) >= int(b.sum()) - 1


@pytest.mark.parametrize("tm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_answers_are_valid_and_traced(mnist, tm, eps):
    model, x, y = mnist
    x, y = x[:40], y[:40]
    trace = AttackTrace(len(y))
    x_adv = square(model, x, y, eps, threat_model=tm, queries=50, seed=1, trace=trace)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert float(perturbation_norms(x_adv, x, tm).max()) <= eps * (1 + 1e-5)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        broken = model(x_adv).argmax(1) != y
    assert torch.equal(x_adv[~clean], x[~clean])      # clean errors are not searched
    assert (broken & clean).any()
    # every search step recorded: the examples the attack broke were seen adversarial, the others not
    assert torch.equal(trace.ever_adversarial, broken & clean)
    segs = trace.final_segments()
    unbroken = (clean & ~broken).nonzero().squeeze(1)
    assert all(segs[i].numel() == 51 for i in unbroken.tolist())          # the start + 50 queries
    assert all(bool((segs[i].diff() >= 0).all()) for i in unbroken.tolist())  # best-so-far objective


def test_a_broken_example_leaves_the_batch():
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls.append(x.shape[0])
            s = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([0.5 - s, s - 0.5], dim=1)   # class 1 once the mean pixel passes 0.5

    model = Linear()
    x = torch.cat([torch.full((1, 1, 8, 8), 0.45), torch.full((1, 1, 8, 8), 0.1)])  # one easy, one hopeless
    x_adv = square(model, x, torch.zeros(2, dtype=torch.long), 0.1, queries=20, seed=0)
    assert model.calls[0] == 2                         # the clean check
    assert 1 in model.calls                            # the easy example left the batch once broken
    assert model(x_adv).argmax(1).tolist() == [1, 0]


def test_registered_as_a_native_attack(mnist):
    model, x, y = mnist
    spec = AttackSpec(name="square", eps=0.1, steps=20)
    assert spec.native is not None and not spec.native.iterative
    x_adv = run_attack(model, x[:20], y[:20], spec, dataset="mnist")
    torch.testing.assert_close(x_adv, square(model, x[:20], y[:20], 0.1, queries=20, seed=0))
    with pytest.raises(ValueError, match="untargeted"):
        AttackSpec(name="square", targeted=True)
    assert AttackSpec(name="square", backend="torchattacks").native is None   # torchattacks' stays reachable

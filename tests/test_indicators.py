"""Attack-failure indicators: each one fires on a model built to trigger it and stays quiet on a plain
ReLU network evaluated the same way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.attacks import AttackSpec
from robustbench_dc.attacks.attack import run_attack_detailed
from robustbench_dc.attacks.spec import AttackConfigError
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.evaluation import MaskingConfig, attack_result, evaluate_whitebox
from robustbench_dc.evaluation.binarization import BinarizationConfig, binarization_test
from robustbench_dc.evaluation.masking import FLAG_NAMES, flag_square_beats_whitebox
from robustbench_dc.evaluation.masking.indicators import incomplete_optimization

from synthetic import mnist_sample_tensors, train_small

pytestmark = pytest.mark.usefixtures("one_thread")

N = 100
EPS = 0.05
CFG = MaskingConfig(max_examples=N, budget_examples=N)
NEW = ("silent-success", "incomplete-optimization", "budget-sensitivity", "non-monotone-eps-curve",
       "unconstrained-attack-failure", "unstable-predictions", "softmax-output", "square-beats-whitebox",
       "dynamic-forward")


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.1307) / 0.3081


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, ...]:
    return mnist_sample_tensors(N)


@pytest.fixture(scope="module")
def relu(data: tuple[torch.Tensor, ...]) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(Normalize(), nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
                      nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    return train_small(m, data[0], data[1], 2, 3e-3, reseed=True)


@pytest.fixture(scope="module")
def xy(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return data[2], data[3]


def _flags(res) -> dict:
    return {f.name: f for f in res.flags}


def _evaluate(model: nn.Module, xy, attacks=None, **cfg) -> dict:
    x, y = xy
    attacks = attacks or [AttackSpec(name="fgsm", eps=EPS), AttackSpec(name="pgd", eps=EPS, steps=20)]
    config = MaskingConfig(**{**CFG.__dict__, **cfg})
    return _flags(evaluate_whitebox(model, x, y, attacks, dataset="mnist-sample", masking=config))


# ----------------------------------------------------------------------------- the well-behaved network
@pytest.fixture(scope="module")
def relu_flags(relu: nn.Module, xy) -> dict:
    attacks = [AttackSpec(name="fgsm", eps=EPS), AttackSpec(name="pgd", eps=EPS, steps=20),
               AttackSpec(name="square", backend="torchattacks", eps=EPS, params={"n_queries": 100})]
    return _evaluate(relu, xy, attacks)


def test_plain_relu_network_triggers_no_indicator(relu_flags: dict) -> None:
    assert set(relu_flags) == set(FLAG_NAMES)
    for name in NEW:
        f = relu_flags[name]
        assert f.evaluated, name
        assert not f.triggered, f.message
    assert relu_flags["silent-success"].value == 0.0
    assert relu_flags["unconstrained-attack-failure"].value == 0.0
    assert relu_flags["softmax-output"].value == 0.0 and relu_flags["dynamic-forward"].value == 0.0
    assert "0.025: " in relu_flags["non-monotone-eps-curve"].message  # 0.5 x eps is on the curve


# ----------------------------------------------------------------------------- the recorded path
def test_trace_records_every_iterate_and_the_first_success(relu: nn.Module, xy) -> None:
    x, y = xy
    trace = AttackTrace(N)
    x_adv, _ = run_attack_detailed(relu, x, y, AttackSpec(name="bim", eps=EPS, steps=12), trace=trace)
    with torch.no_grad():
        broken = relu(x_adv).argmax(1) != y
    clean_ok = (relu(x).argmax(1) == y)
    # native attacks return the first adversarial iterate: no silent success on a deterministic model
    # (the last iterate is returned unevaluated, so it may break examples the trace did not see)
    assert not bool((trace.ever_adversarial & clean_ok & ~broken).any())
    assert int((trace.ever_adversarial & clean_ok).sum()) > 5
    lengths = [len(t) for t in trace.final_segments()]
    assert max(lengths) == 12 and min(lengths) >= 2  # examples leave the batch once broken (CPU)
    assert trace.iterations == 12


def test_incomplete_optimization_rule() -> None:
    ramp = torch.linspace(0, 1, 40)
    plateau = torch.cat([torch.linspace(0, 1, 20), torch.ones(20)])
    assert incomplete_optimization(ramp) is True
    assert incomplete_optimization(plateau) is False
    assert incomplete_optimization(torch.linspace(0, 1, 10)) is None  # too short to judge
    assert incomplete_optimization(torch.zeros(30)) is False  # no progress at all is not "still improving"


# ----------------------------------------------------------------------------- models built to trigger them
class AlwaysDropout(nn.Module):
    """Dropout that stays active in eval mode: a randomised defence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, training=True)


def test_randomized_model_triggers_silent_success_and_unstable_predictions(relu: nn.Module, xy) -> None:
    model = nn.Sequential(AlwaysDropout(), relu).eval()
    f = _evaluate(model, xy, budget_check=False)
    assert f["silent-success"].triggered and f["silent-success"].value > 0.05, f["silent-success"].message
    assert f["unstable-predictions"].triggered and f["unstable-predictions"].value > 0.25


def test_too_small_step_triggers_incomplete_optimization_and_budget_sensitivity(relu: nn.Module, xy) -> None:
    tiny = AttackSpec(name="pgd", eps=EPS, steps=20, step_size=EPS / 100, random_start=False)
    f = _evaluate(relu, xy, [tiny])
    assert f["incomplete-optimization"].triggered and f["incomplete-optimization"].value > 0.5
    assert f["budget-sensitivity"].triggered, f["budget-sensitivity"].message
    assert "40 iterations" in f["budget-sensitivity"].message


class NearestFallback(nn.Module):
    """A detector-style defence: farther than ``tau`` (L-inf) from every stored example, the model
    answers the nearest stored example's label with a huge logit (no gradient); else the network."""

    def __init__(self, base: nn.Module, bank_x: torch.Tensor, bank_y: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.base, self.tau = base, tau
        self.register_buffer("bank", bank_x.flatten(1).clone())
        self.register_buffer("bank_y", bank_y.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x.flatten(1)[:, None, :] - self.bank[None]).abs().amax(-1)
        dmin, j = d.min(1)
        far = (dmin > self.tau).to(x.dtype)[:, None]
        return self.base(x) * (1 - far) + far * 100.0 * F.one_hot(self.bank_y[j], 10).to(x.dtype)


def test_fallback_defence_makes_the_eps_curve_rise(relu: nn.Module, xy) -> None:
    x, y = xy
    model = NearestFallback(relu, x, y, tau=0.06).eval()
    f = _evaluate(model, xy, [AttackSpec(name="pgd", eps=EPS, steps=20)], budget_check=False)
    assert f["non-monotone-eps-curve"].triggered and f["non-monotone-eps-curve"].value > 0.05, \
        f["non-monotone-eps-curve"].message
    assert f["unconstrained-attack-failure"].triggered


class SignLayer(nn.Module):
    """Binarises the input: a step function whose gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sign(x - 0.5) + 0.5


def test_shattered_gradients_trigger_unconstrained_failure_and_square(relu: nn.Module, xy) -> None:
    model = nn.Sequential(SignLayer(), relu).eval()
    attacks = [AttackSpec(name="pgd", eps=0.3, steps=10),
               AttackSpec(name="square", backend="torchattacks", eps=0.3, params={"n_queries": 100})]
    f = _evaluate(model, xy, attacks, budget_check=False)
    assert f["unconstrained-attack-failure"].triggered and f["unconstrained-attack-failure"].value > 0.5
    assert f["square-beats-whitebox"].triggered, f["square-beats-whitebox"].message


def test_square_inside_autoattack_is_read_from_its_breakdown() -> None:
    n = 100
    cc = torch.ones(n, dtype=torch.bool)
    spec = AttackSpec(name="autoattack", eps=0.1).resolve()
    r = attack_result("m", spec, cc, torch.arange(n) < 30, torch.zeros(n))
    parts = [{"component": c, "robust": k} for c, k in (("clean", 100), ("apgd-ce", 40), ("apgd-t", 35),
                                                       ("fab-t", 35), ("square", 30))]
    r.components = parts
    f = flag_square_beats_whitebox([r])
    assert f.triggered and f.value == pytest.approx(0.05)
    r.components = parts[:-1] + [{"component": "square", "robust": 35}]
    assert not flag_square_beats_whitebox([r]).triggered


def test_softmax_output_is_flagged(relu: nn.Module, xy) -> None:
    f = _evaluate(nn.Sequential(relu, nn.Softmax(dim=1)).eval(), xy, budget_check=False)
    assert f["softmax-output"].triggered


class InnerOptimisation(nn.Module):
    """A test-time defence whose forward pass runs gradient descent on its input."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.detach().clone()
        for _ in range(3):
            z.requires_grad_(True)
            with torch.enable_grad():
                energy = (self.base(z).logsumexp(1)).sum()
                (g,) = torch.autograd.grad(energy, z)
            z = (z - 0.01 * g.sign()).clamp(0, 1).detach()
        return self.base(x + (z - x).detach())


def test_forward_that_optimises_is_flagged(relu: nn.Module, xy) -> None:
    model = InnerOptimisation(relu).eval()
    f = _evaluate(model, xy, [AttackSpec(name="fgsm", eps=EPS)], budget_check=False)
    assert f["dynamic-forward"].triggered and f["dynamic-forward"].value >= 3
    assert "grad" in f["dynamic-forward"].message


# ----------------------------------------------------------------------------- the binarization test
def test_binarization_test_passes_for_pgd_on_a_relu_network(relu: nn.Module, xy) -> None:
    x, y = xy
    res = binarization_test(relu, x, AttackSpec(name="pgd", eps=0.1, steps=20),
                            config=BinarizationConfig(n_points=12, n_inner=999))
    assert res.n_valid >= 10 and res.construction_failure_rate <= 2 / 12
    assert res.attack_success_rate is not None and res.attack_success_rate >= 0.9
    assert res.noise_success_rate is not None and res.noise_success_rate < res.attack_success_rate
    assert "attack success" in res.summary()


def test_binarization_test_fails_on_a_model_whose_gradients_are_masked(relu: nn.Module, xy) -> None:
    x, y = xy
    masked = nn.Sequential(SignLayer(), relu).eval()
    res = binarization_test(masked, x, AttackSpec(name="pgd", eps=0.1, steps=20),
                            config=BinarizationConfig(n_points=24, n_inner=999))
    assert res.n_valid >= 4  # binarised inputs: many boundary points share the inner points' features
    assert res.attack_success_rate is not None and res.attack_success_rate <= 0.1


def test_binarization_test_runs_inside_an_evaluation_and_refuses_what_it_cannot_test(relu: nn.Module, xy) -> None:
    x, y = xy
    with pytest.raises(AttackConfigError, match="binarization test"):
        binarization_test(relu, x, AttackSpec(name="apgd", eps=0.1, loss="dlr", targeted=True))
    res = evaluate_whitebox(relu, x[:20], y[:20], [AttackSpec(name="pgd", eps=0.1, steps=10),
                                                 AttackSpec(name="square", backend="torchattacks", eps=0.1,
                                                            params={"n_queries": 20})],
                            masking=False, binarization=BinarizationConfig(n_points=5, n_inner=200))
    pgd, square = res.results
    assert square.binarization is None
    assert pgd.binarization is not None and pgd.binarization["n_points"] == 5
    assert res.to_dict()["results"][0]["binarization"]["attack"] == pgd.attack

"""Lipschitz tools: exact answers on linear maps and convolutions, bounds vs estimates, CLEVER, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_dc.lipschitz import (
    affine_product_bound,
    clever_score,
    fit_reverse_weibull,
    gradient_norm_estimate,
    layer_operator_norms,
    lipschitz_report,
    operator_norm,
    second_order_status,
)
from robustbench_dc.operators import DecoupledConv2d
from robustbench_dc.zoo import Normalize, build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small ops are latency-bound, and two threads on two shared cores
    oversubscribe them (10x slower under load). The previous setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _explicit_matrix(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of the bias-free linear map at input ``shape`` (C, H, W): apply it to the identity basis."""
    m = module.double()
    if getattr(m, "bias", None) is not None:
        m.bias.data.zero_()
    d = math.prod(shape)
    with torch.no_grad():
        cols = m(torch.eye(d, dtype=torch.float64).view(d, *shape)).reshape(d, -1)
    return cols.T  # (out, in)


def _fft_conv_singular_values(weight: np.ndarray, n: int) -> np.ndarray:
    """Sedghi, Gupta & Long (ICLR 2019): singular values of a stride-1 circular convolution on n x n inputs
    are those of the c_out x c_in matrices of the 2-D DFT of the kernel zero-padded to n x n."""
    transform = np.fft.fft2(weight, s=(n, n), axes=(2, 3))  # (c_out, c_in, n, n)
    per_freq = transform.transpose(2, 3, 0, 1)  # (n, n, c_out, c_in)
    return np.linalg.svd(per_freq, compute_uv=False).ravel()


def _relu_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        Normalize((0.5,), (0.25,)),
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5),
    )
    bn = net[2]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5, generator=_gen(1))
        bn.running_var.uniform_(0.5, 2.0, generator=_gen(2))
        bn.weight.uniform_(0.5, 1.5, generator=_gen(3))
    return net.eval()


# ----------------------------------------------------------------------------- exact answers


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func internals
def test_linear_map_estimate_equals_its_largest_singular_value():
    torch.manual_seed(0)
    lin = nn.Linear(30, 7)
    sigma = float(torch.linalg.matrix_norm(lin.weight.detach().double(), 2))
    x, y = torch.rand(5, 30), torch.arange(5)
    for method in ("explicit", "power"):
        est = gradient_norm_estimate(lin, x, y, "l2", "logits", jacobian_method=method, iters=500)
        assert est.kind == "estimate (lower bound)"
        assert est.values == pytest.approx([sigma] * 5, rel=1e-4)
    (entry,) = layer_operator_norms(lin, (30,))
    assert entry.computed and entry.l2 == pytest.approx(sigma, rel=1e-4)
    assert entry.linf == pytest.approx(float(lin.weight.detach().double().abs().sum(1).max()), rel=1e-12)
    # In Linf geometry the logits estimate is the induced inf->inf norm: the largest L1 row norm.
    est = gradient_norm_estimate(lin, x, y, "linf", "logits")
    assert est.max == pytest.approx(float(lin.weight.detach().abs().sum(1).max()), rel=1e-5)
    bound = affine_product_bound(lin, (30,))
    assert bound.computed and bound.l2 == pytest.approx(sigma, rel=1e-4)


def test_circular_convolution_matches_the_fft_singular_values():
    torch.manual_seed(1)
    n = 8
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    exact = _fft_conv_singular_values(conv.weight.detach().double().numpy(), n).max()
    sigma, _, _ = operator_norm(conv, (1, 3, n, n), iters=2000, tol=1e-10, method="power")
    assert sigma == pytest.approx(exact, rel=1e-2)
    assert sigma <= exact * (1 + 1e-9)  # power iteration converges from below
    sigma_l, _, _ = operator_norm(conv, (1, 3, n, n), tol=1e-12, method="lanczos")
    assert sigma_l == pytest.approx(exact, rel=1e-6)
    (entry,) = layer_operator_norms(conv, (3, n, n), iters=50, tol=1e-10)  # "auto": power + Lanczos
    assert entry.l2 == pytest.approx(exact, rel=1e-6)
    # Circular padding: every row of the matrix holds every kernel tap once.
    assert entry.linf == pytest.approx(float(conv.weight.detach().double().abs().flatten(1).sum(1).max()), rel=1e-12)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 7, 7)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=2), (4, 9, 9)),
    (nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
])
def test_strided_padded_maps_match_their_explicit_matrix(conv, shape):
    torch.manual_seed(2)
    if isinstance(conv, nn.Conv2d):
        nn.init.normal_(conv.weight)
    (entry,) = layer_operator_norms(conv, shape, iters=3000, tol=1e-12, method="power")
    matrix = _explicit_matrix(conv, shape)
    exact = float(torch.linalg.matrix_norm(matrix, 2))
    assert entry.l2 == pytest.approx(exact, rel=1e-3)
    assert operator_norm(conv, (1, *shape), iters=30, tol=1e-12)[0] == pytest.approx(exact, rel=1e-8)
    assert entry.linf == pytest.approx(float(matrix.abs().sum(1).max()), rel=1e-9)
    assert entry.input_shape == list(shape)


def test_relu_network_estimates_never_exceed_the_product_bound():
    net = _relu_net()
    bound = affine_product_bound(net, (1, 12, 12), iters=1000, tol=1e-10)
    assert bound.computed, bound.reason
    layers = layer_operator_norms(net, (1, 12, 12), iters=1000, tol=1e-10)
    assert [l.kind for l in layers][:5] == ["affine", "affine", "affine", "activation", "pooling"]
    assert layers[0].l2 == pytest.approx(4.0)  # Normalize: 1 / std
    bn = net[2]
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    assert layers[2].l2 == pytest.approx(float(scale.abs().max()), rel=1e-6)
    assert bound.l2 == pytest.approx(math.prod(l.l2 for l in layers), rel=1e-9)
    x = torch.rand(16, 1, 12, 12, generator=_gen(4))
    y = torch.randint(0, 5, (16,), generator=_gen(5))
    limits = {("margin", "l2"): bound.margin_l2, ("margin", "linf"): bound.margin_linf,
              ("logits", "l2"): bound.l2, ("logits", "linf"): bound.linf}
    for norm, eps in (("l2", 1.0), ("linf", 0.1)):
        for target in ("margin", "logits"):
            est = gradient_norm_estimate(net, x, y, norm, target)
            assert 0 < est.max <= limits[(target, norm)]
        ball = gradient_norm_estimate(net, x, y, norm, "margin", ball_eps=eps, steps=4, samples=6)
        at_data = gradient_norm_estimate(net, x, y, norm, "margin")
        assert all(b >= a - 1e-7 for a, b in zip(at_data.values, ball.values))
        assert ball.max <= bound.margin_l2 if norm == "l2" else ball.max <= bound.margin_linf
    assert net.training is False


def test_overlapping_max_pool_is_bounded_by_the_window_count():
    (entry,) = layer_operator_norms(nn.MaxPool2d(3, stride=1), (1, 6, 6))
    assert entry.l2 == pytest.approx(3.0) and entry.linf == 1.0  # sqrt(3 * 3 windows per input)
    (entry,) = layer_operator_norms(nn.MaxPool2d(3, stride=2, padding=1), (1, 6, 6))
    assert entry.l2 == pytest.approx(2.0)


# ----------------------------------------------------------------------------- CLEVER


def _linear_classifier(k: int) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, k))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_clever_on_a_linear_model_recovers_margin_over_the_dual_norm(norm):
    model = _linear_classifier(3)
    x0 = 0.3 + 0.4 * torch.rand(1, 8, 8, generator=_gen(6))
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    logits = w @ x0.double().flatten() + b
    c = int(logits.argmax())
    q = 2 if norm == "l2" else 1
    expected = {j: (float(logits[c] - logits[j]), float(torch.linalg.vector_norm(w[c] - w[j], q)))
                for j in range(3) if j != c}
    radius = 50.0
    res = clever_score(model, x0, None, norm=norm, radius=radius, n_batches=10, batch_size=16)
    assert res.label == c and res.dual == ("l2" if norm == "l2" else "l1")
    for t in res.targets:
        margin, lip = expected[t.target]
        assert t.lipschitz == pytest.approx(lip, rel=0.02)
        assert t.score == pytest.approx(min(margin / lip, radius), rel=0.02)
    assert res.score == pytest.approx(min(m / l for m, l in expected.values()), rel=0.02)
    j = next(iter(expected))
    targeted = clever_score(model, x0, c, target_class=j, norm=norm, radius=radius, n_batches=5, batch_size=8)
    assert targeted.score == pytest.approx(expected[j][0] / expected[j][1], rel=0.02)
    capped = clever_score(model, x0, None, norm=norm, radius=1e-4, n_batches=5, batch_size=8)
    assert capped.score == pytest.approx(1e-4)


def test_weibull_fit_recovers_the_location_of_reverse_weibull_maxima():
    rng = np.random.default_rng(0)
    from scipy.stats import weibull_max

    sample = weibull_max.rvs(4.0, loc=3.0, scale=0.5, size=200, random_state=rng)
    fit = fit_reverse_weibull(sample)
    assert fit.fit_ok and fit.loc == pytest.approx(3.0, rel=0.03) and fit.loc >= sample.max() - 1e-12
    assert fit_reverse_weibull([2.0] * 10).loc == 2.0  # constant maxima: the sampled maximum


# ----------------------------------------------------------------------------- refusals


def test_decoupled_and_residual_networks_get_no_bound():
    model = build_model("mnist2d", "tanh+cos", dataset="mnist-sample", width=0.125)
    bound = affine_product_bound(model, (1, 28, 28), iters=20)
    assert not bound.computed and bound.l2 is None and bound.linf is None
    assert "body.0" in bound.reason and "DecoupledConv2d" in bound.reason and "not affine" in bound.reason
    layers = layer_operator_norms(model, (1, 28, 28), iters=20)
    decoupled = [l for l in layers if l.type in ("DecoupledConv2d", "DecoupledLinear")]
    assert len(decoupled) == 7
    assert all(not l.computed and l.kind == "decoupled" and l.l2 is None and "not affine" in l.reason
               for l in decoupled)
    assert layers[-1].name == "classifier" and layers[-1].computed

    baseline = build_model("mnist2d", "baseline", dataset="mnist-sample", width=0.125)
    assert affine_product_bound(baseline, (1, 28, 28), iters=20).computed

    resnet = build_model("resnet20", "baseline", dataset="mnist-sample", width=0.125)
    bound = affine_product_bound(resnet, (1, 28, 28), iters=20)
    assert not bound.computed and bound.l2 is None and "skip connection" in bound.reason
    assert "'stages.0' ('add') merges 2 tensors" in bound.reason


def test_untraceable_and_unknown_layers_get_no_bound():
    class Gate(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    bound = affine_product_bound(nn.Sequential(nn.Linear(4, 4), Gate()), (4,))
    assert not bound.computed and "traced" in bound.reason
    bound = affine_product_bound(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), (4,))
    assert not bound.computed and "LayerNorm" in bound.reason


class _OnceDifferentiableCube(torch.autograd.Function):
    """A user angular function whose backward is not differentiable (cos^3)."""

    @staticmethod
    def forward(ctx, c):
        ctx.save_for_backward(c)
        return c ** 3

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (c,) = ctx.saved_tensors
        return g * 3 * c ** 2


def test_once_differentiable_angular_falls_back_to_sampling():
    torch.manual_seed(4)
    # Built-in angular functions have exact second derivatives.
    for angular in ("linear", "sigmoid", "cos", "sqcos"):
        assert second_order_status(nn.Sequential(DecoupledConv2d(1, 3, 3, angular=angular)))[0], angular
    def cube(cos):
        return _OnceDifferentiableCube.apply(cos)

    model = nn.Sequential(DecoupledConv2d(1, 3, 3, padding=1, angular=cube), nn.Flatten(), nn.Linear(3 * 36, 3))
    ok, reason = second_order_status(model)
    assert not ok and reason
    x, y = torch.rand(4, 1, 6, 6, generator=_gen(7)), torch.tensor([0, 1, 2, 0])
    ball = gradient_norm_estimate(model, x, y, "l2", "margin", ball_eps=0.5, steps=3, samples=4)
    assert "derivative-free" in ball.note and "random sampling" in ball.method
    at_data = gradient_norm_estimate(model, x, y, "l2", "margin")
    assert all(b >= a for a, b in zip(at_data.values, ball.values))
    with pytest.raises(ValueError, match="not exact"):
        gradient_norm_estimate(model, x, y, "l2", "margin", ball_eps=0.5, steps=1, method="gradient")


# ----------------------------------------------------------------------------- determinism, report, CLI


def test_same_seed_gives_identical_estimates_and_no_global_rng_side_effect():
    torch.manual_seed(5)
    model = nn.Sequential(DecoupledConv2d(1, 4, 3, padding=1, magnitude="tanh", angular="cos"), nn.Tanh(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 4))
    relu_net = _relu_net()
    x, y = torch.rand(3, 1, 8, 8, generator=_gen(8)), torch.tensor([1, 2, 3])
    state = torch.get_rng_state()
    runs = [gradient_norm_estimate(model, x, y, "linf", "margin", ball_eps=0.1, steps=2, samples=3, seed=s)
            for s in (5, 5, 6)]
    assert runs[0].values == runs[1].values and runs[0].values != runs[2].values
    c1, c2 = (clever_score(model, x[0], 1, norm="l2", radius=1.0, n_batches=8, batch_size=8, seed=9) for _ in "ab")
    assert c1.to_dict() == c2.to_dict()
    n1, n2 = (layer_operator_norms(relu_net, (1, 12, 12), iters=30, seed=3) for _ in "ab")
    assert [l.l2 for l in n1] == [l.l2 for l in n2]
    assert torch.equal(torch.get_rng_state(), state)


def test_report_is_consistent_and_json_serialisable():
    net = _relu_net()
    x = torch.rand(4, 1, 12, 12, generator=_gen(10))
    y = torch.tensor([0, 1, 2, 3])
    report = lipschitz_report(net, x, y, ball_eps={"l2": 0.5, "linf": 0.05}, ball_steps=2, ball_samples=2,
                              clever_n=2, n_batches=4, batch_size=8, iters=300, progress=False)
    assert report.bound.computed and report.checks == []
    assert {(e.target, e.norm, e.ball_eps is None) for e in report.estimates} >= {("margin", "l2", False),
                                                                                  ("logits", "linf", True)}
    assert [c.norm for c in report.clever] == ["l2", "linf"] and len(report.clever[0].results) == 2
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d) >= {"model", "data", "estimates", "clever", "layers", "bound", "seed"}


def test_cli_handler_writes_the_json_report(tmp_path, capsys):
    from robustbench_dc.cli import build_parser

    out = tmp_path / "lip.json"
    args = build_parser().parse_args([
        "lipschitz", "--arch", "mnist2d", "--operator", "tanh+cos", "--dataset", "mnist", "--data", "mnist-sample",
        "--param", "width=0.125", "--n", "8", "--clever-n", "1", "--clever-batches", "3", "--clever-samples", "4",
        "--ball-steps", "1", "--ball-samples", "2", "--iters", "20", "--json", str(out), "--no-progress"])
    assert args.quiet  # --no-progress: the hidden alias of --quiet
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "estimate (lower bound)" in text and "not computed:" in text and "CLEVER" in text
    d = json.loads(out.read_text())
    assert set(d) >= {"model", "dataset", "data", "estimates", "clever", "layers", "bound", "seed"}
    assert d["data"]["n"] == 8 and d["bound"]["computed"] is False
    assert any(l["type"] == "DecoupledConv2d" and not l["computed"] for l in d["layers"])
    assert {e["norm"] for e in d["estimates"]} == {"l2", "linf"}

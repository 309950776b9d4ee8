"""Behaviour of the decoupled operator family against formulas, references and nn.Conv2d."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.operators import (
    ANGULARS,
    MAGNITUDES,
    WEIGHTED,
    DecoupledConv2d,
    DecoupledLinear,
    UnknownOperatorError,
    WeightProjection,
    angle,
    convert,
    decoupled_conv2d,
    enable_weighted_gradients,
    get_operator,
    orthogonality_penalty,
    project_weights,
)

from reference_ops import reference_conv2d

MAGS = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")
ANGS = ("linear", "cos", "sigmoid", "sqcos")
BOUNDED = ("sphere", "ball", "tanh")


def test_the_family_is_complete():
    assert set(MAGS) <= set(MAGNITUDES)
    assert set(ANGS) <= set(ANGULARS)
    assert {m for m in MAGS if MAGNITUDES[m].bounded} == set(BOUNDED)


@pytest.mark.parametrize("magnitude,angular,weighted", list(itertools.product(MAGS, ANGS, WEIGHTED)))
def test_gradcheck_float64_every_combination(magnitude, angular, weighted):
    torch.manual_seed(0)
    layer = DecoupledConv2d(2, 3, 3, padding=1, magnitude=magnitude, angular=angular, weighted=weighted,
                            rho=0.8, alpha=1.3, beta=0.4, dtype=torch.float64)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)

    def fn(x, w):
        return decoupled_conv2d(x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                rho=layer.rho, **layer._response_kwargs())

    # ``seg`` and ``ball`` have kinks at ||x|| = rho; random inputs avoid them almost surely.
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("magnitude,angular,weighted", list(itertools.product(MAGS, ANGS, WEIGHTED)))
@pytest.mark.parametrize("geometry", [dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=0, dilation=2)])
def test_fast_path_equals_unfold_reference(magnitude, angular, weighted, geometry):
    # a seed per case that does not depend on Python's hash randomisation (PYTHONHASHSEED)
    g = torch.Generator().manual_seed(zlib.crc32(f"{magnitude}|{angular}|{weighted}".encode()))
    params = dict(alpha=float(torch.rand((), generator=g) * 2 + 0.1), beta=float(torch.rand((), generator=g)),
                  rho=float(torch.rand((), generator=g) * 3 + 0.2), k=0.3)
    layer = DecoupledConv2d(3, 5, 3, magnitude=magnitude, angular=angular, weighted=weighted, **geometry, **params)
    x = torch.randn(2, 3, 9, 9, generator=g)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
        ours = layer(x)
        ref = reference_conv2d(x.double(), layer.weight.double(), magnitude=magnitude, angular=angular,
                               weighted=weighted, **geometry, **params)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("magnitude,angular", list(itertools.product(BOUNDED, ANGS)))
@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_bounded_operators_never_exceed_alpha(magnitude, angular, scale):
    torch.manual_seed(1)
    alpha = 0.7
    layer = DecoupledConv2d(3, 8, 3, padding=1, magnitude=magnitude, angular=angular, alpha=alpha, rho=0.5)
    assert layer.bounded
    x = torch.randn(4, 3, 8, 8) * scale
    with torch.no_grad():
        out = layer(x)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= alpha
    # Inputs aligned with a filter reach the bound (so the check above is not vacuous).
    # (Large filter and patch norms make the epsilons negligible.)
    with torch.no_grad():
        layer.weight.mul_(100.0)
        peak = layer(layer.weight[0:1] * 100.0)[0, 0, 1, 1]
    assert peak == pytest.approx(alpha, rel=1e-3)


@pytest.mark.parametrize("magnitude,angular,weighted", list(itertools.product(MAGS, ANGS, WEIGHTED)))
def test_all_zero_input_gives_finite_output_and_gradients(magnitude, angular, weighted):
    layer = DecoupledConv2d(3, 4, 3, padding=1, magnitude=magnitude, angular=angular, weighted=weighted)
    x = torch.zeros(2, 3, 5, 5, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.weight.grad).all()


def test_linear_magnitude_linear_weighting_cos_equals_conv2d():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, dilation=1, bias=False)
    dec = DecoupledConv2d(3, 6, 3, stride=2, padding=1, magnitude="linear", angular="cos", weighted="linear")
    with torch.no_grad():
        dec.weight.copy_(conv.weight)
    x = torch.randn(4, 3, 11, 11)
    torch.testing.assert_close(dec(x), conv(x), atol=1e-5, rtol=1e-5)
    assert dec.weight.shape == conv.weight.shape and dec.bias is None


def test_linear_layer_matches_nn_linear_and_reference():
    torch.manual_seed(3)
    lin = nn.Linear(7, 4, bias=False)
    dec = DecoupledLinear(7, 4, magnitude="linear", angular="cos", weighted="linear")
    with torch.no_grad():
        dec.weight.copy_(lin.weight)
    x = torch.randn(5, 2, 7)
    torch.testing.assert_close(dec(x), lin(x), atol=1e-5, rtol=1e-5)
    # A 1x1 convolution on a 1x1 image is a fully-connected layer: same response.
    tanh_lin = DecoupledLinear(7, 4, magnitude="tanh", angular="sigmoid", rho=0.5)
    tanh_conv = DecoupledConv2d(7, 4, 1, magnitude="tanh", angular="sigmoid", rho=0.5)
    with torch.no_grad():
        tanh_conv.weight.copy_(tanh_lin.weight.view(4, 7, 1, 1))
    x2 = torch.randn(5, 7)
    torch.testing.assert_close(tanh_lin(x2), tanh_conv(x2.view(5, 7, 1, 1)).view(5, 4))


def test_tanh_magnitude_is_tanh_to_float_rounding():
    """TanhConv's h is computed through exp (faster than torch.tanh on a CPU): the same function,
    value and derivative, to within a few float32 rounding steps, including far out and at zero."""
    from robustbench_dc.operators.magnitude import MAGNITUDES

    z = torch.cat([torch.logspace(-8, 3, 20000), -torch.logspace(-8, 3, 2000), torch.zeros(1)])
    z.requires_grad_(True)
    h = MAGNITUDES["tanh"](z, alpha=2.0, rho=0.5)
    (g,) = torch.autograd.grad(h.sum(), z)
    exact = torch.tanh(z.detach().double() / 0.5)
    torch.testing.assert_close(h.detach().double(), 2.0 * exact, rtol=0, atol=4e-7)
    torch.testing.assert_close(g.double(), 4.0 * (1 - exact ** 2), rtol=0, atol=2e-6)
    assert h.detach().abs().max() <= 2.0 and torch.isfinite(g).all()


def test_sigmoid_angular_endpoints_and_formula():
    g = ANGULARS["sigmoid"]
    cos = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(g(cos, k=0.3), torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    k = 0.3
    theta = torch.tensor(1.0, dtype=torch.float64)
    a = math.pi / (2 * k)
    expected = (1 + math.exp(-a)) / (1 - math.exp(-a)) * (1 - math.exp(theta / k - a)) / (1 + math.exp(theta / k - a))
    assert float(g(torch.cos(theta), k=k)) == pytest.approx(expected, rel=1e-12)


def test_angle_gradient_is_finite_at_perfect_alignment():
    c = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    theta = angle(c)
    theta.sum().backward()
    assert torch.isfinite(c.grad).all()
    torch.testing.assert_close(theta.detach(), torch.tensor([0.0, math.pi, math.pi / 3]))


def test_relative_rho_tracks_debiased_running_mean_of_patch_norm():
    torch.manual_seed(4)
    layer = DecoupledConv2d(3, 4, 3, padding=1, magnitude="tanh", rho_mode="relative", rho=1.0)
    assert layer.running_xnorm() is None
    x1, x2 = torch.rand(8, 3, 6, 6), torch.rand(8, 3, 6, 6) * 3
    from robustbench_dc.operators import patch_norm2d
    m1 = patch_norm2d(x1, (3, 3), 1, 1).mean()
    m2 = patch_norm2d(x2, (3, 3), 1, 1).mean()
    layer.train()
    out_train = layer(x1)
    # Training uses the batch mean: rho = (r^2 + 1e-4) * m with r = sqrt(rho).
    ref = reference_conv2d(x1, layer.weight.detach(), padding=1, magnitude="tanh", rho=(1.0 + 1e-4) * float(m1))
    torch.testing.assert_close(out_train.detach(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_xnorm(), m1)  # zero-debiased: one batch gives its mean
    layer(x2)
    expected = (0.999 * 0.001 * m1 + 0.001 * m2) / (1 - 0.999 ** 2)
    torch.testing.assert_close(layer.running_xnorm(), expected)
    layer.eval()
    before = layer.running_xnorm().clone()
    out_eval = layer(x1)
    torch.testing.assert_close(layer.running_xnorm(), before)  # eval does not update
    ref_eval = reference_conv2d(x1, layer.weight.detach(), padding=1, magnitude="tanh",
                                rho=(1.0 + 1e-4) * float(before))
    torch.testing.assert_close(out_eval.detach(), ref_eval, atol=1e-5, rtol=1e-5)


def test_learnable_rho_is_a_per_channel_parameter_that_learns():
    layer = DecoupledConv2d(3, 4, 3, magnitude="tanh", learnable_rho=True, rho=2.0)
    assert isinstance(layer.radius, nn.Parameter) and layer.radius.shape == (4,)
    torch.testing.assert_close(layer.radius.detach(), torch.full((4,), math.sqrt(2.0)))
    layer(torch.rand(2, 3, 5, 5)).sum().backward()
    assert layer.radius.grad is not None and layer.radius.grad.abs().sum() > 0
    fixed = DecoupledConv2d(3, 4, 3, magnitude="tanh", rho_mode="relative")
    assert "radius" not in dict(fixed.named_parameters()) and "radius" in dict(fixed.named_buffers())


@pytest.mark.parametrize("bad,match", [
    (dict(magnitude="nope"), "magnitude: unknown 'nope'; known: .*tanh"),
    (dict(angular="nope"), "angular: unknown 'nope'; known: .*sqcos"),
    (dict(weighted="heavy"), "weighted: must be one of"),
    (dict(rho=-1.0), r"rho: must be > 0, got -1"),
    (dict(k=0.0), r"k: must be > 0, got 0"),
    (dict(rho_mode="weird"), "rho_mode: must be one of"),
])
def test_bad_parameters_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        DecoupledConv2d(3, 4, 3, **bad)


def test_operator_specs():
    spec = get_operator("sphere+sqcos", alpha=2.0)
    layer = spec.make_conv(3, 4, 3, padding=1)
    assert isinstance(layer, DecoupledConv2d)
    assert (layer.magnitude.name, layer.angular.name, layer.alpha) == ("sphere", "sqcos", 2.0)
    assert type(get_operator("baseline").make_conv(3, 4, 3)) is nn.Conv2d
    assert get_operator("baseline").make_conv(3, 4, 3).bias is None
    assert get_operator("TanhConv").name == "tanh+cos"
    with pytest.raises(UnknownOperatorError, match="known: baseline, sphere\\+linear"):
        get_operator("quux+cos")
    with pytest.raises(ValueError, match="unknown parameter"):
        get_operator("tanh+cos", gamma=3)


def test_user_functions_and_classes_from_a_file(tmp_path):
    plugin = tmp_path / "my_ops.py"
    plugin.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from robustbench_dc.operators import register_magnitude, register_angular\n"
        "@register_magnitude('softsat_test', bounded=True)\n"
        "def softsat(norm, *, alpha, rho):\n"
        "    return alpha * norm / (norm + rho)\n"
        "@register_angular('cube_test')\n"
        "def cube(cos):\n"
        "    return cos ** 3\n"
        "class MyConv(nn.Conv2d):\n"
        "    def forward(self, x):\n"
        "        return torch.tanh(super().forward(x))\n"
    )
    spec = get_operator(f"{plugin}:softsat", rho=2.0)
    layer = spec.make_conv(3, 2, 3)
    x = torch.randn(1, 3, 3, 3)
    with torch.no_grad():
        n = torch.sqrt((x ** 2).sum() + 1e-4)
        expected = n / (n + 2.0) * (layer.weight * x).sum((1, 2, 3)) / torch.sqrt((layer.weight ** 2).sum((1, 2, 3)) + 1e-4) / n
        torch.testing.assert_close(layer(x).view(-1), expected)
    # Registration made the names usable in ordinary specs too.
    assert get_operator("softsat_test+cube_test").make_conv(3, 2, 3).angular.name == "cube_test"
    cls_spec = get_operator("my_ops.py:MyConv", base_dir=tmp_path)
    conv = cls_spec.make_conv(3, 2, 3, padding=1)
    assert type(conv).__name__ == "MyConv" and conv(torch.randn(1, 3, 4, 4)).abs().max() < 1
    with pytest.raises(UnknownOperatorError, match="has no 'Missing'"):
        get_operator(f"{plugin}:Missing")
    with pytest.raises(UnknownOperatorError, match="file not found"):
        get_operator("nowhere.py:X")


def test_registered_operator_class_and_entry_point_name(monkeypatch):
    from robustbench_dc.operators import OPERATORS, register_operator

    @register_operator("scaled_test")
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 0.5 * super().forward(x)

    try:
        assert isinstance(get_operator("scaled_test").make_conv(3, 2, 3), Scaled)
    finally:
        OPERATORS.pop("scaled_test")

    class FakeEP:
        name = "ep_test"

        @staticmethod
        def load():
            return Scaled

    import robustbench_dc.operators.registry as registry
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEP()] if group == registry.ENTRY_POINT_GROUP else [])
    assert isinstance(get_operator("ep_test").make_conv(3, 2, 3), Scaled)
    assert "ep_test" in registry.list_operators()


def test_convert_copies_weights_and_skips_classifier_and_shortcuts():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(8, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 16, 16), nn.ReLU(), nn.Linear(16, 10),
    )
    x = torch.rand(2, 3, 4, 4)
    original = [m.weight.detach().clone() for m in model if hasattr(m, "weight")]
    convert(model, "tanh+cos", rho=0.5)
    assert isinstance(model[0], DecoupledConv2d) and model[0].rho == 0.5
    torch.testing.assert_close(model[0].weight.detach(), original[0])
    assert type(model[2]) is nn.Conv2d  # 1x1 kept
    assert type(model[4]) is nn.Conv2d  # grouped kept
    assert type(model[7]) is nn.Linear and type(model[9]) is nn.Linear
    assert model(x).shape == (2, 10)
    convert(model, "tanh+cos", include_1x1=True, include_linear=True)
    assert isinstance(model[2], DecoupledConv2d) and model[2].bias is not None
    assert isinstance(model[7], DecoupledLinear) and type(model[9]) is nn.Linear


def test_convert_to_linear_linear_cos_preserves_the_function():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                          nn.LazyLinear(10))
    x = torch.rand(4, 3, 9, 9)
    before = model(x).detach()
    convert(model, "linear+cos", weighted="linear")
    assert isinstance(model[0], DecoupledConv2d) and isinstance(model[2], DecoupledConv2d)
    torch.testing.assert_close(model(x).detach(), before, atol=1e-5, rtol=1e-5)


def test_weight_projection_every_n_steps():
    torch.manual_seed(7)
    model = nn.Sequential(DecoupledConv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    plain = model[1].weight.detach().clone()
    proj = WeightProjection(model, every=3, scale=2.0)
    assert [proj.step() for _ in range(3)] == [False, False, True]
    norms = model[0].weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((4,), 2.0))
    torch.testing.assert_close(model[1].weight.detach(), plain)  # ordinary layers untouched
    assert project_weights(model) == 1


def test_weighted_gradients_multiply_each_filter_gradient_by_its_norm():
    torch.manual_seed(8)
    layer = DecoupledConv2d(3, 4, 3, magnitude="sphere")
    x = torch.randn(2, 3, 5, 5)
    layer(x).pow(2).sum().backward()
    plain = layer.weight.grad.clone()
    layer.weight.grad = None
    handles = enable_weighted_gradients(layer)
    layer(x).pow(2).sum().backward()
    norms = layer.weight.detach().flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(layer.weight.grad, plain * norms)
    for h in handles:
        h.remove()


def test_orthogonality_penalty_is_zero_for_orthonormal_filters():
    layer = DecoupledLinear(4, 4, magnitude="sphere", eps=0.0)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4) * 3)
    assert float(orthogonality_penalty(layer).detach()) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        layer.weight.copy_(torch.ones(4, 4))
    # Gram of identical unit filters is all-ones: 12 off-diagonal ones.
    assert float(orthogonality_penalty(layer, coef=1.0).detach()) == pytest.approx(0.5 * 12, rel=1e-5)


@pytest.mark.parametrize("angular", ANGS)
def test_second_derivatives_are_exact_for_input_gradient_norms(angular):
    # Lipschitz estimates maximise input-gradient norms: that needs exact double backward.
    torch.manual_seed(9)
    layer = DecoupledConv2d(2, 3, 3, padding=1, magnitude="tanh", angular=angular, dtype=torch.float64)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x), (x,), atol=1e-5)


def test_angle_works_with_torch_func():
    c = torch.tensor([0.3, -0.7], dtype=torch.float64)
    jac = torch.func.jacrev(angle)(c)
    torch.testing.assert_close(torch.diagonal(jac), -1 / torch.sqrt(1 - c ** 2))
    _, tangent = torch.func.jvp(angle, (c,), (torch.ones_like(c),))
    torch.testing.assert_close(tangent, -1 / torch.sqrt(1 - c ** 2))


@pytest.mark.parametrize("magnitude", MAGS)
@pytest.mark.parametrize("weighted", [None, "linear", "separable"])
@pytest.mark.parametrize("variant", ["scalar-rho", "per-channel-rho", "negative-alpha"])
def test_fused_cos_path_equals_the_generic_autograd_path(magnitude, weighted, variant):
    torch.manual_seed(10)
    kw = dict(magnitude=magnitude, angular="cos", weighted=weighted, rho=0.7, beta=0.3,
              alpha=-1.5 if variant == "negative-alpha" else 1.5, learnable_rho=variant == "per-channel-rho",
              dtype=torch.float64)
    fused = DecoupledConv2d(3, 4, 3, padding=1, stride=2, **kw)
    plain = DecoupledConv2d(3, 4, 3, padding=1, stride=2, **kw)
    plain.load_state_dict(fused.state_dict())
    plain.fused = False
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out1, out2 = fused(x1), plain(x2)
    torch.testing.assert_close(out1, out2)
    g = torch.randn_like(out1)
    grads1 = torch.autograd.grad(out1, [x1, *fused.parameters()], g, allow_unused=True)
    grads2 = torch.autograd.grad(out2, [x2, *plain.parameters()], g, allow_unused=True)
    for a, b in zip(grads1, grads2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda x: fused(x), (x1,), eps=1e-6, atol=1e-5)
    lin_kw = {k: v for k, v in kw.items()}
    lin = DecoupledLinear(5, 3, **lin_kw)
    xl = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: lin(x), (xl,), eps=1e-6, atol=1e-5)
    lin_plain = DecoupledLinear(5, 3, **lin_kw)
    lin_plain.load_state_dict(lin.state_dict())
    lin_plain.fused = False
    torch.testing.assert_close(lin(xl), lin_plain(xl))


def test_an_operator_built_from_user_code_carries_the_hash_of_its_file(tmp_path):
    """Protocol job keys include it (robustbench_dc.protocol.plan): a magnitude registered in a user's
    file and then named as 'name+cos' counts as that file's code; built-in operators have none."""
    import hashlib

    from robustbench_dc.operators import registry
    from robustbench_dc.operators.magnitude import MAGNITUDES

    path = tmp_path / "mags.py"
    path.write_text("from robustbench_dc.operators import register_magnitude\n\n\n"
                    "@register_magnitude('halfnorm_test')\n"
                    "def halfnorm_test(norm, *, alpha):\n"
                    "    return alpha * norm / 2\n")
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        by_reference = registry.get_operator(f"{path}:halfnorm_test")
        by_name = registry.get_operator("halfnorm_test+cos")
    finally:
        MAGNITUDES.pop("halfnorm_test", None)
    assert by_reference.source_sha256 == file_sha
    assert by_name.source_sha256 == hashlib.sha256(file_sha.encode()).hexdigest()
    assert by_reference.with_params(alpha=2.0).source_sha256 == file_sha
    for builtin in ("baseline", "tanh+cos", "sphereconv"):
        assert registry.get_operator(builtin).source_sha256 is None


@pytest.mark.parametrize("k,stride,padding,dilation", [
    (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 0, 1), (5, 1, 2, 1), (5, 2, 1, 1),  # sum pooling
    (3, 1, 2, 2), (3, 1, "same", 1), (3, 1, 2, 1),  # dilation, string padding, padding > k // 2: convolution
])
def test_patch_norm_equals_the_single_channel_convolution(k, stride, padding, dilation) -> None:
    from robustbench_dc.operators import patch_norm2d

    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 9, requires_grad=True)
    got = patch_norm2d(x, (k, k), stride, padding, dilation)
    ref = torch.sqrt(F.conv2d((x * x).sum(1, keepdim=True), torch.ones(1, 1, k, k), None, stride, padding,
                              dilation).clamp_min(0.0) + 1e-4)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ref)
    (g,) = torch.autograd.grad((got * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_patch_norm_sums_by_pooling_in_float32_and_by_convolution_under_autocast(monkeypatch) -> None:
    from robustbench_dc.operators import functional, patch_norm2d

    pooled: list[torch.dtype] = []
    pool = F.avg_pool2d
    monkeypatch.setattr(functional.F, "avg_pool2d", lambda t, *a, **kw: pooled.append(t.dtype) or pool(t, *a, **kw))
    x = torch.rand(2, 3, 8, 8)
    patch_norm2d(x, (3, 3), 1, 1)
    assert pooled == [torch.float32]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = patch_norm2d(x, (3, 3), 1, 1)
    assert pooled == [torch.float32] and out.dtype == torch.bfloat16

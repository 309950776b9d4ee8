"""Windowed forward passes (robustbench_dc.attacks.windowed): the logits of an input that differs from
the current one in a window, computed from the current feature maps, are the full forward pass's."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_dc.attacks import windowed as windowed_mod
from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.attacks.steps import attack_mode
from robustbench_dc.attacks.windowed import FULL_FRACTION, WindowedForward, _Window, layer_window
from robustbench_dc.autoattack.square import square
from robustbench_dc.operators.hooks import compiled_responses
from robustbench_dc.zoo import build_model

TANH = {"rho": 1.0, "rho_mode": "relative", "learnable_rho": True}


def _trained_stats(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """``model`` after one training-mode forward pass (running statistics of BN and of ||x||), in eval mode."""
    torch.manual_seed(1)
    model.train()
    model(torch.rand(16, *shape))
    return model.eval()


def _walk(model: nn.Module, x: Tensor, steps: int, sizes: list[int], seed: int = 0) -> float:
    """Largest |windowed - full| logit difference over ``steps`` random window changes, with random
    rows accepted after each and rows dropped half-way, as Square Attack drives it."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad(), attack_mode(model, x) as channels_last:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        cur = x.contiguous(memory_format=fmt)
        fwd = WindowedForward.build(model, cur, model(cur))
        assert fwd is not None
        h, w = x.shape[-2:]
        for t in range(steps):
            s = sizes[t % len(sizes)]
            # corners and edges first, then random places
            vh, vw = [(0, 0), (h - s, w - s), (0, w - s), (h - s, 0)][t] if t < 4 else \
                (rng.randint(0, h - s), rng.randint(0, w - s))
            cand = cur.clone()
            cand[:, :, vh:vh + s, vw:vw + s] = torch.rand(cur.shape[0], cur.shape[1], s, s, generator=gen)
            z = fwd.window(cand, (vh, vh + s, vw, vw + s))
            worst = max(worst, float((z - model(cand)).abs().max()))
            rows = torch.tensor([r for r in range(cur.shape[0]) if rng.random() < 0.5], dtype=torch.long)
            fwd.accept(rows)
            cur[rows] = cand[rows]
            if t == steps // 2:
                keep = torch.arange(0, cur.shape[0], 2)
                fwd.keep(keep)
                cur = cur[keep].contiguous(memory_format=fmt)
        assert fwd.rows == cur.shape[0]
        worst = max(worst, float((fwd.logits - model(cur)).abs().max()))
    return worst


@pytest.mark.parametrize("operator, params", [("baseline", {}), ("tanh+cos", TANH), ("ball+cos", TANH),
                                              ("sphere+cos", {})])
def test_windowed_logits_are_the_full_forward_pass(operator: str, params: dict) -> None:
    """CNN-9 (width 0.25, batch norms folded, channels-last as attacks run it), windows of every
    size AutoAttack's Square uses on CIFAR-10 (1 to 29 pixels; from 12 on the change covers more than
    half of a map early), at the corners, edges and random places."""
    torch.manual_seed(0)
    model = _trained_stats(build_model("cnn9", operator, width=0.25, **params), (3, 32, 32))
    x = torch.rand(6, 3, 32, 32)
    assert _walk(model, x, 40, [1, 2, 3, 4, 5, 7, 10, 16, 29]) < 1e-4


def test_windowed_logits_with_compiled_folded_responses() -> None:
    """TanhConv with compiled responses: attack mode folds each batch norm and ReLU into the
    response kernel (a module of its own), whose unpadded forward the windowed pass calls."""
    torch.manual_seed(0)
    model = _trained_stats(build_model("cnn9", "tanh+cos", width=0.25, **TANH), (3, 32, 32))
    x = torch.rand(4, 3, 32, 32)
    with compiled_responses(model):
        with attack_mode(model, x):
            names = {type(m).__name__ for m in model.body}
        assert "_BatchNormFolded" in names  # the folded module is the one exercised
        assert _walk(model, x, 12, [1, 3, 5, 10]) < 1e-4


def test_windowed_logits_on_the_mnist_network() -> None:
    """MNIST2D: 5 x 5 kernels (2 pixels of halo), 28 x 28 inputs, a decoupled 2-unit embedding."""
    torch.manual_seed(0)
    model = _trained_stats(build_model("mnist2d", "tanh+cos", width=0.25), (1, 28, 28))
    assert _walk(model, torch.rand(5, 1, 28, 28), 20, [1, 2, 6, 13, 22]) < 1e-4


class _Strided(nn.Module):
    """A local stack with strides, dilation, overlapping pooling and odd sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(4, 5, 3, padding=2, dilation=2), nn.LeakyReLU(),
                                  nn.MaxPool2d(3, stride=2), nn.Conv2d(5, 6, (1, 3), padding=(0, 1)))
        self.head = nn.Linear(6 * 4 * 4, 7)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).flatten(1))

    def local_split(self) -> tuple[list[nn.Module], object]:
        return list(self.body), lambda z: self.head(z.flatten(1))


def test_windowed_logits_with_strides_dilation_and_overlapping_pools() -> None:
    torch.manual_seed(0)
    model = _Strided().eval()
    x = torch.rand(5, 3, 19, 19)
    assert model(x).shape == (5, 7)
    assert _walk(model, x, 30, [1, 2, 3, 5, 8]) < 1e-5


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 2, 0, 1),
                                                               (5, 1, 2, 1), (3, 1, 2, 2), (4, 3, 1, 1)])
def test_reach_is_exactly_the_outputs_a_change_reaches(kernel: int, stride: int, padding: int, dilation: int) -> None:
    """Brute force: the outputs of a ones-kernel convolution of a window's indicator that are nonzero
    (exactly those rows without dilation; with it, a range that contains them)."""
    geo = _Window((kernel, kernel), (stride, stride), (padding, padding), (dilation, dilation), lambda t: t)
    size = 11
    ones = torch.ones(1, 1, kernel, kernel)
    for r0 in range(size):
        for r1 in range(r0 + 1, size + 1, 3):
            ind = torch.zeros(1, 1, size, size)
            ind[:, :, r0:r1, 2:4] = 1.0
            hit = F.conv2d(ind, ones, None, stride, padding, dilation)[0, 0] > 0
            rows = hit.any(1).nonzero().flatten().tolist()
            out, inp = geo.reach((r0, r1, 2, 4), (size, size))
            if dilation == 1:
                assert (out[0], out[1]) == ((rows[0], rows[-1] + 1) if rows else (out[0], out[0]))
            else:  # the span of the dilated kernel: every reached output, maybe some between its taps
                assert all(out[0] <= r < out[1] for r in rows) and out[1] - out[0] <= len(rows) + dilation
            if rows:  # the input rows those outputs read: the kernel span from the first to the last
                assert inp[0] == out[0] * stride - padding
                assert inp[1] == (out[1] - 1) * stride - padding + dilation * (kernel - 1) + 1


def test_layers_not_known_local_or_too_many_inputs_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    # a relative radius before any training batch takes the batch mean: not local
    fresh = build_model("cnn9", "tanh+cos", width=0.25, **TANH).eval()
    with torch.no_grad(), attack_mode(fresh, x):
        assert WindowedForward.build(fresh, x, fresh(x)) is None
    model = _trained_stats(build_model("cnn9", "baseline", width=0.25), (3, 32, 32))
    with torch.no_grad():
        assert WindowedForward.build(model, x, model(x)) is not None
        # a hook on a layer would not see the windowed passes
        handle = model.body[0].register_forward_hook(lambda *a: None)
        assert WindowedForward.build(model, x, model(x)) is None
        handle.remove()
        # feature maps over the memory cap: ~650 kB per input here (3 inputs fit 2 MB, 6 do not)
        one = WindowedForward.build(model, x[:1], model(x[:1]))
        assert one is not None and 600_000 < one.cache_bytes() < 700_000
        monkeypatch.setattr(windowed_mod, "MAX_CACHE_BYTES", 2_000_000)
        assert WindowedForward.build(model, x, model(x)) is not None
        x6 = torch.cat((x, x))
        assert WindowedForward.build(model, x6, model(x6)) is None
        # logits that are not the split's (a forward that does more than the split says)
        assert WindowedForward.build(model, x, model(x) + 1.0) is None
        # no split, or a layer of unknown locality
        assert WindowedForward.build(nn.Sequential(model), x, model(x)) is None
        assert layer_window(nn.AdaptiveAvgPool2d(1)) is None
        assert layer_window(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")) is None
        assert layer_window(nn.MaxPool2d(3, padding=1)) is None
        assert layer_window(nn.BatchNorm2d(3).train()) is None
    assert 0 < FULL_FRACTION < 1


@pytest.mark.parametrize("shipped", [True, False])
def test_square_makes_the_same_queries_windowed(shipped: bool) -> None:
    """Square Attack with and without windowed passes, on the MNIST model shipped with the suite and
    on an untrained TanhConv MNIST network (its own predictions as labels): the same result and the
    same number of forward passes counted."""
    from robustbench_dc.data import load_examples
    from robustbench_dc.zoo import load_model

    x, y = load_examples("mnist-sample", 32)
    torch.manual_seed(0)
    model = load_model("mnist2d-baseline-mnist").eval() if shipped else \
        _trained_stats(build_model("mnist2d", "tanh+cos", width=0.25), (1, 28, 28))
    with torch.no_grad():
        y = model(x).argmax(1)
    runs = []
    for windowed in (False, True):
        with PassCounter(model) as passes:
            x_adv = square(model, x, y, 0.05 if shipped else 0.02, queries=150, windowed=windowed, seed=3)
        runs.append((x_adv, passes.forward))
    (full, n_full), (win, n_win) = runs
    assert float((full - win).abs().max()) < 1e-6
    assert n_full == n_win > 32 * 100
    with torch.no_grad():
        broken = model(win).argmax(1) != y
    assert 0 < int(broken.sum()) < 32  # some queries succeeded, some rows were searched to the end

"""Robustness curves (per-example minimal perturbations -> robust accuracy vs eps, median, AUC, intervals),
the two-track leaderboard and its tie rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_dc.minimum_norm.curve import (
    RobustnessCurve,
    bootstrap_interval,
    budget_norms,
    median_of,
    robustness_curve,
)
from robustbench_dc.minimum_norm.evaluate import evaluate_curves
from robustbench_dc.minimum_norm.run import MinimumNormSpec, minimal_perturbations
from robustbench_dc.results import LeaderboardEntry, render_leaderboard
from robustbench_dc.results.leaderboard import boards, rank_entries, tie_ranks

INF = math.inf


# ----------------------------------------------------------------------------- the curve's arithmetic


def test_curve_from_known_norms() -> None:
    norms = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, INF], dtype=torch.float64)  # a clean error, 4 broken, 1 never
    curve = robustness_curve({"a": norms}, "linf", eps_max=0.3, n_boot=200)
    assert curve.clean_accuracy == pytest.approx(5 / 6)
    assert curve.robust_accuracy_at(0.1) == pytest.approx(4 / 6)
    assert curve.robust_accuracy_at(0.2) == pytest.approx(3 / 6)  # broken at exactly eps: not robust
    assert curve.robust_accuracy_eps_max == pytest.approx(2 / 6)
    assert curve.median == pytest.approx(0.25)  # (0.2 + 0.3) / 2
    # AUC on [0, 0.3] normalised: mean of min(norm, 0.3) / 0.3
    assert curve.auc == pytest.approx((0 + 0.1 + 0.2 + 0.3 + 0.3 + 0.3) / 0.3 / 6)
    assert curve.unbroken == 1
    assert curve.eps[0] == 0.0 and curve.eps[-1] == pytest.approx(0.3)
    assert curve.robust_accuracy[0] == pytest.approx(curve.clean_accuracy)
    assert curve.found_by == ["clean", "a", "a", "a", "a", ""]
    back = RobustnessCurve.from_dict(curve.to_dict())
    assert back.norms[-1] == INF and back.median == curve.median


def test_curve_takes_the_smallest_bound_and_counts_what_the_minimum_norm_attacks_missed() -> None:
    fmn = torch.tensor([0.05, 0.4, INF, 0.0], dtype=torch.float64)
    pgd = budget_norms(torch.tensor([True, True, True, False]), torch.tensor([False, False, True, False]),
                       torch.tensor([0.2, 0.30000004, 0.3, 0.3], dtype=torch.float64), eps=0.3)
    assert pgd.tolist() == [0.2, 0.3, INF, 0.0]  # float32 rounding above eps is clamped to the budget
    curve = robustness_curve({"fmn": fmn, "pgd": pgd}, "linf", 0.3, budgets={"pgd": 0.3}, n_boot=100)
    assert curve.norms == [0.05, 0.3, INF, 0.0]
    assert curve.found_by == ["fmn", "pgd", "", "clean"]
    assert curve.missed == {"pgd": 1}  # example 1: PGD broke it at 0.3, FMN alone said 0.4
    assert curve.robust_accuracy_at(0.3) == pytest.approx(1 / 4)


def test_median_even_odd_and_infinite() -> None:
    assert float(median_of(torch.tensor([3.0, 1.0, 2.0]))) == 2.0
    assert float(median_of(torch.tensor([4.0, 1.0, 2.0, 3.0]))) == 2.5
    assert math.isinf(float(median_of(torch.tensor([1.0, INF, INF]))))
    assert not math.isnan(float(median_of(torch.tensor([1.0, INF]))))


def test_bootstrap_interval_is_seeded_and_covers_the_statistic() -> None:
    values = torch.rand(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = bootstrap_interval(values, lambda v: v.mean(-1), n_boot=500, seed=3)
    assert lo < float(values.mean()) < hi
    assert (lo, hi) == bootstrap_interval(values, lambda v: v.mean(-1), n_boot=500, seed=3)
    # about the normal interval's width: 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * float(values.std()) / 20, rel=0.25)
    constant = torch.full((50,), 0.7, dtype=torch.float64)
    assert bootstrap_interval(constant, lambda v: v.mean(-1), n_boot=100) == pytest.approx((0.7, 0.7))


def test_curve_refuses_negative_or_nan_bounds() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        robustness_curve({"a": torch.tensor([0.1, -0.2])}, "linf", 0.3)
    with pytest.raises(ValueError, match=">= 0"):
        robustness_curve({"a": torch.tensor([0.1, math.nan])}, "linf", 0.3)


# ----------------------------------------------------------------------------- a model with a known answer


class _Linear(nn.Module):
    """Three-class linear classifier on 8 inputs; weights small enough that the box [0, 1] is not
    active for inputs near 0.5 (the minimal perturbation is the closed form)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3, 8, generator=g))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _closed_form(model: _Linear, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """min over k != y of (logit_y - logit_k) / ||w_y - w_k||_dual (dual: L2 -> L2, L-inf -> L1)."""
    w, logits = model.fc.weight.detach(), model(x).detach()
    out = torch.full((x.shape[0],), INF, dtype=torch.float64)
    for k in range(3):
        diff = w[y] - w[k]
        dual = diff.norm(p=2 if norm == "l2" else 1, dim=1).double()
        margin = (logits.gather(1, y[:, None])[:, 0] - logits[:, k]).double()
        out = torch.where(y == k, out, torch.minimum(out, margin / dual))
    return out


def _linear_examples() -> tuple[_Linear, torch.Tensor, torch.Tensor]:
    model = _Linear()
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.02 * torch.randn(40, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct: the curve starts at 100%
    return model, x, y


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_curve_of_a_linear_classifier_matches_the_closed_form(norm: str) -> None:
    model, x, y = _linear_examples()
    exact = _closed_form(model, x, y, norm)
    assert float(exact.max()) < 0.4  # the box [0, 1] around 0.5 +- 0.06 is not active
    out = evaluate_curves(model, x, y, ["fmn", "fab"], {norm: 0.5}, steps=100, n_boot=200)
    curve = RobustnessCurve.from_dict(out["curves"][norm])
    found = torch.tensor(curve.norms, dtype=torch.float64)
    # attacks give upper bounds: never below the exact minimum, and close to it
    assert bool((found >= exact * (1 - 1e-4)).all())
    assert found.div(exact).max() < 1.02
    assert curve.median == pytest.approx(float(median_of(exact)), rel=0.01)
    for eps in (0.5 * float(exact.min()), float(median_of(exact)), 1.5 * float(exact.max())):
        assert curve.robust_accuracy_at(eps) == pytest.approx(float((exact > eps).double().mean()), abs=1 / 40 + 1e-9)
    for label, log in out["attacks"].items():
        assert log["not_adversarial"] == 0 and log["lost"] == 0 and log["unbroken"] == 0, label
        assert log["forward_passes"] > 0 and log["backward_passes"] > 0


def test_minimal_perturbations_checks_what_the_attack_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustbench_dc.attacks.checks import ConstraintViolation

    model, x, y = _linear_examples()
    spec = MinimumNormSpec("fmn", "linf", steps=5)
    # an attack that reports success without it: the perturbed point is scored, not trusted
    monkeypatch.setattr(MinimumNormSpec, "run", lambda self, m, xb, yb, trace=None: (xb + 0.001).clamp(0, 1))
    res = minimal_perturbations(model, x, y, spec)
    assert torch.isinf(res.norms).all() and res.not_adversarial == x.shape[0]
    monkeypatch.setattr(MinimumNormSpec, "run", lambda self, m, xb, yb, trace=None: xb + 2.0)
    with pytest.raises(ConstraintViolation, match="range"):
        minimal_perturbations(model, x, y, spec)
    with pytest.raises(ValueError, match="unknown 'fnm'.*fmn"):
        MinimumNormSpec("fnm")


# ----------------------------------------------------------------------------- leaderboards


def _entry(name: str, training: str = "natural", worst: float | None = None, interval: list[float] | None = None,
           median: float | None = None, median_interval: list[float | None] | None = None,
           clean: float = 0.9) -> LeaderboardEntry:
    curves = {} if median is None else {"linf": {"median": median, "median_interval": median_interval,
                                                 "auc": 0.1, "auc_interval": [0.05, 0.15], "eps_max": 0.3}}
    return LeaderboardEntry(name=name, architecture="mnist2d", operator="baseline", dataset="mnist-sample",
                            threat_model="linf", eps=0.3, clean_accuracy=clean, training=training,
                            worst_case_robust_accuracy=worst, worst_case_interval=interval, curves=curves,
                            protocol="leaderboard-mnist", n_test=1000, run_id="r1")


def test_tie_rule_overlapping_intervals_share_a_rank() -> None:
    a = _entry("a", median=0.20, median_interval=[0.18, 0.22])
    b = _entry("b", median=0.19, median_interval=[0.17, 0.21])  # overlaps a: tied with it
    c = _entry("c", median=0.10, median_interval=[0.08, 0.12])  # below both
    d = _entry("d", median=None)  # no curve: last
    ranked = rank_entries([c, d, b, a], "median:linf")
    assert [e.name for e in ranked] == ["a", "b", "c", "d"]
    assert tie_ranks(ranked, "median:linf") == [1, 1, 3, 4]
    md = render_leaderboard([a, b, c], "md", metric="median:linf")
    assert "| 1= | a |" in md and "| 1= | b |" in md and "| 3 | c |" in md and "Equal ranks are ties" in md
    # separated intervals: distinct ranks, no tie note
    b_far = _entry("b", median=0.15, median_interval=[0.14, 0.16])
    assert tie_ranks(rank_entries([a, b_far, c], "median:linf"), "median:linf") == [1, 2, 3]
    assert "Equal ranks" not in render_leaderboard([a, b_far, c], "md", metric="median:linf")


def test_an_infinite_median_ranks_first() -> None:
    strong = _entry("strong", median=None, median_interval=[0.3, None])
    strong.curves = {"linf": {"median": None, "median_interval": [0.3, None]}}
    weak = _entry("weak", median=0.1, median_interval=[0.09, 0.11])
    assert [e.name for e in rank_entries([weak, strong], "median:linf")] == ["strong", "weak"]
    assert "\u221e" in render_leaderboard([weak, strong], "md", metric="median:linf")


def test_tracks_rank_natural_by_median_and_adversarial_by_worst_case() -> None:
    nat_hi = _entry("nat-hi", median=0.2, median_interval=[0.19, 0.21], worst=0.0, interval=[0.0, 0.0], clean=0.9)
    nat_lo = _entry("nat-lo", median=0.1, median_interval=[0.09, 0.11], worst=0.0, interval=[0.0, 0.0], clean=0.99)
    at_hi = _entry("at-hi", "adversarial", worst=0.6, interval=[0.57, 0.63], median=0.3, median_interval=[0.3, 0.3])
    at_lo = _entry("at-lo", "adversarial", worst=0.4, interval=[0.37, 0.43], median=0.2, median_interval=[0.2, 0.2])
    tables = boards([nat_lo, at_lo, nat_hi, at_hi])
    assert [(t, m, [e.name for e in es], r) for t, m, es, r in tables] == [
        ("Natural training", "median:linf", ["nat-hi", "nat-lo"], [1, 2]),
        ("Adversarial training", "worst_case", ["at-hi", "at-lo"], [1, 2]),
    ]
    md = render_leaderboard([nat_lo, at_lo, nat_hi, at_hi], "md")
    order = [md.index(t) for t in ("**Natural training**", "| nat-hi |", "**Adversarial training**", "| at-hi |")]
    assert order == sorted(order)
    assert "60.0 [57.0, 63.0]" in md and "0.2 [0.19, 0.21]" in md
    csv_text = render_leaderboard([nat_lo, at_hi], "csv")
    assert csv_text.splitlines()[1].startswith("1,Natural training,nat-lo")


def test_submission_enters_both_tracks(tmp_path) -> None:
    from robustbench_dc.protocol import ProtocolError, plan_submission

    plan = plan_submission("sphere+cos", "protocols/leaderboard-mnist.yaml", name="mine", out=str(tmp_path / "o"),
                           db=str(tmp_path / "db.sqlite"))
    new = {n: m for n, m in plan.models.items() if n.startswith("mine")}
    assert {n: m.training for n, m in new.items()} == {"mine": "natural", "mine-at": "adversarial"}
    assert {j.id for j in plan.jobs if j.model in new and j.kind == "curve"} == {"curve:mine", "curve:mine-at"}
    only = plan_submission("sphere+cos", "protocols/leaderboard-mnist.yaml", name="mine", out=str(tmp_path / "o"),
                           db=str(tmp_path / "db.sqlite"), track="adversarial")
    assert [n for n in only.models if n.startswith("mine")] == ["mine"]
    assert only.models["mine"].training == "adversarial"
    natural_only = tmp_path / "natural-only.yaml"
    text = Path("protocols/leaderboard-mnist.yaml").read_text()
    natural_only.write_text(text.replace(", adversarial_recipe: mnist-fast-pgd-at", ""))
    with pytest.raises(ProtocolError, match="no adversarial_recipe"):
        plan_submission("sphere+cos", natural_only, track="adversarial")
    plan = plan_submission("sphere+cos", natural_only, name="mine", out=str(tmp_path / "o2"),
                           db=str(tmp_path / "db.sqlite"))
    assert [n for n in plan.models if n.startswith("mine")] == ["mine"]


# ----------------------------------------------------------------------------- one call, one command


@pytest.mark.usefixtures("one_thread")
def test_benchmark_and_evaluate_draw_the_curve_of_a_shipped_model(tmp_path, capsys) -> None:
    from robustbench_dc import benchmark
    from robustbench_dc.cli import main
    from robustbench_dc.zoo import load_model

    model = load_model("mnist2d-baseline-mnist")
    result = benchmark(model, dataset="mnist-sample", n_examples=24, attacks=["pgd"], progress=False,
                       minimum_norm=["fmn"], batch_size=24)
    curve = result.curve["curves"]["linf"]
    pgd = result.evaluation.results[0]
    # the curve at the benchmark's eps agrees with the fixed-eps attack it contains (never above it)
    assert curve["eps_max"] == pytest.approx(0.3)
    assert curve["robust_accuracy"][-1] <= pgd.robust_accuracy + 1e-9
    assert curve["robust_accuracy"][0] == pytest.approx(result.clean_accuracy)
    assert 0 < curve["median"] < 0.3 and curve["median_interval"][0] <= curve["median"] <= curve["median_interval"][1]
    assert "robustness curve, linf (fmn-linf-s100, pgd-linf-eps0.3000-s20): median minimal perturbation" in str(result)
    assert json.loads(result.to_json())["curve"]["attacks"]["fmn-linf-s100"]["forward_passes"] > 0
    out = tmp_path / "res.json"
    assert main(["evaluate", "--model", "mnist2d-baseline-mnist", "--data", "mnist-sample", "-n", "24",
                 "--attack", "fgsm-linf", "--curve", "fmn", "--no-masking", "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "robustness curve, linf (fmn-linf-s100, fgsm-linf-eps0.3000-s1): median minimal perturbation" in text
    assert "fmn-linf-s100: 0 never broken, 0 reported but not adversarial" in text
    stored = json.loads(out.read_text())["curves"]["curves"]["linf"]
    assert len(stored["norms"]) == 24 and stored["attacks"] == ["fmn-linf-s100", "fgsm-linf-eps0.3000-s1"]

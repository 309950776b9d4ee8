"""Smoke test of the benchmark harness (``benchmarks/run.py --quick``): it runs end to end,
writes a JSON of the documented structure, and every ratio is a positive finite number."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torchattacks", "foolbox")),
    reason="the attack comparison needs torchattacks and foolbox (pip install robustbench-dc[backends])")


def _positive_finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, float]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--threads", "1", "--seed", "3", "--out", str(out),
           "--quickstart", f"{sys.executable} -c pass"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, elapsed


def test_quick_run_writes_complete_json(quick_run: tuple[dict, str, float]) -> None:
    res, stdout, _ = quick_run
    for key in ("schema", "created_utc", "command_line", "seed", "settings", "allocator_configured", "versions",
                "machine", "torch_threads", "host_kind", "data", "scan", "slowest", "configs", "train", "eval",
                "memory", "attacks", "strong", "quickstart", "ratios", "wall_seconds"):
        assert key in res, key
    assert res["quick"] is True and res["seed"] == 3
    assert "--quick" in res["command_line"]
    assert isinstance(res["allocator_configured"], bool)
    assert res["torch_threads"]["intra_op"] == 1
    assert {"torch", "torchattacks", "foolbox", "numpy", "python"} <= set(res["versions"])
    assert {"cpu_model", "cpu_count", "memory_bytes", "gpu_used"} <= set(res["machine"])
    assert res["torchvision_imported"] is False
    data = res["data"]["cnn9"]
    assert (data["checksum"] is not None) == data["real"]
    assert res["attacks"]["data_checksum"]

    # the scan found the slowest operator and the training section measured it
    assert res["slowest"] == res["scan"]["slowest"] == res["configs"]["slowest"]
    confirm = res["scan"]["confirm"]
    assert confirm["candidates"] == [op for op, _ in res["scan"]["top5"][:2]]
    assert res["slowest"] in confirm["candidates"]
    assert confirm["ratios"][res["slowest"]]["median"] == max(r["median"] for r in confirm["ratios"].values())
    assert set(res["configs"]) == {"baseline", "tanh+cos", "tanh+cos-relative-learnable-rho", "slowest"}
    train = res["train"]
    assert set(train["ratios"]) == {"fp32", "cl-bf16"}
    for key, times in train["seconds_per_step"].items():
        assert len(times) == res["settings"]["repeats"] and all(_positive_finite(t) for t in times), key
    assert res["memory"]["method"]
    for backend in ("native-run_attack", "native-raw", "torchattacks", "foolbox"):
        for attack in ("pgd", "fgsm"):
            d = res["attacks"][attack]
            assert 0.0 <= d["robust_accuracy"][backend] <= 1.0
            assert d["max_linf"][backend] <= res["attacks"]["eps"] + 1e-6
            assert isinstance(d["mismatch"], bool)
    assert res["quickstart"]["ok"] is True
    strong = res["strong"]
    for attack in ("apgd-ce", "apgd-t", "autoattack"):
        d = strong[attack]
        assert set(d["robust_accuracy"]) == {"native", "torchattacks"}
        assert all(d["max_linf"][k] <= strong["eps"] + 1e-6 for k in d["max_linf"])
        assert _positive_finite(d["ratios"]["native/torchattacks"]["median"])
    assert strong["n_target_classes"] == 9

    # every ratio is a positive finite number with min <= median <= max
    sections = {r["section"] for r in res["ratios"]}
    assert {"train", "train-mode", "memory", "saved", "eval", "attacks", "strong"} <= sections
    assert all(v > 0 for vals in res["memory"]["saved_bytes"].values() for v in vals)
    assert len(res["ratios"]) >= 3 * 2 + 3 + 3 * 2 + 8
    for r in res["ratios"]:
        assert all(_positive_finite(r[k]) for k in ("min", "median", "max")), r
        assert r["min"] <= r["median"] <= r["max"], r
    assert "median" in stdout and "wrote" in stdout


@pytest.mark.slow  # a wall-clock bound: not in the default run
def test_quick_run_is_quick(quick_run: tuple[dict, str, float]) -> None:
    """The harness's tiniest mode stays small (generous bound: the CI machine may be shared)."""
    res, _, elapsed = quick_run
    assert res["wall_seconds"] < 120, res["wall_seconds"]
    assert elapsed < 180


def test_parse_op_round_trip() -> None:
    if str(REPO) not in sys.path:  # the harness lives in the checkout, not in the package
        sys.path.insert(0, str(REPO))
    bench = importlib.import_module("benchmarks.harness.common")
    name, params = bench.parse_op("mix+sigmoid,weighted=separable,rho=0.5,learnable_rho=true,eps=1e-05")
    assert name == "mix+sigmoid" and params == {"weighted": "separable", "rho": 0.5, "learnable_rho": True,
                                                "eps": 1e-05}
    assert bench.parse_op(bench.format_op(name, params)) == (name, params)
    assert bench.parse_op("tanh+cos,weighted=none") == ("tanh+cos", {"weighted": None})
    with pytest.raises(ValueError, match="operator spec 'tanh\\+cos,rho': expected KEY=VALUE"):
        bench.parse_op("tanh+cos,rho")  # the library's KEY=VALUE parser (a UsageError)
    s = bench.summarize([3.0, 1.0, float("nan"), 2.0])
    assert (s["min"], s["median"], s["max"], s["n"]) == (1.0, 2.0, 3.0, 3)


def test_profile_step_groups_the_step_time(tmp_path: Path) -> None:
    """``benchmarks/profile_step.py``: every step's time is split into groups; the
    convolutions are found, and the decoupled network's element-wise work shows up."""
    out = tmp_path / "profile.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.profile_step", "tanh+sigmoid,weighted=nonlinear",
           "--batch", "4", "--width", "0.0625", "--steps", "1", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["command_line"] and res["versions"]["torch"] and res["seed"] == 0
    base, dec = res["rows"]
    assert base["config"] == "baseline" and dec["config"].startswith("tanh+sigmoid")
    for row in (base, dec):
        assert _positive_finite(row["wall_seconds_per_step"])
        assert row["groups"]["convolution"] > 0
        assert sum(row["groups"].values()) == pytest.approx(row["profiled_seconds_per_step"])
    # acos, tanh, the products: the eager decoupled path runs element-wise ops the baseline does not
    assert dec["groups"].get("element-wise (eager)", 0) > base["groups"].get("element-wise (eager)", 0)
    assert "wall" in proc.stdout and "wrote" in proc.stdout


def test_profile_step_profiles_the_attack_units_of_a_runs_models(tmp_path: Path) -> None:
    """``--run RUN --entries ...``: the input gradient and the forward pass of trained models as the
    attacks run them, grouped the same way; the decoupled model's patch norms show up (a sum pooling
    in attack mode), the baseline has none, and each unit's ratio is to the first entry's."""
    import torch

    from benchmarks.profile_step import main
    from robustbench_dc.data import load_dataset
    from robustbench_dc.zoo import build_model

    try:
        load_dataset("cifar10", "test", n=4, download=False)
    except Exception as exc:  # noqa: BLE001 - any failure means: no local CIFAR-10
        pytest.skip(f"needs CIFAR-10 (RBDC_DATA): {exc}")
    run = tmp_path / "run"
    models = {}
    for entry, operator in (("base", "baseline"), ("sphere", "sphere+cos")):
        torch.manual_seed(0)
        model = build_model("cnn9", operator, dataset="cifar10", width=0.0625)
        (run / "models" / entry).mkdir(parents=True)
        torch.save(model.state_dict(), run / "models" / entry / "model.pt")
        models[entry] = {"arch": "cnn9", "operator": operator, "arch_params": {"width": 0.0625}, "operator_params": {}}
    (run / "summary.json").write_text(json.dumps({"dataset": "cifar10", "models": models}))
    out = tmp_path / "units.json"
    threads = torch.get_num_threads()
    try:  # main() sets the process's torch threads (as a command does): the later tests must not run on 1
        assert main(["--run", str(run), "--entries", "base", "sphere", "--batch", "4", "--steps", "1",
                     "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert res["mode"] == "attack-fp32" and res["run"] == str(run) and res["data"]["real"]
    rows = {r["config"]: r for r in res["rows"]}
    assert list(rows) == ["base gradient", "base forward", "sphere gradient", "sphere forward"]
    for name, row in rows.items():
        assert _positive_finite(row["wall_seconds_per_step"]) and row["groups"]["convolution"] > 0
        assert row["ratio_vs_baseline"] == pytest.approx(
            row["wall_seconds_per_step"] / rows["base " + row["unit"]]["wall_seconds_per_step"])
        assert (row["groups"].get("patch norms (sum pooling)", 0) > 0) == name.startswith("sphere")
    with pytest.raises(SystemExit):  # operators and --run together
        main(["tanh+cos", "--run", str(run), "--entries", "base", "--out", str(out)])


@pytest.mark.slow
def test_quick_run_with_compiled_configs(tmp_path: Path) -> None:
    """``--quick --compile``: the compiled configs are built, timed and measured for memory."""
    out = tmp_path / "quick-compiled.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--compile", "--threads", "1", "--sections", "train,memory,eval",
           "--slowest", "tanh+sigmoid,weighted=nonlinear", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    from robustbench_dc.operators import compile_available

    if not compile_available("cpu"):
        assert any("not available" in n for n in res["notes"])
        return
    assert {"tanh+cos-relative-learnable-rho+compiled", "slowest+compiled"} <= set(res["configs"])
    assert res["configs"]["slowest+compiled"].endswith("[compiled]")
    for mode in ("fp32", "cl-bf16"):
        assert _positive_finite(res["train"]["ratios"][mode]["slowest+compiled"]["median"])
    assert _positive_finite(res["memory"]["ratios"]["fp32"]["slowest+compiled"]["median"])
    assert "slowest+compiled" not in res["eval"]["ratios"]["fp32"]  # inference is measured eagerly


def test_thread_scaling_compares_side_by_side_jobs_with_one_job_alone(tmp_path: Path) -> None:
    from robustbench_dc.data import load_dataset

    try:
        load_dataset("cifar10", "train", n=8)
    except Exception as exc:  # noqa: BLE001 - no CIFAR-10 here (it needs RBDC_DATA or a download)
        pytest.skip(f"needs CIFAR-10: {exc}")
    out = tmp_path / "scaling.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.thread_scaling", "--threads", "2", "--operators", "Baseline",
           "--kinds", "forward", "--units", "1", "--repeats", "1", "--n-train", "64", "--batch", "8", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    (row,) = rep["rows"]
    assert (row["operator"], row["kind"], row["alone_threads"], row["side_by_side_processes"]) == ("Baseline", "forward", 2, 2)
    assert len(row["alone_all"]) == len(row["side_by_side_all"]) == 1
    assert all(_positive_finite(v) for v in (row["alone_seconds_per_unit"], row["side_by_side_seconds_per_unit"]))
    assert row["throughput_ratio"] == pytest.approx(2 * row["alone_seconds_per_unit"] / row["side_by_side_seconds_per_unit"])
    assert rep["settings"]["batch"] == 8 and rep["machine"]["cpu_count"] and rep["versions"]["torch"]
    assert rep["command"][1].endswith("thread_scaling.py")


def _documents() -> str:
    docs = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "protocols" / "README.md",
            *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "figures").glob("*.md"))]
    return "\n".join(p.read_text() for p in docs)


def test_every_result_file_is_cited_by_a_document_and_every_cited_one_exists() -> None:
    """benchmarks/results keeps the result files the documents cite (the others stay in git history)."""
    text = _documents()
    kept = sorted(p.name for p in (REPO / "benchmarks" / "results").glob("*.json"))
    assert kept and [name for name in kept if name not in text] == []
    cited = set(re.findall(r"benchmarks/results/([\w.-]+\.json)", text)) | set(re.findall(r"\bresults/([\w.-]+\.json)",
                                                                                            text))
    assert sorted(cited - set(kept)) == []


def test_benchmarks_are_a_package_run_with_python_m() -> None:
    """`python -m benchmarks.NAME` from the repository root: no script edits sys.path."""
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        assert "sys.path.insert" not in path.read_text(), path


def test_the_flops_benchmark_reports_fractions_of_the_peak(tmp_path) -> None:
    """`python -m benchmarks.flops --quick`: a peak per precision and, per operator, FLOPs, seconds and the
    fraction of the peak of a training step, an attack gradient and a forward pass (the counted FLOPs of the
    decoupled operators' convolutions are the baseline's)."""
    out = tmp_path / "flops.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.flops", "--quick", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["peak_flops_per_second"]) == {"fp32", "bf16"}
    runs = data["runs"]
    assert {k.split("/")[1] for k in runs} == {"baseline", "SphereConv", "BallConv", "TanhConv"}
    for key, r in runs.items():
        assert r["flops"] > 0 and r["seconds"] > 0 and 0 < r["fraction_of_peak"], key
    assert runs["train/TanhConv/fp32"]["flops"] == pytest.approx(runs["train/baseline/fp32"]["flops"], rel=0.01)
    for op in ("baseline", "TanhConv"):  # as the attacks run the model: a forward, and a forward + input gradient
        fwd, grad = runs[f"attack-forward/{op}/fp32-attack-mode"], runs[f"attack-gradient/{op}/fp32-attack-mode"]
        assert 1.5 * fwd["flops"] < grad["flops"] < 3.5 * fwd["flops"]
    assert data["machine"]["cpu_model"] and data["versions"]["torch"]


def test_autoattack_side_by_side_compares_the_three_implementations(tmp_path) -> None:
    pytest.importorskip("pyautoattack")
    from benchmarks.autoattack_side_by_side import main, markdown

    out = tmp_path / "sbs.json"
    assert main(["--card", "mnist2d-baseline-mnist", "--n", "8", "--eps", "0.3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 8 and r["eps"] == 0.3 and r["data_sha256"] and r["versions"]["pyautoattack"]
    m = r["models"]["mnist2d-baseline-mnist"]
    for impl in ("suite", "original", "torchattacks"):
        assert len(m[impl]["robust"]) == 8 and _positive_finite(m[impl]["seconds"])
        assert m[impl]["components"][0]["component"] == "apgd-ce"
        assert m[impl]["components"][0]["attacked"] == round(8 * m["clean_accuracy"])
        assert m[impl]["forward_passes"] >= m[impl]["components"][0]["attacked"]
        assert m[impl]["robust_accuracy"] == 0.0          # eps 0.3 on a naturally trained MNIST model
    for impl in ("original", "torchattacks"):
        vs = m[f"{impl}_vs_suite"]
        assert vs["robust_only_in_suite"] == vs["robust_only_in_other"] == [] and _positive_finite(vs["seconds_ratio"])
    table = markdown([r]).splitlines()
    assert len(table) == 2 + 3 and table[3].startswith("| mnist2d-baseline-mnist | original | 0.0% |")
    assert table[3].endswith("| 0 / 0 |")


def test_fast_attack_measures_malt_against_autoattack_on_a_runs_models(tmp_path: Path) -> None:
    """``benchmarks/fast_attack.py`` on a run folder holding the shipped MNIST model: both attacks
    on the same examples, their robust sets compared, the tolerance rule applied, the table written."""
    import torch

    from benchmarks.fast_attack import main, markdown
    from robustbench_dc.zoo import load_model

    run = tmp_path / "run"
    (run / "models" / "base").mkdir(parents=True)
    torch.save(load_model("mnist2d-baseline-mnist").state_dict(), run / "models" / "base" / "model.pt")
    (run / "summary.json").write_text(json.dumps({"dataset": "mnist-sample", "models": {"base": {
        "arch": "mnist2d", "operator": "baseline", "arch_params": {"width": 0.25}, "operator_params": {}}}}))
    out = tmp_path / "fast.json"
    assert main(["--run", str(run), "--models", "base", "--n", "20", "--batch", "10", "--eps", "0.08",
                 "--targets", "1", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 20 and r["eps"] == 0.08 and r["batch"] == 10 and r["data_sha256"] and r["tolerance_points"] == 0.2
    m = r["models"]["base"]
    aa = m["autoattack"]
    assert [c["component"] for c in aa["components"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert 0 < sum(aa["robust"]) < round(20 * m["clean_accuracy"])          # something broken, something left
    for k in ("1", "3"):
        f = m["malt"][k]
        assert [c["component"] for c in f["components"]] == ["apgd-ce", "apgd-t-malt"]
        assert f["components"][1]["attacked"] == f["components"][0]["robust"]
        assert f["robust_accuracy_minus_autoattack"] == pytest.approx(f["robust_accuracy"] - aa["robust_accuracy"])
        only_m, only_aa = f["robust_only_in_malt"], f["robust_only_in_autoattack"]
        assert sum(f["robust"]) - sum(aa["robust"]) == len(only_m) - len(only_aa)
        assert f["within_tolerance"] == (abs(f["robust_accuracy_minus_autoattack"]) <= 0.002 + 1e-12)
        assert f["autoattack_passes_ratio"] > 1 and _positive_finite(f["autoattack_seconds_ratio"])
    table = markdown(r).splitlines()
    assert len(table) == 2 + 3 and table[2].startswith("| base | AutoAttack (standard) |")


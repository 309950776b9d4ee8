"""Bring your own model (issue 33): benchmark() in one call, load_examples(), budgets written as
fractions, a model from the user's own file evaluated from Python, the command line and a protocol
(and ranked), a protocol's model re-evaluated from its run, missing backends refused before anything
runs, and Croce & Hein's original AutoAttack beside the suite's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from robustbench_dc.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]

MY_NET = '''
import torch


def build(width=16):
    """A small MLP: [0, 1] MNIST images in, 10 logits out."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, 10))
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small network trained on the bundled MNIST sample (4 epochs of 2,048 images), and its weights."""
    from robustbench_dc.data import load_dataset
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    folder = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    model = build_model("mnist2d", "baseline", dataset="mnist", width=0.125)
    train(model, load_dataset("mnist-sample", "train", n=2048), {"base": "mnist-fast", "epochs": 4, "batch_size": 64})
    torch.save(model.state_dict(), folder / "mnist2d.pt")
    (folder / "my_net.py").write_text(MY_NET)
    return model.eval(), folder


def test_load_examples_gives_float_images_in_0_1_and_int64_labels() -> None:
    from robustbench_dc import load_examples

    x, y = load_examples("mnist-sample", 10)
    assert x.dtype == torch.float32 and x.shape == (10, 1, 28, 28) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert y.dtype == torch.int64 and y.shape == (10,)


def test_benchmark_evaluates_any_model_in_one_call(trained) -> None:
    from robustbench_dc import BenchmarkResult, benchmark

    model, _ = trained
    result = benchmark(model, dataset="mnist-sample", threat_model="Linf", eps="1/10", n_examples=32,
                       attacks=["fgsm", "pgd"], batch_size=16, progress=False, model_name="mine")
    assert isinstance(result, BenchmarkResult) and result.eps == pytest.approx(0.1) and result.n == 32
    assert set(result.robust_accuracy) == {"fgsm-linf-eps0.1000-s1", "pgd-linf-eps0.1000-s20"}
    assert result.worst_case == min(result.robust_accuracy.values()) <= result.clean_accuracy
    text = str(result)
    assert "mine: mnist-sample, first 32 test examples, linf eps 0.1" in text and "forward passes" in text
    assert result.forward_passes >= 32 and result.backward_passes >= 32  # FGSM alone: a pass per example
    data = json.loads(result.to_json())
    assert len(data["evaluation"]["results"][0]["robust_correct"]) == 32
    info = result.model_info()
    assert info["eps"] == "0.1" and info["autoattack_acc"] is None and info["clean_acc"] == f"{100 * result.clean_accuracy:.2f}"
    with pytest.raises(ValueError, match="threat_model: 'Linf' or 'L2'"):
        benchmark(model, dataset="mnist-sample", threat_model="L1", n_examples=4, progress=False)
    with pytest.raises(ValueError, match="is a linf attack, the threat model is l2"):
        benchmark(model, dataset="mnist-sample", threat_model="L2", eps=1.0, attacks=["fgsm-linf"], n_examples=4,
                  progress=False)


def test_budgets_are_accepted_as_fractions_everywhere(tmp_path, capsys) -> None:
    from robustbench_dc.attacks import AttackSpec
    from robustbench_dc.protocol import parse_protocol

    assert AttackSpec(name="pgd", eps="8/255").eps == pytest.approx(8 / 255)
    proto = parse_protocol({"name": "p", "dataset": {"name": "cifar10"}, "models": [{"name": "m", "arch": "cnn9"}],
                            "evaluation": {"attacks": ["fgsm-linf"], "eps": "8/255",
                                           "sweeps": [{"attack": "pgd-linf", "eps": ["2/255", "4/255"]}]}})
    assert proto.evaluation.eps == pytest.approx(8 / 255) and proto.evaluation.sweeps[0].eps[1] == pytest.approx(4 / 255)
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--eps", "8/0"])
    assert exit_info.value.code == 2 and "argument --eps: division by zero in '8/0'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected a number or a fraction like 8/255"):
        AttackSpec(name="pgd", eps="eight")


def test_a_model_from_the_users_file_is_evaluated_from_the_command_line(trained, tmp_path, capsys,
                                                                         monkeypatch) -> None:
    _, folder = trained
    monkeypatch.chdir(folder)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_net_for_weights", folder / "my_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build(8).state_dict(), folder / "my_net.pt")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", "my_net.py:build", "--param", "width=8", "--checkpoint", "my_net.pt",
                 "--dataset", "mnist", "--data", "mnist-sample", "-n", "16", "--attack", "fgsm", "--no-masking",
                 "--quiet", "--json", str(out)]) == 0
    assert "build: first 16 test examples of mnist-sample" in capsys.readouterr().out
    prov = json.loads(out.read_text())["provenance"]["model"]
    assert prov["arch"] == "my_net.py:build" and len(prov["source_sha256"]) == 64 and prov["checkpoint"] == "my_net.pt"
    # the same file and weights from Python, in one call
    from robustbench_dc import benchmark
    from robustbench_dc.zoo import resolve_model

    choice = resolve_model("my_net.py:build", dataset="mnist", params={"width": 8}, checkpoint="my_net.pt")
    assert choice.source_sha256 == prov["source_sha256"]
    result = benchmark(choice.model, dataset="mnist-sample", n_examples=16, attacks="fgsm", progress=False)
    assert result.architecture == "Sequential" and result.n == 16
    for argv, message in (
            (["--model", "my_net.py:buil"], "has no 'buil' (did you mean 'build'?)"),
            (["--model", "my_net.py:build", "--param", "depth=3"], "the factory takes no parameter depth"),
            (["--model", "my_net.py:build", "--dataset", "cifar10"], "a forward pass on one cifar10 input"),
            (["--model", "nowhere.py:build"], "file not found")):
        if "--dataset" not in argv:
            argv = [*argv, "--dataset", "mnist"]
        assert main(["evaluate", *argv, "--untrained"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_a_model_from_the_users_file_is_trained_ranked_and_re_evaluated_from_its_run(trained, capsys,
                                                                                      monkeypatch) -> None:
    _, folder = trained
    monkeypatch.chdir(folder)
    recipe = {"base": "mnist-fast", "epochs": 1, "batch_size": 32}
    proto = {"name": "byo", "seed": 0, "dataset": {"name": "mnist-sample", "n_train": 256, "n_test": 32},
             "models": [{"name": "mine", "arch": "my_net.py:build", "params": {"width": 8}, "recipe": recipe},
                        {"name": "base", "arch": "mnist2d", "params": {"width": 0.125}, "recipe": recipe}],
             "evaluation": {"attacks": ["fgsm-linf"], "masking": False}, "figures": []}
    (folder / "byo.yaml").write_text(yaml.safe_dump(proto))
    assert main(["run", "byo.yaml", "--dry-run"]) == 0
    assert f"code this protocol runs besides the package's: {(folder / 'my_net.py').resolve()}" in \
        capsys.readouterr().out
    assert main(["run", "byo.yaml", "--quiet"]) == 0
    board = capsys.readouterr().out
    assert re.search(r"\| \d \| mine \(build\) \| my_net.py:build \|", board), board
    summary = json.loads((folder / "runs" / "byo" / "summary.json").read_text())
    assert summary["models"]["mine"]["arch"] == "my_net.py:build"
    assert main(["evaluate", "--run", "runs/byo", "--entry", "mine", "-n", "16", "--attack", "pgd", "--no-masking",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mine: first 16 test examples of mnist-sample" in out and "untrained" not in out
    assert main(["evaluate", "--run", "runs/byo", "--entry", "mien"]) == 2
    assert "(did you mean 'mine'?)" in capsys.readouterr().err
    # editing the model's file re-runs the jobs of the model it builds, and only those (a new process:
    # this one keeps the file it imported)
    import subprocess
    import sys

    (folder / "my_net.py").write_text(MY_NET + "\n# edited\n")
    done = subprocess.run([sys.executable, "-m", "robustbench_dc", "run", "byo.yaml", "--dry-run"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    assert re.search(r"train:mine +to run", plan) and re.search(r"train:base +cached", plan)


def test_a_missing_backend_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch) -> None:
    """A plain install (no torchattacks) runs AutoAttack, all native, and refuses an attack of the
    torchattacks backend before anything runs (it used to pass --dry-run and stop after training)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchattacks" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    proto = {"name": "nobackend", "dataset": {"name": "mnist-sample", "n_train": 64, "n_test": 16},
             "models": [{"name": "m", "arch": "mnist2d", "params": {"width": 0.125}, "recipe": "mnist-fast"}],
             "evaluation": {"attacks": ["autoattack"]}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    assert main(["run", "p.yaml", "--dry-run"]) == 0                  # AutoAttack needs no backend
    capsys.readouterr()
    proto["evaluation"]["attacks"] = [{"name": "square", "backend": "torchattacks"}]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    assert main(["run", "p.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the torchattacks package" in err
    assert 'pip install "robustbench-dc[backends]"' in err and not (tmp_path / "runs").exists()
    assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--attack", "fgsm", "--backend", "torchattacks",
                 "--untrained", "-n", "4"]) == 2
    assert "needs the torchattacks package" in capsys.readouterr().err
    from robustbench_dc import benchmark
    from robustbench_dc.attacks import AttackSpec, BackendMissingError
    from robustbench_dc.zoo import build_model

    with pytest.raises(BackendMissingError, match="robustbench-dc\\[backends\\]"):
        benchmark(build_model("mnist2d", dataset="mnist", width=0.125), dataset="mnist-sample", n_examples=4,
                  attacks=[AttackSpec(name="fgsm", backend="torchattacks")], progress=False)


def test_the_original_autoattack_is_refused_with_the_install_command_when_missing(capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyautoattack" else real(name, *a))
    assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--attack", "autoattack-original",
                 "--untrained", "-n", "4"]) == 2
    assert 'pip install "robustbench-dc[original]"' in capsys.readouterr().err


def test_the_original_autoattack_runs_through_the_suites_evaluation(trained) -> None:
    """``autoattack-original`` (Croce & Hein's code) is an attack of the suite's evaluation like any
    other: same examples, same budget, its points checked and scored by the suite. At L-inf 0.3
    APGD-CE breaks every example in both, so the rest of either AutoAttack has nothing to do (the
    comparison example by example, at a budget that leaves work for every component, is
    tests/test_autoattack.py::test_native_autoattack_breaks_what_the_original_breaks)."""
    pytest.importorskip("pyautoattack")
    from robustbench_dc.attacks import AttackSpec
    from robustbench_dc.data import load_dataset
    from robustbench_dc.evaluation import evaluate_whitebox

    model, _ = trained
    ds = load_dataset("mnist-sample", "test", n=16)
    res = evaluate_whitebox(model, ds.to_float(), ds.labels, [AttackSpec(name="autoattack", eps=0.3),
                                                              AttackSpec(name="autoattack-original", eps=0.3)],
                            dataset="mnist", masking=False, batch_size=16)
    ours, original = (torch.tensor(r.robust_correct) for r in res.results)
    assert int(torch.tensor(res.results[0].clean_correct).sum()) > 0 and not ours.any() and not original.any()
    assert res.results[1].attack == "autoattack-original-linf-eps0.3000" and res.results[1].max_perturbation <= 0.3 + 1e-6


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_evaluates_your_own_model_as_it_says(trained, tmp_path, capsys, monkeypatch) -> None:
    """The README's "Evaluate your own model": its Python block and its command line, executed as
    they are written (a user's my_net.py and weights put where the command expects them)."""
    section = _readme_section("Evaluate your own model")
    python = re.findall(r"```python\n(.*?)```", section, re.S)[0]  # the first: five lines, any model
    (bash,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len([line for line in python.splitlines() if line.strip()]) == 5
    namespace: dict = {}
    exec(compile(python, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    result = namespace["result"]
    assert result.n == 200 and "autoattack-linf-eps0.3000" in result.robust_accuracy
    assert result.clean_accuracy > 0.8  # the shipped weights are trained, not a random network
    assert "clean accuracy" in capsys.readouterr().out
    _, folder = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_net.py").write_text(MY_NET)
    namespace = {}
    exec(MY_NET, namespace)  # noqa: S102
    torch.manual_seed(0)
    torch.save(namespace["build"]().state_dict(), tmp_path / "my_net.pt")
    (command,) = [line for line in bash.splitlines() if line.startswith("rbdc ")]
    argv = command.split()[1:]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "build: first 200 test examples of mnist-sample" in out and "autoattack-linf-eps0.3000" in out


def test_zoo_train_puts_a_cards_weights_where_load_model_finds_them(tmp_path, capsys, monkeypatch) -> None:
    from robustbench_dc.runtime import rbdc_home
    from robustbench_dc.zoo import CardError, load_model

    monkeypatch.setenv("RBDC_MODELS", str(tmp_path))
    monkeypatch.setenv("RBDC_HOME", str(tmp_path / "home"))
    (tmp_path / "toy.yaml").write_text("name: toy\narch: mnist2d\noperator: tanh+cos\narch_params: {width: 0.125}\n"
                                       "dataset: mnist-sample\nrecipe: {base: mnist-fast, epochs: 1, batch_size: 256}\n")
    with pytest.raises(CardError, match="rbdc zoo train toy"):
        load_model("toy")
    assert main(["zoo", "list"]) == 0
    assert re.search(r"toy .* rbdc zoo train toy \(time unknown: never trained on this kind of machine\)",
                     capsys.readouterr().out)
    assert main(["zoo", "train", "toy", "--quiet"]) == 0
    weights = rbdc_home() / "models" / "toy" / "model.pt"
    assert f"weights: {weights}" in capsys.readouterr().out
    info = json.loads((weights.parent / "weights.json").read_text())
    assert info["card"] == "toy" and len(info["sha256"]) == 64 and info["data_sha256"] and info["versions"]
    model = load_model("toy")
    state = torch.load(weights, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert main(["zoo", "list"]) == 0
    assert re.search(r"toy .* trained here \(cache\)", capsys.readouterr().out)
    # the cache's weights are checked: a flipped byte is refused
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CardError, match="has sha256"):
        load_model("toy")
    # a card may name hosted weights: downloaded once into the cache, their sha256 checked
    (tmp_path / "hosted.pt").write_bytes(bytes(raw))
    import hashlib

    digest = hashlib.sha256(bytes(raw)).hexdigest()
    (tmp_path / "hosted.yaml").write_text((tmp_path / "toy.yaml").read_text().replace("name: toy", "name: hosted")
                                          + f"url: file://{tmp_path / 'hosted.pt'}\nsha256: '{'0' * 64}'\n")
    with pytest.raises(CardError, match="could not download its weights"):
        load_model("hosted")
    (tmp_path / "hosted.yaml").write_text((tmp_path / "hosted.yaml").read_text().replace("0" * 64, digest))
    assert main(["zoo", "list"]) == 0 and re.search(r"hosted .* downloadable", capsys.readouterr().out)
    with pytest.raises(Exception):  # the bytes were flipped: the weights do not load, but they were downloaded
        load_model("hosted")
    assert (rbdc_home() / "models" / "hosted" / "model.pt").read_bytes() == bytes(raw)

"""The installed wheel is a working tool: built from this checkout, installed into a fresh virtual
environment outside it, with no access to the checkout's files."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bundled_files_have_one_copy() -> None:
    """The top-level attacks/, models/, protocols/ folders are the package's own (links), not copies."""
    from robustbench_dc.resources import KINDS, resource_dir

    for kind in KINDS:
        assert (REPO / kind).resolve() == resource_dir(kind).resolve() == (REPO / "robustbench_dc" / "resources"
                                                                            / kind).resolve()
        assert list(resource_dir(kind).glob("*.yaml")), kind
    with pytest.raises(ValueError, match="one of attacks, models, protocols"):
        resource_dir("figures")  # type: ignore[arg-type]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A wheel of this checkout installed into a fresh venv; the test environment's dependencies
    (torch, ...) are made visible after the venv's own site-packages, so nothing is downloaded."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RBDC_MODELS")}
    env["MPLBACKEND"] = "Agg"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(REPO)], tmp, env)
    (wheel,) = (tmp / "dist").glob("robustbench_dc-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)], tmp, env)
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).strip())
    # after the wheel is installed (pip must not see the checkout's editable install)
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    return venv, work, env


def test_the_wheel_holds_everything_rbdc_needs(installed) -> None:
    venv, work, env = installed
    where = _run([str(venv / "bin" / "python"), "-c", "import robustbench_dc; print(robustbench_dc.__file__)"], work,
                 env)
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    rbdc = str(venv / "bin" / "rbdc")
    cards = _run([rbdc, "zoo", "list"], work, env)
    assert "18 model cards" in cards and "mnist2d-tanh-mnist" in cards
    assert cards.count("shipped with the package") == 8  # the MNIST cards' weights are inside the wheel
    out = _run([rbdc, "evaluate", "--model", "mnist2d-baseline-mnist", "--data", "mnist-sample", "-n", "16",
                "--attack", "fgsm-linf", "--no-masking", "--quiet"], work, env)
    assert "fgsm-linf-eps0.3000-s1" in out and "first 16 test examples of mnist-sample" in out
    # the shipped weights, loaded by name offline, evaluated in one call
    code = ("from robustbench_dc import benchmark; from robustbench_dc.zoo import load_model; "
            "r = benchmark(load_model('mnist2d-tanh-mnist'), dataset='mnist-sample', n_examples=32, "
            "attacks=['fgsm', 'pgd'], progress=False); print(r.clean_accuracy, r.forward_passes)")
    clean, passes = _run([str(venv / "bin" / "python"), "-c", code], work, {**env, "RBDC_OFFLINE": "1"}).split()
    assert float(clean) > 0.8 and int(passes) >= 32
    plan = _run([rbdc, "run", "quickstart", "--dry-run"], work, env)
    assert "plan for quickstart -> runs/quickstart" in plan and "whitebox:" in plan
    assert not (work / "runs").exists()  # a dry run writes nothing

"""Faults: a full disk, two submissions writing one results database at once, and (slow) 20 SIGKILLs
of a run at random moments, each resumed to the results of an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_protocol import _protocol, _results, _run_cli, _write

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = {"base": "mnist-fast", "epochs": 1, "batch_size": 32, "optimizer": {"lr": 0.01}}


def _small(tmp: Path) -> dict:
    proto = _protocol(tmp)
    for m in proto["models"]:
        m["recipe"] = ONE_EPOCH
    proto["evaluation"].pop("sweeps")
    proto["figures"] = ["embeddings", "transfer", "training"]
    return proto


def _tree(run: Path) -> dict[str, str]:
    """sha256 of every stored file of a run folder (what a fault must not change)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def _cli(args: list[str], cwd: Path | None = None, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # in the child: files may not grow beyond fsize bytes, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))  # type: ignore[arg-type]

    return subprocess.run([sys.executable, "-m", "robustbench_dc", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=600, preexec_fn=limit if fsize else None,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _healthy(run: Path) -> None:
    """No temporary file, every checkpoint loads, every figure is a whole PNG, the database is intact."""
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    for ckpt in run.rglob("*.pt"):
        torch.load(ckpt, weights_only=True)
    for png in run.rglob("*.png"):
        assert png.read_bytes().endswith(b"IEND\xaeB`\x82"), png
    with sqlite3.connect(run / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_full_disk_is_a_clear_error_and_loses_nothing_already_stored(tmp_path):
    proto = _small(tmp_path)
    path = _write(tmp_path, proto)
    out = tmp_path / "out"
    assert _cli(["run", str(path), "--out", str(out), "--quiet"]).returncode == 0
    before = _tree(out)
    # a new model to train, on a disk where no file may grow past 4 KiB (a checkpoint is larger)
    proto["models"].append({"name": "tanh2", "arch": "mnist2d", "operator": "tanh+cos",
                            "params": {"width": 0.125, "rho": 1.0}, "recipe": ONE_EPOCH})
    path = _write(tmp_path, proto, "more.yaml")
    full = _cli(["run", str(path), "--out", str(out), "--quiet"], fsize=4096)
    assert full.returncode == 2, full.stdout + full.stderr
    err = full.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in full.stderr, full.stderr
    assert err[0].startswith("rbdc: error: cannot write ") and "File too large" in err[0]
    assert "nothing already stored was changed" in err[0]
    after = _tree(out)
    assert {k: after.get(k) for k in before} == before  # every stored file is still there, unchanged
    _healthy(out)
    # with room again, the same command finishes the run
    assert _cli(["run", str(path), "--out", str(out), "--quiet"]).returncode == 0
    assert "tanh2" in json.loads((out / "summary.json").read_text())["models"]


def test_two_submissions_writing_one_database_at_once_both_land(tmp_path):
    (tmp_path / "my_ops.py").write_text((REPO / "examples" / "my_ops.py").read_text())
    proto = _protocol(tmp_path)
    proto["models"] = proto["models"][:1]
    proto["models"][0]["recipe"] = ONE_EPOCH
    proto["evaluation"] = {"attacks": ["fgsm-linf"], "batch_size": 48}
    proto.pop("lipschitz")
    proto["figures"] = ["training"]
    proto["submission"] = {"arch": "mnist2d", "params": {"width": 0.125}, "recipe": ONE_EPOCH}
    path = _write(tmp_path, proto)
    db = tmp_path / "shared.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "robustbench_dc", "leaderboard", "submit", "my_ops.py:SoftSatConv",
                               "--name", who, "--protocol", str(path), "--db", str(db), "--out", str(tmp_path / who)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for who in ("alice", "bob")]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()  # type: ignore[union-attr]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        models = {r[0] for r in conn.execute("SELECT name FROM models")}
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert models == {"alice", "bob", "base"} and runs == 2


@pytest.mark.slow
def test_twenty_kills_at_random_moments_resume_to_the_uninterrupted_results(tmp_path):
    """``python -m pytest -m slow tests/test_faults.py`` (a few minutes)."""
    path = _write(tmp_path, _small(tmp_path))
    reference = tmp_path / "reference"
    t0 = time.perf_counter()
    first = _run_cli(path, reference)  # the same command (and thread count) as the killed runs
    assert first.wait(timeout=600) == 0, first.stdout.read().decode()  # type: ignore[union-attr]
    duration = time.perf_counter() - t0
    out = tmp_path / "out"
    rng = random.Random(20)
    kills = 0
    while kills < 20:
        proc = _run_cli(path, out)
        try:
            proc.wait(timeout=rng.uniform(0.5, duration / 4))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:  # it finished before the kill: start over from an empty folder
            assert proc.returncode == 0, proc.stdout.read().decode()  # type: ignore[union-attr]
            subprocess.run(["rm", "-rf", str(out)], check=True)
    final = _run_cli(path, out)
    assert final.wait(timeout=600) == 0, final.stdout.read().decode()  # type: ignore[union-attr]
    resumed = json.loads((out / "summary.json").read_text())
    assert _results(resumed) == _results(json.loads((reference / "summary.json").read_text()))
    assert {p.name for p in (out / "figures").glob("*.png")} == {p.name for p in (reference / "figures").glob("*.png")}
    _healthy(out)
    assert not list((out / ".work").glob("train-*"))  # no training checkpoint left behind

"""Hostile and malformed inputs, tried as an attacker would: protocols, checkpoints, datasets and
training settings that users exchange. Every case ends with one line ``rbdc: error: ...`` naming the
file and the field or problem, exit code 2, no traceback, and nothing written.

The corpus is :data:`PROTOCOL_CASES` (mutations of a valid protocol, or raw text), plus the
checkpoint, dataset and training cases below it.
"""

from __future__ import annotations

import copy
import gzip
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

from robustbench_dc.cli import main

from synthetic import write_learnable_mnist

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {"base": "mnist-fast", "epochs": 1, "batch_size": 32}


def _base(data: Path) -> dict[str, Any]:
    return {
        "name": "hostile", "seed": 0, "output": "runs/hostile",
        "dataset": {"name": "mnist", "data_dir": str(data), "n_train": 64, "n_test": 16},
        "models": [{"name": "base", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125},
                    "recipe": RECIPE},
                   {"name": "src", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125},
                    "recipe": RECIPE, "seed": 1, "role": "source"}],
        "evaluation": {"attacks": ["fgsm-linf"]},
    }


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation that sets ``a.b[0].c`` to ``value``."""
    def mutate(p: dict) -> None:
        keys = re.findall(r"[^.\[\]]+", path)
        target: Any = p
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
        last = keys[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


PWNED = Path("/tmp/rbdc-hostile-pwned")
EVIL_OPS = f"""
from pathlib import Path
Path({str(PWNED)!r}).write_text("a protocol ran this file")
from robustbench_dc.operators import DecoupledConv2d
class Evil(DecoupledConv2d):
    pass
"""


def _evil_operator(where: str) -> Callable[[dict], None]:
    """A model whose operator is a Python file outside the protocol's folder: ``absolute``, or a
    ``relative`` path that climbs out of it."""
    def mutate(p: dict) -> None:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="rbdc-evil-"))
        (folder / "evil_ops.py").write_text(EVIL_OPS)
        p["models"][0]["operator"] = (f"{folder / 'evil_ops.py'}:Evil" if where == "absolute"
                                      else f"{os.path.relpath(folder, Path.cwd())}/evil_ops.py:Evil")
    return mutate


# name -> (mutation of the valid protocol, or raw text / bytes, or a file maker), expected error pattern
PROTOCOL_CASES: dict[str, tuple[Any, str]] = {
    "yaml-syntax": ("name: [unclosed\n", r"invalid YAML: line 2, column 1"),
    "yaml-tab-indent": ("name: x\nmodels:\n\t- a\n", r"invalid YAML: line 3"),
    "not-utf8": (b"name: \xff\xfe\n", r"not UTF-8 text"),
    "empty-file": ("", r"expected a mapping at the top level, got NoneType"),
    "top-level-list": ("- a\n- b\n", r"expected a mapping at the top level, got list"),
    "python-object-tag": ("name: !!python/object/apply:os.system ['echo pwned']\n",
                          r"could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply"),
    "python-name-tag": ("name: !!python/name:os.system\n", r"could not determine a constructor for the tag"),
    "deeply-nested": ("name: x\nmodels: " + "[" * 5000 + "]" * 5000 + "\n", r"nested more than 64 levels deep"),
    "billion-laughs": ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
        + "name: *i\n", r"expands to [\d,]+ values with its aliases, more than 100,000"),
    "100-MB-file": ("BIG", r"104,857,600 bytes, larger than the 1,048,576 a protocol file may have"),
    "wrong-type-n_test": (_set("dataset.n_test", "many"), r"dataset.n_test: Input should be a valid integer"),
    "wrong-type-seed": (_set("seed", [1]), r"seed: Input should be a valid integer"),
    "unknown-top-level-key": (_set("colour", "red"), r"colour: unknown key, got 'red'"),
    "unknown-model-key": (_set("models.0.colour", "red"), r"models\[0\].colour: unknown key"),
    "unknown-operator": (_set("models.0.operator", "quux+cos"), r"models\[0\].operator: operator: unknown 'quux\+cos'"),
    "unknown-architecture": (_set("models.0.arch", "vgg99"), r"models\[0\].arch: arch: unknown 'vgg99'"),
    "unknown-attack": (_set("evaluation.attacks", ["fgsm-linf", "nope-linf"]),
                       r"evaluation.attacks\[1\]: attack config: unknown name 'nope-linf'"),
    "unknown-recipe": (_set("models.0.recipe", "turbo"), r"models\[0\].recipe: recipe: unknown 'turbo'"),
    "negative-eps": (_set("evaluation.attacks", [{"name": "pgd", "eps": -1}]),
                     r"evaluation.attacks\[0\].eps: must be > 0, got -1"),
    "nan-eps": ("NAN", r"evaluation.attacks\[0\].eps: must be > 0, got nan"),
    "huge-eps": (_set("evaluation.attacks", [{"name": "pgd", "eps": 1e9}]),
                 r"evaluation.attacks\[0\]: eps: an L-inf budget on inputs in \[0, 1\] is at most 1"),
    "huge-l2-eps": (_set("evaluation.attacks", [{"name": "pgd", "threat_model": "l2", "eps": 1e6}]),
                    r"eps: an L2 budget on inputs in \[0, 1\] above 1000"),
    "zero-steps": (_set("evaluation.attacks", [{"name": "pgd", "steps": 0}]),
                   r"evaluation.attacks\[0\].steps: must be >= 1, got 0"),
    "billion-steps": (_set("evaluation.attacks", [{"name": "pgd", "steps": 10 ** 9}]),
                      r"evaluation.attacks\[0\].steps: at most 100,000"),
    "million-restarts": (_set("evaluation.attacks", [{"name": "pgd", "restarts": 10 ** 6}]),
                         r"evaluation.attacks\[0\].restarts: at most 1,000"),
    "empty-model-list": (_set("models", []), r"models: List should have at least 1 item"),
    "duplicate-model-names": (lambda p: p["models"].append(copy.deepcopy(p["models"][0])),
                              r"duplicate model names \['base'\]"),
    "zero-batch-size": (_set("evaluation.batch_size", 0), r"evaluation.batch_size: Input should be greater than"),
    "output-dotdot-escape": (_set("output", "../../../../tmp/rbdc-hostile-escape"),
                             r"output: '../../../../tmp/rbdc-hostile-escape' is outside the folder the run is started in"),
    "output-absolute": (_set("output", "/tmp/rbdc-hostile-escape"),
                        r"output: '/tmp/rbdc-hostile-escape' is outside the folder the run is started in"),
    "db-escape": (_set("leaderboard", {"db": "../../hostile.sqlite"}),
                  r"leaderboard.db: '../../hostile.sqlite' is outside the folder the run is started in"),
    "transfer-from-nowhere": (_set("evaluation.transfer", {"sources": ["ghost"], "targets": "all"}),
                              r"evaluation.transfer.sources\[0\]: unknown model 'ghost'"),
    "unknown-masking-setting": (_set("evaluation.masking", {"colour": 1}), r"masking: unknown setting\(s\) colour"),
    "bad-binarization-gap": (_set("evaluation.binarization_test", {"gap": 2}),
                             r"binarization_test.gap: a number in \[0, 1\)"),
    "unknown-model-param": (_set("models.0.params", {"widht": 2}), r"models\[0\].params: .*widht"),
    "code-outside-folder": (_evil_operator("absolute"), r"models\[0\].operator: .*evil_ops.py:Evil' runs the Python "
                                                        r"file .*outside the protocol's folder.*--allow-code"),
    "code-climbing-out": (_evil_operator("relative"), r"models\[0\].operator: .*outside the protocol's folder"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_learnable_mnist(tmp_path_factory.mktemp("data"), n_train=64, n_test=16)


def _write_case(case: str, folder: Path, data: Path) -> Path:
    spec, _ = PROTOCOL_CASES[case]
    path = folder / "p.yaml"
    if spec == "BIG":
        with path.open("wb") as f:  # sparse: 100 MB without writing them
            f.truncate(100 * 1024 * 1024)
    elif spec == "NAN":
        path.write_text(yaml.safe_dump(_base(data), sort_keys=False).replace(
            "attacks:\n  - fgsm-linf", "attacks:\n  - {name: pgd, eps: .nan}"))
    elif isinstance(spec, bytes):
        path.write_bytes(spec)
    elif isinstance(spec, str):
        path.write_text(spec)
    else:
        proto = _base(data)
        spec(proto)
        path.write_text(yaml.safe_dump(proto, sort_keys=False))
    return path


def _assert_one_line_error(err: str, pattern: str, path: Path | str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines and all(line.startswith("rbdc: error: ") for line in lines), err
    assert len(lines) == 1, err
    assert str(path) in lines[0], err
    assert re.search(pattern, lines[0]), (pattern, err)


@pytest.mark.parametrize("case", sorted(PROTOCOL_CASES))
def test_hostile_protocol(case: str, data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    path = _write_case(case, tmp_path, data)
    assert main(["run", str(path)]) == 2
    _assert_one_line_error(capsys.readouterr().err, PROTOCOL_CASES[case][1], path)
    assert not any(start.iterdir())  # nothing written where the run was started
    assert not Path("/tmp/rbdc-hostile-escape").exists() and not (tmp_path.parent / "hostile.sqlite").exists()
    assert not PWNED.exists()  # no code from outside the protocol's folder ran


@pytest.mark.parametrize("dry_run", [True, False])
def test_code_from_outside_the_protocols_folder_runs_only_when_allowed(dry_run, data, tmp_path, capsys,
                                                                       monkeypatch) -> None:
    """A protocol received from a stranger used to execute the Python file its operator names at
    planning time, even for --dry-run."""
    monkeypatch.chdir(tmp_path)
    PWNED.unlink(missing_ok=True)
    proto = _base(data)
    _evil_operator("absolute")(proto)
    evil = Path(proto["models"][0]["operator"].rpartition(":")[0])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto, sort_keys=False))
    flags = ["--dry-run"] if dry_run else []
    assert main(["run", "p.yaml", *flags]) == 2
    _assert_one_line_error(capsys.readouterr().err, r"outside the protocol's folder", "p.yaml")
    assert not PWNED.exists() and not (tmp_path / "runs").exists()
    # the same file inside the protocol's folder, or allowed explicitly, runs (and a dry run names it)
    assert main(["run", "p.yaml", "--dry-run", "--allow-code", str(evil)]) == 0
    out = capsys.readouterr().out
    assert f"code this protocol runs besides the package's: {evil.resolve()}" in out
    assert PWNED.exists()
    PWNED.unlink()
    (tmp_path / "evil_ops.py").write_text(EVIL_OPS)
    proto["models"][0]["operator"] = "evil_ops.py:Evil"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto, sort_keys=False))
    assert main(["run", "p.yaml", "--dry-run"]) == 0
    assert str((tmp_path / "evil_ops.py").resolve()) in capsys.readouterr().out
    PWNED.unlink()


def test_the_corpus_is_large_enough() -> None:
    assert len(PROTOCOL_CASES) + len(CHECKPOINT_CASES) + len(DATASET_CASES) + 1 >= 40


# ----------------------------------------------------------------------------- checkpoints
def _good_state(tmp: Path) -> Path:
    from robustbench_dc.zoo import build_model

    torch.manual_seed(0)
    path = tmp / "good.pt"
    torch.save(build_model("mnist2d", "baseline", dataset="mnist", width=0.125).state_dict(), path)
    return path


class _Pwned:
    def __reduce__(self):  # what a malicious pickle does: call something when unpickled
        return (Path.write_text, (Path("/tmp/rbdc-hostile-pwned"), "pwned"))


def _truncated(tmp: Path) -> Path:
    raw = _good_state(tmp).read_bytes()
    (tmp / "bad.pt").write_bytes(raw[: len(raw) // 2])
    return tmp / "bad.pt"


def _code_pickle(tmp: Path) -> Path:
    torch.save({"model": _Pwned()}, tmp / "bad.pt")  # torch.save pickles the object
    return tmp / "bad.pt"


def _other_arch(tmp: Path) -> Path:
    from robustbench_dc.zoo import build_model

    torch.save(build_model("mnist2d", "baseline", dataset="mnist", width=0.25).state_dict(), tmp / "bad.pt")
    return tmp / "bad.pt"


def _isonet(tmp: Path) -> Path:
    from robustbench_dc.zoo import build_model

    torch.save(build_model("isonet", "baseline", dataset="mnist", width=0.25).state_dict(), tmp / "bad.pt")
    return tmp / "bad.pt"


def _nan_weights(tmp: Path) -> Path:
    from robustbench_dc.zoo import build_model

    state = build_model("mnist2d", "baseline", dataset="mnist", width=0.125).state_dict()
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}, tmp / "bad.pt")
    return tmp / "bad.pt"


def _text_file(tmp: Path) -> Path:
    (tmp / "bad.pt").write_text("this is not a checkpoint\n")
    return tmp / "bad.pt"


def _empty(tmp: Path) -> Path:
    (tmp / "bad.pt").write_bytes(b"")
    return tmp / "bad.pt"


def _list_state(tmp: Path) -> Path:
    torch.save([torch.zeros(3)], tmp / "bad.pt")
    return tmp / "bad.pt"


CHECKPOINT_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated": (_truncated, r"checkpoint: cannot read .*bad.pt as weights"),
    "code-in-pickle": (_code_pickle, r"checkpoint: cannot read .*bad.pt as weights \(UnpicklingError"),
    "other-width": (_other_arch, r"does not fit the model: body\.0\.weight is 8x1x5x5 in the file, 4x1x5x5 in the "
                                 r"model \(and \d+ more\)$"),
    "other-architecture": (_isonet, r"does not fit the model: .*the model's \S+ \(\d+(x\d+)*\) is not in the "
                                   r"file \(and \d+ more\); the file's \S+ \(\d+(x\d+)*\) is not in the model "
                                   r"\(and \d+ more\)$"),
    "text-file": (_text_file, r"checkpoint: cannot read .*bad.pt as weights"),
    "empty-file": (_empty, r"checkpoint: cannot read .*bad.pt as weights"),
    "not-a-state-dict": (_list_state, r"bad.pt holds a list, not a state dict"),
    "nan-weights": (_nan_weights, r"bad.pt: model mnist2d-baseline: non-finite logits \(NaN or inf\) on 8 of 8 clean "
                                  r"examples"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_hostile_checkpoint(case: str, tmp_path: Path, capsys) -> None:
    make, pattern = CHECKPOINT_CASES[case]
    ckpt = make(tmp_path)
    out = tmp_path / "result.json"
    code = main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width=0.125", "--checkpoint",
                 str(ckpt), "--data", "mnist-sample", "-n", "8", "--attack", "fgsm-linf", "--no-masking", "--quiet",
                 "--json", str(out)])
    assert code == 2
    _assert_one_line_error(capsys.readouterr().err, pattern, ckpt)
    assert not out.exists() and not Path("/tmp/rbdc-hostile-pwned").exists()


def test_a_card_whose_checkpoint_was_bit_flipped_is_refused(tmp_path: Path, capsys) -> None:
    good = _good_state(tmp_path)
    raw = bytearray(good.read_bytes())
    sha = __import__("hashlib").sha256(raw).hexdigest()
    raw[len(raw) // 2] ^= 0x01
    good.write_bytes(bytes(raw))
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"name": "flipped", "arch": "mnist2d", "operator": "baseline", "dataset": "mnist",
                                    "arch_params": {"width": 0.125}, "checkpoint": str(good), "sha256": sha}))
    assert main(["evaluate", "--model", str(card), "--data", "mnist-sample", "-n", "8", "--attack", "fgsm-linf",
                 "--no-masking", "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err, rf"checkpoint .*good.pt has sha256 [0-9a-f]{{64}}, the card says {sha}",
                           good)


# ----------------------------------------------------------------------------- datasets
def _idx(path: Path, array: np.ndarray, magic_type: int = 0x08) -> None:
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _mnist_files(folder: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, (im, lb) in (("train", 20, ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")),
                               ("t10k", 20, ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))):
        _idx(folder / im, images if images is not None else rng.integers(0, 255, (n, 28, 28)))
        _idx(folder / lb, labels if labels is not None else rng.integers(0, 10, n))


def _truncated_idx(folder: Path) -> Path:
    _mnist_files(folder)
    p = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return p


def _wrong_magic(folder: Path) -> Path:
    _mnist_files(folder)
    p = folder / "t10k-labels-idx1-ubyte.gz"
    _idx(p, np.zeros(20, dtype=np.uint8), magic_type=0x0D)  # float32 type code
    return p


def _labels_out_of_range(folder: Path) -> Path:
    _mnist_files(folder, labels=np.full(20, 42))
    return folder / "t10k-labels-idx1-ubyte.gz"


def _wrong_shape(folder: Path) -> Path:
    _mnist_files(folder, images=np.zeros((20, 32, 32), dtype=np.uint8))
    return folder / "t10k-images-idx3-ubyte.gz"


def _count_mismatch(folder: Path) -> Path:
    _mnist_files(folder)
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    return folder / "t10k-labels-idx1-ubyte.gz"


class _CifarPwned:
    def __reduce__(self):
        return (Path.write_text, (Path("/tmp/rbdc-hostile-pwned"), "pwned"))


def _cifar_code(folder: Path) -> Path:
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (d / name).open("wb") as f:
            pickle.dump({b"data": _CifarPwned(), b"labels": [0]}, f)
    return d / "test_batch"


DATASET_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "truncated-idx": (_truncated_idx, "mnist", r"t10k-images-idx3-ubyte.gz"),
    "wrong-magic": (_wrong_magic, "mnist", r"t10k-labels-idx1-ubyte.gz"),
    "labels-out-of-range": (_labels_out_of_range, "mnist", r"label"),
    "images-of-the-wrong-shape": (_wrong_shape, "mnist", r"28"),
    "image-label-count-mismatch": (_count_mismatch, "mnist", r"t10k"),
    "cifar-pickle-that-runs-code": (_cifar_code, "cifar10", r"test_batch"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_hostile_dataset(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    make, dataset, pattern = DATASET_CASES[case]
    monkeypatch.setenv("RBDC_OFFLINE", "1")
    bad = make(tmp_path / "data")
    out = tmp_path / "result.json"
    code = main(["evaluate", "--arch", "mnist2d" if dataset == "mnist" else "cnn9", "--dataset", dataset,
                 "--param", "width=0.125", "--untrained", "--data-dir", str(tmp_path / "data"), "-n", "8",
                 "--attack", "fgsm-linf", "--no-masking", "--quiet", "--json", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, pattern, bad.name)
    assert not out.exists() and not Path("/tmp/rbdc-hostile-pwned").exists()


# ----------------------------------------------------------------------------- training that diverges
def test_training_that_diverges_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width=0.125", "--data",
                 "mnist-sample", "--recipe", "mnist-fast", "--set", "optimizer.lr=1e9", "--set", "epochs=2",
                 "--out", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(r"training diverged: loss became .* at epoch 1, iteration \d+; last good checkpoint: none", err), err
    assert not (out / "model.pt").exists()  # no final weights from a diverged run


# ----------------------------------------------------------------------------- operator plugins
PLUGINS: dict[str, tuple[str, str, str]] = {
    "import-failure": ("import module_that_does_not_exist\n", "X",
                       r"operator '.*bad_op.py:X': importing .*bad_op.py failed: ModuleNotFoundError"),
    "wrong-signature": ("import torch\nclass Op(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n",
                        "Op", r"operator '.*bad_op.py:Op': building a convolution .* failed: TypeError: .*stride"),
    "wrong-output-shape": ("from robustbench_dc.operators import DecoupledConv2d\n"
                           "class Op(DecoupledConv2d):\n    def forward(self, x):\n        return super().forward(x)[:, :1]\n",
                           "Op", r"operator '.*bad_op.py:Op': a convolution .* returned shape \(8, 1, 28, 28\) .*"
                                 r"expected \(8, 4, 28, 28\)"),
    "nan-output": ("from robustbench_dc.operators import DecoupledConv2d\n"
                   "class Op(DecoupledConv2d):\n    def forward(self, x):\n        return super().forward(x) * float('nan')\n",
                   "Op", r"operator '.*bad_op.py:Op': a convolution .* returned \d+ NaN/inf values"),
}


@pytest.mark.parametrize("case", sorted(PLUGINS))
def test_plugin_errors_name_the_plugin_and_the_problem(case: str, tmp_path: Path, capsys) -> None:
    code, name, pattern = PLUGINS[case]
    (tmp_path / "bad_op.py").write_text(code)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width=0.125", "--operator",
                 f"{tmp_path / 'bad_op.py'}:{name}", "--untrained", "--data", "mnist-sample", "-n", "8",
                 "--attack", "fgsm-linf", "--no-masking", "--quiet", "--json", str(out)]) == 2
    _assert_one_line_error(capsys.readouterr().err, pattern, "bad_op.py")
    assert not out.exists()


# ----------------------------------------------------------------------------- results databases
def _corrupt_db(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)


def _random_db(path: Path) -> None:
    path.write_bytes(bytes((i * 97) % 251 for i in range(8192)))


def _other_schema_db(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'alice')")


def _lookalike_db(path: Path) -> None:  # the suite's table names, other columns
    import sqlite3

    with sqlite3.connect(path) as conn:
        for table in ("schema_version", "runs", "models", "evaluations", "flags", "lipschitz"):
            conn.execute(f"CREATE TABLE {table} (x INTEGER)")


DB_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt-sqlite": (_corrupt_db, r"not a robustbench-dc results database \(SQLite: file is not a database\)"),
    "not-sqlite": (_random_db, r"not a robustbench-dc results database \(not an SQLite file\)"),
    "another-schema": (_other_schema_db, r"not a robustbench-dc results database \(it has the tables users; missing "),
    "lookalike-schema": (_lookalike_db, r"not a robustbench-dc results database \(table runs lacks "),
}


@pytest.mark.parametrize("case", sorted(DB_CASES))
def test_a_results_database_that_is_not_one_is_refused(case: str, data: Path, tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    """`rbdc leaderboard show --db` used to end a corrupt file in a sqlite3 traceback and to read
    another application's database as an empty board."""
    make, pattern = DB_CASES[case]
    db = tmp_path / "results.sqlite"
    make(db)
    before = db.read_bytes()
    assert main(["leaderboard", "show", "--db", str(db)]) == 2
    _assert_one_line_error(capsys.readouterr().err, pattern, db)
    # a run that would write into it is refused before its first job
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_base(data), sort_keys=False))
    assert main(["run", "p.yaml", "--db", str(db)]) == 2
    _assert_one_line_error(capsys.readouterr().err, pattern, db)
    assert db.read_bytes() == before and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "results.sqlite"]  # no -wal / -shm files


def test_the_corpus_holds_the_three_hostile_classes_of_issue_30() -> None:
    assert {"code-outside-folder", "code-climbing-out"} <= set(PROTOCOL_CASES)
    assert "nan-weights" in CHECKPOINT_CASES and len(DB_CASES) >= 3

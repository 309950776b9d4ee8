"""Tests for robustbench_dc.data: readers, search order, downloads, bundled sample, loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_dc.data import (
    DATASETS,
    DataError,
    DatasetNotFoundError,
    DownloadError,
    cache_dir,
    dataset_checksum,
    dataset_info,
    download_file,
    load_dataset,
    load_splits,
    make_loader,
)
from robustbench_dc.data import sample as sample_mod
from robustbench_dc.data.cifar import _RestrictedUnpickler, read_cifar_batch
from robustbench_dc.data.download import FILES, extract_tar_safely, locate
from robustbench_dc.data.mnist import IDX_FILES, read_idx

_ENV_DATA = os.environ.get("RBDC_DATA")
SHARED_DATA = Path(_ENV_DATA) if _ENV_DATA else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RBDC_DATA, a private cache folder, and no network unless a test allows it."""
    monkeypatch.delenv("RBDC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RBDC_OFFLINE", "1")
    return tmp_path / "xdg" / "robustbench_dc" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzip-compressed if the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 10, offset: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny MNIST-layout folder; image i of a split is filled with (i + offset) % 256."""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.broadcast_to(((np.arange(n) + offset) % 256).astype(np.uint8)[:, None, None], (n, 28, 28))
        labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
        write_idx(folder / IDX_FILES[split][0], images)
        write_idx(folder / IDX_FILES[split][1], labels)
        out[split] = (images, labels)
    return out


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """A CIFAR-10 batch as the canonical files have it: a protocol-2 pickled dict."""
    batch = {b"batch_label": b"synthetic", b"labels": labels, b"data": data}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))


# --- idx reader ---------------------------------------------------------------------


def test_read_idx_round_trips_values(tmp_path: Path) -> None:
    arr = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte.gz", arr)
    got = read_idx(tmp_path / "x-idx3-ubyte.gz", ndim=3)
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got, arr)
    write_idx(tmp_path / "y-idx1-ubyte", np.array([7, 0, 255], dtype=np.uint8))  # uncompressed too
    np.testing.assert_array_equal(read_idx(tmp_path / "y-idx1-ubyte", ndim=1), [7, 0, 255])


def test_read_idx_rejects_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 2) + b"\x00" * 8)  # float type, not ubyte
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_read_idx_rejects_truncated_payload_and_wrong_ndim(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01" * 9)
    with pytest.raises(DataError, match="10 bytes"):
        read_idx(path)
    write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="expected 3 dimensions, got 1"):
        read_idx(tmp_path / "labels", ndim=3)


# --- CIFAR reader and restricted unpickler --------------------------------------------


def test_cifar_reader_reads_synthetic_folder_channel_major(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = np.zeros((2, 3072), np.uint8)
        data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10 * i, 10 * i + 1, 10 * i + 2  # R, G, B planes
        write_cifar_batch(folder / name, data, [i, 9 - i])
    train, test = load_splits("cifar-10", data_dir=tmp_path, download=False)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert train.labels.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]  # batches 1..5 in order
    assert train.images[2, :, 5, 7].tolist() == [10, 11, 12]  # batch 2, pixel (5, 7): R, G, B
    assert test.images[0, :, 0, 0].tolist() == [50, 51, 52]
    assert train.classes[0] == "airplane" and train.source == str(folder)


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil_batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle global"):
        read_cifar_batch(path)
    with pytest.raises(DataError, match="system"):
        _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    assert not marker.exists()


def test_cifar_batch_with_missing_key_or_bad_shape_raises(tmp_path: Path) -> None:
    (tmp_path / "nolabels").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2))
    with pytest.raises(DataError, match="b'labels'"):
        read_cifar_batch(tmp_path / "nolabels")
    write_cifar_batch(tmp_path / "badshape", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(DataError, match=r"uint8 \(N, 3072\)"):
        read_cifar_batch(tmp_path / "badshape")


# --- first-n semantics ------------------------------------------------------------------


def test_n_takes_the_first_examples_in_order(tmp_path: Path) -> None:
    written = write_mnist(tmp_path / "mnist", n_train=20)
    ds = load_dataset("mnist", "train", n=5, data_dir=tmp_path, download=False)
    assert len(ds) == 5
    assert ds.labels.tolist() == written["train"][1][:5].tolist() == [0, 1, 2, 3, 4]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert ds.checksum == dataset_checksum("mnist", "train", n=5, data_dir=tmp_path, download=False)
    assert ds.checksum != load_dataset("mnist", "train", n=6, data_dir=tmp_path, download=False).checksum


def test_n_larger_than_split_raises_with_value_and_maximum(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=20, n_test=10)
    with pytest.raises(ValueError, match=r"n=11 .*<= 10"):
        load_splits("mnist", n_test=11, data_dir=tmp_path, download=False)


# --- search order -----------------------------------------------------------------------


def test_search_order_data_dir_then_env_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", isolated_env
    write_mnist(explicit / "mnist", offset=1)
    write_mnist(env / "MNIST" / "raw", offset=2)  # torchvision layout
    write_mnist(cache, offset=3)  # files directly in the root
    monkeypatch.setenv("RBDC_DATA", str(env))

    def first_label(data_dir: Path | None) -> int:
        return int(load_dataset("mnist", "test", n=1, data_dir=data_dir, download=False).labels[0])

    assert first_label(explicit) == 1
    assert first_label(None) == 2
    monkeypatch.delenv("RBDC_DATA")
    assert first_label(None) == 3
    assert load_dataset("mnist", "test", download=False).source == str(cache)


def test_cache_dir_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "robustbench_dc" / "data"


def test_missing_dataset_offline_names_every_place_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("RBDC_DATA", str(tmp_path / "env"))
    system = tmp_path / "system"  # stands in for /usr/share/datasets/fashion-mnist
    monkeypatch.setitem(FILES, "fashion-mnist", replace(FILES["fashion-mnist"], system_dirs=(system,)))
    (tmp_path / "explicit").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fmnist", "test", data_dir=tmp_path / "explicit", download=False)
    msg = str(info.value)
    assert "\n" not in msg
    places = [
        tmp_path / "explicit" / "fashion-mnist",
        tmp_path / "explicit",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "env",
        isolated_env / "fashion-mnist",
        isolated_env,
        system,
    ]
    positions = [msg.index(f"{p}") for p in places]
    assert positions == sorted(positions)  # listed in search order
    for needle in ("'fashion-mnist'", "download=False", "RBDC_DATA=", "--data-dir", "apt-get install dataset-fashion-mnist"):
        assert needle in msg
    assert isinstance(info.value, DataError)


def test_offline_env_disables_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="RBDC_OFFLINE"):
        load_dataset("cifar10", "test", download=True)


def test_explicit_missing_data_dir_is_an_error(tmp_path: Path, isolated_env: Path) -> None:
    write_mnist(isolated_env / "mnist")  # present in the cache, but the explicit folder wins
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        load_dataset("mnist", "test", data_dir=tmp_path / "nope", download=False)
    assert str(tmp_path / "nope") in str(info.value) and "\n" not in str(info.value)


# --- downloads --------------------------------------------------------------------------


def test_download_file_verifies_checksum_and_uses_next_mirror(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = b"robustbench-dc" * 1000
    (src / "f.bin").write_bytes(payload)
    dest = tmp_path / "dest"
    dest.mkdir()
    mirrors = [(tmp_path / "missing").as_uri() + "/", src.as_uri() + "/"]
    got = download_file("f.bin", dest, mirrors, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert got == dest / "f.bin" and got.read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == ["f.bin"]


def test_download_file_checksum_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"tampered")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file("f.bin", dest, [src.as_uri() + "/"], sha256="0" * 64, progress=False)
    assert list(dest.iterdir()) == []


def test_failed_download_is_reported_in_not_found_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RBDC_OFFLINE")
    write_mnist(tmp_path / "mirror")  # not the canonical bytes, so md5 fails
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DatasetNotFoundError, match="download failed.*md5 mismatch") as info:
        locate("mnist", "test", data_dir=target, mirrors=[(tmp_path / "mirror").as_uri() + "/"])
    assert "\n" not in str(info.value)
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_missing_cifar10_is_downloaded_extracted_and_archive_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RBDC_OFFLINE")
    staging = tmp_path / "staging" / "cifar-10-batches-py"
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(staging / name, np.full((3, 3072), 7, np.uint8), [1, 2, 3])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(FILES, "cifar10", replace(FILES["cifar10"], md5={archive.name: md5}))
    target = tmp_path / "target"
    target.mkdir()
    folder = locate("cifar10", "test", data_dir=target, mirrors=[mirror.as_uri() + "/"])
    assert folder == target / "cifar-10-batches-py"
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # archive deleted
    ds = load_dataset("cifar10", "train", data_dir=target, download=False)
    assert len(ds) == 15 and ds.labels[:3].tolist() == [1, 2, 3] and int(ds.images.max()) == 7


def test_extract_tar_safely_rejects_parent_paths_and_skips_links(tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        add(tar, "cifar-10-batches-py/test_batch", b"batch")
        add(tar, "cifar-10-batches-py/link", kind=tarfile.SYMTYPE)
        add(tar, "elsewhere/file")
    out = tmp_path / "out"
    assert extract_tar_safely(good, out, "cifar-10-batches-py") == [out / "cifar-10-batches-py" / "test_batch"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "cifar-10-batches-py",
        "cifar-10-batches-py/test_batch",
    ]

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        add(tar, "cifar-10-batches-py/../../escape")
    with pytest.raises(DataError, match="unsafe member"):
        extract_tar_safely(bad, tmp_path / "out2", "cifar-10-batches-py")
    assert not (tmp_path / "escape").exists()


# --- registry and loaders -------------------------------------------------------------------


def test_dataset_info_aliases_and_constants() -> None:
    assert dataset_info("FMNIST") is dataset_info("fashion_mnist") is DATASETS["fashion-mnist"]
    cifar = dataset_info("cifar-10")
    assert cifar.shape == (3, 32, 32) and cifar.eps_linf == pytest.approx(8 / 255) and cifar.eps_l2 == 0.5
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and len(cifar.classes) == cifar.num_classes == 10
    assert dataset_info("mnist").mean == (0.1307,) and dataset_info("mnist").eps_l2 == 2.0
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*cifar10"):
        dataset_info("imagenet")


def test_make_loader_is_seeded_and_yields_unit_floats(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=20)
    ds = load_dataset("mnist", "train", data_dir=tmp_path, download=False)

    def order(seed: int) -> list[int]:
        return torch.cat([x[:, 0, 0, 0] for x, _ in make_loader(ds, 6, shuffle=True, seed=seed)]).mul(255).round().int().tolist()

    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == list(range(20))
    batches = list(make_loader(ds, 6, drop_last=True))
    assert [len(y) for _, y in batches] == [6, 6, 6]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (6, 1, 28, 28)
    assert x[1, 0, 0, 0].item() == pytest.approx(1 / 255)


# --- bundled sample -------------------------------------------------------------------------


def test_bundled_sample_is_balanced_and_matches_manifest() -> None:
    manifest = sample_mod.read_sample_manifest()
    train, test = load_splits("mnist-sample")
    assert (len(train), len(test)) == (6000, 1000)
    assert torch.bincount(train.labels, minlength=10).tolist() == [600] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [100] * 10
    x = test.to_float()
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.max() == 1
    raw = Path(test.source).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == manifest["sha256"] and len(raw) <= 2_000_000
    assert (train.checksum, test.checksum) == (manifest["content_sha256"]["train"], manifest["content_sha256"]["test"])


def test_bundled_sample_sha_mismatch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    good = sample_mod.read_sample_manifest()
    monkeypatch.setattr(sample_mod, "read_sample_manifest", lambda: {**good, "sha256": "0" * 64})
    with pytest.raises(DataError, match="sha256"):
        load_dataset("mnist-sample", "test")


# --- real data (skipped when ../shared/data is absent) -----------------------------------------


def _real(sub: str) -> Path:
    if not (SHARED_DATA / sub).is_dir():
        pytest.skip(f"real dataset folder {SHARED_DATA / sub} not available")
    return SHARED_DATA


def test_real_mnist_train_has_60000_and_first_label_5() -> None:
    root = _real("mnist")
    ds = load_dataset("mnist", "train", data_dir=root, download=False)
    assert len(ds) == 60000 and ds.images.shape == (60000, 1, 28, 28)
    assert int(ds.labels[0]) == 5


def test_real_mnist_folder_is_not_taken_for_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _real("mnist")
    monkeypatch.setitem(FILES, "fashion-mnist", replace(FILES["fashion-mnist"], system_dirs=()))
    with pytest.raises(DatasetNotFoundError, match="mnist \\(skipped: holds another dataset"):
        locate("fashion-mnist", "test", data_dir=root / "mnist", download=False)
    assert locate("mnist", "test", data_dir=root / "mnist", download=False) == root / "mnist"


def test_real_cifar10_first_1000_test() -> None:
    root = _real("cifar-10-batches-py")
    ds = load_dataset("cifar10", "test", n=1000, data_dir=root, download=False)
    assert ds.images.shape == (1000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) <= 9
    assert ds.labels[:5].tolist() == [3, 8, 8, 0, 6]


def test_real_sample_manifest_records_source_files() -> None:
    root = _real("mnist")
    manifest = json.loads((Path(sample_mod.__file__).parent / "sample" / sample_mod.SAMPLE_JSON).read_text())
    for name, sha in manifest["source_sha256"].items():
        assert hashlib.sha256((root / "mnist" / name).read_bytes()).hexdigest() == sha

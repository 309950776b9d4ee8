"""Finding dataset files on disk, and downloading them with checksum verification.

Search order for a dataset's files (first folder holding every file of the split wins):

1. the explicit ``data_dir`` argument (an error if it does not exist),
2. ``$RBDC_DATA``,
3. the user cache, ``$XDG_CACHE_HOME/robustbench_dc/data`` or ``~/.cache/robustbench_dc/data``,
4. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).

Within each root the dataset subfolders (``mnist/``, ``MNIST/raw/``, ``fashion-mnist/``,
``cifar-10-batches-py/``, ...) are tried before the root itself.

Missing files are downloaded (unless ``download=False`` or ``RBDC_OFFLINE=1``) into the
explicit ``data_dir`` when it is writable, else into the user cache. A download is
written to a temporary file next to its target, its md5/sha256 is checked, and only
then is it moved into place with :func:`os.replace`; on any failure the temporary
file is deleted, so no partial file is ever left behind. Local files are never
rejected for differing from the canonical checksums, only downloaded ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from tqdm import tqdm

from robustbench_dc._atomic import atomic_write
from robustbench_dc.data.cifar import CIFAR10_FILES
from robustbench_dc.data.errors import DataError, DatasetNotFoundError, DownloadError
from robustbench_dc.data.mnist import IDX_FILES, find_idx_file

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "DatasetFiles",
    "atomic_write",
    "FILES",
    "cache_dir",
    "download_enabled",
    "download_file",
    "extract_tar_safely",
    "file_digest",
    "locate",
]

log = logging.getLogger(__name__)

#: Seconds a network read may block before the download fails.
DOWNLOAD_TIMEOUT_S: float = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's files live and where to download them from.

    Attributes:
        name: canonical dataset name.
        split_files: split -> files that must all be present in one folder.
        subdirs: folders below a root tried before the root itself.
        system_dirs: extra folders searched after the user cache.
        mirrors: base URLs tried in order; a file's URL is ``mirror + remote name``.
        md5: remote file name -> canonical md5 (what is downloaded).
        archive: the single tar.gz holding everything, or None if files download one by one.
        download_subdir: where downloaded files end up below the download root.
        other_label_md5: md5s of label files that identify a *different* dataset with the
            same layout (MNIST vs Fashion-MNIST); a folder holding them is skipped.
    """

    name: str
    split_files: Mapping[str, tuple[str, ...]]
    subdirs: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: Mapping[str, str]
    download_subdir: str
    archive: str | None = None
    system_dirs: tuple[Path, ...] = ()
    other_label_md5: frozenset[str] = field(default_factory=frozenset)


_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def _label_md5s(md5: Mapping[str, str]) -> frozenset[str]:
    return frozenset(v for k, v in md5.items() if "labels" in k)


#: Canonical dataset name -> file layout and download sources.
FILES: Mapping[str, DatasetFiles] = {
    "mnist": DatasetFiles(
        name="mnist",
        split_files=IDX_FILES,
        subdirs=("mnist", "MNIST/raw"),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ),
        md5=_MNIST_MD5,
        download_subdir="mnist",
        other_label_md5=_label_md5s(_FASHION_MD5),
    ),
    "fashion-mnist": DatasetFiles(
        name="fashion-mnist",
        split_files=IDX_FILES,
        subdirs=("fashion-mnist", "FashionMNIST/raw"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5=_FASHION_MD5,
        download_subdir="fashion-mnist",
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        other_label_md5=_label_md5s(_MNIST_MD5),
    ),
    "cifar10": DatasetFiles(
        name="cifar10",
        split_files=CIFAR10_FILES,
        subdirs=("cifar-10-batches-py",),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        download_subdir="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
    ),
}


def cache_dir() -> Path:
    """The user cache folder for datasets: ``$XDG_CACHE_HOME/robustbench_dc/data``,
    or ``~/.cache/robustbench_dc/data`` when ``XDG_CACHE_HOME`` is unset or empty."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "robustbench_dc" / "data"


def download_enabled(download: bool = True) -> bool:
    """True if downloads are allowed: ``download`` is true and ``RBDC_OFFLINE`` is not set to a true value."""
    offline = os.environ.get("RBDC_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return download and not offline


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm`` is any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _has_split(folder: Path, files: DatasetFiles, split: str) -> bool:
    if files.archive is None:  # idx files may also be stored uncompressed
        return all(find_idx_file(folder, n) is not None for n in files.split_files[split])
    return all((folder / n).is_file() for n in files.split_files[split])


def _holds_other_dataset(folder: Path, files: DatasetFiles) -> bool:
    """True if ``folder``'s label files are byte-identical to another dataset's canonical ones."""
    if not files.other_label_md5:
        return False
    for name in files.md5:
        path = folder / name
        if "labels" in name and path.is_file() and file_digest(path, "md5") in files.other_label_md5:
            return True
    return False


def _candidate_dirs(files: DatasetFiles, data_dir: Path | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(data_dir)
    env = os.environ.get("RBDC_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir())
    candidates: list[Path] = []
    for root in roots:
        candidates.extend(root / sub for sub in files.subdirs)
        candidates.append(root)
    candidates.extend(files.system_dirs)
    unique: list[Path] = []
    for c in candidates:
        c = c.absolute()
        if c not in unique:
            unique.append(c)
    return unique


def locate(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Return the folder holding ``split`` of dataset ``name``, downloading it if needed.

    Args:
        name: canonical dataset name ("mnist", "fashion-mnist" or "cifar10").
        split: "train" or "test".
        data_dir: a folder searched first (and the download target when writable).
        download: allow downloading missing files (``RBDC_OFFLINE=1`` also forbids it).
        mirrors: override the dataset's download mirrors (used by tests).
        progress: show a download progress bar; None shows it only on a terminal.

    Raises:
        DatasetNotFoundError: the explicit ``data_dir`` does not exist, or the files are
            nowhere and could not be downloaded; the one-line message says where it
            looked, why nothing was downloaded, and how to provide the files.
    """
    files = FILES[name]
    explicit = Path(data_dir).expanduser() if data_dir is not None else None
    if explicit is not None and not explicit.is_dir():
        raise DatasetNotFoundError(
            f"Dataset {name!r}: the data directory {str(explicit)!r} given explicitly "
            f"(data_dir / --data-dir) does not exist or is not a folder. "
            f"{_how_to_provide(files)}"
        )
    looked: list[str] = []
    for folder in _candidate_dirs(files, explicit):
        if not _has_split(folder, files, split):
            looked.append(str(folder))
        elif _holds_other_dataset(folder, files):
            log.info("skipping %s: it holds the canonical files of another dataset", folder)
            looked.append(f"{folder} (skipped: holds another dataset's canonical files)")
        else:
            log.debug("dataset %s (%s) found in %s", name, split, folder)
            return folder

    if not download:
        why = "download was disabled (download=False)"
    elif not download_enabled(download):
        why = "download was disabled (RBDC_OFFLINE is set)"
    else:
        target_root = explicit if explicit is not None and os.access(explicit, os.W_OK) else cache_dir()
        try:
            return _download_dataset(files, split, target_root, mirrors or files.mirrors, progress)
        except (DataError, OSError) as exc:
            why = f"the download failed ({_one_line(str(exc))})"
    *rest, last = files.split_files[split]
    needed = f"{', '.join(rest)} and {last}" if rest else last
    raise DatasetNotFoundError(
        f"Dataset {name!r} ({split} split) was not found: looked for {needed} in these places, "
        f"in order: {', '.join(looked)}; {why}. {_how_to_provide(files)}"
    )


def _how_to_provide(files: DatasetFiles) -> str:
    cache = cache_dir() / files.download_subdir
    text = (
        "To provide the files, set RBDC_DATA=/path/to/data, pass --data-dir /path/to/data, "
        f"or place them under {cache}"
    )
    if files.name == "fashion-mnist":
        text += ", or install the Debian package with `apt-get install dataset-fashion-mnist`"
    return text + "."


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _download_dataset(files: DatasetFiles, split: str, root: Path, mirrors: Sequence[str],
                      progress: bool | None = None) -> Path:
    """Download what ``split`` needs into ``root/<download_subdir>`` and return that folder."""
    folder = root / files.download_subdir
    if files.archive is not None:
        root.mkdir(parents=True, exist_ok=True)
        archive = download_file(files.archive, root, mirrors, md5=files.md5[files.archive], progress=progress)
        try:
            extract_tar_safely(archive, root, member_prefix=files.download_subdir)
        finally:
            archive.unlink(missing_ok=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        for fname in files.split_files[split]:
            if find_idx_file(folder, fname) is None:
                download_file(fname, folder, mirrors, md5=files.md5[fname], progress=progress)
    if not _has_split(folder, files, split):
        raise DownloadError(f"downloaded files for {files.name} are incomplete in {folder}")
    return folder


def download_file(
    filename: str,
    dest_dir: str | Path,
    mirrors: Sequence[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Download ``filename`` from the first mirror that serves it with the right checksum.

    The URL tried is ``mirror + filename`` for each mirror in order (``https://``,
    ``http://`` or ``file://``). Bytes go to a temporary file in ``dest_dir``, which is
    moved to ``dest_dir/filename`` with :func:`os.replace` only after its checksum
    matches; on any failure the temporary file is deleted.

    Args:
        filename: the remote and local file name.
        dest_dir: the folder to write into (must exist).
        mirrors: base URLs, tried in order.
        md5: expected md5 hex digest.
        sha256: expected sha256 hex digest (at least one of md5 / sha256 is required).
        timeout: seconds a network operation may block.
        progress: show a tqdm bar; None shows it only on a terminal.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: neither md5 nor sha256 is given, or ``mirrors`` is empty.
        DownloadError: every mirror failed; the message lists each URL and its error.
    """
    if md5 is None and sha256 is None:
        raise ValueError("download_file needs an expected md5 or sha256, got neither")
    if not mirrors:
        raise ValueError(f"download_file needs at least one mirror for {filename!r}, got none")
    dest_dir = Path(dest_dir)
    errors: list[str] = []
    for mirror in mirrors:
        url = mirror + filename
        try:
            _fetch_verified(url, dest_dir / filename, md5, sha256, timeout, progress)
        except (OSError, ValueError, DownloadError) as exc:  # URLError is an OSError
            log.warning("download of %s failed: %s", url, exc)
            errors.append(f"{url}: {_one_line(str(exc))}")
            continue
        log.info("downloaded %s to %s", url, dest_dir / filename)
        return dest_dir / filename
    raise DownloadError(f"could not download {filename}: " + "; ".join(errors))


def _fetch_verified(
    url: str, dest: Path, md5: str | None, sha256: str | None, timeout: float, progress: bool | None
) -> None:
    expected = {alg: want.lower() for alg, want in (("md5", md5), ("sha256", sha256)) if want}
    digests = {alg: hashlib.new(alg) for alg in expected}
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total else None,
            unit="B",
            unit_scale=True,
            desc=dest.name,
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                for h in digests.values():
                    h.update(chunk)
                bar.update(len(chunk))
        for alg, want in expected.items():
            if digests[alg].hexdigest() != want:
                raise DownloadError(f"{alg} mismatch: expected {want}, got {digests[alg].hexdigest()}")


def extract_tar_safely(archive: str | Path, dest: str | Path, member_prefix: str) -> list[Path]:
    """Extract the regular files under ``member_prefix/`` of a tar archive into ``dest``.

    Every member is checked before anything is written: one with an absolute path or
    a ``..`` component raises :class:`DataError`. Links, devices and files outside
    ``member_prefix/`` are skipped. Each file is written through :func:`atomic_write`,
    so an interrupted extraction leaves no partial file.

    Returns:
        The extracted paths.
    """
    dest = Path(dest)
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                rel = PurePosixPath(member.name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise DataError(f"unsafe member {member.name!r} in archive {archive}")
            for member in members:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or parts[:1] != (member_prefix,) or len(parts) < 2:
                    continue
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular files always have a stream
                with src, atomic_write(target) as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written.append(target)
    except tarfile.TarError as exc:
        raise DataError(f"cannot extract archive {archive}: {exc}") from exc
    return written

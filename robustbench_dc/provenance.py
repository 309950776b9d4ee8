"""Provenance of a result: the command, the seed, the data checksum and the library versions,
built from what the caller passes in (never read from ``sys.argv``: the caller knows the
command it ran; a library call has none)."""

from __future__ import annotations

import functools
import hashlib
import platform
import shlex
from pathlib import Path
from typing import Any, Sequence

__all__ = ["code_fingerprint", "command_line", "package_versions", "provenance"]

#: Optional packages whose versions matter to attack results.
ATTACK_BACKENDS = ("torchattacks", "foolbox")


def command_line(argv: Sequence[str], prog: str = "rbdc") -> str:
    """``["run", "my protocol.yaml"]`` -> ``"rbdc run 'my protocol.yaml'"`` (quoted to re-run)."""
    return shlex.join([prog, *argv])


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the package's Python sources (each file's path inside the package and its bytes).

    The same for an editable checkout and an installed wheel of the same code; it changes with
    any edit of a ``.py`` file of the package, where ``VERSION`` does not. Protocol job keys
    include it, so that a run folder never serves results computed by other code.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):  # __pycache__ holds only .pyc files
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_versions(*optional: str) -> dict[str, str]:
    """Versions of robustbench-dc (and, as ``robustbench_dc_code``, the first 16 hex digits of its
    :func:`code_fingerprint`), torch and Python, then of each ``optional`` package that imports."""
    import torch

    from robustbench_dc.version import VERSION

    versions = {"robustbench_dc": VERSION, "robustbench_dc_code": code_fingerprint()[:16],
                "torch": torch.__version__, "python": platform.python_version()}
    for mod in optional:
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional package absent or broken
            pass
    return versions


def provenance(*, command: str | None, seed: int | None, data_sha256: str | None,
               optional: Sequence[str] = ATTACK_BACKENDS) -> dict[str, Any]:
    """``{"command", "seed", "data_sha256", "versions"}`` of one evaluation (``command`` None: a
    library call)."""
    return {"command": command, "seed": seed, "data_sha256": data_sha256,
            "versions": package_versions(*optional)}

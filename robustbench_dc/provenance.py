"""Provenance of a result: the command, the seed, the data checksum and the library versions,
built from what the caller passes in (never read from ``sys.argv``: the caller knows the
command it ran; a library call has none)."""

from __future__ import annotations

import platform
import shlex
from typing import Any, Sequence

__all__ = ["command_line", "package_versions", "provenance"]

#: Optional packages whose versions matter to attack results.
ATTACK_BACKENDS = ("torchattacks", "foolbox")


def command_line(argv: Sequence[str], prog: str = "rbdc") -> str:
    """``["run", "my protocol.yaml"]`` -> ``"rbdc run 'my protocol.yaml'"`` (quoted to re-run)."""
    return shlex.join([prog, *argv])


def package_versions(*optional: str) -> dict[str, str]:
    """Versions of robustbench-dc, torch and Python, then of each ``optional`` package that imports."""
    import torch

    from robustbench_dc import __version__

    versions = {"robustbench_dc": __version__, "torch": torch.__version__, "python": platform.python_version()}
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

"""The suite's bundled configuration files, read with :mod:`importlib.resources`.

* ``attacks/*.yaml`` -- named attack configurations (``rbdc evaluate --attack pgd-linf``);
* ``models/*.yaml`` -- the zoo's model cards (``rbdc zoo list``);
* ``protocols/*.yaml`` -- runnable protocols (``rbdc run quickstart``).

These folders are the one copy: the repository's top-level ``attacks/``, ``models/`` and
``protocols/`` are links to them, so what a user reads in a checkout is what a wheel ships.

Example::

    >>> from robustbench_dc.resources import resource_dir
    >>> sorted(p.name for p in resource_dir("attacks").iterdir())[:2]
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["resource_dir", "KINDS"]

KINDS = ("attacks", "models", "protocols")


def resource_dir(kind: Literal["attacks", "models", "protocols"]) -> Path:
    """The folder of bundled ``kind`` files, as a real path (installed wheel or checkout)."""
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)}, got {kind!r}")
    return Path(str(files(__name__) / kind))  # a real folder: pip installs wheels unzipped

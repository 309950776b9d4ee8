"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP contention on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def rbdc_home(tmp_path_factory):
    """The suite's per-user folder (the timing log of finished jobs) in a temporary folder: the tests
    neither read nor grow the user's ~/.cache/robustbench_dc."""
    import os

    old = os.environ.get("RBDC_HOME")
    os.environ["RBDC_HOME"] = str(tmp_path_factory.mktemp("rbdc-home"))
    yield os.environ["RBDC_HOME"]
    if old is None:
        os.environ.pop("RBDC_HOME", None)
    else:
        os.environ["RBDC_HOME"] = old

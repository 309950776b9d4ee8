"""Allocator tuning: applied once, switchable off, and the results do not change."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys, torch
from robustbench_dc.runtime import configure_allocator
ok = configure_allocator()
torch.manual_seed(0)
x = torch.randn(64, 128, 32, 32)
print(int(ok), repr(float((x * 2).sum())))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_applies_and_can_be_switched_off(monkeypatch):
    on = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    monkeypatch.setenv("RBDC_NO_ALLOCATOR_TUNING", "1")
    off = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    assert on[0] == "1" and off[0] == "0"
    assert on[1] == off[1]  # same numbers either way

#!/usr/bin/env python
"""Write ``docs/protocols.md``, the reference of every protocol key, from the protocol schema
(``tests/test_protocol.py`` fails when the committed page is stale). Usage::

    python scripts/protocol_reference.py
"""

from __future__ import annotations

from pathlib import Path

from robustbench_dc.protocol.schema import protocol_reference

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"
    out.write_text(protocol_reference())
    print(f"wrote {out}")

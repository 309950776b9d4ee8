#!/usr/bin/env python
"""Ship trained zoo weights inside the package: copy each card's weights from the cache where
``rbdc zoo train CARD`` wrote them into ``robustbench_dc/resources/models/weights/``, with their
provenance (``CARD.json``: command, seed, data checksum, versions, machine, training history), and
record the file and its sha256 in the card. Usage (the MNIST cards, as committed)::

    export RBDC_DATA=/path/to/data RBDC_HOME=/tmp/rbdc-home
    for c in mnist2d-{baseline,sphere,ball,tanh}-mnist{,-at}; do rbdc zoo train $c; done
    python scripts/ship_weights.py mnist2d-{baseline,sphere,ball,tanh}-mnist{,-at}
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from robustbench_dc.zoo import get_card, sha256_file
from robustbench_dc.zoo.weights import PROVENANCE_NAME, cached_weights, weights_dir

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "robustbench_dc" / "resources" / "models"
LIMIT = 2 * 2**20  # the wheel carries at most 2 MB of weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cards", nargs="+")
    args = parser.parse_args(argv)
    out = CARDS / "weights"
    out.mkdir(exist_ok=True)
    for name in args.cards:
        card = get_card(name)
        found = cached_weights(card)
        if found is None:
            raise SystemExit(f"{name}: no finished training in {weights_dir(card)} (rbdc zoo train {name})")
        src, digest = found
        shutil.copyfile(src, out / f"{name}.pt")
        record = json.loads((weights_dir(card) / PROVENANCE_NAME).read_text())
        (out / f"{name}.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        assert sha256_file(out / f"{name}.pt") == digest
        path = CARDS / f"{name}.yaml"
        text = re.sub(r"(?m)^(checkpoint|sha256):.*\n", "", path.read_text())
        path.write_text(text.rstrip("\n") + f"\ncheckpoint: weights/{name}.pt\nsha256: '{digest}'\n")
        print(f"{name}: {digest} ({(out / f'{name}.pt').stat().st_size:,} bytes)")
    total = sum(p.stat().st_size for p in out.glob("*.pt"))
    if total > LIMIT:
        raise SystemExit(f"the shipped weights weigh {total:,} bytes, more than the {LIMIT:,} the wheel may carry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

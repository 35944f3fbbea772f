"""Where a benchmark's result goes: a JSON file (its folder made), and, unless the caller
prints a table of its own, the same JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(out: dict, path: Path, echo: bool = True) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    if echo:
        print(json.dumps(out, indent=2))
    return out

"""Loads the reference's known-answer vectors from ``../shared/vectors`` at run time.

The file is ground truth produced by the reference implementation; it is read in place, never
copied. ``MIM_VECTORS_DIR`` may point elsewhere (a held-out set with the same schema).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
VECTORS_FILE = "mim-reference-vectors.json"


def vectors_dir() -> Path:
    configured = os.environ.get("MIM_VECTORS_DIR")
    if configured:
        return Path(configured)
    return _ROOT.parent / "shared" / "vectors"


@functools.cache
def reference() -> dict[str, Any]:
    """The whole reference vector file, parsed."""
    path = vectors_dir() / VECTORS_FILE
    with path.open("rb") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def section(name: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = reference()[name]
    return records


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [str(r["id"]) for r in records]

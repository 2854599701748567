"""The benches are scripts run from ``bench/``, importing each other by plain module name; the
tests of their pure helpers import them the same way."""

from __future__ import annotations

import sys

from tests.helpers.procs import REPO

if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

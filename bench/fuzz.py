"""Differential fuzzing of mim's decoder against Go's own encoding/json, for as long as asked.

    python bench/fuzz.py [--seconds 600] [--batch 200] [--seed N] [--kinds board,post,...]

Builds ``tests/mim/go/mirror.go`` with the Go toolchain on the machine (Debian: ``golang-go``),
then draws the mutated objects of ``tests/mim/test_differential.py`` (``tests/helpers/
mutations.py``), ``--batch`` per kind in turn, until ``--seconds`` have passed: each is decoded by
``mim`` and by Go, and the two must give the same bytes again, or both an error. Unlike the suite,
every run draws new cases (``--seed`` repeats one).

Prints the cases run per kind and how they ended (decoded alike, refused by both), then every
disagreement, and exits 1 if there was any. A decoder exception other than ``MimError`` stops the
run with its traceback and the case.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.helpers import gomirror, mutations
from tests.helpers.gomirror import Disagreement, Mirror


def run_batch(
    mirror: Mirror,
    kind: str,
    size: int,
    outcomes: collections.Counter[tuple[str, str]],
    found: list[Disagreement],
    seed: int | None,
) -> None:
    """``size`` fresh cases of ``kind`` (drawn from ``seed`` if given), judged by both decoders."""

    @settings(
        max_examples=size,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def judge(data: st.DataObject) -> None:
        raw = data.draw(mutations.cases(kind))
        ours, go = gomirror.mim_decode(kind, raw), mirror.decode(kind, raw)
        if ours != go:
            outcomes[kind, "disagreed"] += 1
            found.append(Disagreement(kind, raw, ours, go))
        else:
            outcomes[kind, "refused by both" if ours is None else "decoded alike"] += 1

    if seed is not None:
        judge = hypothesis.seed(seed)(judge)
    judge()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to run")
    parser.add_argument("--batch", type=int, default=200, help="cases per kind in each turn")
    parser.add_argument("--seed", type=int, default=None, help="repeat the run with this seed")
    parser.add_argument("--kinds", default=",".join(gomirror.KINDS), help="kinds to draw")
    args = parser.parse_args()

    binary = gomirror.build(Path(tempfile.mkdtemp(prefix="mim-fuzz-")))
    if binary is None:
        raise SystemExit(gomirror.NO_GO)
    mutations.bases()  # made once, before the clock starts
    kinds = [k for k in args.kinds.split(",") if k]
    mirror = Mirror(binary)
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    found: list[Disagreement] = []
    started = time.monotonic()
    turn = 0
    try:
        while time.monotonic() - started < args.seconds:
            for kind in kinds:
                seed = None if args.seed is None else args.seed * 1_000_003 + turn
                run_batch(mirror, kind, args.batch, outcomes, found, seed)
                turn += 1
    finally:
        mirror.close()
    elapsed = time.monotonic() - started

    total = sum(outcomes.values())
    print(f"{total:,} cases in {elapsed:,.0f} s ({total / elapsed:,.0f}/s)")
    for kind in kinds:
        line = "  ".join(
            f"{what} {outcomes[kind, what]:,}"
            for what in ("decoded alike", "refused by both", "disagreed")
        )
        print(f"  {kind:<11} {line}")
    print(f"{len(found)} disagreements")
    for disagreement in found[:20]:
        print(disagreement)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

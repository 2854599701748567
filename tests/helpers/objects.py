"""Signed objects made at test time."""

from __future__ import annotations

import random

from mim import pow as mim_pow
from mim.create import create
from mim.entities import Provable
from mim.signing import SigningKey


def signed_posts(
    count: int, seed: int, *, key: SigningKey, difficulty: int, start: int, label: str
) -> list[Provable]:
    """``count`` posts by ``key`` in one thread, made at ``start``, ``start + 1``, ...; their
    bodies are ``"<label> <n>"``, and the same ``seed`` mints the same proofs."""
    mint = mim_pow.local_minter(random.Random(seed).randrange)
    values = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}
    return [
        create("post", {**values, "body": f"{label} {n}"}, key, difficulty, start + n, mint)
        for n in range(count)
    ]

"""Fingerprints (PROTOCOL.md §5): lower-case hex SHA-256 of the fingerprint input of §4.1.

Contract: equal to the reference's fingerprint for every vector; verification is exact string
equality, so an upper-case fingerprint does not match.
"""

from __future__ import annotations

import hashlib

from mim.entities import Provable
from mim.errors import FingerprintMismatch
from mim.inputs import Inputs

__all__ = ["check", "compute", "of_text"]


def of_text(text: str) -> str:
    """Lower-case hex SHA-256 of ``text``'s UTF-8 bytes (the reference's one hashing rule)."""
    return hashlib.sha256(text.encode()).hexdigest()


def compute(entity: Provable, inputs: Inputs | None = None) -> str:
    """The fingerprint ``entity`` should carry."""
    return of_text((inputs or Inputs(entity)).fingerprint())


def check(entity: Provable, inputs: Inputs | None = None) -> None:
    """Raise :class:`FingerprintMismatch` unless ``entity.fingerprint`` is its true fingerprint."""
    expected = compute(entity, inputs)
    if entity.fingerprint != expected:
        declared = entity.fingerprint or "(empty)"
        raise FingerprintMismatch(
            f"{entity.kind}.fingerprint",
            "fingerprint.match",
            f"declared {declared[:64]} but the content hashes to {expected}",
        )

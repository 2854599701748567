"""The one signature anyone can make: by the identity key, valid for every message on a verifier
that does not refuse keys of small order (OpenSSL, Go's standard library, the reference)."""

from __future__ import annotations

from typing import Final

import pytest

from mim import signing

#: The identity point as an Ed25519 public key (y = 1), in hex.
IDENTITY_KEY: Final = "01" + "00" * 31
#: R = the identity point, S = 0: [S]B = R + [k]A holds for every message when A is the identity.
FORGED_SIGNATURE: Final = "01" + "00" * 63


def verify_with_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check Ed25519 signatures with ``cryptography`` (OpenSSL), which accepts small-order keys,
    instead of libsodium, which refuses them: what mim refuses then, it refuses on its own."""
    monkeypatch.setattr(signing, "_verify_ed25519", signing.BACKENDS["cryptography"])

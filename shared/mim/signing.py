"""Signatures (PROTOCOL.md §6, §20.7, §20.8).

Contract: ``verify`` returns the reference's verdict for every record of ``signature_vectors`` in
``../shared/vectors/`` and for every signature step of its entities, and ``SigningKey.sign``
reproduces the reference's signature bytes; any change here is a protocol change.

The rule: a signature is pure Ed25519 (RFC 8032) over the 32-byte SHA-256 digest of the UTF-8
input, written as 128 hex digits; a public key is 32 bytes written as 64 hex digits.  Hex is read
as Go's ``hex.DecodeString`` reads it (either case, even length, nothing else).  An empty signature
or key, bad hex, a signature that is not 64 bytes and a key that is not 32 bytes all mean "not
valid"; the reference panics on the last (§6), we answer ``False``.

A public key of small order (one of the eight points of the curve's torsion, in any encoding) is
refused here, before any library sees it (§6, §20.12): anyone can make a signature that verifies
for such a key (the identity key ``01 00…00`` takes the signature ``01 00…00 ‖ 0`` for every
message), so it proves nothing.  The reference, OpenSSL and Go's standard library accept them.

Verification runs on libsodium (PyNaCl), which is about twice as fast as OpenSSL here and agrees
with ``cryptography`` on every vector.  The two differ on adversarial input only: libsodium also
refuses small-order public keys (as we do anyway) and small-order ``R``.  Signing uses
``cryptography``; Ed25519 signing is deterministic, so the output matches the reference bit for bit.

ECDSA (§20.8) is accepted only when a caller passes ``allow_ecdsa=True``: keys are SEC1 points in
hex (compressed or uncompressed) on secp256k1 or P-256, signatures the seed's ``hex(r)-hex(s)``,
again over the SHA-256 digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mim._hexutil import unhex, utf8
from mim.errors import BadSignature
from mim.torsion import small_order

__all__ = [
    "BACKENDS",
    "ECDSA_CURVES",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "EcdsaSigningKey",
    "SigningKey",
    "check",
    "diagnose",
    "key_fingerprint",
    "message_digest",
    "small_order",
    "verify",
    "verify_backend",
    "verify_digest",
]

PUBLIC_KEY_SIZE: Final = 32  # bytes of an Ed25519 public key (§1), 64 hex digits
SIGNATURE_SIZE: Final = 64  # bytes of an Ed25519 signature (§1), 128 hex digits
SEED_SIZE: Final = 32  # bytes of an Ed25519 seed; Go's private key is seed ‖ public key
DIGEST_SIZE: Final = 32  # SHA-256 output: what is actually signed (§6)
_KEY_CACHE_SIZE: Final = 4096  # parsed public keys kept between calls; cleared when full


def message_digest(text: str) -> bytes:
    """The 32 bytes that get signed for ``text``: SHA-256 of its UTF-8 form."""
    return hashlib.sha256(utf8(text)).digest()


def key_fingerprint(public_key_hex: str) -> str:
    """Lowercase hex SHA-256 of the key's hex *string*: node ID and fingerprint (§0.12, §17.2)."""
    return hashlib.sha256(utf8(public_key_hex)).hexdigest()


# --- Ed25519 verification backends -------------------------------------------------------------


def _verify_nacl(public_key: bytes, signature: bytes, digest: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(signature + digest, public_key)
    except (nacl.exceptions.BadSignatureError, ValueError):  # nacl's ValueError subclasses it
        return False
    return True


def _verify_cryptography(public_key: bytes, signature: bytes, digest: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, digest)
    except (InvalidSignature, ValueError):
        return False
    return True


BACKENDS: Final[Mapping[str, Callable[[bytes, bytes, bytes], bool]]] = {
    "pynacl": _verify_nacl,
    "cryptography": _verify_cryptography,
}
"""Raw Ed25519 verifiers ``(public_key, signature, digest) -> bool`` by name; both must agree."""

_BACKEND: Final = "pynacl"
_verify_ed25519: Final = BACKENDS[_BACKEND]


def verify_backend() -> str:
    """Name of the library that checks Ed25519 signatures (a key of ``BACKENDS``)."""
    return _BACKEND


# Parsed keys by their hex text.  libsodium takes raw key bytes, so what is cached is the decoded
# key; the bound keeps memory flat whatever keys arrive.
_keys: dict[str, bytes] = {}


def _ed25519_key(public_key_hex: str) -> bytes | None:
    key = _keys.get(public_key_hex)
    if key is None:
        key = unhex(public_key_hex)
        if key is None or len(key) != PUBLIC_KEY_SIZE or small_order(key):
            return None
        if len(_keys) >= _KEY_CACHE_SIZE:
            _keys.clear()
        _keys[public_key_hex] = key
    return key


def verify_digest(
    digest: bytes, signature_hex: str, public_key_hex: str, *, allow_ecdsa: bool = False
) -> bool:
    """Whether ``signature_hex`` is the key's signature of ``digest`` (never raises)."""
    if not signature_hex or not public_key_hex:
        return False
    key = _ed25519_key(public_key_hex)
    if key is None:
        return allow_ecdsa and _verify_ecdsa(digest, signature_hex, public_key_hex)
    signature = unhex(signature_hex)
    if signature is None or len(signature) != SIGNATURE_SIZE:
        return False
    return _verify_ed25519(key, signature, digest)


def verify(
    text: str, signature_hex: str, public_key_hex: str, *, allow_ecdsa: bool = False
) -> bool:
    """Whether ``signature_hex`` is the key's signature of ``text`` (never raises)."""
    if not signature_hex or not public_key_hex:
        return False
    return verify_digest(
        hashlib.sha256(utf8(text)).digest(),
        signature_hex,
        public_key_hex,
        allow_ecdsa=allow_ecdsa,
    )


def diagnose(
    text: str,
    signature_hex: str,
    public_key_hex: str,
    *,
    key_field: str = "owner_publickey",
    allow_ecdsa: bool = False,
) -> tuple[str, str] | None:
    """``None`` if the signature is valid, else the broken ``(rule, detail)``."""
    if verify(text, signature_hex, public_key_hex, allow_ecdsa=allow_ecdsa):
        return None
    if not signature_hex:
        return "signature.missing", "empty"
    if not public_key_hex:
        return "public_key.missing", f"empty {key_field}"
    key = unhex(public_key_hex)
    if key is None:
        return "public_key.hex", f"{key_field} is not even-length hex: {_excerpt(public_key_hex)}"
    return _signature_problem(key, signature_hex, key_field, allow_ecdsa)


def _signature_problem(
    key: bytes, signature_hex: str, key_field: str, allow_ecdsa: bool
) -> tuple[str, str]:
    """Why a signature failed under a key that is hex."""
    if len(key) != PUBLIC_KEY_SIZE:
        if allow_ecdsa and _ecdsa_keys(key):
            return "signature.invalid", f"not made by {key_field} (ECDSA, hex(r)-hex(s))"
        return "public_key.length", f"{len(key)} bytes, need {PUBLIC_KEY_SIZE}"
    if small_order(key):
        return "public_key.small_order", f"{key_field} has small order: anyone can sign for it"
    signature = unhex(signature_hex)
    if signature is None:
        return "signature.hex", f"not even-length hex: {_excerpt(signature_hex)}"
    if len(signature) != SIGNATURE_SIZE:
        return "signature.length", f"{len(signature)} bytes, need {SIGNATURE_SIZE}"
    return "signature.invalid", f"not made by {key_field}"


def check(
    text: str,
    signature_hex: str,
    public_key_hex: str,
    *,
    field: str = "signature",
    key_field: str = "owner_publickey",
    allow_ecdsa: bool = False,
) -> None:
    """Raise ``BadSignature`` naming the broken rule unless the signature is valid."""
    problem = diagnose(
        text, signature_hex, public_key_hex, key_field=key_field, allow_ecdsa=allow_ecdsa
    )
    if problem is not None:
        rule, detail = problem
        blamed = key_field if rule.startswith("public_key.") else field
        raise BadSignature(blamed, rule, detail)


def _excerpt(value: str, limit: int = 24) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


# --- Keys that sign ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """An Ed25519 key pair, built by ``generate``, ``from_seed_hex`` or ``from_private_hex``."""

    _private: ed25519.Ed25519PrivateKey = field(compare=False)
    _seed: bytes
    _public: bytes

    @classmethod
    def generate(cls, seed: bytes) -> SigningKey:
        """The key pair of a 32-byte seed; callers draw the seed (``secrets.token_bytes(32)``)."""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return cls(private, bytes(seed), private.public_key().public_bytes_raw())

    @classmethod
    def from_seed_hex(cls, seed_hex: str) -> SigningKey:
        """The key pair of a seed written as 64 hex digits."""
        seed = unhex(seed_hex)
        if seed is None:
            raise ValueError("an Ed25519 seed must be hex")
        return cls.generate(seed)

    @classmethod
    def from_private_hex(cls, private_hex: str) -> SigningKey:
        """The key pair of Go's 128-hex-digit private key (seed ‖ public key)."""
        raw = unhex(private_hex)
        if raw is None or len(raw) != SEED_SIZE + PUBLIC_KEY_SIZE:
            raise ValueError("a Go Ed25519 private key is 64 bytes of hex (seed ‖ public key)")
        key = cls.generate(raw[:SEED_SIZE])
        if key._public != raw[SEED_SIZE:]:
            raise ValueError("the public half of the private key does not match its seed")
        return key

    @property
    def public_hex(self) -> str:
        return self._public.hex()

    @property
    def seed_hex(self) -> str:
        return self._seed.hex()

    @property
    def private_hex(self) -> str:
        """Go's form: seed ‖ public key, 128 hex digits."""
        return (self._seed + self._public).hex()

    def sign(self, text: str) -> str:
        """Hex signature of ``text`` (Ed25519 over its SHA-256 digest)."""
        return self._private.sign(message_digest(text)).hex()

    def sign_digest(self, digest: bytes) -> str:
        """Hex signature of a 32-byte digest."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a digest is {DIGEST_SIZE} bytes, got {len(digest)}")
        return self._private.sign(digest).hex()

    def __repr__(self) -> str:
        return f"SigningKey(public_hex={self.public_hex!r})"


# --- ECDSA (§20.8), only when allowed ----------------------------------------------------------

ECDSA_CURVES: Final[Mapping[str, ec.EllipticCurve]] = {
    "secp256k1": ec.SECP256K1(),
    "P-256": ec.SECP256R1(),
    # A secp521r1 key is 67 bytes compressed (134 hex digits), over the 128-digit bound on
    # owner_publickey (§9), so no object can carry one; only direct calls here can use it.
    "secp521r1": ec.SECP521R1(),
}
_CURVES_BY_KEY_SIZE: Final[Mapping[int, tuple[ec.EllipticCurve, ...]]] = {
    33: (ECDSA_CURVES["secp256k1"], ECDSA_CURVES["P-256"]),  # SEC1 compressed
    65: (ECDSA_CURVES["secp256k1"], ECDSA_CURVES["P-256"]),  # SEC1 uncompressed
    67: (ECDSA_CURVES["secp521r1"],),
    133: (ECDSA_CURVES["secp521r1"],),
}
_ECDSA: Final = ec.ECDSA(Prehashed(hashes.SHA256()))


def _ecdsa_keys(point: bytes) -> list[ec.EllipticCurvePublicKey]:
    keys = []
    for curve in _CURVES_BY_KEY_SIZE.get(len(point), ()):
        try:
            keys.append(ec.EllipticCurvePublicKey.from_encoded_point(curve, point))
        except ValueError:  # not a point on this curve
            continue
    return keys


def _verify_ecdsa(digest: bytes, signature_text: str, public_key_hex: str) -> bool:
    point = unhex(public_key_hex)
    r_hex, dash, s_hex = signature_text.partition("-")
    r_raw, s_raw = unhex(r_hex), unhex(s_hex)
    if point is None or not dash or not r_raw or not s_raw or len(digest) != DIGEST_SIZE:
        return False
    der = encode_dss_signature(int.from_bytes(r_raw, "big"), int.from_bytes(s_raw, "big"))
    for key in _ecdsa_keys(point):
        try:
            key.verify(der, digest, _ECDSA)
        except InvalidSignature:
            continue
        return True
    return False


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class EcdsaSigningKey:
    """An ECDSA key of one of ``ECDSA_CURVES`` that signs in the seed's ``hex(r)-hex(s)`` form."""

    curve: str
    _private: ec.EllipticCurvePrivateKey

    @classmethod
    def from_secret(cls, curve: str, secret: int) -> EcdsaSigningKey:
        """The key with private scalar ``secret``; callers draw it (randomness is a parameter)."""
        if curve not in ECDSA_CURVES:
            raise ValueError(f"unknown curve {curve!r}, expected one of {sorted(ECDSA_CURVES)}")
        return cls(curve, ec.derive_private_key(secret, ECDSA_CURVES[curve]))

    def public_hex(self, *, compressed: bool = True) -> str:
        """The SEC1 point in hex."""
        form = PublicFormat.CompressedPoint if compressed else PublicFormat.UncompressedPoint
        return self._private.public_key().public_bytes(Encoding.X962, form).hex()

    def sign(self, text: str) -> str:
        return self.sign_digest(message_digest(text))

    def sign_digest(self, digest: bytes) -> str:
        """``hex(r)-hex(s)`` over a 32-byte digest; deterministic nonces (RFC 6979)."""
        algorithm = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
        r, s = decode_dss_signature(self._private.sign(digest, algorithm))
        return f"{_int_hex(r)}-{_int_hex(s)}"

    def __repr__(self) -> str:
        return f"EcdsaSigningKey(curve={self.curve!r}, public_hex={self.public_hex()!r})"


def _int_hex(value: int) -> str:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big").hex()

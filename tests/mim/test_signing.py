"""Signatures: the reference's verdicts, its exact signature bytes, both verify backends, ECDSA."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mim import signing, torsion
from mim.errors import BadSignature
from mim.signing import EcdsaSigningKey, SigningKey
from tests.helpers.forgery import FORGED_SIGNATURE, IDENTITY_KEY, verify_with_openssl
from tests.vectors import ids, reference, section

SIGNATURES = section("signature_vectors")
KEYS = reference()["keys"]
K0 = SigningKey.from_seed_hex(KEYS[0]["seed_hex"])


def _entity_signatures() -> list[Any]:
    """Every (input, digest, signature, public key, seed) the reference signed while creating."""
    found = []
    for entity in section("entities"):
        if not entity.get("signed"):
            continue
        seed, public = entity["private_key_seed_hex"], entity["public_key_hex"]
        for step in entity["steps"]:
            if "signature" in step["step"]:
                signed = (step["input"], step["input_sha256"], step["output"])
            elif step.get("pow_signed"):
                signed = (
                    step["pow_signature_input"],
                    step["pow_signature_input_sha256"],
                    step["pow_signature"],
                )
            else:
                continue
            found.append(pytest.param(*signed, public, seed, id=f"{entity['id']}-{step['step']}"))
    return found


ENTITY_SIGNATURES = _entity_signatures()


def _both_backends(digest: bytes, signature_hex: str, public_key_hex: str) -> dict[str, bool]:
    key, sig = bytes.fromhex(public_key_hex), bytes.fromhex(signature_hex)
    return {name: backend(key, sig, digest) for name, backend in signing.BACKENDS.items()}


@pytest.mark.parametrize("record", SIGNATURES, ids=ids(SIGNATURES))
def test_signature_vector(record: dict[str, Any]) -> None:
    """Each raw signature vector gets the reference's verdict; a reference panic is False."""
    assert signing.verify(record["input"], record["signature"], record["pubkey"]) is bool(
        record["expected_valid"]
    )
    digest = bytes.fromhex(record["input_sha256"])
    assert signing.message_digest(record["input"]) == digest
    assert signing.verify_digest(digest, record["signature"], record["pubkey"]) is bool(
        record["expected_valid"]
    )


def _well_formed(record: dict[str, Any]) -> bool:
    key, sig = record["pubkey"], record["signature"]
    hex_digits = set("0123456789abcdefABCDEF")
    return len(key) == 64 and len(sig) == 128 and set(key + sig) <= hex_digits


#: The vectors that reach a backend (a 32-byte key and a 64-byte signature, both hex).
WELL_FORMED = [record for record in SIGNATURES if _well_formed(record)]


@pytest.mark.parametrize("record", WELL_FORMED, ids=ids(WELL_FORMED))
def test_backends_agree_on_signature_vectors(record: dict[str, Any]) -> None:
    """PyNaCl and cryptography give the reference's verdict on every well-formed vector."""
    key, sig = record["pubkey"], record["signature"]
    verdicts = _both_backends(bytes.fromhex(record["input_sha256"]), sig, key)
    assert set(verdicts.values()) == {record["expected_valid"]}


@pytest.mark.parametrize(("text", "digest", "signature", "public", "seed"), ENTITY_SIGNATURES)
def test_backends_agree_on_entity_signatures(
    text: str, digest: str, signature: str, public: str, seed: str
) -> None:
    """Every signature the reference made for the vector entities verifies on both backends."""
    assert signing.message_digest(text).hex() == digest
    assert _both_backends(bytes.fromhex(digest), signature, public) == {
        "pynacl": True,
        "cryptography": True,
    }
    assert signing.verify(text, signature, public)


@pytest.mark.parametrize(("text", "digest", "signature", "public", "seed"), ENTITY_SIGNATURES)
def test_signing_reproduces_entity_signatures(
    text: str, digest: str, signature: str, public: str, seed: str
) -> None:
    """Signing the reference's input with the reference's key gives the reference's signature."""
    key = SigningKey.from_seed_hex(seed)
    assert key.public_hex == public
    assert key.sign(text) == signature
    assert key.sign_digest(bytes.fromhex(digest)) == signature


def test_entity_signatures_cover_every_kind_of_step() -> None:
    """The entity sweep sees creation, update and PoW signatures, for every signed entity."""
    steps = {str(param.id).rsplit("-", 1)[1] for param in ENTITY_SIGNATURES}
    assert steps == {
        "create_signature",
        "create_pow",
        "create_update_signature",
        "create_update_pow",
    }
    signed = [e for e in section("entities") if e.get("signed")]
    assert len(ENTITY_SIGNATURES) == 2 * len(signed)


def test_verify_backend_is_a_known_backend() -> None:
    """The backend in use is one of the two whose agreement is tested."""
    assert signing.verify_backend() in signing.BACKENDS


def test_backends_differ_only_on_small_order_keys() -> None:
    """libsodium refuses the identity key's trivial forgery that OpenSSL accepts; we use it."""
    identity = bytes([1]) + bytes(31)
    forged = bytes([1]) + bytes(63)  # R = identity, S = 0: [0]B == R + [k]A for any message
    digest = hashlib.sha256(b"any message").digest()
    assert signing.BACKENDS["cryptography"](identity, forged, digest)
    assert not signing.BACKENDS["pynacl"](identity, forged, digest)
    assert not signing.verify_digest(digest, forged.hex(), identity.hex())


@pytest.mark.parametrize("key", KEYS, ids=ids(KEYS))
def test_key_forms_round_trip(key: dict[str, str]) -> None:
    """A seed, Go's seed‖public private key and the public key name the same key pair."""
    from_seed = SigningKey.from_seed_hex(key["seed_hex"])
    from_private = SigningKey.from_private_hex(key["private_key_hex"])
    assert from_seed == from_private
    assert from_seed.public_hex == key["public_key_hex"]
    assert from_seed.private_hex == key["private_key_hex"]
    assert from_seed.seed_hex == key["seed_hex"]
    assert from_seed == SigningKey.generate(bytes.fromhex(key["seed_hex"]))


def test_private_key_with_a_foreign_public_half_is_refused() -> None:
    """Go's private key form whose public half is another key's is refused."""
    mismatched = KEYS[0]["seed_hex"] + KEYS[1]["public_key_hex"]
    with pytest.raises(ValueError, match="public half"):
        SigningKey.from_private_hex(mismatched)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)])
def test_seed_must_be_32_bytes(seed: bytes) -> None:
    """A seed that is not 32 bytes is refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.generate(seed)


def test_repr_shows_no_secret() -> None:
    """A key's repr names its public half only."""
    assert KEYS[0]["seed_hex"] not in repr(K0)
    assert K0.public_hex in repr(K0)


def test_sign_then_verify_round_trip() -> None:
    """What a key signs verifies under its public key and not under another."""
    text = "Mixed: 日本 😀 <tag> & \u2028"
    signature = K0.sign(text)
    assert len(signature) == 128
    assert signing.verify(text, signature, K0.public_hex)
    assert not signing.verify(text, signature, KEYS[1]["public_key_hex"])
    assert not signing.verify(text + " ", signature, K0.public_hex)


def test_lone_surrogate_is_hashed_as_replacement_character() -> None:
    """A lone surrogate (from a JSON escape) hashes as U+FFFD, as Go's decoder leaves it."""
    assert signing.message_digest("a\ud800b") == hashlib.sha256("a\ufffdb".encode()).digest()
    assert signing.verify("a\ud800b", K0.sign("a\ufffdb"), K0.public_hex)


def test_key_fingerprint_is_sha256_of_the_hex_string() -> None:
    """The reference's CA key has the fingerprint of PROTOCOL.md §17.2."""
    ca = "142ae631bcd46ab6e548c9b2d9494c7e30c65b4389e541e31bbe31e0ae47515e"
    assert (
        signing.key_fingerprint(ca)
        == "5460a18d7dd4c6b078199f5ee8ee70037f877166b07e9596cf26deb73223e15c"
    )


TEXT = "Mim signature test public"
GOOD = K0.sign(TEXT)


@pytest.mark.parametrize(
    ("signature", "public", "field", "rule", "detail"),
    [
        ("", K0.public_hex, "signature", "signature.missing", "empty"),
        (GOOD, "", "owner_publickey", "public_key.missing", "empty owner_publickey"),
        (GOOD, "zz" + K0.public_hex[2:], "owner_publickey", "public_key.hex", "not even-length"),
        (GOOD, K0.public_hex[:-1], "owner_publickey", "public_key.hex", "not even-length"),
        (GOOD, K0.public_hex[:32], "owner_publickey", "public_key.length", "16 bytes, need 32"),
        (GOOD, K0.public_hex + "00", "owner_publickey", "public_key.length", "33 bytes, need 32"),
        (" " + GOOD[1:], K0.public_hex, "signature", "signature.hex", "not even-length"),
        (GOOD[:-2], K0.public_hex, "signature", "signature.length", "63 bytes, need 64"),
        (
            GOOD,
            KEYS[1]["public_key_hex"],
            "signature",
            "signature.invalid",
            "not made by owner_publickey",
        ),
    ],
    ids=[
        "missing-signature",
        "missing-key",
        "key-not-hex",
        "key-odd-length",
        "key-16-bytes",
        "key-33-bytes",
        "signature-space",
        "signature-63-bytes",
        "wrong-key",
    ],
)
def test_check_names_the_broken_rule(
    signature: str, public: str, field: str, rule: str, detail: str
) -> None:
    """``check`` raises BadSignature naming the field, the rule and the value's size or form."""
    with pytest.raises(BadSignature) as caught:
        signing.check(TEXT, signature, public)
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert detail in caught.value.detail
    assert caught.value.stage == "signature"


def test_check_accepts_a_valid_signature_and_names_custom_fields() -> None:
    """A valid signature passes ``check``; a failure names the caller's field and key field."""
    signing.check(TEXT, GOOD, K0.public_hex)
    with pytest.raises(BadSignature) as caught:
        signing.check(TEXT, GOOD, "", field="update_signature", key_field="key")
    assert caught.value.field == "key"
    with pytest.raises(BadSignature) as caught:
        signing.check(TEXT + ".", GOOD, K0.public_hex, field="update_signature", key_field="key")
    assert caught.value.field == "update_signature"
    assert caught.value.detail == "not made by key"


@given(text=st.text(), signature=st.text(), public=st.text())
def test_verify_never_raises(text: str, signature: str, public: str) -> None:
    """Whatever strings arrive, verify answers a bool and check raises only BadSignature."""
    assert signing.verify(text, signature, public, allow_ecdsa=True) in (True, False)
    with pytest.raises(BadSignature):
        signing.check(text, signature, public, allow_ecdsa=True)


def test_key_cache_stays_bounded() -> None:
    """The parsed-key cache never holds more than its bound, however many keys pass through."""
    for n in range(signing._KEY_CACHE_SIZE + 10):
        signing.verify("x", GOOD, f"{n:064x}")
    assert 0 < len(signing._keys) <= signing._KEY_CACHE_SIZE
    assert signing.verify(TEXT, GOOD, K0.public_hex)


# --- ECDSA (§20.8) ------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", sorted(signing.ECDSA_CURVES))
@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
def test_ecdsa_signature_verifies_only_when_allowed(curve: str, compressed: bool) -> None:
    """An ECDSA signature in hex(r)-hex(s) form verifies with allow_ecdsa and never without it."""
    key = EcdsaSigningKey.from_secret(curve, 0x1234567890ABCDEF)
    public = key.public_hex(compressed=compressed)
    signature = key.sign(TEXT)
    r_hex, s_hex = signature.split("-")
    assert len(r_hex) % 2 == 0 and len(s_hex) % 2 == 0
    assert signing.verify(TEXT, signature, public, allow_ecdsa=True)
    assert not signing.verify(TEXT, signature, public)
    assert not signing.verify(TEXT + ".", signature, public, allow_ecdsa=True)
    assert signing.diagnose(TEXT, signature, public, allow_ecdsa=True) is None
    assert signing.diagnose(TEXT, signature, public) == (
        "public_key.length",
        f"{len(public) // 2} bytes, need 32",
    )
    assert signing.diagnose(TEXT + ".", signature, public, allow_ecdsa=True) is not None


def test_ecdsa_signing_is_deterministic() -> None:
    """ECDSA signing takes no hidden randomness: the same key signs the same text the same way."""
    key = EcdsaSigningKey.from_secret("P-256", 7)
    assert key.sign(TEXT) == key.sign(TEXT)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig.replace("-", ""),
        lambda sig: sig.replace("-", "--"),
        lambda sig: "0x" + sig,
        lambda sig: sig.split("-")[1] + "-" + sig.split("-")[0],
        lambda sig: " " + sig,
    ],
    ids=["no-dash", "two-dashes", "0x-prefix", "swapped", "space"],
)
def test_ecdsa_malformed_signatures_fail(mangle: Any) -> None:
    """An ECDSA signature not of the form hex(r)-hex(s) by the key is refused, never raised on."""
    key = EcdsaSigningKey.from_secret("secp256k1", 99)
    assert not signing.verify(TEXT, mangle(key.sign(TEXT)), key.public_hex(), allow_ecdsa=True)


def test_ecdsa_point_off_every_curve_is_a_length_problem() -> None:
    """A 33-byte key that is no curve's point is reported as a wrong-length Ed25519 key."""
    bogus = "05" + "11" * 32
    assert signing.diagnose(TEXT, "aa-bb", bogus, allow_ecdsa=True) == (
        "public_key.length",
        "33 bytes, need 32",
    )


def test_secp521r1_keys_exceed_the_key_bound() -> None:
    """A compressed secp521r1 key is 134 hex digits: usable here, but over the 128-digit bound."""
    key = EcdsaSigningKey.from_secret("secp521r1", 2**500 + 3)
    assert len(key.public_hex()) == 134
    assert signing.verify(TEXT, key.sign(TEXT), key.public_hex(), allow_ecdsa=True)


def test_unknown_curve_is_refused() -> None:
    """Only the curves of §20.8 can make keys."""
    with pytest.raises(ValueError, match="unknown curve"):
        EcdsaSigningKey.from_secret("P-384", 5)


# --- Keys of small order (§6, §20.12) ----------------------------------------------------------


def _encodings_of_small_order() -> list[bytes]:
    """Every 32-byte encoding of a point of order dividing 8: each y (and y + p where that still
    fits in 255 bits), with either sign bit."""
    p = 2**255 - 19
    ys = sorted(torsion._TORSION_YS)
    ys += [y + p for y in ys if y + p < 2**255]
    return [(y | sign << 255).to_bytes(32, "little") for y in ys for sign in (0, 1)]


def test_small_order_is_libsodiums_torsion_in_every_encoding() -> None:
    """The keys found to be of small order are the eight torsion points in all their encodings,
    each of which libsodium also finds unfit; real keys are not of small order."""
    encodings = _encodings_of_small_order()
    assert len(torsion._TORSION_YS) == 5  # y = 1, -1, 0, and two for the four points of order 8
    assert len(encodings) == 14
    for encoding in encodings:
        assert signing.small_order(encoding)
        assert not nacl.bindings.crypto_core_ed25519_is_valid_point(encoding)
    for seed in range(64):
        public = SigningKey.generate(bytes([seed]) * 32).public_hex
        assert not signing.small_order(bytes.fromhex(public))


def test_the_forgery_openssl_accepts_is_refused_whatever_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The identity key's forged signature verifies on OpenSSL for any message; mim refuses it
    with libsodium and with OpenSSL as its backend alike, naming the rule."""
    digest = signing.message_digest("any message at all")
    assert signing.BACKENDS["cryptography"](
        bytes.fromhex(IDENTITY_KEY), bytes.fromhex(FORGED_SIGNATURE), digest
    )
    for backend in ("pynacl", "cryptography"):
        if backend == "cryptography":
            verify_with_openssl(monkeypatch)
        assert not signing.verify("any message at all", FORGED_SIGNATURE, IDENTITY_KEY)
        with pytest.raises(BadSignature) as caught:
            signing.check("any message at all", FORGED_SIGNATURE, IDENTITY_KEY)
        assert (caught.value.field, caught.value.rule) == (
            "owner_publickey",
            "public_key.small_order",
        )

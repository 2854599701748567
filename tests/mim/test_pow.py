"""Proof of work (MIM1): the reference's verdicts and counters, and properties of our search."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mim import pow as mim_pow
from mim.errors import BadSignature, InsufficientWork
from mim.signing import SigningKey
from tests.helpers.forgery import FORGED_SIGNATURE, IDENTITY_KEY, verify_with_openssl
from tests.vectors import ids, reference, section

POW = section("pow_vectors")
CREATED = [r for r in POW if r["origin"] == "proofofwork.Create" and r.get("counter") is not None]
KEYS = reference()["keys"]
K0 = SigningKey.from_seed_hex(KEYS[0]["seed_hex"])


def _entity_pow_steps() -> list[Any]:
    found = []
    for entity in section("entities"):
        for step in entity["steps"]:
            if step["step"] in ("create_pow", "create_update_pow"):
                public, seed = entity.get("public_key_hex", ""), entity.get("private_key_seed_hex")
                found.append(pytest.param(step, public, seed, id=entity["id"]))
    return found


ENTITY_POW = _entity_pow_steps()


def _mine(text: str, difficulty: int, salt: str) -> int:
    counter, _ = mim_pow.search(text, difficulty, salt)
    assert counter is not None
    return counter


def _naive_search(text: str, difficulty: int, salt: str, start: int, limit: int) -> int | None:
    """The rule of §7.2 written plainly: hash, count zero bits, stop at the first success."""
    for counter in range(start, start + limit):
        data = f"{difficulty}{text}{salt}{counter}".encode()
        digest = hashlib.sha256(hashlib.sha256(hashlib.sha256(data).digest()).digest()).digest()
        if int.from_bytes(digest, "big") >> (256 - difficulty) == 0:
            return counter
    return None


# --- The reference's vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("record", POW, ids=ids(POW))
def test_pow_vector(record: dict[str, Any]) -> None:
    """Each PoW vector is accepted exactly when the reference accepts it, with its strength.

    Where the reference returns false (including with the declared strength, on a bad PoW
    signature) or panics, we raise InsufficientWork.
    """
    if record["expected_ok"]:
        assert "expected_panic" not in record
        strength = mim_pow.verify(record["input"], record["pow"], record["pubkey"])
        assert strength == record["expected_strength"]
    else:
        with pytest.raises(InsufficientWork) as caught:
            mim_pow.verify(record["input"], record["pow"], record["pubkey"])
        assert caught.value.stage == "pow"
        assert caught.value.field == "proof_of_work"


@pytest.mark.parametrize("record", CREATED, ids=ids(CREATED))
def test_search_finds_the_reference_counter(record: dict[str, Any]) -> None:
    """From counter 0, our search stops at the counter the reference's Create chose."""
    counter = record["counter"]
    found = mim_pow.search(record["input"], record["difficulty"], record["salt"])
    assert found == (counter, counter + 1)
    digest = mim_pow.work_digest(record["input"], record["difficulty"], record["salt"], counter)
    assert digest.hex() == record["hash_hex"]
    assert record["pow"].startswith(mim_pow.unsigned(record["difficulty"], record["salt"], counter))


@pytest.mark.parametrize(("step", "public", "seed"), ENTITY_POW)
def test_entity_pow_steps_reproduce(step: dict[str, Any], public: str, seed: str | None) -> None:
    """For each PoW the reference minted for an entity, we find its counter and rebuild it."""
    text, difficulty, salt = step["input"], step["difficulty"], step["salt"]
    assert mim_pow.search(text, difficulty, salt) == (step["counter"], step["counter"] + 1)
    assert mim_pow.work_digest(text, difficulty, salt, step["counter"]).hex() == step["hash_hex"]
    prefix = mim_pow.unsigned(difficulty, salt, step["counter"])
    if step["pow_signed"]:
        assert prefix == step["pow_signature_input"]
        assert seed is not None
        key = SigningKey.from_seed_hex(seed)
        assert mim_pow.sign_prefix(prefix, key.sign) == step["output"]
    else:
        assert prefix == step["output"]
    assert mim_pow.verify(text, step["output"], public) == difficulty


# --- Verification rules --------------------------------------------------------------------------

TEXT = "hello mim"
SALT = "abcdefghijklmnop"
COUNTER = _mine(TEXT, 6, SALT)  # the first counter that works, so 0 does not
UNSIGNED = mim_pow.unsigned(6, SALT, COUNTER)
VALID = mim_pow.sign_prefix(UNSIGNED, K0.sign)


@pytest.mark.parametrize(
    ("pow_str", "public", "rule"),
    [
        ("MIM1:1::::" + "s" * 1012 + ":0:", "", "pow.length"),
        (UNSIGNED[:-1], "", "pow.format"),
        (UNSIGNED + "ab:cd", "", "pow.format"),
        (f"MIM1:6:x:::{SALT}:{COUNTER}:", "", "pow.fields"),
        (f"MIM1:6::::{SALT}::", "", "pow.fields"),
        (f"MIM1:٦::::{SALT}:{COUNTER}:", "", "pow.number"),
        (f"MIM1:6::::{SALT}:1_0:", "", "pow.number"),
        (f"MIM1:6::::{SALT}:0x1:", "", "pow.number"),
        (f"MIM1:6::::{SALT}:9223372036854775808:", "", "pow.number"),
        (f"MIM1:6::::{SALT}:-{COUNTER}:", "", "pow.negative"),
        (f"mim1:6::::{SALT}:{COUNTER}:", "", "pow.version"),
        (f"MIM1:300::::{SALT}:{COUNTER}:", "", "pow.difficulty"),
        (f"MIM1:6::::{SALT}:0:", "", "pow.work"),
        (UNSIGNED, K0.public_hex, "pow.unsigned"),
        (VALID, "", "pow.unexpected_signature"),
        (VALID, KEYS[1]["public_key_hex"], "pow.signature"),
        (VALID, K0.public_hex[:32], "pow.signature"),
    ],
    ids=[
        "too-long",
        "7-fields",
        "10-fields",
        "date-set",
        "counter-empty",
        "arabic-digit",
        "underscore",
        "hex-counter",
        "int64-overflow",
        "negative-counter",
        "lowercase-version",
        "difficulty-over-256",
        "work-missing",
        "key-but-unsigned",
        "signed-but-no-key",
        "wrong-key",
        "16-byte-key",
    ],
)
def test_verify_names_the_broken_rule(pow_str: str, public: str, rule: str) -> None:
    """Each failure of §7.3 raises InsufficientWork naming its rule, at stage pow."""
    assert mim_pow.verify(TEXT, VALID, K0.public_hex) == 6
    with pytest.raises(InsufficientWork) as caught:
        mim_pow.verify(TEXT, pow_str, public, field="update_proof_of_work")
    assert caught.value.rule == rule
    assert caught.value.field == "update_proof_of_work"
    assert "\n" not in str(caught.value)


def test_signature_failure_names_the_key_field() -> None:
    """A PoW signature by another key is blamed on the key field the caller names."""
    with pytest.raises(InsufficientWork) as caught:
        mim_pow.verify(TEXT, VALID, KEYS[1]["public_key_hex"], key_field="key")
    assert caught.value.detail == "PoW signature.invalid: not made by key"


def test_length_counts_bytes_like_go() -> None:
    """The 1024 bound counts UTF-8 bytes, as Go's len does, not characters."""
    salt = "é" * 506  # 1012 bytes; the whole string is 1025 bytes but 519 characters
    pow_str = f"MIM1:0::::{salt}:0:"
    assert len(pow_str) < 1024 < len(pow_str.encode())
    with pytest.raises(InsufficientWork) as caught:
        mim_pow.verify(TEXT, pow_str, "")
    assert caught.value.rule == "pow.length"
    assert mim_pow.verify(TEXT, f"MIM1:0::::{salt[:-1]}:0:", "") == 0


def test_difficulty_zero_is_always_valid() -> None:
    """A declared difficulty of 0 needs no work, still obeys the format and signature rules."""
    assert mim_pow.verify(TEXT, "MIM1:0::::x:0:", "") == 0
    assert mim_pow.verify(TEXT, "MIM1:-0::::x:+00:", "") == 0
    with pytest.raises(InsufficientWork):
        mim_pow.verify(TEXT, "MIM1:0::::x:0:", K0.public_hex)


def test_check_compares_with_the_minimum() -> None:
    """check refuses a declared strength under the minimum and returns it otherwise."""
    assert mim_pow.check(TEXT, VALID, K0.public_hex, 6) == 6
    with pytest.raises(InsufficientWork) as caught:
        mim_pow.check(TEXT, VALID, K0.public_hex, 21)
    assert caught.value.rule == "pow.strength"
    assert caught.value.detail == "declared 6 is under the minimum 21"


@pytest.mark.parametrize("minimum", [0, -1])
def test_check_skips_examination_without_a_minimum(minimum: int) -> None:
    """With a minimum of 0 or less the PoW is not examined at all, as in the reference."""
    assert mim_pow.check(TEXT, "garbage", K0.public_hex, minimum) == 0


def test_check_reports_a_broken_pow_before_its_strength() -> None:
    """A malformed PoW fails on its own rule, not on the minimum."""
    with pytest.raises(InsufficientWork) as caught:
        mim_pow.check(TEXT, f"MIM1:6::::{SALT}:0:", "", 21)
    assert caught.value.rule == "pow.work"


@settings(max_examples=300)
@given(
    text=st.text(), pow_str=st.text(), public=st.sampled_from(["", K0.public_hex, "zz", "\ud800"])
)
@example(text="\ud800", pow_str="MIM1:0::::\udfff:0:", public="")
def test_verify_raises_only_insufficient_work(text: str, pow_str: str, public: str) -> None:
    """Whatever strings arrive, verify returns a strength or raises InsufficientWork."""
    try:
        strength = mim_pow.verify(text, pow_str, public, allow_ecdsa=True)
    except InsufficientWork:
        return
    assert 0 <= strength <= mim_pow.MAX_DIFFICULTY


# --- Properties ----------------------------------------------------------------------------------

SALTS = st.text(alphabet=mim_pow.SALT_ALPHABET, min_size=1, max_size=20)


@settings(deadline=None, max_examples=60)
@given(text=st.text(max_size=200), difficulty=st.integers(0, 8), salt=SALTS)
def test_signed_mined_pow_verifies_at_its_difficulty(text: str, difficulty: int, salt: str) -> None:
    """A PoW mined by search and signed with sign_prefix verifies at exactly its difficulty."""
    counter = _mine(text, difficulty, salt)
    pow_str = mim_pow.sign_prefix(mim_pow.unsigned(difficulty, salt, counter), K0.sign)
    assert mim_pow.verify(text, pow_str, K0.public_hex) == difficulty


@settings(deadline=None, max_examples=60)
@given(
    text=st.text(max_size=100),
    difficulty=st.integers(1, 6),
    salt=SALTS,
    start=st.integers(0, 3000),
    limit=st.integers(0, 400),
)
@example(text="", difficulty=6, salt="a", start=995, limit=30)
def test_search_matches_the_plain_rule(
    text: str, difficulty: int, salt: str, start: int, limit: int
) -> None:
    """search finds the same first counter as the plain rule, and counts its attempts exactly."""
    counter, attempts = mim_pow.search(text, difficulty, salt, start=start, limit=limit)
    expected = _naive_search(text, difficulty, salt, start, limit)
    assert counter == expected
    assert attempts == (limit if expected is None else expected - start + 1)


def _canonical(pow_str: str) -> tuple[int, str, int, bytes]:
    _, difficulty, _, _, _, salt, counter, signature = pow_str.split(":")
    return int(difficulty), salt, int(counter), bytes.fromhex(signature)


_MUTANT_COUNTER = _mine(TEXT, 8, "DGGsVQIOsguExYwL")
MUTANT = mim_pow.sign_prefix(mim_pow.unsigned(8, "DGGsVQIOsguExYwL", _MUTANT_COUNTER), K0.sign)
MUTATIONS = st.sampled_from("0123456789abcdefABCDEF:+- xMIé\u2028\ud800")


@settings(max_examples=1000)
@given(position=st.integers(0, len(MUTANT) - 1), replacement=MUTATIONS)
@example(position=len(MUTANT) - 1, replacement=MUTANT[-1].upper())
def test_single_character_change_of_signed_pow(position: int, replacement: str) -> None:
    """Changing one character of a signed PoW is refused unless it spells the same PoW.

    Only a signed PoW has this property: the signature covers every character before it, and hex
    is read case-insensitively, so the only accepted changes are case flips in the signature.  (An
    unsigned PoW has none: "MIM1:10:…" changed to "MIM1:00:…" is a valid PoW of strength 0.)
    """
    assert mim_pow.verify(TEXT, MUTANT, K0.public_hex) == 8
    mutated = MUTANT[:position] + replacement + MUTANT[position + 1 :]
    try:
        strength = mim_pow.verify(TEXT, mutated, K0.public_hex)
    except InsufficientWork:
        return
    assert strength == 8
    assert _canonical(mutated) == _canonical(MUTANT)


# --- Creation helpers ----------------------------------------------------------------------------


def test_search_at_difficulty_zero_answers_start() -> None:
    """Difficulty 0 needs no attempt: search answers its start counter at once."""
    assert mim_pow.search(TEXT, 0, "salt", start=42) == (42, 0)


def test_search_gives_up_after_its_limit() -> None:
    """With a limit too small to succeed, search reports no counter and exactly limit attempts."""
    assert mim_pow.search(TEXT, 200, "salt", start=990, limit=2500) == (None, 2500)
    assert mim_pow.search(TEXT, 200, "salt", limit=0) == (None, 0)


@pytest.mark.parametrize(
    "arguments",
    [
        {"difficulty": -1},
        {"difficulty": 257},
        {"difficulty": 4, "start": -1},
        {"difficulty": 4, "limit": -1},
    ],
)
def test_search_refuses_impossible_arguments(arguments: dict[str, int]) -> None:
    """A difficulty outside 0..256 or a negative start or limit is a programming error."""
    with pytest.raises(ValueError):
        mim_pow.search(TEXT, salt="salt", **arguments)


def test_make_salt_draws_from_the_alphabet() -> None:
    """A salt is 16 letters drawn through the injected randbelow."""
    calls: list[int] = []

    def randbelow(n: int) -> int:
        calls.append(n)
        return len(calls) % n

    salt = mim_pow.make_salt(randbelow)
    assert salt == mim_pow.SALT_ALPHABET[1:17]
    assert calls == [52] * mim_pow.SALT_LENGTH


def test_local_minter_mints_an_unsigned_pow() -> None:
    """The local minter answers an unsigned PoW that verifies anonymously at the difficulty."""
    mint = mim_pow.local_minter(random.Random(7).randrange)
    pow_str = mint(TEXT, 10)
    assert pow_str.endswith(":")
    assert mim_pow.verify(TEXT, pow_str, "") == 10
    assert mim_pow.verify(TEXT, mim_pow.sign_prefix(pow_str, K0.sign), K0.public_hex) == 10


@pytest.mark.parametrize("difficulty", [0, -3])
def test_local_minter_without_work_answers_empty(difficulty: int) -> None:
    """Like the reference's Create, no difficulty means no PoW string at all."""
    assert mim_pow.local_minter(random.Random(1).randrange)(TEXT, difficulty) == ""


@pytest.mark.parametrize("not_unsigned", ["", "MIM1:6::::salt:1", VALID])
def test_sign_prefix_refuses_anything_but_an_unsigned_pow(not_unsigned: str) -> None:
    """Only an unsigned PoW string (seven colons, ending in one) can be signed."""
    with pytest.raises(ValueError, match="unsigned"):
        mim_pow.sign_prefix(not_unsigned, K0.sign)


# --- Legacy known answers (PROTOCOL.md §17.1) ----------------------------------------------------


def _legacy_board(description: str, fingerprint: str = "", proof_of_work: str = "") -> str:
    """The pre-dev.14 board JSON the reference's proofofwork_test.go hashed (§17.1's L)."""
    return (
        f'{{"fingerprint":"{fingerprint}","creation":4564654,"proof_of_work":"{proof_of_work}",'
        '"signature":"","name":"my board name","board_owners":null,'
        f'"description":"{description}","owner":"","last_update":0,'
        '"update_proof_of_work":"","update_signature":""}'
    )


UPDATED = ("my updated description", "my random fingerprint")


@pytest.mark.parametrize(
    ("pow_str", "text", "hash_prefix", "strength"),
    [
        (
            "MIM1:20::::hvMazmkOQUvYriEB:630538:",
            _legacy_board("my board description"),
            "00000f690cdbadfbaa9b38d4f13be2ee",
            20,
        ),
        (
            "MIM1:20::::VcoyLilzglhVKYdG:687101:",
            _legacy_board("my description"),
            "00000af0cb557350b53b8e7562ba3632",
            20,
        ),
        (
            "MIM1:20::::fhUxvaQuQpePjkwr:3315783:",
            _legacy_board(*UPDATED, "MIM1:20::::VcoyLilzglhVKYdG:687101:"),
            "00000e589de033d5f3234082f4848647",
            20,
        ),
        (
            "MIM1:18::::ZVqtpNqdZXkNcSpc:290736:",
            _legacy_board("my board description"),
            "00000b086ab320688caebe06a2dcdec0",
            18,
        ),
        ("MIM1:21::::QkaMjkJbvXInQLtW:1166891:", _legacy_board("my board description"), "", None),
        (
            "MIM1:20::::uSLzxFcWbbNXaOzXS:2032317:",
            _legacy_board(*UPDATED, "MIM1:20::::pLBjxwHwpcHNVGBk:928329:"),
            "",
            None,
        ),
    ],
    ids=["board", "board-2", "update", "declared-18", "too-weak", "update-too-weak"],
)
def test_legacy_known_answers(
    pow_str: str, text: str, hash_prefix: str, strength: int | None
) -> None:
    """The reference's own old PoW test strings verify (or fail) as its test file says."""
    _, difficulty, _, _, _, salt, counter, _ = pow_str.split(":")
    digest = mim_pow.work_digest(text, int(difficulty), salt, int(counter))
    assert digest.hex().startswith(hash_prefix)
    if strength is None:
        with pytest.raises(InsufficientWork):
            mim_pow.verify(text, pow_str, "")
    else:
        assert mim_pow.verify(text, pow_str, "") == strength
        with pytest.raises(InsufficientWork, match="under the minimum 30"):
            mim_pow.check(text, pow_str, "", 30)


@pytest.mark.parametrize(
    "pow_str",
    [
        "MIM2:21::::QkaMjkJbvXInQLtW:1166891:",
        "MIM1:-20::::QkaMjkJbvXInQLtW:1166891:",
        "MIM1:20::::QkaMjkJbvXInQLtW:-1166891:",
        "MIM1:20::::QkaMjkJbvXInQLtW:a1166891:",
        "MIM1:20:AA:AA:AA:QkaMjkJbvXInQLtW:a1166891:",
        "MIM1::::::a1166891:",
        "MIM1:20::::QkaMjkJbvXInQLtW:1166891::A:A:A",
        "MIM1:20::::QkaMjkJbvXInQLtW:",
        "MIM1:20::::xDQPQMOBXYIMCDvE:1912024:fake key",
    ],
)
def test_legacy_rejections(pow_str: str) -> None:
    """The malformed strings of the reference's old test file are all refused."""
    with pytest.raises(InsufficientWork):
        mim_pow.verify(_legacy_board("my board description"), pow_str, K0.public_hex)


@pytest.mark.slow
def test_search_reproduces_a_legacy_counter_at_difficulty_20() -> None:
    """At a real difficulty, search from 0 finds the counter the reference's test recorded."""
    text = _legacy_board("my board description")
    assert mim_pow.search(text, 20, "hvMazmkOQUvYriEB") == (630538, 630539)


def test_a_pow_signed_by_a_key_of_small_order_is_refused_at_stage_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A valid proof "signed" by the identity key (a signature OpenSSL accepts for any message)
    is refused as a bad signature naming the key, not as weak work (§20.12)."""
    verify_with_openssl(monkeypatch)
    counter, _ = mim_pow.search(TEXT, 6, SALT)
    assert counter is not None
    work = mim_pow.unsigned(6, SALT, counter) + FORGED_SIGNATURE
    with pytest.raises(BadSignature) as caught:
        mim_pow.check(TEXT, work, IDENTITY_KEY, 6)
    assert (caught.value.stage, caught.value.field, caught.value.rule) == (
        "signature",
        "owner_publickey",
        "public_key.small_order",
    )

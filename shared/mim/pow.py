"""Proof of work, MIM1 (PROTOCOL.md §7).

Contract: ``verify`` gives the reference's verdict and declared strength for every record of
``pow_vectors`` in ``../shared/vectors/`` (where the reference panics, we reject), and ``search``
finds the reference's counter for every PoW the reference created; any change here is a protocol
change.

A PoW string is ``MIM1:<difficulty>::::<salt>:<counter>:<signature>``.  The work is the triple
SHA-256 of ``str(difficulty) + text + salt + str(counter)`` (UTF-8), which must start with at least
``difficulty`` zero bits; the signature is the owner's signature of everything up to and including
the seventh colon, exactly as written.  Verification returns the *declared* difficulty: extra zero
bits earn nothing, and the caller compares it with its minimum (or calls ``check``).

Creation is split so that mining can happen elsewhere: a ``Minter`` turns (text, difficulty) into
an unsigned PoW string, and the owner signs it with ``sign_prefix``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from mim import signing
from mim._hexutil import utf8
from mim.errors import BadSignature, InsufficientWork

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "MAX_DIFFICULTY",
    "MAX_POW_LENGTH",
    "SALT_ALPHABET",
    "SALT_LENGTH",
    "VERSION",
    "Minter",
    "check",
    "local_minter",
    "make_salt",
    "search",
    "sign_prefix",
    "unsigned",
    "verify",
    "work_digest",
]

VERSION: Final = "MIM1"  # the only format the reference supports (§7.3 step 5)
MAX_DIFFICULTY: Final = 256  # bits in a SHA-256 digest; the reference panics above it (§7.3 step 6)
MAX_POW_LENGTH: Final = 1024  # bytes, Go len(); longer strings are refused first (§7.3 step 1)
SALT_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # §7.2 step 2
SALT_LENGTH: Final = 16  # §7.2 step 2; verification accepts any non-empty salt
_FIELDS: Final = 8  # version, difficulty, date, input, extension, salt, counter, signature
_INT64_MAX: Final = 2**63 - 1  # Go strconv.ParseInt(s, 10, 64) range
_GO_DECIMAL: Final = re.compile(r"[+-]?[0-9]+")  # ParseInt base 10: no spaces, "_" or "0x"

Minter = Callable[[str, int], str]
"""Given (text, difficulty), an unsigned PoW string as ``unsigned`` writes it."""


def make_salt(randbelow: Callable[[int], int]) -> str:
    """A fresh salt; pass ``secrets.randbelow``."""
    return "".join(SALT_ALPHABET[randbelow(len(SALT_ALPHABET))] for _ in range(SALT_LENGTH))


def unsigned(difficulty: int, salt: str, counter: int) -> str:
    """The PoW string before its signature: ``MIM1:<d>::::<salt>:<counter>:``."""
    return f"{VERSION}:{difficulty}::::{salt}:{counter}:"


def sign_prefix(unsigned_pow: str, sign: Callable[[str], str]) -> str:
    """``unsigned_pow`` followed by ``sign(unsigned_pow)``, e.g. ``key.sign``."""
    if unsigned_pow.count(":") != _FIELDS - 1 or not unsigned_pow.endswith(":"):
        raise ValueError(f"not an unsigned PoW string: {unsigned_pow!r}")
    return unsigned_pow + sign(unsigned_pow)


def work_digest(text: str, difficulty: int, salt: str, counter: int) -> bytes:
    """SHA-256³ of ``str(difficulty) + text + salt + str(counter)``, the digest the work is in."""
    sha = hashlib.sha256
    return sha(sha(sha(utf8(f"{difficulty}{text}{salt}{counter}")).digest()).digest()).digest()


def _target(difficulty: int) -> bytes:
    """Digests below this (as big-endian bytes) start with ``difficulty`` zero bits."""
    return (1 << (MAX_DIFFICULTY - difficulty)).to_bytes(32, "big")


# --- Mining ------------------------------------------------------------------------------------

# Counters are scanned in blocks of 1000 that share their leading digits: the block's digits go
# into the hash state once, and each attempt appends one of 1000 ready-made three-digit endings.
# Counters 0..999 have no leading zeros, so the first block has its own endings.
_BLOCK: Final = 1000
_ENDINGS: Final = tuple(b"%03d" % n for n in range(_BLOCK))
_FIRST_ENDINGS: Final = tuple(b"%d" % n for n in range(_BLOCK))


def _scan(state: _Hash, endings: Sequence[bytes], target: bytes) -> bytes | None:
    """The first ending whose work digest is under ``target``.  This is the hot loop."""
    fork = state.copy
    sha = hashlib.sha256
    for ending in endings:
        h = fork()
        h.update(ending)
        if sha(sha(h.digest()).digest()).digest() < target:
            return ending
    return None


def search(
    text: str, difficulty: int, salt: str, start: int = 0, limit: int | None = None
) -> tuple[int | None, int]:
    """The smallest counter from ``start`` that does the work, and the attempts it took.

    The counter is ``None`` when ``limit`` attempts found nothing (or the int64 counter range ran
    out).  Difficulty 0 needs no work: the answer is ``start`` after 0 attempts.
    """
    if not 0 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty {difficulty} is outside 0..{MAX_DIFFICULTY}")
    if start < 0 or (limit is not None and limit < 0):
        raise ValueError("start and limit must not be negative")
    if difficulty == 0:
        return start, 0
    stop = _INT64_MAX + 1 if limit is None else min(start + limit, _INT64_MAX + 1)
    base = hashlib.sha256(utf8(f"{difficulty}{text}{salt}"))
    target = _target(difficulty)
    block, low = divmod(start, _BLOCK)
    attempts = 0
    while (high := min(_BLOCK, stop - block * _BLOCK)) > low:  # this block's endings: [low, high)
        if block == 0:
            state, endings = base, _FIRST_ENDINGS
        else:
            state = base.copy()
            state.update(b"%d" % block)
            endings = _ENDINGS
        if low or high < _BLOCK:
            endings = endings[low:high]
        found = _scan(state, endings, target)
        if found is not None:
            counter = block * _BLOCK + int(found)
            return counter, attempts + counter - block * _BLOCK - low + 1
        attempts += high - low
        block, low = block + 1, 0
    return None, attempts


def local_minter(randbelow: Callable[[int], int]) -> Minter:
    """A ``Minter`` that mines in this process, with salts drawn by ``randbelow``.

    Like the reference's ``Create``, it answers ``""`` (no PoW) for a difficulty of 0 or less.
    """

    def mint(text: str, difficulty: int) -> str:
        if difficulty <= 0:  # the reference's Create: no work asked, no PoW (§7.2 step 1)
            return ""
        salt = make_salt(randbelow)
        counter, _ = search(text, difficulty, salt)
        if counter is None:  # would take 2**63 attempts
            raise RuntimeError("the int64 counter range ran out")
        return unsigned(difficulty, salt, counter)

    return mint


# --- Verification ------------------------------------------------------------------------------


class _Parsed(NamedTuple):
    difficulty: int
    salt: str
    counter: int
    signature: str
    prefix: str  # the signed part, raw as written


def _refuse(field: str, rule: str, detail: str) -> InsufficientWork:
    return InsufficientWork(field, rule, detail)


def _excerpt(value: str, limit: int = 24) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _parse_int(text: str, name: str, field: str) -> int:
    """Go ``strconv.ParseInt(text, 10, 64)``, then the reference's "not negative" rule."""
    if len(text) < 19 and text.isascii() and text.isdigit():
        return int(text)  # plain digits, under 10**18: in range and not negative
    if _GO_DECIMAL.fullmatch(text) is None:
        raise _refuse(field, "pow.number", f"{name} {_excerpt(text)} is not a decimal integer")
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise _refuse(field, "pow.number", f"{name} {_excerpt(text)} is out of the int64 range")
    if value < 0:
        raise _refuse(field, "pow.negative", f"{name} {value} is negative")
    return value


def _parse(pow_str: str, field: str) -> _Parsed:
    """Steps 1 to 5 of §7.3, in the reference's order."""
    # Go counts bytes; a character is at most 4 of them, and a lone surrogate 3 (as U+FFFD).
    if len(pow_str) > MAX_POW_LENGTH // 4:
        size = len(pow_str.encode("utf-8", "surrogatepass"))
        if size > MAX_POW_LENGTH:
            raise _refuse(
                field, "pow.length", f"{size} bytes is over MAX_POW_LENGTH ({MAX_POW_LENGTH})"
            )
    fields = pow_str.split(":", _FIELDS)
    if len(fields) != _FIELDS:
        raise _refuse(
            field, "pow.format", f"{len(fields)} colon-separated fields, need exactly {_FIELDS}"
        )
    version, difficulty, date, input_, extension, salt, counter, signature = fields
    if date or input_ or extension:
        raise _refuse(field, "pow.fields", "date, input and extension fields must be empty")
    if not (version and difficulty and salt and counter):
        raise _refuse(field, "pow.fields", "version, difficulty, salt and counter must be set")
    parsed_difficulty = _parse_int(difficulty, "difficulty", field)
    parsed_counter = _parse_int(counter, "counter", field)
    if version != VERSION:
        raise _refuse(field, "pow.version", f"version {_excerpt(version)}, need {VERSION}")
    prefix = pow_str[: len(pow_str) - len(signature)]
    return _Parsed(parsed_difficulty, salt, parsed_counter, signature, prefix)


def _check_signature(
    parsed: _Parsed, public_key_hex: str, field: str, key_field: str, allow_ecdsa: bool
) -> None:
    """Step 7 of §7.3: a key needs a signature by it, and a signature needs a key."""
    if not public_key_hex and not parsed.signature:
        return
    if not parsed.signature:
        raise _refuse(field, "pow.unsigned", f"{key_field} is set but the PoW is unsigned")
    if not public_key_hex:
        raise _refuse(field, "pow.unexpected_signature", f"PoW is signed but {key_field} is empty")
    problem = signing.diagnose(
        parsed.prefix,
        parsed.signature,
        public_key_hex,
        key_field=key_field,
        allow_ecdsa=allow_ecdsa,
    )
    if problem is None:
        return
    rule, detail = problem
    if rule == "public_key.small_order":  # a key that signs nothing: stage signature (§20.12)
        raise BadSignature(key_field, rule, detail)
    raise _refuse(field, "pow.signature", f"PoW {rule}: {detail}")


def verify(
    text: str,
    pow_str: str,
    public_key_hex: str,
    *,
    field: str = "proof_of_work",
    key_field: str = "owner_publickey",
    allow_ecdsa: bool = False,
) -> int:
    """The declared strength of a valid PoW over ``text``; ``InsufficientWork`` otherwise.

    ``public_key_hex`` is the key that must have signed the PoW, or ``""`` for an anonymous one; a
    key of small order is refused with ``BadSignature`` (§20.12).
    """
    parsed = _parse(pow_str, field)
    difficulty = parsed.difficulty
    if difficulty > MAX_DIFFICULTY:
        raise _refuse(
            field, "pow.difficulty", f"{difficulty} is over MAX_DIFFICULTY ({MAX_DIFFICULTY})"
        )
    if difficulty and work_digest(text, difficulty, parsed.salt, parsed.counter) >= _target(
        difficulty
    ):
        raise _refuse(field, "pow.work", f"the hash does not start with {difficulty} zero bits")
    _check_signature(parsed, public_key_hex, field, key_field, allow_ecdsa)
    return difficulty


def check(
    text: str,
    pow_str: str,
    public_key_hex: str,
    minimum: int,
    *,
    field: str = "proof_of_work",
    key_field: str = "owner_publickey",
    allow_ecdsa: bool = False,
) -> int:
    """``verify``, then refuse a declared strength under ``minimum``.

    A minimum of 0 or less means the PoW is not examined at all (the reference's behaviour); the
    result is then 0.
    """
    if minimum <= 0:
        return 0
    strength = verify(
        text, pow_str, public_key_hex, field=field, key_field=key_field, allow_ecdsa=allow_ecdsa
    )
    if strength < minimum:
        raise _refuse(field, "pow.strength", f"declared {strength} is under the minimum {minimum}")
    return strength

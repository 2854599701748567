"""Verification speed: signed posts at minimum PoW 21, against the cost of their cryptography alone.

    python bench/verify.py [--seconds 2] [--rounds 5] [--size 750]

- ``floor``: per object, what no verifier can skip: 1 SHA-256 for the fingerprint, 1 for the
  signature digest, 3 PoW passes (the first over the text), 1 SHA-256 of the PoW prefix, and two
  Ed25519 verifications, on inputs as long as the object.  Measured with both libraries, PyNaCl
  (libsodium) and ``cryptography`` (OpenSSL); the one ``mim.signing`` uses is the floor.
- ``full``: ``mim.verify.verify("post", raw, policy)`` on the wire bytes of one signed post minted
  at difficulty 21 (a few seconds of mining, once).  The same bytes are verified again and again:
  verification keeps no results between calls (``mim.signing`` caches decoded public keys only),
  so each call does the whole work.
- ``decode``: ``mim.canonical.loads`` of the same bytes into a ``Post``, the first stage of
  ``full``, beside ``json.loads``: the standard library's C parser alone, which builds a plain
  ``dict`` and checks none of Go's rules.

Best of ``--rounds`` interleaved rounds.  Printed: objects/s of each, full/floor (target >= 0.80),
full against the reference's 2,948 objects/s (target >= 2) and decode/json.loads.  Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open

from mim import pow as mim_pow
from mim import signing

REFERENCE_OBJECTS_PER_SECOND = 2_948  # the reference verifier, one core: the baseline
DIFFICULTY = 21  # the reference's default minimum (PROTOCOL.md §7.4)
SEED = bytes(range(32))


def floor_loop(backend: str, size: int) -> Callable[[int], None]:
    """``n`` objects' worth of the unavoidable hashing and two signature checks."""
    text = ("x" * size).encode()
    prefix = b"MIM1:21::::hvMazmkOQUvYriEB:1166891:"
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    public = private.public_key()
    raw_public = public.public_bytes_raw()
    sha = hashlib.sha256
    signature = private.sign(sha(text).digest())
    pow_signature = private.sign(sha(prefix).digest())

    def check_pynacl(sig: bytes, digest: bytes) -> None:
        crypto_sign_open(sig + digest, raw_public)

    check: Callable[[bytes, bytes], None] = check_pynacl if backend == "pynacl" else public.verify

    def run(n: int) -> None:
        for _ in range(n):
            sha(text).hexdigest()  # fingerprint
            check(signature, sha(text).digest())  # object signature
            sha(sha(sha(text).digest()).digest()).digest()  # proof of work
            check(pow_signature, sha(prefix).digest())  # proof-of-work signature

    return run


def full_loop(size: int) -> tuple[Callable[[int], None], bytes] | None:
    """``n`` full verifications of one signed post, and its bytes; None without ``mim.verify``."""
    if (
        importlib.util.find_spec("mim.verify") is None
        or importlib.util.find_spec("mim.create") is None
    ):
        return None
    from mim import canonical, create, verify  # noqa: PLC0415  (optional until it exists)

    key = signing.SigningKey.generate(SEED)
    values = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64, "body": "x"}
    mint = mim_pow.local_minter(random.Random(1).randrange)
    probe = canonical.encode(create.create("post", values, key, 1, 1_700_000_000, mint))
    values["body"] = "x" * max(1, size - len(probe) + 1)
    started = time.perf_counter()
    post = create.create("post", values, key, DIFFICULTY, 1_700_000_000, mint)
    print(f"minted one post at difficulty {DIFFICULTY} in {time.perf_counter() - started:.1f} s")
    raw = canonical.encode(post)
    policy = verify.Policy.uniform(DIFFICULTY)
    verdict = verify.verify("post", raw, policy)
    if not verdict.ok:
        raise SystemExit(f"the bench post is refused: {verdict.reason}")

    def run(n: int) -> None:
        for _ in range(n):
            verify.verify("post", raw, policy)

    return run, raw


def decode_loops(raw: bytes) -> dict[str, Callable[[int], None]]:
    """``n`` decodes of ``raw`` into a ``Post`` by ``mim``, and by the stdlib into a ``dict``."""
    from mim import canonical, entities  # noqa: PLC0415  (next to full_loop's imports)

    loads, post, stdlib = canonical.loads, entities.Post, json.loads

    def decode(n: int) -> None:
        for _ in range(n):
            loads(post, raw)

    def baseline(n: int) -> None:
        for _ in range(n):
            stdlib(raw)

    return {"decode": decode, "json.loads": baseline}


def _rate(run: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per loop per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--size", type=int, default=750, help="bytes per object (at least)")
    args = parser.parse_args()

    size = args.size
    loops: dict[str, Callable[[int], None]] = {}
    full = full_loop(size)
    if full is None:
        print("full verification: not available (mim.verify missing)")
    else:
        loops["full"], raw = full
        size = len(raw)
        loops.update(decode_loops(raw))
    print(f"objects of {size} bytes; signatures checked with {signing.verify_backend()}")
    loops["floor pynacl"] = floor_loop("pynacl", size)
    loops["floor cryptography"] = floor_loop("cryptography", size)

    n = {name: max(100, int(_rate(run, 200) * args.seconds)) for name, run in loops.items()}
    best = dict.fromkeys(loops, 0.0)
    for round_number in range(1, args.rounds + 1):
        names = list(loops)
        names = names[round_number % len(names) :] + names[: round_number % len(names)]
        rates = {name: _rate(loops[name], n[name]) for name in names}
        for name, rate in rates.items():
            best[name] = max(best[name], rate)
        print(f"round {round_number}: " + "  ".join(f"{k} {rates[k]:,.0f}/s" for k in loops))

    floor = best[f"floor {signing.verify_backend()}"]
    print()
    for name, rate in best.items():
        print(f"best {name:<20} {rate:>9,.0f} objects/s")
    print(f"pynacl / cryptography floor {best['floor pynacl'] / best['floor cryptography']:.2f}")
    if "full" in best:
        print(f"full / floor          {best['full'] / floor:.3f}  (target >= 0.80)")
        print(
            f"full / reference      {best['full'] / REFERENCE_OBJECTS_PER_SECOND:.2f}"
            f"  (target >= 2; reference {REFERENCE_OBJECTS_PER_SECOND:,} objects/s)"
        )
        print(f"decode / json.loads   {best['decode'] / best['json.loads']:.3f}")


if __name__ == "__main__":
    main()

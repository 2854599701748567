"""Ed25519 public keys of small order (PROTOCOL.md §6, §20.12).

A key among the eight points of the curve's torsion (order 1, 2, 4 or 8) lets anyone make a
signature that verifies for it, so ``mim.signing`` refuses such keys before any library checks a
signature. A point is found by its y coordinate, which the 32 bytes of a key hold little-endian
under the sign bit of x: the test covers both signs and the encodings of y as y + p, so every
spelling of these points is caught, not only the canonical ones.
"""

from __future__ import annotations

from typing import Final

__all__ = ["small_order"]

_P: Final = 2**255 - 19  # the field of Curve25519
_D: Final = -121665 * pow(121666, -1, _P) % _P  # Ed25519: -x² + y² = 1 + d·x²·y²
_SQRT_MINUS_ONE: Final = pow(2, (_P - 1) // 4, _P)
_Y_MASK: Final = (1 << 255) - 1  # an encoding is y, little-endian, with the sign of x on top


def _sqrt(value: int) -> int | None:
    """A square root of ``value`` modulo p, if it has one (p ≡ 5 mod 8)."""
    root = pow(value, (_P + 3) // 8, _P)
    for candidate in (root, root * _SQRT_MINUS_ONE % _P):
        if candidate * candidate % _P == value % _P:
            return candidate
    return None


def _torsion_ys() -> frozenset[int]:
    """The y coordinates of the eight points of order dividing 8.

    Order 1 and 2: (0, 1) and (0, -1). Order 4: (±√-1, 0). Order 8: the points P whose double
    has y = 0; with x² = -y² the curve equation gives d·y⁴ + 2y² - 1 = 0, so
    y² = (-1 ± √(1 + d)) / d, of which one is a square: y = ±√ of it, x = ±√-1·y.
    """
    ys = {1, _P - 1, 0}
    root = _sqrt(1 + _D)
    assert root is not None  # d + 1 is a square on this curve
    for sign in (1, -1):
        y = _sqrt((sign * root - 1) * pow(_D, -1, _P) % _P)
        if y is not None:
            ys.update((y, _P - y))
    return frozenset(ys)


_TORSION_YS: Final = _torsion_ys()


def small_order(public_key: bytes) -> bool:
    """Whether a 32-byte Ed25519 key is a point of small order, in any encoding: either sign of
    x, and a y written as itself or (for y < 19) as y + p."""
    return (int.from_bytes(public_key, "little") & _Y_MASK) % _P in _TORSION_YS

"""Hex and UTF-8 conversions with the reference's (Go's) semantics, for ``signing`` and ``pow``.

- ``unhex`` is Go's ``hex.DecodeString``: upper and lower case digits, even length, nothing else
  (no spaces, no ``0x``); ``None`` instead of an error.
- ``utf8`` is the byte string Go would hash for the same text.  A Python ``str`` can hold a lone
  surrogate (``json.loads`` makes one from ``"\\ud800"``) that has no UTF-8 form; Go's decoder turns
  that escape into U+FFFD, so we do the same instead of raising ``UnicodeEncodeError``.
"""

from __future__ import annotations

import binascii

__all__ = ["unhex", "utf8"]

_REPLACEMENT = "\ufffd"


def unhex(text: str) -> bytes | None:
    """The bytes spelled by ``text`` in hex, or ``None`` where Go's ``hex.DecodeString`` fails."""
    try:
        return binascii.unhexlify(text)
    except ValueError:  # binascii.Error (odd length, non-hex digit) and non-ASCII text
        return None


def utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``, lone surrogates replaced by U+FFFD as Go's JSON decoder does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        cleaned = "".join(_REPLACEMENT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
        return cleaned.encode("utf-8")

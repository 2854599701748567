"""The error tree of the protocol core.

Every failure of ``mim`` is one of these, so a caller needs one ``except`` clause::

    MimError                      root, never raised directly
    └── InvalidObject             an object (or page, or PoW string) the protocol refuses
        ├── MalformedJSON         stage "decode": not JSON, or a value of the wrong type or range
        ├── OutOfBounds           stage "bounds": a size, count or range rule of PROTOCOL.md §9
        ├── FingerprintMismatch   stage "fingerprint"
        ├── BadSignature          stage "signature": missing, malformed or not by the key
        ├── InsufficientWork      stage "pow": malformed, unsigned where it must be, or too weak
        ├── NotEntitled           stage "entitlements": a CA-only trust type from another key
        └── UpdateRefused         stage "update": update rules (§20.11; anonymous updates)

Each error names the ``field`` it is about, the ``rule`` it broke and a ``detail`` with the value's
size or the expected form; ``str()`` reads "`post.body`: 70000 bytes is over bounds.POST_BODY_MAX
(65535)". ``status`` is the HTTP status a gateway should answer with.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadSignature",
    "FingerprintMismatch",
    "InsufficientWork",
    "InvalidObject",
    "MalformedJSON",
    "MimError",
    "NotEntitled",
    "OutOfBounds",
    "UpdateRefused",
]


class MimError(Exception):
    """Root of every error the protocol core raises."""

    stage: ClassVar[str] = "decode"
    status: ClassVar[int] = 422

    def __init__(self, field: str, rule: str, detail: str = "") -> None:
        self.field = field
        self.rule = rule
        self.detail = detail
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """One line naming the field, the rule and the value's size or form."""
        if self.detail:
            return f"`{self.field}`: {self.detail} ({self.rule})"
        return f"`{self.field}`: {self.rule}"

    def as_dict(self) -> dict[str, str]:
        return {
            "stage": self.stage,
            "field": self.field,
            "rule": self.rule,
            "detail": self.detail,
            "reason": self.reason,
        }


class InvalidObject(MimError):
    """An object, page or proof that the protocol refuses."""


class MalformedJSON(InvalidObject):
    stage = "decode"
    status = 400


class OutOfBounds(InvalidObject):
    stage = "bounds"
    status = 422


class FingerprintMismatch(InvalidObject):
    stage = "fingerprint"


class BadSignature(InvalidObject):
    stage = "signature"


class InsufficientWork(InvalidObject):
    stage = "pow"


class NotEntitled(InvalidObject):
    stage = "entitlements"


class UpdateRefused(InvalidObject):
    stage = "update"

"""mim: the Mim protocol core, byte-exact with the reference implementation.

Pure: no network, no database, no clock, no randomness of its own. Services use the names
re-exported here; the modules are reached qualified (``mim.pow.verify``), which keeps the builtin
``pow`` unshadowed.
"""

from mim import (
    bounds,
    canonical,
    create,
    entities,
    errors,
    fingerprint,
    inputs,
    kinds,
    signing,
    verify,
)
from mim import pages as pages  # signed envelopes, request checks, cache layout (§11)
from mim import paths as paths  # where a node serves what (§11)
from mim import pow as pow  # qualified access (mim.pow) keeps the builtin unshadowed
from mim.entities import (
    KINDS,
    PLURALS,
    PROVABLE_KINDS,
    Address,
    ApiResponse,
    Board,
    Entity,
    Key,
    Post,
    Provable,
    Thread,
    Truststate,
    Vote,
    parse,
)
from mim.errors import (
    BadSignature,
    FingerprintMismatch,
    InsufficientWork,
    InvalidObject,
    MalformedJSON,
    MimError,
    OutOfBounds,
    UpdateRefused,
)
from mim.signing import SigningKey
from mim.verify import Policy, Verdict

__all__ = [
    "KINDS",
    "PLURALS",
    "PROVABLE_KINDS",
    "Address",
    "ApiResponse",
    "BadSignature",
    "Board",
    "Entity",
    "FingerprintMismatch",
    "InsufficientWork",
    "InvalidObject",
    "Key",
    "MalformedJSON",
    "MimError",
    "OutOfBounds",
    "Policy",
    "Post",
    "Provable",
    "SigningKey",
    "Thread",
    "Truststate",
    "UpdateRefused",
    "Verdict",
    "Vote",
    "bounds",
    "canonical",
    "create",
    "entities",
    "errors",
    "fingerprint",
    "inputs",
    "kinds",
    "pages",
    "parse",
    "paths",
    "pow",
    "signing",
    "verify",
]

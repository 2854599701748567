"""mim: the Mim protocol core, byte-exact with the reference implementation.

Pure: no network, no database, no clock, no randomness of its own. Services use the names
re-exported here; the modules are reached qualified (``mim.pow.verify``), which keeps the builtin
``pow`` unshadowed.
"""

from mim import (
    bounds,
    caches,
    canonical,
    create,
    decoder,
    entities,
    envelope,
    errors,
    fingerprint,
    infer,
    inputs,
    kinds,
    nodes,
    request,
    scanner,
    schema,
    signing,
    torsion,
    verify,
)
from mim import pages as pages  # the names of envelope, request and caches (§11)
from mim import paths as paths  # where a node serves what (§11)
from mim import pow as pow  # qualified access (mim.pow) keeps the builtin unshadowed
from mim.entities import (
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
    NotEntitled,
    OutOfBounds,
    UpdateRefused,
)
from mim.kinds import KINDS, PLURALS, PROVABLE_KINDS, Kind
from mim.nodes import LocationType, NodeType
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
    "Kind",
    "LocationType",
    "MalformedJSON",
    "MimError",
    "NodeType",
    "NotEntitled",
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
    "caches",
    "canonical",
    "create",
    "decoder",
    "entities",
    "envelope",
    "errors",
    "fingerprint",
    "infer",
    "inputs",
    "kinds",
    "nodes",
    "pages",
    "parse",
    "paths",
    "pow",
    "request",
    "scanner",
    "schema",
    "signing",
    "torsion",
    "verify",
]

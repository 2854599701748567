"""The signed envelope: the ApiResponse a node serves and sends, and its signature (§6.1, §11.5).

Contract: a page we sign verifies under §6.1 with ``page_signature`` removed and ``proof_of_work``
blanked (the request quirk: requests are signed before their PoW is added, and response pages carry
none, so one rule verifies both); what ``prefill`` fills is what the reference's ``Prefill`` fills,
with this node's self-description (§2.8).

Pure: time (``now``) and nonces are parameters; nothing here reads a clock or a random source.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from mim import canonical, signing
from mim.entities import Address, ApiResponse, Client, Protocol, Subprotocol
from mim.errors import BadSignature
from mim.kinds import PROVABLE_KINDS
from mim.nodes import LocationType, NodeType

__all__ = [
    "CLIENT",
    "NODE_TYPE_LIVE",
    "NODE_TYPE_STATIC",
    "PROTOCOL",
    "PROTOCOL_C0",
    "node_id",
    "node_page",
    "prefill",
    "sign_page",
    "signed_text",
    "verify_page",
]

NODE_TYPE_LIVE: Final = NodeType.LIVE  # what this node declares itself (§10.3)
NODE_TYPE_STATIC: Final = NodeType.STATIC  # what a static export declares (§10.3)
PROTOCOL_C0: Final = "c0"  # the one subprotocol (§2.8), also the protocol of entity counts
#: dev.14 self-description (§2.8).
PROTOCOL: Final = Protocol(
    version_major=1,
    version_minor=0,
    subprotocols=(
        Subprotocol(
            name=PROTOCOL_C0,
            version_major=1,
            version_minor=0,
            supported_entities=PROVABLE_KINDS,
        ),
    ),
)
CLIENT: Final = Client(version_major=2, version_minor=0, version_patch=0, name="Aether")


def node_id(public_key_hex: str) -> str:
    """The node ID: SHA-256 of the hex public key string (§0 fact 12)."""
    return signing.key_fingerprint(public_key_hex)


def prefill(public_key_hex: str, *, port: int, node_type: int, nonce: str, now: int) -> ApiResponse:
    """A page with the fields ``Prefill`` sets (§11.5); our own address carries no location."""
    address = Address(
        location_type=LocationType.IPV4,
        port=port,
        type=node_type,
        protocol=PROTOCOL,
        client=CLIENT,
        entity_version=1,
    )
    return ApiResponse(
        node_public_key=public_key_hex,
        nonce=nonce,
        entity_version=1,
        address=address,
        timestamp=now,
    )


def node_page(base: ApiResponse) -> ApiResponse:
    """The unsigned node page (``GET /v0/node``, node POST answer)."""
    return replace(base, entity="node", endpoint="node")


# --------------------------------------------------------------------------- signatures (§6.1)


def signed_text(page: ApiResponse) -> str:
    """What a page signature covers: the page without signature and with ``proof_of_work`` ""."""
    return canonical.dumps(replace(page, page_signature="", proof_of_work=""))


def sign_page(page: ApiResponse, key: signing.SigningKey) -> ApiResponse:
    """``page`` signed by the node key, which becomes its ``node_public_key``."""
    page = replace(page, node_public_key=key.public_hex, page_signature="")
    return replace(page, page_signature=key.sign(signed_text(page)))


def verify_page(page: ApiResponse) -> str:
    """The signer's node ID, or ``BadSignature`` unless the page signature verifies (§6.1)."""
    if not page.node_public_key:
        raise BadSignature("node_public_key", "public_key.missing", "empty node_public_key")
    signing.check(
        signed_text(page),
        page.page_signature,
        page.node_public_key,
        field="page_signature",
        key_field="node_public_key",
    )
    return node_id(page.node_public_key)

"""Where a node serves what (PROTOCOL.md §11.3, §11.6, §11.7): the URL layout of the Mim API.

Every path is relative to the node's root and has no leading slash. An endpoint's folder holds its
``index.json`` and one folder per cache, ``cache_<id>/``; a POST answer too large for one page is
a container under ``v0/responses/post_<id>/``, laid out like a cache.
"""

from __future__ import annotations

from typing import Final

from mim.kinds import PLURALS, Kind

__all__ = [
    "BOOTSTRAPPERS",
    "INDEX",
    "NODE",
    "PING_NODE",
    "PING_STATUS",
    "RESPONSES",
    "STATUS",
    "cache_folder",
    "container_folder",
    "endpoint",
]

STATUS: Final = "v0/status"
NODE: Final = "v0/node"
BOOTSTRAPPERS: Final = "v0/bootstrappers"
PING_STATUS: Final = "v0/ping/status"
PING_NODE: Final = "v0/ping/node"
RESPONSES: Final = "v0/responses"
INDEX: Final = "index.json"


def endpoint(kind: Kind) -> str:
    """The folder of ``kind``'s endpoint: ``v0/addresses``, else ``v0/c0/<plural>``."""
    return "v0/addresses" if kind == "address" else f"v0/c0/{PLURALS[kind]}"


def cache_folder(cache_id: str) -> str:
    """A cache's folder inside its endpoint, as ``index.json`` names it."""
    return f"cache_{cache_id}"


def container_folder(response_id: str) -> str:
    """A POST answer's container inside ``RESPONSES``, as the answer's ``results`` name it."""
    return f"post_{response_id}"

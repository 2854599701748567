"""The node's acceptance policy as settings: one mixin for every process that judges objects.

The values are node-wide (``MIM_MIN_POW``, ``MIM_ALLOW_ANONYMOUS`` ...), because every process of a
node that judges objects (the validators, and the gateway when it answers a submission) must judge
them alike. ``MIM_MIN_POW`` sets the minimum proof of work of every kind; ``MIM_MIN_POW_<KIND>``
overrides it for one kind, and ``MIM_MIN_UPDATE_POW`` / ``MIM_MIN_UPDATE_POW_<KIND>`` do the same
for updates (PROTOCOL.md §7.4, §20.2). A service mixes it in before its ``ServiceSettings`` base::

    class ValidatorSettings(PolicySettings, ServiceSettings): ...

and hands ``settings.policy()`` to :func:`mim.verify.verify`.
"""

from __future__ import annotations

from types import MappingProxyType

from pydantic import Field
from pydantic_settings import BaseSettings

from mim.entities import PROVABLE_KINDS
from mim.pow import MAX_DIFFICULTY
from mim.verify import DEFAULT_MIN_POW, Policy
from relay.settings import MIXIN_CONFIG

__all__ = ["PolicySettings"]


def _override(variable: str, what: str) -> int | None:
    # A per-kind override: empty means "take the node-wide value".
    default: int | None = Field(
        None,
        validation_alias=variable,
        description=f"Minimum {what}; empty: the general one.",
        ge=0,
        le=MAX_DIFFICULTY,
    )
    return default


class PolicySettings(BaseSettings):
    """The node-wide acceptance policy (PROTOCOL.md §20.2, §20.8, §20.9); fixed ``MIM_`` names."""

    model_config = MIXIN_CONFIG

    min_pow: int = Field(
        DEFAULT_MIN_POW,
        validation_alias="MIM_MIN_POW",
        description="Minimum proof of work of every kind, unless overridden per kind.",
        ge=0,
        le=MAX_DIFFICULTY,
    )
    min_update_pow: int | None = Field(
        None,
        validation_alias="MIM_MIN_UPDATE_POW",
        description="Minimum proof of work of every update; empty: `MIM_MIN_POW`.",
        ge=0,
        le=MAX_DIFFICULTY,
    )
    min_pow_board: int | None = _override("MIM_MIN_POW_BOARD", "proof of work of a board")
    min_pow_thread: int | None = _override("MIM_MIN_POW_THREAD", "proof of work of a thread")
    min_pow_post: int | None = _override("MIM_MIN_POW_POST", "proof of work of a post")
    min_pow_vote: int | None = _override("MIM_MIN_POW_VOTE", "proof of work of a vote")
    min_pow_key: int | None = _override("MIM_MIN_POW_KEY", "proof of work of a key")
    min_pow_truststate: int | None = _override(
        "MIM_MIN_POW_TRUSTSTATE", "proof of work of a truststate"
    )
    min_update_pow_board: int | None = _override(
        "MIM_MIN_UPDATE_POW_BOARD", "proof of work of a board update"
    )
    min_update_pow_thread: int | None = _override(
        "MIM_MIN_UPDATE_POW_THREAD", "proof of work of a thread update"
    )
    min_update_pow_post: int | None = _override(
        "MIM_MIN_UPDATE_POW_POST", "proof of work of a post update"
    )
    min_update_pow_vote: int | None = _override(
        "MIM_MIN_UPDATE_POW_VOTE", "proof of work of a vote update"
    )
    min_update_pow_key: int | None = _override(
        "MIM_MIN_UPDATE_POW_KEY", "proof of work of a key update"
    )
    min_update_pow_truststate: int | None = _override(
        "MIM_MIN_UPDATE_POW_TRUSTSTATE", "proof of work of a truststate update"
    )
    allow_anonymous: bool = Field(
        False,
        validation_alias="MIM_ALLOW_ANONYMOUS",
        description="Accept objects without key and signature (at `MIM_ANONYMOUS_MIN_POW`).",
    )
    anonymous_min_pow: int = Field(
        0,
        validation_alias="MIM_ANONYMOUS_MIN_POW",
        description="Minimum proof of work of an anonymous object, when they are allowed.",
        ge=0,
        le=MAX_DIFFICULTY,
    )
    allow_ecdsa: bool = Field(
        False,
        validation_alias="MIM_ALLOW_ECDSA",
        description="Accept objects signed with ECDSA keys as well as Ed25519 (§20.8).",
    )

    def policy(self) -> Policy:
        """The acceptance policy these settings describe."""
        general_update = self.min_pow if self.min_update_pow is None else self.min_update_pow
        create: dict[str, int] = {}
        update: dict[str, int] = {}
        for kind in PROVABLE_KINDS:
            own = getattr(self, f"min_pow_{kind}")
            own_update = getattr(self, f"min_update_pow_{kind}")
            create[kind] = self.min_pow if own is None else own
            update[kind] = general_update if own_update is None else own_update
        return Policy(
            min_pow=MappingProxyType(create),
            min_update_pow=MappingProxyType(update),
            allow_anonymous=self.allow_anonymous,
            anonymous_min_pow=self.anonymous_min_pow,
            allow_ecdsa=self.allow_ecdsa,
        )

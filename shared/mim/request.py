"""POST requests: how a node builds one, and what a server checks before it answers (§11.4).

Contract: a request we build passes the server checks of §11.4 on a reference node: it is signed by
the node key before its proof of work is added, and its proof of work, signed by the same key, is
at least :data:`REQUEST_MIN_POW`. :func:`check_request` refuses what a reference server refuses,
naming the first broken rule, and what would panic one (§20.7); :func:`parse_filters` turns the
filters of a request into the :class:`Query` it asks.

Pure: time (``now``) and the nonce memory are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from mim import bounds, canonical, signing
from mim import pow as mim_pow
from mim.entities import ApiResponse, Filter
from mim.envelope import CLIENT, PROTOCOL_C0, sign_page
from mim.errors import InvalidObject

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "EMBEDS",
    "FILTERS_MAX",
    "FILTER_VALUES_MAX",
    "NONCE_MAX",
    "REQUEST_MIN_POW",
    "TIMESTAMP_DIGITS_MAX",
    "Query",
    "RequestRefused",
    "build_request",
    "check_request",
    "parse_filters",
    "timestamp_filter",
]

REQUEST_MIN_POW: Final = 15  # backend ApiResponse minimum: 21 − 6 (§7.4)
CLOCK_SKEW_SECONDS: Final = 20 * 60  # request timestamp window, ± (§11.4, §16)
NONCE_MAX: Final = 64  # bytes of a request nonce (§11.4, §9.3)
FILTERS_MAX: Final = 3  # filters in one page (§9.3)
FILTER_VALUES_MAX: Final = 64  # fingerprint values in one filter (§9.3); embeds are held to it too
TIMESTAMP_DIGITS_MAX: Final = 19  # digits of an int64 timestamp (§9.3: parsed as int64, ≥ 0)
#: Values an ``embed`` filter may name (§11.4).
EMBEDS: Final = frozenset({"threads", "posts", "votes", "keys"})


class RequestRefused(InvalidObject):
    """A POST request the server refuses under §11.4 (answered with 400)."""

    stage = "request"
    status = 400


# --------------------------------------------------------------------------- building (§11.4)


def _pow_text(page: ApiResponse) -> str:
    """What a request PoW covers: the signed page with ``proof_of_work`` blanked (§4.1 PoW row)."""
    return canonical.dumps(replace(page, proof_of_work=""))


def build_request(
    page: ApiResponse,
    key: signing.SigningKey,
    minter: mim_pow.Minter,
    difficulty: int = REQUEST_MIN_POW,
) -> ApiResponse:
    """A POST request as the reference client sends it: sign, then PoW signed by the node key."""
    signed = sign_page(replace(page, proof_of_work=""), key)
    work = minter(_pow_text(signed), difficulty)
    return replace(signed, proof_of_work=mim_pow.sign_prefix(work, key.sign))


# --------------------------------------------------------------------------- request checks (§11.4)


def _refuse(field: str, rule: str, detail: str) -> RequestRefused:
    return RequestRefused(field, rule, detail)


def _check_address(page: ApiResponse) -> None:
    address = page.address
    if address.port <= 0:
        raise _refuse("address.port", "request.port", "port must be over 0")
    if address.type == 0:
        raise _refuse("address.type", "request.node_type", "node type must not be 0")
    if address.client.name != CLIENT.name:
        raise _refuse(
            "address.client.name",
            "request.client",
            f"client name {address.client.name[:32]!r}, need {CLIENT.name!r}",
        )
    subprotocols = address.protocol.subprotocols or ()
    if not any(sub.name == PROTOCOL_C0 for sub in subprotocols):
        raise _refuse("address.protocol.subprotocols", "request.subprotocol", "no c0 subprotocol")
    try:  # what the sender says of itself is stored first-party: hold it to the bounds
        bounds.check(address)
        bounds.check_protocol(address.protocol)
    except InvalidObject as exc:
        raise _refuse(exc.field, exc.rule, exc.detail) from exc


def _check_freshness(page: ApiResponse, now: int) -> None:
    if not page.node_public_key:
        raise _refuse("node_public_key", "request.public_key", "empty")
    if not page.nonce:
        raise _refuse("nonce", "request.nonce", "empty")
    if len(page.nonce.encode("utf-8", "surrogatepass")) > NONCE_MAX:
        raise _refuse("nonce", "request.nonce", f"over {NONCE_MAX} bytes")
    if not page.timestamp:
        raise _refuse("timestamp", "request.timestamp", "empty")
    skew = page.timestamp - now
    if not -CLOCK_SKEW_SECONDS < skew < CLOCK_SKEW_SECONDS:
        raise _refuse(
            "timestamp",
            "request.timestamp",
            f"{skew:+d} s from server time, outside ±{CLOCK_SKEW_SECONDS} s",
        )


def check_request(
    page: ApiResponse,
    *,
    now: int,
    nonce_seen: Callable[[str, str], bool] | None = None,
    min_pow: int = REQUEST_MIN_POW,
) -> None:
    """Refuse a POST request that fails §11.4, naming the first broken rule.

    ``nonce_seen(public_key, nonce)`` answers whether the nonce was used before by that key and
    remembers it; it is asked last, so a request refused for another reason spends no nonce.
    Without it the caller checks the nonce itself, after this check passed (a nonce memory
    shared over the network cannot be asked from here). Page signatures of requests are not
    checked (the reference does not either).
    """
    _check_address(page)
    _check_freshness(page, now)
    if page.entity_version != 1:
        raise _refuse("entity_version", "request.entity_version", "must be 1")
    try:
        mim_pow.check(
            _pow_text(page),
            page.proof_of_work,
            page.node_public_key,
            min_pow,
            key_field="node_public_key",
        )
    except InvalidObject as exc:
        raise _refuse(exc.field, exc.rule, exc.detail) from exc
    if nonce_seen is not None and nonce_seen(page.node_public_key, page.nonce):
        raise _refuse("nonce", "request.nonce_reused", "nonce already used by this key")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """What a POST request's filters ask for (§11.4)."""

    start: int
    end: int
    fingerprints: tuple[str, ...] = ()
    embeds: tuple[str, ...] = ()


def _timestamp_value(text: str, index: int) -> int:
    where = f"filters.timestamp[{index}]"
    if not text.isascii() or not text.isdigit():
        raise _refuse(where, "filter.timestamp", f"{text[:24]!r} is not a whole number ≥ 0")
    if len(text) > TIMESTAMP_DIGITS_MAX or int(text) >= 2**63:
        raise _refuse(where, "filter.timestamp", f"{text[:24]!r}… is over 2^63 - 1")
    return int(text)


def _fingerprints(values: Sequence[str]) -> list[str]:
    """Fingerprint filter values, each 1..64 bytes of text a database can hold (no NUL)."""
    for n, value in enumerate(values):
        size = len(value.encode("utf-8", "surrogatepass"))
        if not 0 < size <= bounds.FINGERPRINT_MAX or "\x00" in value:
            raise _refuse(
                f"filters.fingerprint[{n}]",
                "filter.fingerprint",
                f"{value[:24]!r} is not 1..{bounds.FINGERPRINT_MAX} bytes without NUL",
            )
    return list(values)


def _embeds(values: Sequence[str]) -> list[str]:
    """Embed filter values: known ones (§11.4), each kept once."""
    unknown = [v for v in values if v not in EMBEDS]
    if unknown:
        raise _refuse("filters.embed", "filter.embed", f"unknown embed {unknown[0][:32]!r}")
    return list(dict.fromkeys(values))


def parse_filters(
    filters: Iterable[Filter] | None,
    *,
    now: int,
    head_seconds: int,
    max_values: int = FILTER_VALUES_MAX,
) -> Query:
    """The query of a request's filters; a timestamp filter needs two values (§20.7).

    At most ``FILTERS_MAX`` filters of at most ``max_values`` values each (§9.3); fingerprints are
    1..64 bytes without NUL, embeds known and kept once, timestamps whole numbers below 2^63.
    """
    start = end = 0
    timed = False
    fingerprints: list[str] = []
    embeds: list[str] = []
    given = tuple(filters or ())
    if len(given) > FILTERS_MAX:
        raise _refuse("filters", "filter.count", f"{len(given)} filters, at most {FILTERS_MAX}")
    for item in given:
        values = item.values or ()
        if len(values) > max_values:
            raise _refuse(
                f"filters.{item.type[:16]}",
                "filter.values",
                f"{len(values)} values, at most {max_values}",
            )
        if item.type == "timestamp":
            if len(values) != 2:  # [start, end]
                raise _refuse("filters.timestamp", "filter.timestamp_values", "needs 2 values")
            start, end = (_timestamp_value(v, i) for i, v in enumerate(values))
            timed = bool(start or end)
        elif item.type == "fingerprint":
            fingerprints.extend(_fingerprints(values))
        elif item.type == "embed":
            embeds.extend(_embeds(values))
        elif item.type or values:
            raise _refuse("filters.type", "filter.type", f"unknown filter {item.type[:32]!r}")
    if len(fingerprints) > max_values:
        raise _refuse("filters.fingerprint", "filter.values", f"over {max_values} fingerprints")
    if timed and fingerprints:
        raise _refuse("filters", "filter.exclusive", "timestamp and fingerprint filters together")
    start = start or now - head_seconds
    end = end or now
    if start > end:
        raise _refuse("filters.timestamp", "filter.timestamp_order", "start is after end")
    unique = tuple(dict.fromkeys(fingerprints))
    return Query(start=start, end=end, fingerprints=unique, embeds=tuple(dict.fromkeys(embeds)))


def timestamp_filter(start: int, end: int) -> tuple[Filter, ...]:
    """``filters`` of a page covering [start, end]."""
    return (Filter(type="timestamp", values=(str(start), str(end))),)

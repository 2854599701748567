"""Where a stranger says a node is: one check before an address is stored or dialled (§13.6).

Every address the node learns (a POST's sender, a submission, a peer's page, a stored row the
syncer is about to dial) passes :func:`check_place` (or :func:`checked`, for a whole ``Address``),
which gives the place in one canonical spelling or raises :class:`relay.AddressRefused` naming the
field, the rule and the value:

- IPv4 in any form a resolver accepts (``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``0177.0.0.1``)
  becomes its dotted quad; IPv6 becomes its compressed lower-case form, brackets removed, and an
  IPv4-mapped or IPv4-compatible address (``::ffff:127.0.0.1``) the IPv4 address it carries;
  a zone (``fe80::1%eth0``) is refused;
- a host name is lower-cased, loses a trailing dot, is IDNA-encoded and must be a valid DNS name
  (labels of letters, digits and hyphens, 1-63 bytes, 253 in all); a name whose last label is
  numeric is read as IPv4, as resolvers do;
- a port is 1-65535; a sublocation is a plain URL path (no ``..``, query, fragment, backslash,
  space or control character).

Then the place must be one the public network can reach: loopback, unspecified, link-local,
private, shared (CGNAT), multicast, reserved and documentation ranges are refused, and so are the
names that stand for them (``localhost``, ``*.localhost``, ``*.local``, ``*.internal``,
``*.home.arpa``, single-label names), unless the operator allows them with ``MIM_ALLOWED_NETWORKS``
(a local test network lists ``127.0.0.0/8``, a LAN its own ranges): entries are networks in CIDR
form, or names (``gateway``) and name suffixes (``.internal``).

A public-looking name can still resolve to a private address, now or after it was checked (DNS
rebinding), so whoever dials a name checks each address it resolves to with
:func:`check_resolved` before connecting, and connects only to an address that passed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, replace
from typing import Final

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from mim.entities import Address
from mim.nodes import LocationType
from relay import AddressRefused
from relay.settings import MIXIN_CONFIG

__all__ = [
    "AddressRules",
    "AddressSettings",
    "Place",
    "check_place",
    "check_resolved",
    "checked",
    "parse_rules",
]

_NAME_MAX: Final = 253  # bytes of a DNS name (RFC 1035 §2.3.4)
_LABEL: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# names that never lead to the public network: RFC 6761 (localhost), RFC 6762 (local),
# RFC 8375 (home.arpa), ICANN's private-use TLD (internal)
_PRIVATE_SUFFIXES: Final = ("localhost", "local", "internal", "home.arpa")
_SUBLOCATION_BAD: Final = re.compile(r"[\x00-\x20\x7f?#\\]")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressRules:
    """What the operator allows beyond the public network: networks and names."""

    networks: tuple[IpNetwork, ...] = ()
    names: tuple[str, ...] = ()  # exact names, or suffixes starting with "."

    def allows_ip(self, ip: IpAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def allows_name(self, name: str) -> bool:
        return any(name == n or (n.startswith(".") and name.endswith(n)) for n in self.names)


def parse_rules(text: str) -> AddressRules:
    """The rules of ``MIM_ALLOWED_NETWORKS``: comma-separated CIDR networks, names, ``.suffixes``;
    a ``ValueError`` names the entry that is neither."""
    networks: list[IpNetwork] = []
    names: list[str] = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        bare = entry.removeprefix(".").rstrip(".")
        if not bare or not all(_LABEL.match(label) for label in bare.split(".")):
            raise ValueError(f"{raw.strip()!r} is neither a network (CIDR) nor a name")
        names.append(("." if entry.startswith(".") else "") + bare)
    return AddressRules(tuple(networks), tuple(names))


class AddressSettings(BaseSettings):
    """Which non-public places the node may store and dial; a fixed ``MIM_`` name."""

    model_config = MIXIN_CONFIG

    allowed_networks: str = Field(
        "",
        validation_alias="MIM_ALLOWED_NETWORKS",
        description="Networks (CIDR), names and `.suffixes` stored and dialled although not"
        " public (loopback, private, link-local...), comma-separated; a local test network"
        " lists `127.0.0.0/8`.",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_rules(value)
        return value

    def address_rules(self) -> AddressRules:
        return parse_rules(self.allowed_networks)


@dataclass(frozen=True, slots=True)
class Place:
    """A checked place: canonical location, its location type (§10.3), port, sublocation."""

    location: str
    location_type: LocationType
    port: int
    sublocation: str = ""


def _refuse(field: str, rule: str, reason: str) -> AddressRefused:
    return AddressRefused(field, rule, reason)


def _special(ip: IpAddress) -> str:
    """The range ``ip`` falls in when it is not a public unicast address, else ''."""
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return "" if ip.is_global else "non-global"


def _unwrap(ip: ipaddress.IPv6Address) -> IpAddress:
    """The IPv4 address an IPv4-mapped or -compatible IPv6 address carries, else ``ip``."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:  # ::a.b.c.d (deprecated, still routed so)
        return ipaddress.IPv4Address(packed[12:])
    return ip


def _ipv4_form(name: str) -> ipaddress.IPv4Address | None:
    """``name`` read as a resolver reads a numeric host (``127.1``, ``0x7f.1``), or None."""
    if not _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        raise _refuse("location", "address.location_syntax", f"{name[:64]!r} is no IPv4") from None


def _host(location: str, field: str) -> IpAddress | str:
    """The location as an IP address, or as a canonical host name."""
    text = location.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise _refuse(field, "address.location_empty", "no location")
    if "%" in text:
        raise _refuse(field, "address.location_zone", f"{text[:64]!r} names a zone")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return _unwrap(ip) if isinstance(ip, ipaddress.IPv6Address) else ip
    name = text.lower().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refuse(field, "address.location_syntax", f"{text[:64]!r} is no host") from None
    numeric = _ipv4_form(name)
    if numeric is not None:
        return numeric
    if len(name) > _NAME_MAX or not all(_LABEL.match(label) for label in name.split(".")):
        raise _refuse(field, "address.location_syntax", f"{text[:64]!r} is no host name")
    return name


def _private_name(name: str) -> bool:
    return "." not in name or any(
        name == suffix or name.endswith("." + suffix) for suffix in _PRIVATE_SUFFIXES
    )


def check_place(
    location: str,
    port: int,
    rules: AddressRules,
    *,
    sublocation: str = "",
    field: str = "location",
) -> Place:
    """``location:port/sublocation`` in canonical form, or :class:`relay.AddressRefused`."""
    if not 0 < port < 65536:
        raise _refuse("port", "address.port", f"port {port} is not 1..65535")
    sub = sublocation.strip("/")
    if _SUBLOCATION_BAD.search(sub) or ".." in sub.split("/"):
        raise _refuse("sublocation", "address.sublocation", f"{sub[:64]!r} is no plain path")
    host = _host(location, field)
    if isinstance(host, str):
        if _private_name(host) and not rules.allows_name(host):
            raise _refuse(field, "address.private", f"{host!r} is a private name")
        return Place(host, LocationType.URL, port, sub)
    special = _special(host)
    if special and not rules.allows_ip(host):
        raise _refuse(field, "address.private", f"{host} is {special}")
    kind = LocationType.IPV6 if host.version == 6 else LocationType.IPV4
    return Place(str(host), kind, port, sub)


def checked(address: Address, rules: AddressRules) -> Address:
    """``address`` at its canonical place (location type set to match), or AddressRefused."""
    place = check_place(
        address.location,
        address.port,
        rules,
        sublocation=address.sublocation,
        field="location",
    )
    return replace(
        address,
        location=place.location,
        sublocation=place.sublocation,
        location_type=int(place.location_type),
    )


def check_resolved(name: str, ip: str, rules: AddressRules) -> str:
    """``ip``, one address ``name`` resolved to, in canonical form, when the node may dial it:
    public, or in an allowed network, or ``name`` itself allowed; else AddressRefused."""
    if rules.allows_name(name.lower().rstrip(".")):
        return ip
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        raise _refuse("location", "address.resolved", f"{name!r} resolved to {ip!r}") from None
    if isinstance(address, ipaddress.IPv6Address):
        address = _unwrap(address)
    special = _special(address)
    if special and not rules.allows_ip(address):
        raise _refuse("location", "address.private", f"{name!r} resolves to {address}, {special}")
    return ip

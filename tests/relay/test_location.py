"""The one address check: every spelling of a place comes out canonical, or refused by rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mim.entities import Address
from relay import AddressRefused, SettingsError
from relay.location import AddressSettings, check_place, check_resolved, checked, parse_rules
from relay.settings import load

PUBLIC = parse_rules("")


@pytest.mark.parametrize(
    ("given", "canonical", "location_type"),
    [
        ("8.8.8.8", "8.8.8.8", 4),
        ("[2001:4860::8888]", "2001:4860::8888", 6),
        ("2001:4860:0:0:0:0:0:8888", "2001:4860::8888", 6),
        ("::ffff:8.8.8.8", "8.8.8.8", 4),
        ("134744072", "8.8.8.8", 4),
        ("8.8.2056", "8.8.8.8", 4),
        ("Node.Example.COM.", "node.example.com", 3),
        ("bücher.example", "xn--bcher-kva.example", 3),
    ],
)
def test_public_places_come_out_canonical(given: str, canonical: str, location_type: int) -> None:
    """Short, mapped, bracketed, upper-case and international spellings of a public place are
    given in one canonical form, with the location type that form has (§10.3)."""
    place = check_place(given, 443, PUBLIC)
    assert (place.location, place.location_type, place.port) == (canonical, location_type, 443)


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("127.1", "address.private"),
        ("0x7f.0.0.1", "address.private"),
        ("017700000001", "address.private"),
        ("2130706433", "address.private"),
        ("::ffff:127.0.0.1", "address.private"),
        ("::127.0.0.1", "address.private"),
        ("[::1]", "address.private"),
        ("0.0.0.0", "address.private"),
        ("::", "address.private"),
        ("10.0.0.1", "address.private"),
        ("172.16.5.4", "address.private"),
        ("192.168.1.1", "address.private"),
        ("100.64.0.1", "address.private"),
        ("169.254.169.254", "address.private"),
        ("fe80::1", "address.private"),
        ("fd00::1", "address.private"),
        ("224.0.0.1", "address.private"),
        ("ff02::1", "address.private"),
        ("240.0.0.1", "address.private"),
        ("localhost", "address.private"),
        ("LOCALHOST.", "address.private"),
        ("db.localhost", "address.private"),
        ("printer.local", "address.private"),
        ("vault.internal", "address.private"),
        ("router.home.arpa", "address.private"),
        ("gateway", "address.private"),
        ("fe80::1%eth0", "address.location_zone"),
        ("1.2.3.4.5", "address.location_syntax"),
        ("300.1.1.1", "address.location_syntax"),
        ("a..b.example", "address.location_syntax"),
        ("under_score.example", "address.location_syntax"),
        ("", "address.location_empty"),
    ],
)
def test_places_off_the_public_network_are_refused_by_rule(given: str, rule: str) -> None:
    """Loopback in every spelling, unspecified, private, shared, link-local, multicast and
    reserved addresses, private names, zones and malformed hosts are refused naming the rule."""
    with pytest.raises(AddressRefused) as refused:
        check_place(given, 443, PUBLIC)
    assert refused.value.rule == rule
    assert refused.value.as_dict()["field"] == "location"


def test_ports_and_sublocations_are_bounded() -> None:
    """A port outside 1..65535 and a sublocation that is no plain path are refused; a plain
    sublocation loses its outer slashes."""
    for port in (0, 65536, -1):
        with pytest.raises(AddressRefused, match="port"):
            check_place("8.8.8.8", port, PUBLIC)
    for sub in ("../admin", "a/../b", "a?b=1", "a#x", "a b", "a\\b", "a\x00"):
        with pytest.raises(AddressRefused) as refused:
            check_place("8.8.8.8", 80, PUBLIC, sublocation=sub)
        assert refused.value.rule == "address.sublocation"
    assert check_place("8.8.8.8", 80, PUBLIC, sublocation="/relay/v1/").sublocation == "relay/v1"


def test_the_operator_allows_networks_and_names() -> None:
    """Networks, names and suffixes listed in MIM_ALLOWED_NETWORKS are allowed in every spelling;
    what is not listed is still refused."""
    rules = parse_rules("127.0.0.0/8, ::1/128, 10.1.0.0/16, gateway, .internal")
    assert check_place("127.1", 80, rules).location == "127.0.0.1"
    assert check_place("::ffff:127.0.0.2", 80, rules).location == "127.0.0.2"
    assert check_place("[::1]", 80, rules).location == "::1"
    assert check_place("10.1.200.3", 80, rules).location == "10.1.200.3"
    assert check_place("Gateway.", 80, rules).location == "gateway"
    assert check_place("store.internal", 80, rules).location == "store.internal"
    for refused in ("10.2.0.1", "192.168.1.1", "printer.local", "gateway2"):
        with pytest.raises(AddressRefused):
            check_place(refused, 80, rules)


def test_a_bad_allowed_network_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry of MIM_ALLOWED_NETWORKS that is neither a network nor a name is a settings error
    naming the variable and the entry."""
    monkeypatch.setenv("MIM_ALLOWED_NETWORKS", "127.0.0.0/8,not a name!")
    with pytest.raises(SettingsError) as error:
        load(AddressSettings)
    assert "MIM_ALLOWED_NETWORKS" in str(error.value)
    assert "not a name!" in str(error.value)


def test_a_public_name_is_dialled_only_where_it_resolves_to_an_allowed_place() -> None:
    """What a name resolves to is checked as an address would be: a public address passes, a
    loopback, private, mapped or link-local one is refused naming the name and the range, unless
    its network or the name itself is allowed."""
    assert check_resolved("node.example.com", "8.8.8.8", PUBLIC) == "8.8.8.8"
    for ip, special in [
        ("127.0.0.1", "loopback"),
        ("10.0.0.7", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
    ]:
        with pytest.raises(AddressRefused) as refused:
            check_resolved("node.example.com", ip, PUBLIC)
        assert refused.value.rule == "address.private"
        assert "node.example.com" in refused.value.reason and special in refused.value.reason
    assert check_resolved("node.example.com", "10.1.0.9", parse_rules("10.1.0.0/16")) == "10.1.0.9"
    assert check_resolved("Store.Internal.", "10.9.0.1", parse_rules(".internal")) == "10.9.0.1"


def test_checked_moves_an_address_to_its_canonical_place() -> None:
    """A whole address keeps what it says of itself and takes the canonical location and its
    location type."""
    address = Address(location="::ffff:8.8.4.4", location_type=6, port=9, type=2, entity_version=1)
    placed = checked(address, PUBLIC)
    assert (placed.location, placed.location_type, placed.type) == ("8.8.4.4", 4, 2)


@given(location=st.text(max_size=80), port=st.integers(-5, 70000), sub=st.text(max_size=20))
def test_any_input_is_canonical_or_refused(location: str, port: int, sub: str) -> None:
    """Whatever a stranger writes, the check answers a place or raises AddressRefused, and a
    place it answers checks again to itself."""
    try:
        place = check_place(location, port, PUBLIC, sublocation=sub)
    except AddressRefused:
        return
    again = check_place(place.location, place.port, PUBLIC, sublocation=place.sublocation)
    assert again == place

"""Address parsing, formatting and collapsing, checked against netaddr as an oracle."""

from __future__ import annotations

import itertools

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.errors import InvalidAddressError
from egress_rules.model.addresses import Cidr, Family, collapse, parse_address, parse_cidr, split_zero_prefix


@pytest.mark.parametrize(("text", "expected"), [
    ("10.1.2.3", "10.1.2.3/32"),
    ("10.1.2.3/8", "10.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("2001:DB8::1", "2001:db8::1/128"),
    ("2001:db8:0:0::/64", "2001:db8::/64"),
    ("::/0", "::/0"),
    ("::ffff:1.2.3.4", "::ffff:1.2.3.4/128"),
])
def test_parse_cidr_normalises(text: str, expected: str) -> None:
    assert str(parse_cidr(text)) == expected


@pytest.mark.parametrize("text", [
    "", "10.1.2", "010.1.2.3", "10.1.2.3/33", "10.1.2.3/-1", "10.1.2.3/08", "10.1.2.3/ 8", " 10.1.2.3",
    "10.1.2.3/", "1.2.3.4/32/1", "2001:db8::/129", "fe80::1%eth0", "2001:db8::g", "10.1.2.3\n", "1.2.3.4 -j",
    "10.1.2.3/٣",
])
def test_parse_cidr_rejects(text: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_cidr(text)
    assert repr(text) in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidAddressError):
        parse_cidr(["10.0.0.0/8"])  # type: ignore[arg-type]
    with pytest.raises(InvalidAddressError):
        parse_address(None)  # type: ignore[arg-type]


def test_parse_address_rejects_prefix() -> None:
    with pytest.raises(InvalidAddressError):
        parse_address("10.0.0.0/8")


def test_cidr_refuses_host_bits() -> None:
    with pytest.raises(InvalidAddressError):
        Cidr(Family.IPV4, 1, 24)


def test_host_str() -> None:
    assert parse_cidr("192.0.2.7").host_str() == "192.0.2.7"
    assert parse_cidr("192.0.2.0/24").host_str() == "192.0.2.0/24"


v4_cidrs = st.builds(lambda v, n: f"{netaddr.IPAddress(v, 4)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 32))
v6_cidrs = st.builds(lambda v, n: f"{netaddr.IPAddress(v, 6)}/{n}", st.integers(0, 2**128 - 1), st.integers(0, 128))
# Dense small ranges so that overlap and adjacency are common.
v4_dense = st.builds(lambda v, n: f"10.0.{v >> 8}.{v & 255}/{n}", st.integers(0, 1023), st.integers(20, 32))


@given(st.lists(st.one_of(v4_cidrs, v6_cidrs, v4_dense), max_size=40))
def test_collapse_matches_netaddr(texts: list[str]) -> None:
    ours = [str(c) for c in collapse(parse_cidr(t) for t in texts)]
    oracle = [str(n) for n in netaddr.cidr_merge([netaddr.IPNetwork(t).cidr for t in texts])]
    assert sorted(ours) == sorted(oracle)


@given(st.lists(st.one_of(v4_dense, v6_cidrs), min_size=1, max_size=30))
def test_collapse_is_sorted_disjoint_and_covers_the_same_addresses(texts: list[str]) -> None:
    parsed = [parse_cidr(t) for t in texts]
    result = collapse(parsed)
    assert list(result) == sorted(result)
    for a, b in itertools.pairwise(result):
        if a.family == b.family:
            assert a.last < b.network, "overlapping prefixes left unmerged"
            # Adjacent prefixes may stay apart (10.0.0.0/23 and 10.0.2.0/24 form no single prefix);
            # two halves of one prefix may not.
            size = 1 << (a.family.bits - a.prefixlen)
            halves = a.prefixlen == b.prefixlen and a.network % (2 * size) == 0 and b.network == a.network + size
            assert not halves, "two halves of one prefix left unmerged"
    for cidr in parsed:
        assert any(r.covers(cidr) for r in result)


def test_split_zero_prefix() -> None:
    assert [str(c) for c in split_zero_prefix([parse_cidr("0.0.0.0/0"), parse_cidr("::/0")])] == [
        "0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]


def test_address_round_trip_is_canonical() -> None:
    assert str(parse_address("2001:0DB8:0000:0000:0000:0000:0000:0001")) == "2001:db8::1"

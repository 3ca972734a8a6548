"""Name validation and derived kernel-object names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.errors import InvalidNameError
from egress_rules.model.names import (
    is_owned_name,
    key_digest,
    owned_name,
    validate_dns_label,
    validate_dns_subdomain,
    validate_ifname,
)


@pytest.mark.parametrize("name", ["a", "web", "a-b", "a" * 63, "0abc"])
def test_valid_labels(name: str) -> None:
    assert validate_dns_label(name, "x") == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a.b", "a" * 64, 'a"b', "a b", "a\nb", "é", None, 3])
def test_invalid_labels(name: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_dns_label(name, "x")


@pytest.mark.parametrize("name", ["a.b", "node-1.example.com", "a" * 253])
def test_valid_subdomains(name: str) -> None:
    assert validate_dns_subdomain(name, "x") == name


@pytest.mark.parametrize("name", ["a..b", ".a", "a.", "a" * 254, "a_b", "a/b", "x\x00"])
def test_invalid_subdomains(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_dns_subdomain(name, "x")


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 16, "a b", "a/b", "a:b"])
def test_invalid_ifnames(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_ifname(name, "x")


def test_key_digest_is_unambiguous() -> None:
    # The upstream agent hashed "ns-name", so these collided.
    assert key_digest("a-b", "c") != key_digest("a", "b-c")
    assert key_digest(None, "x") != key_digest("", "x")
    assert key_digest("ab", "c") != key_digest("a", "bc")


@given(st.text(max_size=20), st.text(max_size=20))
def test_owned_names_verify_and_fit(namespace: str, name: str) -> None:
    result = owned_name("egress-src4-", key_digest(namespace, name), "egress-rules", 31)
    assert len(result) == 31
    assert is_owned_name(result, "egress-src4-", "egress-rules", 31)
    assert not is_owned_name(result, "egress-src4-", "other-owner", 31)


def test_foreign_name_with_our_prefix_is_not_owned() -> None:
    # The upstream agent's naming: prefix + 17 hex digits of sha1, exactly 31 characters.
    assert not is_owned_name("egress-src4-0123456789abcdef012", "egress-src4-", "egress-rules", 31)
    assert not is_owned_name("egress-src4-short", "egress-src4-", "egress-rules", 31)


def test_owned_name_refuses_a_prefix_that_leaves_no_room() -> None:
    with pytest.raises(InvalidNameError):
        owned_name("x" * 25, "ab" * 32, "o", 31)

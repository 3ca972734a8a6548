"""Configuration validation: mark layout, keep mark, mark users, table range."""

from __future__ import annotations

import pytest

from egress_rules.errors import ConfigError, InvalidNameError, MarkConflictError, MarkLayoutError
from egress_rules.model.config import ChainNames, Config, MarkLayout, MarkUser, TableRange


def test_default_layout_is_the_seeds_fixed_32_bit_layout() -> None:
    layout = MarkLayout()
    assert layout.mark_for(0xABCD) == 0x26ABCD00
    assert layout.capacity == 2**16
    assert layout.prefix_mask == 0xFF000000
    assert layout.owned_mask == 0xFFFFFF00
    assert layout.value_of(0x26ABCD00) == 0xABCD
    assert layout.value_of(0x26ABCD01) is None  # bit outside the layout
    assert layout.value_of(0x27ABCD00) is None  # wrong prefix


@pytest.mark.parametrize("kwargs", [
    {"prefix_shift": 28},                    # prefix field past bit 31
    {"value_shift": 20},                     # value field past bit 31
    {"value_shift": 16},                     # value overlaps prefix
    {"prefix": 0x126},                       # prefix wider than its field
])
def test_bad_layouts(kwargs: dict[str, int]) -> None:
    with pytest.raises(MarkLayoutError):
        MarkLayout(**kwargs)


def test_zero_prefix_is_rejected() -> None:
    with pytest.raises(ConfigError):
        MarkLayout(prefix=0)


def test_keep_mark_must_differ_from_node_marks_and_stay_in_owned_bits() -> None:
    with pytest.raises(MarkLayoutError, match="node-mark prefix"):
        Config(keep_mark=0x26000000)
    with pytest.raises(MarkLayoutError, match="outside the owned mask"):
        Config(keep_mark=0x12000001)


def test_mark_users_are_reported() -> None:
    # The seed layout writes bits 8-31: kube-proxy's 0xc000, Calico's 0xffff0000 and Cilium's 0x0f00 all overlap.
    assert [c.user for c in Config().mark_conflicts(frozenset(MarkUser))] == ["calico", "cilium", "kube-proxy"]
    with pytest.raises(MarkConflictError, match="kube-proxy"):
        Config(other_mark_users=frozenset({MarkUser.KUBE_PROXY}))


def test_a_layout_that_avoids_kube_proxy_and_cilium() -> None:
    layout = MarkLayout(prefix=0x26, prefix_shift=24, prefix_bits=8, value_shift=16, value_bits=8)
    config = Config(mark_layout=layout, keep_mark=0x12000000,
                    other_mark_users=frozenset({MarkUser.KUBE_PROXY, MarkUser.CILIUM}))
    assert config.mark_conflicts() == ()


def test_reserved_bits() -> None:
    with pytest.raises(MarkConflictError, match="reserved_mark_bits"):
        Config(reserved_mark_bits=0x100)


def test_table_range_skips_reserved_ids() -> None:
    span = TableRange(start=250, count=10)
    assert span.capacity == 7
    assert 253 not in span and 252 in span and 260 not in span
    with pytest.raises(ConfigError):
        TableRange(start=253, count=3)
    with pytest.raises(ConfigError):
        TableRange(start=0xFFFFFFFF, count=2)
    with pytest.raises(ConfigError):
        TableRange(start=0)


@pytest.mark.parametrize("kwargs", [
    {"tunnel_device": "a" * 16}, {"tunnel_device": "a b"}, {"set_prefix": "x" * 20}, {"set_prefix": "-x"},
    {"owner": "has space"}, {"owner": 'q"'},
])
def test_bad_names_in_config(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidNameError):
        Config(**kwargs)  # type: ignore[arg-type]


def test_bad_chain_names() -> None:
    with pytest.raises(InvalidNameError):
        ChainNames(reset_mark="X" * 29)
    with pytest.raises(InvalidNameError):
        ChainNames(no_snat="-j ACCEPT")
    with pytest.raises(ConfigError):
        ChainNames(no_snat="EGRESSGATEWAY-SNAT-EIP")
    with pytest.raises(InvalidNameError):
        ChainNames(gateway_prefix="X" * 21)


@pytest.mark.parametrize("kwargs", [
    {"ip_rule_priority": 0}, {"ip_rule_priority": 32766}, {"route_protocol": 4}, {"keep_mark": 2**32},
    {"ipv4": False, "ipv6": False}, {"ipv4": 1},
])
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Config(**kwargs)  # type: ignore[arg-type]

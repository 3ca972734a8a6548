"""The JSON input schema: round trip, strictness, and error paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from egress_rules.errors import EgressRulesError, InvalidAddressError, InvalidInputError, MarkConflictError
from egress_rules.model.config import MarkUser
from egress_rules.model.schema import CompileInput, dump_input, load_input
from tests import scenarios


def test_round_trip() -> None:
    for make in scenarios.SCENARIOS.values():
        item = CompileInput(make(), node_marks={"node-a": 0x26000100}, routing_tables={"node-a": {"node-b": 3001}},
                            tables_in_use={"node-a": frozenset({3000})})
        assert load_input(json.loads(json.dumps(dump_input(item)))) == item


@pytest.mark.parametrize(("document", "path"), [
    ({"policies": [{"name": "p", "gateway_node": "a", "destinations": ["1.2.3.4/33"]}]}, "policies[0].destinations[0]"),
    ({"policies": [{"name": "p", "gateway_node": "a", "sources": [{"cidr": "x"}]}]}, "policies[0].sources[0].cidr"),
    ({"policies": [{"name": "p", "gateway_node": "a", "egress_ip": {"ipv4": "::1"}}]}, "policies[0].egress_ip"),
    ({"policies": [{"name": "p"}]}, "policies[0]"),
    ({"policies": [{"name": "p", "gateway_node": "a", "prio": 1}]}, "policies[0]"),
    ({"nodes": [{"name": "n", "tunnel_ipv4": "1.2.3"}]}, "nodes[0]"),
    ({"config": {"keep_mrk": 1}}, "config"),
    ({"config": {"mark_layout": {"value_bits": "x"}}}, "config.mark_layout.value_bits"),
    ({"config": {"other_mark_users": ["flannel"]}}, "config.other_mark_users[0]"),
    ({"cluster": {"pod": "10.0.0.0/8"}}, "cluster.pod"),
    ({"node_marks": {"a": "zz"}}, "node_marks.a"),
    ({"policies": {}}, "policies"),
    ([], "input"),
])
def test_errors_name_the_path(document: Any, path: str) -> None:
    with pytest.raises(EgressRulesError) as info:
        load_input(document)
    assert info.value.subject.startswith(path), info.value.subject


def test_error_types() -> None:
    with pytest.raises(InvalidAddressError):
        load_input({"cluster": {"pod": ["10.0.0.0/33"]}})
    with pytest.raises(MarkConflictError):
        load_input({"config": {"other_mark_users": ["kube-proxy"]}})
    with pytest.raises(InvalidInputError):
        load_input({"node_marks": {"a": "0x12000000"}})


def test_config_settings_are_read() -> None:
    item = load_input({"config": {"keep_mark": "0x13000000", "tables": {"start": 5000, "count": 10},
                                  "mark_layout": {"value_shift": 16, "value_bits": 8},
                                  "other_mark_users": ["cilium", "kube-proxy"], "ipv6": False}})
    assert item.config.keep_mark == 0x13000000
    assert item.config.tables.start == 5000
    assert item.config.mark_layout.owned_mask == 0xFFFF0000
    assert item.config.other_mark_users == {MarkUser.CILIUM, MarkUser.KUBE_PROXY}
    assert item.config.ipv6 is False


def test_config_round_trips_through_the_schema() -> None:
    from egress_rules.model.config import Config, MarkLayout, TableRange
    from egress_rules.model.schema import dump_config, load_config

    config = Config(tables=TableRange(5000, 10), mark_layout=MarkLayout(value_shift=16, value_bits=8),
                    other_mark_users=frozenset({MarkUser.CILIUM}), ipv6=False, tunnel_device="vx0")
    assert dump_config(Config()) == {}
    assert load_config(json.loads(json.dumps(dump_config(config)))) == config
    item = CompileInput(scenarios.one_policy(), config=config)
    assert load_input(json.loads(json.dumps(dump_input(item)))) == item

"""The in-memory fakes (``tests/fakes``) checked against the real tools.

The planner's property tests run on :class:`tests.fakes.FakeNode`. Here the
same texts (foreign objects, a full render, damage, and plan deltas that
delete, insert, replace and append rules by position, add and remove set
members, sets, ip rules and routes) go to a fake node and to a real
namespace, and the parsed observed states must be equal after each step, as
must the plans the planner makes from each.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_rules.backends import render_all
from egress_rules.backends.base import Output
from egress_rules.backends.iproute import rule_args
from egress_rules.compiler import compile
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import DEFAULT_CONFIG
from egress_rules.plan import plan, render_plan
from egress_rules.plan.model import (
    AddIPRule,
    AddMembers,
    AppendRule,
    CreateChain,
    CreateSet,
    DeleteChain,
    DeleteIPRule,
    DeleteMembers,
    DeleteRoute,
    DeleteRule,
    DestroySet,
    FlushChain,
    InsertRule,
    Plan,
    ReplaceRoute,
    ReplaceRule,
)
from tests.fakes import FakeNode, ToolError
from tests.strategies import cluster_states

from .cases import scenario_state
from .damage import DAMAGES, FOREIGN, Step, apply_steps, extra_selector
from .kernel_node import apply_outputs, comparable, node_namespace, observe_node
from .netns import CommandError

pytestmark = pytest.mark.kernel

CONFIG = DEFAULT_CONFIG
SEQUENCE = ("mixed-roles", "overlapping", "demo", "one-policy", "dual-stack", "empty-destinations", "mixed-roles")


def _same(ns: str, fake: FakeNode, step: str) -> None:
    real = comparable(observe_node(ns, CONFIG), kernel_routes=False)
    assert comparable(fake.observe(CONFIG), kernel_routes=False) == real, f"fake and kernel differ after {step}"


def _both(ns: str, fake: FakeNode, outputs: Sequence[Output]) -> None:
    apply_outputs(ns, outputs)
    fake.apply(tuple(outputs))


def _ops(done: Plan) -> set[type]:
    kinds: set[type] = {type(op) for delta in done.iptables for table in delta.tables for op in table.ops}
    kinds |= {type(op) for op in (*done.sets_before, *done.sets_after)}
    kinds |= {type(op) for delta in (*done.routing, *done.routing_after) for op in delta.ops}
    return kinds


def test_fake_node_matches_the_kernel_through_render_damage_and_deltas() -> None:
    node_name = "node-b"
    first = scenario_state(SEQUENCE[0])
    node = first.node(node_name)
    assert node is not None
    fake = FakeNode()
    seen: set[type] = set()
    with node_namespace(node, uplink=("192.0.2.2/24",)) as ns:
        apply_steps(FOREIGN, ns=ns, fake=fake)
        _same(ns, fake, "the foreign objects")
        _both(ns, fake, render_all(compile(first, node_name)))
        _same(ns, fake, "the full render")
        desired = compile(first, node_name)
        for damage in sorted(DAMAGES):
            apply_steps(DAMAGES[damage](desired), ns=ns, fake=fake)
            _same(ns, fake, f"damage {damage!r}")
        # An ip rule of ours with an extra selector: the kernel deletes by the selectors a delete gives and
        # refuses to add a rule without 'from' next to one with it; the fake must do the same (test_reconcile).
        stray = extra_selector(desired)
        apply_steps(stray, ns=ns, fake=fake)
        _same(ns, fake, "an ip rule of ours with an extra selector")
        ours = next(r for rules in desired.families for r in rules.ip_rules if r.family is Family.IPV4)
        add_ours: list[Step] = [("ip4", f"rule add {rule_args(ours)}\n")]
        with pytest.raises(CommandError, match="File exists"):
            apply_steps(add_ours, ns=ns)
        with pytest.raises(ToolError, match="File exists"):
            apply_steps(add_ours, fake=fake)
        fix = plan(desired, observe_node(ns, CONFIG))
        assert plan(desired, fake.observe(CONFIG)) == fix
        seen |= _ops(fix)
        _both(ns, fake, render_plan(fix, CONFIG))
        _same(ns, fake, "the plan that repairs the stray rule")
        assert plan(desired, observe_node(ns, CONFIG)).is_empty
        for name in SEQUENCE:
            desired = compile(scenario_state(name), node_name)
            from_real = plan(desired, observe_node(ns, CONFIG))
            from_fake = plan(desired, fake.observe(CONFIG))
            assert from_fake == from_real, f"the planner decides differently on the fake before {name}"
            seen |= _ops(from_real)
            _both(ns, fake, render_plan(from_real, CONFIG))
            _same(ns, fake, f"the delta to {name}")
            assert plan(desired, observe_node(ns, CONFIG)).is_empty
    wanted = {AppendRule, InsertRule, ReplaceRule, DeleteRule, CreateChain, FlushChain, DeleteChain, CreateSet,
              AddMembers, DeleteMembers, DestroySet, AddIPRule, DeleteIPRule, ReplaceRoute, DeleteRoute}
    assert wanted <= seen, f"the sequence never exercised {sorted(t.__name__ for t in wanted - seen)}"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(max_nodes=3, max_policies=5), cluster_states(max_nodes=3, max_policies=5), st.data())
def test_fake_node_matches_the_kernel_on_random_transitions(before: ClusterState, after: ClusterState,
                                                             data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    local = data.draw(st.sampled_from(names))
    node = before.node(local)
    assert node is not None
    fake = FakeNode()
    with node_namespace(node) as ns:
        _both(ns, fake, render_all(compile(before, local)))
        _same(ns, fake, "the full render")
        desired = compile(after, local)
        delta = plan(desired, observe_node(ns, CONFIG))
        assert plan(desired, fake.observe(CONFIG)) == delta
        _both(ns, fake, render_plan(delta, CONFIG))
        _same(ns, fake, "the delta")


#: Texts that must fail on both; lines before the failing one apply (ipset, ip) or not (an iptables table block).
FAILING: dict[str, Step] = {
    "insert past the end": ("iptables", "*nat\n:EGRT-NEW - [0:0]\nCOMMIT\n"
                                        "*mangle\n-I PREROUTING 9 -j ACCEPT\nCOMMIT\n"),
    "replace past the end": ("iptables", "*mangle\n-R EGRESSGATEWAY-RESET-MARK 5 -j RETURN\nCOMMIT\n"),
    "delete past the end": ("ip6tables", "*nat\n-D EGRESSGATEWAY-NO-SNAT 7\nCOMMIT\n"),
    "delete a chain still jumped to": ("iptables", "*nat\n-F EGRESSGATEWAY-NO-SNAT\n-X EGRESSGATEWAY-NO-SNAT\n"
                                                   "COMMIT\n"),
    "jump to a missing chain": ("iptables", "*filter\n-A FORWARD -j EGRT-MISSING\nCOMMIT\n"),
    "match a missing set": ("iptables", "*filter\n-A FORWARD -m set --match-set egrt-missing src -j ACCEPT\nCOMMIT\n"),
    "chain name too long": ("iptables", "*filter\n:EGRT-ABCDEFGHIJKLMNOPQRSTUVWXYZ - [0:0]\nCOMMIT\n"),
    "destroy a referenced set": ("ipset", "create egrt-a hash:net family inet\ndestroy egress-cluster-cidr-v4\n"),
    "set name too long": ("ipset", "create egrt-b hash:net family inet\ncreate egrt-0123456789012345678901234567 "
                                   "hash:net family inet\n"),
    "recreate with another maxelem": ("ipset", "create egress-cluster-cidr-v6 hash:net family inet6 maxelem 1024 "
                                               "-exist\n"),
    "add a zero prefix": ("ipset", "create egrt-c hash:net family inet\nadd egrt-c 10.1.0.0/16\n"
                                   "add egrt-c 0.0.0.0/0\n"),
    "add twice": ("ipset", "create egrt-d hash:net family inet\nadd egrt-d 10.2.0.0/16\nadd egrt-d 10.2.0.0/16\n"),
    "delete a missing member": ("ipset", "create egrt-e hash:net family inet\ndel egrt-e 10.3.0.0/16\n"),
    "swap different families": ("ipset", "create egrt-f hash:net family inet6\nswap egrt-f egress-cluster-cidr-v4\n"),
    "add the same ip rule twice": ("ip4", "rule add fwmark 0x1/0x1 table 201 pref 101\n"
                                          "rule add fwmark 0x1/0x1 table 201 pref 101\n"),
    "delete a missing ip rule": ("ip6", "rule del pref 102 fwmark 0x2/0x2 table 202\n"),
    "route on a missing device": ("ip4", "route replace default via 172.31.0.9 dev egrt-nope table 203 proto 230\n"),
    "delete a missing route": ("ip6", "route del default table 204 proto 230\n"),
}


@pytest.mark.parametrize("name", sorted(FAILING))
def test_fake_tools_fail_where_the_real_tools_fail(name: str) -> None:
    state = scenario_state("empty-destinations")  # its rules name the cluster set
    node = state.node("node-b")
    assert node is not None
    fake = FakeNode()
    with node_namespace(node) as ns:
        _both(ns, fake, render_all(compile(state, "node-b")))
        step = FAILING[name]
        with pytest.raises(CommandError):
            apply_steps([step], ns=ns)
        with pytest.raises(ToolError):
            apply_steps([step], fake=fake)
        _same(ns, fake, f"the failing {name!r}")

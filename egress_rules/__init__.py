"""egress-rules: compile Kubernetes egress-gateway policies into Linux datapath rules.

The core is pure: :func:`compile` maps cluster state and a local node to a typed
:class:`RuleSet`; backends in :mod:`egress_rules.backends` serialize it,
:func:`plan` turns it and a node's observed state into the smallest change,
:class:`NodeCompiler` keeps a node's RuleSet up to date in time proportional to
a change, and :mod:`egress_rules.tracer` explains where a packet goes.
"""

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.backends import BACKENDS, Output, render_all
from egress_rules.compiler import compile
from egress_rules.compiler.incremental import NodeCompiler, Update
from egress_rules.errors import EgressRulesError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr
from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy, PolicyKey
from egress_rules.model.config import ChainNames, Config, MarkLayout, MarkUser, TableRange
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState
from egress_rules.plan import Plan, plan, render_plan
from egress_rules.plan.transition import plan_transition

__all__ = [
    "BACKENDS", "ChainNames", "Cidr", "ClusterCIDRs", "ClusterState", "Config", "EgressIP", "EgressRulesError",
    "Endpoint", "Family", "IPAddress", "MarkAllocator", "MarkLayout", "MarkUser", "Node", "NodeCompiler",
    "ObservedState", "Output", "Plan", "Policy", "PolicyKey", "RuleSet", "TableAllocator", "TableRange", "Update",
    "compile", "parse_address", "parse_cidr", "plan", "plan_transition", "render_all", "render_plan",
]

"""egress-rules: compile Kubernetes egress-gateway policies into Linux datapath rules.

The core is pure: :func:`compile` maps cluster state and a local node to a typed
:class:`RuleSet`; backends in :mod:`egress_rules.backends` serialize it.
"""

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.backends import BACKENDS, Output, render_all
from egress_rules.compiler import compile
from egress_rules.errors import EgressRulesError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr
from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy, PolicyKey
from egress_rules.model.config import ChainNames, Config, MarkLayout, MarkUser, TableRange
from egress_rules.model.ruleset import RuleSet

__all__ = [
    "BACKENDS", "ChainNames", "Cidr", "ClusterCIDRs", "ClusterState", "Config", "EgressIP", "EgressRulesError",
    "Endpoint", "Family", "IPAddress", "MarkAllocator", "MarkLayout", "MarkUser", "Node", "Output", "Policy",
    "PolicyKey", "RuleSet", "TableAllocator", "TableRange", "compile", "parse_address", "parse_cidr", "render_all",
]

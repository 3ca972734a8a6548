"""The packet tracer: which source address a pod's traffic leaves with, and why.

:func:`trace` evaluates one packet through one node's RuleSet in the kernel's
order; :func:`trace_cluster` follows it through the egress tunnel and the
underlay to where it leaves the cluster; :func:`format_cluster_trace` prints
the result. Environments (interfaces, main routes, the CNI's masquerade) are
input: :func:`example_environments` builds the demo topology's.
"""

from egress_rules.tracer.cluster import DEFAULT_MAX_HOPS, trace_cluster
from egress_rules.tracer.example import example_environments
from egress_rules.tracer.model import (
    ClusterOutcome,
    ClusterTrace,
    CniMasquerade,
    Disposition,
    Hook,
    Hop,
    Interface,
    IPRuleCheck,
    MainRoute,
    NodeEnvironment,
    NodeTrace,
    Outcome,
    Packet,
    PathKind,
    RouteKind,
    RoutingDecision,
    SourceKind,
    Step,
    Translation,
    Verdict,
)
from egress_rules.tracer.node import trace
from egress_rules.tracer.render import describe_provenance, format_cluster_trace, format_node_trace, summary

__all__ = [
    "DEFAULT_MAX_HOPS", "ClusterOutcome", "ClusterTrace", "CniMasquerade", "Disposition", "Hook", "Hop",
    "IPRuleCheck", "Interface", "MainRoute", "NodeEnvironment", "NodeTrace", "Outcome", "Packet", "PathKind",
    "RouteKind", "RoutingDecision", "SourceKind", "Step", "Translation", "Verdict", "describe_provenance",
    "example_environments", "format_cluster_trace", "format_node_trace", "summary", "trace", "trace_cluster",
]

"""Everything observed on one node, as the planner takes it."""

from __future__ import annotations

import attrs

from egress_rules.model.addresses import Family
from egress_rules.observed.iproute import ObservedIPRule, ObservedRoute
from egress_rules.observed.ipset import ObservedSet
from egress_rules.observed.iptables import IptablesDump


@attrs.frozen
class ObservedState:
    """What a node has now. A family left out (``None``) is taken as "not read": the planner refuses it.

    Build it with the parsers of this package from the tools' output.
    """

    iptables: dict[Family, IptablesDump] = attrs.field(factory=dict)
    ipsets: tuple[ObservedSet, ...] = ()
    ip_rules: dict[Family, tuple[ObservedIPRule, ...]] = attrs.field(factory=dict)
    routes: dict[Family, tuple[ObservedRoute, ...]] = attrs.field(factory=dict)

"""Everything observed on one node, as the planner takes it.

The planner works on one datapath per node: ``nft`` left out (``None``) means
the iptables datapath (iptables dumps and ipsets are read); ``nft`` given
means the nftables datapath, planned from the nft listing alone (the
iptables dumps and ipsets must then be left out).
"""

from __future__ import annotations

import attrs

from egress_rules.model.addresses import Family
from egress_rules.observed.iproute import ObservedIPRule, ObservedRoute
from egress_rules.observed.ipset import ObservedSet
from egress_rules.observed.iptables import IptablesDump
from egress_rules.observed.nft import NftRuleset


@attrs.frozen
class ObservedState:
    """What a node has now. A family left out (``None``) is taken as "not read": the planner refuses it.

    Build it with the parsers of this package from the tools' output.
    """

    iptables: dict[Family, IptablesDump] = attrs.field(factory=dict)
    ipsets: tuple[ObservedSet, ...] = ()
    ip_rules: dict[Family, tuple[ObservedIPRule, ...]] = attrs.field(factory=dict)
    routes: dict[Family, tuple[ObservedRoute, ...]] = attrs.field(factory=dict)
    # ``nft -j list ruleset`` parsed; given only on a node that uses the nftables datapath.
    nft: NftRuleset | None = None

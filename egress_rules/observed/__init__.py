"""Observed state: pure parsers of what the kernel tools print.

Each parser keeps what the library owns in full (typed, comparable with the
desired RuleSet) and everything else as opaque foreign objects that the
planner never touches. Ownership is decided by explicit markers only (see
:mod:`egress_rules.observed.ownership`). Truncated or garbled input raises
:class:`~egress_rules.errors.ParseError` naming the source and line.
"""

from egress_rules.observed.iproute import ObservedIPRule, ObservedRoute, parse_ip_routes, parse_ip_rules
from egress_rules.observed.ipset import ObservedSet, parse_ipset_save
from egress_rules.observed.iptables import IptablesDump, SavedChain, SavedRule, SavedTable, parse_iptables_save
from egress_rules.observed.nft import (
    ForeignNftTable,
    NftChain,
    NftHook,
    NftRule,
    NftRuleset,
    NftSet,
    NftTable,
    parse_nft_list,
)
from egress_rules.observed.ownership import Ownership
from egress_rules.observed.state import ObservedState

__all__ = [
    "ForeignNftTable", "IptablesDump", "NftChain", "NftHook", "NftRule", "NftRuleset", "NftSet", "NftTable",
    "ObservedIPRule", "ObservedRoute", "ObservedSet", "ObservedState", "Ownership", "SavedChain", "SavedRule",
    "SavedTable", "parse_ip_routes", "parse_ip_rules", "parse_ipset_save", "parse_iptables_save", "parse_nft_list",
]

"""Backends: each serializes a RuleSet for one tool behind the :class:`Backend` protocol."""

from __future__ import annotations

from egress_rules.backends.base import Backend, Output
from egress_rules.backends.iproute import IprouteBackend
from egress_rules.backends.ipset import IpsetBackend
from egress_rules.backends.iptables import IptablesBackend
from egress_rules.backends.nftables import NftablesBackend
from egress_rules.gcpause import without_gc
from egress_rules.model.addresses import Family
from egress_rules.model.ruleset import RuleSet

BACKENDS: dict[str, Backend] = {
    "iptables": IptablesBackend(Family.IPV4),
    "ip6tables": IptablesBackend(Family.IPV6),
    "ipset": IpsetBackend(),
    "iproute": IprouteBackend(),
    "nft": NftablesBackend(),
}

# The iptables datapath, in the order its outputs must be applied: sets before the rules that name them,
# and routes before the rules that mark packets for them (a marked packet must always find its route).
APPLY_ORDER = ("ipset", "iproute", "iptables", "ip6tables")
# The same datapath with nftables in place of iptables and ipset.
NFT_APPLY_ORDER = ("iproute", "nft")


@without_gc
def render_all(ruleset: RuleSet, formats: tuple[str, ...] = APPLY_ORDER) -> tuple[Output, ...]:
    """Every output of ``formats`` for ``ruleset``, in apply order. Nothing is returned if any backend fails."""
    return tuple(output for name in formats for output in BACKENDS[name].render(ruleset))


__all__ = ["APPLY_ORDER", "BACKENDS", "NFT_APPLY_ORDER", "Backend", "Output", "render_all"]

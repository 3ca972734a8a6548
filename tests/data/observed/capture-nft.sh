#!/usr/bin/env bash
# Regenerates the nftables listings in this directory from the real nft, inside throwaway network namespaces
# (never the root namespace). Run as root from the repository root: tests/data/observed/capture-nft.sh
#   nft-list.json        the demo's node-a nft output, next to iptables-nft tables (a CNI masquerade, a kube
#                        chain with a quoted comment) and other software's tables (one named like ours in family inet)
#   nft-list-table.json  the same node's `nft -j list table ip egress_rules`
#   nft-forms.list.json  nft-forms.input.json as nft lists it back: every list form the parser must read
set -euo pipefail
here=$(dirname "$0")
ns="egrt-capture-nft-$$"
forms="egrt-capture-forms-$$"
out=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; ip netns del "$forms" 2>/dev/null || true; rm -rf "$out"' EXIT
egress-rules demo --node node-a --format nft --out "$out" >/dev/null
ip netns add "$ns"
nsx() { ip netns exec "$ns" "$@"; }
nsx nft -j -f "$out/nftables.json"
nsx iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
nsx ip6tables -t nat -A POSTROUTING -s fd00:244::/32 ! -d fd00:244::/32 -j MASQUERADE
nsx iptables -t filter -N KUBE-FORWARD
nsx iptables -t filter -A FORWARD -j KUBE-FORWARD
nsx iptables -t filter -A KUBE-FORWARD -m comment --comment 'cni: "quoted" accept' -m mark --mark 0x4000/0x4000 -j ACCEPT
nsx nft -f - <<'NFT'
table inet cni {
	set pods {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/16 }
	}
	chain forward_cni {
		type filter hook forward priority 0; policy accept;
		ip saddr @pods counter accept
	}
}
table inet egress_rules {
	chain not_ours {
		type filter hook output priority 0; policy accept;
	}
}
table ip egress_rules_other {
	chain c {
	}
}
NFT
nsx nft -j list ruleset > "$here/nft-list.json"
nsx nft -j list table ip egress_rules > "$here/nft-list-table.json"
ip netns add "$forms"
ip netns exec "$forms" nft -j -f "$here/nft-forms.input.json"
ip netns exec "$forms" nft -j list ruleset > "$here/nft-forms.list.json"

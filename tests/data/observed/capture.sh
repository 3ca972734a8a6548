#!/usr/bin/env bash
# Regenerates the dumps in this directory: applies the demo's node-a output plus some foreign objects
# inside a throwaway network namespace (never the root namespace) and saves what the real tools print.
# Run as root from the repository root: tests/data/observed/capture.sh
set -euo pipefail
here=$(dirname "$0")
ns="egr-capture-$$"
out=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$out"' EXIT
egress-rules demo --node node-a --out "$out" >/dev/null
ip netns add "$ns"
nsx() { ip netns exec "$ns" "$@"; }
ip -n "$ns" link add egress.vxlan type vxlan id 100 dstport 7789
ip -n "$ns" addr add 172.31.0.1/16 dev egress.vxlan
ip -n "$ns" addr add fd11::1/112 dev egress.vxlan nodad
ip -n "$ns" link set egress.vxlan up
ip -n "$ns" link add eth0 type veth peer name eth1
ip -n "$ns" link set eth0 up
ip -n "$ns" addr add 192.0.2.1/24 dev eth0
ip -n "$ns" addr add 2001:db8:1::1/64 dev eth0 nodad
nsx ipset restore < "$out/ipset.restore"
nsx iptables-restore --noflush < "$out/iptables.rules"
nsx ip6tables-restore --noflush < "$out/ip6tables.rules"
ip -n "$ns" -4 -batch "$out/iproute-v4.batch"
ip -n "$ns" -6 -batch "$out/iproute-v6.batch"
# Foreign objects: a CNI masquerade, an early accept with quotes in its comment, a kube chain,
# a set named like ours, a set of another type, an ip rule and a route of someone else.
nsx iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
nsx iptables -t mangle -I PREROUTING 1 -m comment --comment 'cni: "quoted" accept' -m conntrack --ctstate ESTABLISHED -j ACCEPT
nsx iptables -t filter -N KUBE-FORWARD
nsx iptables -t filter -A FORWARD -j KUBE-FORWARD
nsx iptables -t filter -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
nsx ipset create egress-src4-0123456789abcdef012 hash:net
nsx ipset add egress-src4-0123456789abcdef012 10.9.0.0/16
nsx ipset create kube-foreign hash:ip,port
nsx ipset add kube-foreign 10.0.0.1,tcp:80
ip -n "$ns" rule add fwmark 0x4000/0x4000 table 200 pref 100
ip -n "$ns" route add default via 192.0.2.100 dev eth0 table 200
nsx iptables-save > "$here/iptables-save.nft.txt"
nsx ip6tables-save > "$here/ip6tables-save.nft.txt"
nsx ipset save > "$here/ipset-save.txt"
ip -n "$ns" -4 -j rule > "$here/ip-rule.v4.json"
ip -n "$ns" -6 -j rule > "$here/ip-rule.v6.json"
ip -n "$ns" -4 -j route show table all > "$here/ip-route.v4.json"
ip -n "$ns" -6 -j route show table all > "$here/ip-route.v6.json"
nsx iptables-legacy-restore --noflush < "$out/iptables.rules"
nsx iptables-legacy -t nat -A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE
nsx iptables-legacy-save > "$here/iptables-save.legacy.txt"

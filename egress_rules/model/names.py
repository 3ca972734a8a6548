"""Name rules: what a Kubernetes name may be, and how kernel object names are derived.

Kubernetes names reach every output (comments, hashed set names), so they are
validated here against the API server's own rules; a name that passes cannot
carry a quote, a space, a newline or any non-ASCII byte. Kernel object names
(ipset 31 characters, iptables chains 28) are built from a configured prefix and
a digest of an unambiguous key, followed by an ownership check so that a set
merely *named like ours* is not mistaken for ours.
"""

from __future__ import annotations

import hashlib
import re

from egress_rules.errors import InvalidNameError

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(rf"\A{_LABEL}\Z")
_SUBDOMAIN_RE = re.compile(rf"\A{_LABEL}(\.{_LABEL})*\Z")

IPTABLES_CHAIN_MAX = 28
IPSET_NAME_MAX = 31
NFT_NAME_MAX = 255
IFNAME_MAX = 15

# Characters allowed in configured kernel-object prefixes and names: no whitespace,
# quotes, or leading '-'/'!' that iptables would read as an option or a negation.
_CHAIN_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_.-]*\Z")
_SET_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_.-]*\Z")
_IFNAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_MARKER_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_NFT_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*\Z")
# Names that parse as keywords break ``nft list`` and text reloads (they work in JSON only).
_NFT_KEYWORDS = frozenset({"table", "chain", "set", "map", "rule", "element", "counter", "dst", "src", "fwd", "all",
                           "ip", "ip6", "inet", "filter", "nat", "route", "accept", "drop", "return", "jump",
                           "goto", "meta", "mark", "ct", "flush", "delete", "add", "insert", "list", "reset"})
# The tables iptables-nft keeps in the ip/ip6 families: our table replaces itself (add, delete, add), so
# it must never be named like one of them.
_NFT_IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
# Chain names that mean something else: ``-j NAME`` picks a built-in verdict or a target extension (the
# libxt_NAME.so of iptables 1.8) before a chain of that name, a built-in chain cannot be a jump target, and
# the nft backend's base chains are ``<table>_<hook>``.
_RESERVED_CHAIN_NAMES = frozenset({
    "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING", "ACCEPT", "DROP", "RETURN", "QUEUE", "ERROR",
    "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNMARK", "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "ECN", "HL",
    "HMARK", "IDLETIMER", "LED", "LOG", "MARK", "MASQUERADE", "NAT", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK",
    "RATEEST", "REDIRECT", "REJECT", "SECMARK", "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE",
    "TOS", "TPROXY", "TRACE", "TTL", "ULOG",
    *(f"{table}_{hook}" for table in ("mangle", "filter", "nat")
      for hook in ("prerouting", "input", "forward", "output", "postrouting")),
})


def validate_dns_label(value: object, subject: str) -> str:
    """A namespace name: RFC 1123 label, at most 63 characters."""
    if not isinstance(value, str) or len(value) > DNS1123_LABEL_MAX or not _LABEL_RE.match(value):
        raise InvalidNameError(subject, f"{value!r} is not a valid RFC 1123 label (lowercase alphanumerics and '-', "
                               f"at most {DNS1123_LABEL_MAX} characters)")
    return value


def validate_dns_subdomain(value: object, subject: str) -> str:
    """An object or node name: RFC 1123 subdomain, at most 253 characters."""
    if not isinstance(value, str) or len(value) > DNS1123_SUBDOMAIN_MAX or not _SUBDOMAIN_RE.match(value):
        raise InvalidNameError(subject, f"{value!r} is not a valid RFC 1123 subdomain (lowercase alphanumerics, '-' "
                               f"and '.', at most {DNS1123_SUBDOMAIN_MAX} characters)")
    return value


def validate_chain_name(value: object, subject: str) -> str:
    if not isinstance(value, str) or not _CHAIN_RE.match(value) or len(value) > IPTABLES_CHAIN_MAX:
        raise InvalidNameError(subject, f"{value!r} is not a usable chain name (a letter, then letters, digits, "
                               f"'_', '.', '-'; at most {IPTABLES_CHAIN_MAX} characters)")
    if value in _RESERVED_CHAIN_NAMES:
        raise InvalidNameError(subject, f"{value!r} is the name of a built-in chain, a verdict or a target "
                               "(a jump to it would not reach our chain)")
    return value


def validate_chain_prefix(value: object, subject: str, room: int) -> str:
    """A chain-name prefix that must leave ``room`` characters for a suffix."""
    if not isinstance(value, str) or not _CHAIN_RE.match(value) or len(value) + room > IPTABLES_CHAIN_MAX:
        raise InvalidNameError(subject, f"{value!r} is not a usable chain prefix (a letter, then letters, digits, "
                               f"'_', '.', '-'; at most {IPTABLES_CHAIN_MAX - room} characters)")
    return value


def validate_set_prefix(value: object, subject: str, room: int) -> str:
    if not isinstance(value, str) or not _SET_RE.match(value) or len(value) + room > IPSET_NAME_MAX:
        raise InvalidNameError(subject, f"{value!r} is not a usable set-name prefix (a letter, then letters, digits, "
                               f"'_', '.', '-'; at most {IPSET_NAME_MAX - room} characters)")
    return value


def validate_ifname(value: object, subject: str) -> str:
    if (not isinstance(value, str) or not _IFNAME_RE.match(value) or len(value) > IFNAME_MAX
            or value in (".", "..")):
        raise InvalidNameError(subject, f"{value!r} is not a valid interface name (at most {IFNAME_MAX} "
                               "characters of letters, digits, '_', '.', '-')")
    return value


def validate_marker(value: object, subject: str, max_len: int = 32) -> str:
    """An ownership marker written into comments: short, no spaces or quotes."""
    if not isinstance(value, str) or not _MARKER_RE.match(value) or len(value) > max_len:
        raise InvalidNameError(subject, f"{value!r} is not a usable marker (letters, digits, '_', '.', '-'; "
                               f"at most {max_len} characters)")
    return value


def validate_nft_name(value: object, subject: str) -> str:
    """An nftables table name: an identifier that is not a keyword of the native syntax."""
    if (not isinstance(value, str) or not _NFT_RE.match(value) or len(value) > NFT_NAME_MAX
            or value in _NFT_KEYWORDS or value in _NFT_IPTABLES_TABLES):
        raise InvalidNameError(subject, f"{value!r} is not a usable nftables name (a letter, then letters, digits, "
                               f"'_'; not a keyword, not one of iptables-nft's tables)")
    return value


def key_digest(*parts: str | None) -> str:
    """A hex digest of an unambiguous encoding of ``parts``.

    Each part is length-prefixed and ``None`` is distinct from every string, so
    ("a-b", "c") and ("a", "b-c") and (None, "x") and ("", "x") never share a key.
    """
    encoded = "".join("-" if part is None else f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(encoded.encode()).hexdigest()


def owned_name(prefix: str, body_digest: str, owner: str, total: int, check_len: int = 4) -> str:
    """``prefix`` + digest + ownership check, exactly ``total`` characters long.

    The check is a digest of the owner marker and everything before it, so a
    name produced by another tool (or another owner) fails :func:`is_owned_name`.
    """
    body_len = total - len(prefix) - check_len
    if body_len < 8:
        raise InvalidNameError(f"prefix {prefix!r}", f"leaves {body_len} characters for the digest; at least 8 needed")
    head = prefix + body_digest[:body_len]
    return head + _check(owner, head)[:check_len]


def is_owned_name(name: str, prefix: str, owner: str, total: int, check_len: int = 4) -> bool:
    """Whether ``name`` was produced by :func:`owned_name` with this prefix and owner."""
    if len(name) != total or not name.startswith(prefix):
        return False
    head, check = name[:-check_len], name[-check_len:]
    if any(c not in "0123456789abcdef" for c in head[len(prefix):]):
        return False
    return _check(owner, head)[:check_len] == check


def _check(owner: str, head: str) -> str:
    return hashlib.sha256(f"{owner}\0{head}".encode()).hexdigest()

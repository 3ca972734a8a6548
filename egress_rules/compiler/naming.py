"""Names and comments of the objects the compiler emits.

Set names hash an unambiguous policy key (namespace and name can never collide
across scopes) and end with an ownership check; comments start with the
configured owner marker, which is what the planner uses to recognise our rules.
"""

from __future__ import annotations

from egress_rules.model.addresses import Family
from egress_rules.model.cluster import PolicyKey
from egress_rules.model.config import Config
from egress_rules.model.names import IPSET_NAME_MAX, is_owned_name, key_digest, owned_name
from egress_rules.model.ruleset import Provenance, Role

_SET_ROLE_TAG = {Role.SOURCES: "src", Role.DESTINATIONS: "dst"}

# The smallest comment limit of the backends (nft 128 bytes, iptables 255). Comments are cut here, in the
# model, so that what the kernel stores is exactly the model's comment: the planners compare rules with
# their comments, and a comment cut only by a backend would never compare equal (the plan would not converge).
COMMENT_MAX_BYTES = 128


def policy_set_prefix(config: Config, role: Role, family: Family) -> str:
    return f"{config.set_prefix}{_SET_ROLE_TAG[role]}{family.value}-"


def policy_set_name(config: Config, role: Role, family: Family, key: PolicyKey) -> str:
    """``egress-src4-<digest><check>``, exactly 31 characters."""
    return owned_name(policy_set_prefix(config, role, family), key_digest(key.namespace, key.name),
                      config.owner, IPSET_NAME_MAX)


def cluster_set_name(config: Config, family: Family) -> str:
    return f"{config.set_prefix}cluster-cidr-{family.suffix}"


def temporary_set_name(config: Config, family: Family) -> str:
    """The scratch set that ``ipset restore`` fills before swapping it in."""
    return f"{config.set_prefix}tmp-{family.suffix}"


def is_owned_set(config: Config, name: str) -> bool:
    """Whether ``name`` is a set this configuration creates (by exact name or a valid ownership check)."""
    if name in {cluster_set_name(config, f) for f in Family} | {temporary_set_name(config, f) for f in Family}:
        return True
    return any(is_owned_name(name, policy_set_prefix(config, role, family), config.owner, IPSET_NAME_MAX)
               for role in _SET_ROLE_TAG for family in Family)


def comment(config: Config, provenance: Provenance) -> str:
    """``<owner>: <role> [policy ns/name] [gateway node]`` — ASCII only, no quotes (names are validated).

    At most :data:`COMMENT_MAX_BYTES` long: long names are cut (the owner marker, at most 33 bytes, always stays).
    """
    parts = [f"{config.owner}:", provenance.role.value]
    if provenance.policy is not None:
        parts += [provenance.policy.kind, str(provenance.policy)]
    if provenance.gateway is not None:
        parts += ["via", provenance.gateway] if provenance.policy is not None else [provenance.gateway]
    return " ".join(parts).encode()[:COMMENT_MAX_BYTES].decode(errors="ignore")


def is_owned_comment(config: Config, text: str) -> bool:
    return text.startswith(f"{config.owner}:")

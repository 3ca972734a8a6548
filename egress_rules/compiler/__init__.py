"""The compiler: cluster state to a node's RuleSet."""

from egress_rules.compiler.compile import compile

__all__ = ["compile"]

"""The backend protocol: one RuleSet in, named text outputs out.

A backend is a small module that serializes the model for one tool. It never
decides datapath semantics (the compiler does) and never runs the tool.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from egress_rules.model.ruleset import RuleSet


@attrs.frozen
class Output:
    """One file to apply: its conventional file name, the command that applies it, and its text.

    ``notes`` are warnings the caller should see: where the tool cannot express
    the datapath exactly as the model says, the backend says so here.
    """

    name: str
    command: str
    text: str
    notes: tuple[str, ...] = ()


class Backend(Protocol):
    """Serializes a RuleSet for one tool."""

    @property
    def name(self) -> str:
        """The format's name on the command line (``iptables``, ``ipset``, ...)."""
        ...

    def render(self, ruleset: RuleSet) -> tuple[Output, ...]:
        """The outputs for ``ruleset``; empty when the tool has nothing to do for it."""
        ...

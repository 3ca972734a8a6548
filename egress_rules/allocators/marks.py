"""Node-mark allocation: one cluster-wide mark per node, stable across compiles.

Every node agent computes the marks of all nodes independently, so the result
must depend only on the node names and the assignments already made: existing
assignments are kept as given, and each new node (in name order) starts probing
at a slot derived from its name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from egress_rules.allocators.probing import CircularProber, stable_start
from egress_rules.errors import MarkConflictError, MarkExhaustedError
from egress_rules.model.config import MarkLayout


def _assignments(values: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(dict(values).items()))


@attrs.frozen
class MarkAllocator:
    """Assigns node marks of ``layout``; ``existing`` maps node name to a full 32-bit mark already in use."""

    layout: MarkLayout = attrs.field(factory=MarkLayout)
    existing: Mapping[str, int] = attrs.field(factory=dict, converter=_assignments)

    def __attrs_post_init__(self) -> None:
        owner: dict[int, str] = {}
        for node, mark in self.existing.items():
            if type(mark) is not int or self.layout.value_of(mark) is None:
                raise MarkConflictError(f"node {node}", f"existing mark {mark!r} is not a node mark of the layout "
                                        f"(prefix {self.layout.prefix_value:#010x}, value bits "
                                        f"{self.layout.value_mask:#010x})")
            if mark in owner:
                raise MarkConflictError(f"node {node}", f"existing mark {mark:#010x} is also node {owner[mark]}'s")
            owner[mark] = node

    def allocate(self, nodes: Iterable[str]) -> dict[str, int]:
        """Marks for ``nodes`` (plus nothing else), keeping every existing assignment among them."""
        wanted = sorted(set(nodes))
        prober = CircularProber(self.layout.capacity)
        result: dict[str, int] = {}
        # Existing marks are reserved even for nodes not requested now: they may come back.
        for mark in self.existing.values():
            value = self.layout.value_of(mark)
            assert value is not None
            prober.take(value)
        for node in wanted:
            if node in self.existing:
                result[node] = self.existing[node]
        for node in wanted:
            if node in result:
                continue
            value = prober.take_from(stable_start(self.layout.capacity, "node-mark", node))
            if value is None:
                raise MarkExhaustedError(f"node {node}", f"all {self.layout.capacity} node-mark values are taken")
            result[node] = self.layout.mark_for(value)
        return dict(sorted(result.items()))

"""Routing-table allocation: one table per gateway node, on each node separately.

The seed's algorithm over the configured range: start at a pseudo-random table
of the range (derived from the local node and gateway names, so it is the same
on every compile), then probe circularly past tables already in use. Tables
the kernel reserves (0, 253, 254, 255) are never handed out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from egress_rules.allocators.probing import CircularProber, stable_start
from egress_rules.errors import TableExhaustedError
from egress_rules.model.config import RESERVED_TABLES, TableRange


def _tables(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


def _assignments(values: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(dict(values).items()))


@attrs.frozen
class TableAllocator:
    """Assigns tables of ``table_range`` on one node.

    ``existing`` maps gateway node to the table it had on the previous compile
    (kept if still valid); ``in_use`` lists tables other software uses on this node.
    """

    table_range: TableRange = attrs.field(factory=TableRange)
    existing: Mapping[str, int] = attrs.field(factory=dict, converter=_assignments)
    in_use: frozenset[int] = attrs.field(default=frozenset(), converter=_tables)

    def allocate(self, local_node: str, gateways: Iterable[str]) -> dict[str, int]:
        """A table for each gateway node in ``gateways`` (those the local node routes to)."""
        span = self.table_range
        wanted = sorted(set(gateways))
        prober = CircularProber(span.count)
        for taken in (*RESERVED_TABLES, *self.in_use):
            if span.start <= taken < span.end:
                prober.take(taken - span.start)
        result: dict[str, int] = {}
        for gateway in wanted:
            table = self.existing.get(gateway)
            if table is not None and table in span and not prober.is_taken(table - span.start):
                prober.take(table - span.start)
                result[gateway] = table
        for gateway in wanted:
            if gateway in result:
                continue
            slot = prober.take_from(stable_start(span.count, "routing-table", local_node, gateway))
            if slot is None:
                raise TableExhaustedError(
                    f"node {local_node}", f"no free routing table in {span.start}..{span.end - 1} for gateway node "
                    f"{gateway} ({len(wanted)} gateways requested)")
            result[gateway] = span.start + slot
        return dict(sorted(result.items()))

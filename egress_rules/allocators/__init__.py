"""Pure allocators for node marks and routing tables."""

from egress_rules.allocators.marks import MarkAllocator
from egress_rules.allocators.tables import TableAllocator

__all__ = ["MarkAllocator", "TableAllocator"]

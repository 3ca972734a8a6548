"""Mark and table allocators: uniqueness, stability, range, exhaustion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.allocators.probing import CircularProber
from egress_rules.errors import MarkConflictError, MarkExhaustedError, TableExhaustedError
from egress_rules.model.config import RESERVED_TABLES, MarkLayout, TableRange

names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True), unique=True, max_size=40)
SMALL = MarkLayout(prefix=0x26, prefix_shift=24, prefix_bits=8, value_shift=8, value_bits=4)


@given(names)
def test_marks_are_unique_and_in_layout(nodes: list[str]) -> None:
    marks = MarkAllocator().allocate(nodes)
    assert sorted(marks) == sorted(nodes)
    assert len(set(marks.values())) == len(nodes)
    assert all(MarkLayout().value_of(m) is not None for m in marks.values())


@given(names, names)
def test_existing_marks_never_move(first: list[str], added: list[str]) -> None:
    before = MarkAllocator().allocate(first)
    after = MarkAllocator(existing=before).allocate(first + added)
    assert all(after[n] == m for n, m in before.items())
    assert len(set(after.values())) == len(after)


@given(names)
def test_marks_do_not_depend_on_order(nodes: list[str]) -> None:
    assert MarkAllocator().allocate(nodes) == MarkAllocator().allocate(list(reversed(nodes)))


def test_mark_exhaustion_is_an_error() -> None:
    allocator = MarkAllocator(SMALL)
    assert len(allocator.allocate([f"n{i}" for i in range(16)])) == 16
    with pytest.raises(MarkExhaustedError, match="all 16"):
        allocator.allocate([f"n{i}" for i in range(17)])


def test_existing_marks_reserve_their_values_even_when_absent() -> None:
    existing = {f"old{i}": SMALL.mark_for(i) for i in range(15)}
    marks = MarkAllocator(SMALL, existing).allocate(["new"])
    assert marks == {"new": SMALL.mark_for(15)}


def test_invalid_existing_marks() -> None:
    with pytest.raises(MarkConflictError, match="not a node mark"):
        MarkAllocator(existing={"a": 0x12000000})
    with pytest.raises(MarkConflictError, match="also node"):
        MarkAllocator(existing={"a": 0x26000100, "b": 0x26000100})


def test_full_16_bit_space_allocates_quickly() -> None:
    nodes = [f"node-{i}" for i in range(2**16)]
    marks = MarkAllocator().allocate(nodes)
    assert len(set(marks.values())) == 2**16
    with pytest.raises(MarkExhaustedError):
        MarkAllocator().allocate([*nodes, "one-more"])


@given(st.text(min_size=1, max_size=8), names, st.sets(st.integers(2990, 3110), max_size=30))
def test_tables_unique_in_range_and_avoid_in_use(local: str, gateways: list[str], in_use: set[int]) -> None:
    span = TableRange()
    allocator = TableAllocator(span, in_use=in_use)
    free = sum(1 for t in range(span.start, span.end) if t not in in_use)
    if len(gateways) > free:
        with pytest.raises(TableExhaustedError):
            allocator.allocate(local, gateways)
        return
    tables = allocator.allocate(local, gateways)
    assert len(set(tables.values())) == len(gateways)
    assert all(t in span and t not in in_use and t not in RESERVED_TABLES for t in tables.values())


@given(names, names)
def test_existing_tables_are_kept(first: list[str], added: list[str]) -> None:
    before = TableAllocator().allocate("node-a", first)
    after = TableAllocator(existing=before).allocate("node-a", first + added)
    assert all(after[g] == t for g, t in before.items())


def test_tables_are_deterministic_and_seeded_by_node_names() -> None:
    one = TableAllocator().allocate("node-a", ["gw-1", "gw-2"])
    assert one == TableAllocator().allocate("node-a", ["gw-2", "gw-1"])
    # A different local node starts elsewhere in the range (the seed's random start).
    starts = {TableAllocator().allocate(f"node-{i}", ["gw-1"])["gw-1"] for i in range(20)}
    assert len(starts) > 5


def test_tables_never_use_reserved_ids() -> None:
    span = TableRange(start=250, count=8)
    tables = TableAllocator(span).allocate("n", [f"g{i}" for i in range(5)])
    assert sorted(tables.values()) == [250, 251, 252, 256, 257]
    with pytest.raises(TableExhaustedError):
        TableAllocator(span).allocate("n", [f"g{i}" for i in range(6)])


def test_existing_table_taken_by_other_software_is_reallocated() -> None:
    tables = TableAllocator(existing={"gw": 3005}, in_use={3005}).allocate("n", ["gw"])
    assert tables["gw"] != 3005


def test_prober_wraps_around() -> None:
    prober = CircularProber(4, taken=[2, 3])
    assert prober.take_from(3) == 0
    assert prober.take_from(3) == 1
    assert prober.take_from(0) is None

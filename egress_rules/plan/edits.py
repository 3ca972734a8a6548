"""The edit script that turns a chain's observed rules into its desired rules.

Shared by the iptables planner (which edits by position) and the nftables
planner (which edits by handle): both replace, delete and insert the same
rules, in the same order, and differ only in how they name them.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Hashable, Iterator, Sequence
from typing import NamedTuple


class EditKind(enum.Enum):
    REPLACE = "replace"
    DELETE = "delete"
    INSERT = "insert"


class Edit(NamedTuple):
    """One step, valid once the steps before it have run.

    ``old`` indexes the observed rules (``None`` for an insert). ``new`` is the
    desired index the step works at: the rule a replace or insert writes, or,
    for a delete, the position (counted in desired rules already in place)
    the deleted rule occupies. ``anchor`` indexes the observed rule kept right
    after the changed block, ``None`` when the block ends the chain (an insert
    there is an append).
    """

    kind: EditKind
    old: int | None
    new: int
    anchor: int | None


def edit_script(old: Sequence[Hashable], new: Sequence[Hashable]) -> Iterator[Edit]:
    """The steps turning ``old`` into ``new``, keeping the longest runs of equal rules in place."""
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        # Opcodes alternate with "equal" ones, so the rule after a changed block is kept: a stable anchor.
        anchor = i2 if i2 < len(old) else None
        common = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(common):
            yield Edit(EditKind.REPLACE, i1 + k, j1 + k, anchor)
        for k in range(common, i2 - i1):
            yield Edit(EditKind.DELETE, i1 + k, j1 + common, anchor)
        for k in range(common, j2 - j1):
            yield Edit(EditKind.INSERT, None, j1 + k, anchor)

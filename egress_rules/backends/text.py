"""Helpers shared by the text backends: safe quoting and byte-bounded truncation."""

from __future__ import annotations

import re

from egress_rules.errors import UnsupportedError

# Printable ASCII except the characters that end or escape a quoted word.
_SAFE_COMMENT = re.compile(r'\A[\x20-\x7e]*\Z')
_FORBIDDEN_IN_COMMENT = ('"', "\\", "'")


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character.

    Raises :class:`UnsupportedError` for text that has no UTF-8 form (a lone surrogate).
    """
    try:
        encoded = text.encode()
    except UnicodeEncodeError as error:
        raise UnsupportedError(f"comment {text!r}", f"is not valid Unicode text ({error.reason})") from None
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")


def quoted_comment(text: str, limit: int, backend: str) -> str:
    """A comment as a double-quoted shell-style word, or an error if it cannot be one safely."""
    cut = truncate_utf8(text, limit)
    if not _SAFE_COMMENT.match(cut) or any(c in cut for c in _FORBIDDEN_IN_COMMENT):
        raise UnsupportedError(f"{backend} comment {text!r}", "contains characters that cannot be quoted safely")
    return f'"{cut}"'

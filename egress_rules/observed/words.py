"""Splitting saved text into lines and words the way the tools read it."""

from __future__ import annotations

import re

_BLANKS = re.compile(r"[ \t]+")


def split_lines(text: str) -> list[str]:
    """Lines of ``text``, split at ``\\n`` only, as ``iptables-restore`` and ``ipset restore`` read them.

    ``str.splitlines`` also splits at ``\\x1c``-``\\x1e``, U+0085 and U+2028/9, which the kernel allows in
    interface and set names and the save commands print as they are: one foreign rule would become two.
    """
    return text.split("\n")


def split_plain(line: str) -> list[str]:
    """Words of a line without quotes: split at spaces and tabs only (``str.split()`` splits at any Unicode space)."""
    return [word for word in _BLANKS.split(line) if word]


def split_words(line: str) -> list[str] | None:
    """Words of ``line``; double quotes group, backslash escapes inside them. ``None`` if a quote is unclosed."""
    if '"' not in line:
        return split_plain(line)
    words: list[str] = []
    current: list[str] = []
    in_word = quoted = False
    i = 0
    while i < len(line):
        char = line[i]
        if quoted:
            if char == "\\" and i + 1 < len(line):
                current.append(line[i + 1])
                i += 2
                continue
            if char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = in_word = True
        elif char in " \t":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
        i += 1
    if quoted:
        return None
    if in_word:
        words.append("".join(current))
    return words

"""Splitting a saved rule line into words the way iptables-restore reads it."""

from __future__ import annotations


def split_words(line: str) -> list[str] | None:
    """Words of ``line``; double quotes group, backslash escapes inside them. ``None`` if a quote is unclosed."""
    if '"' not in line:
        return line.split()
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

"""One line per record, whatever the names hold: the escaping of ``paths`` and ``tsv`` records
(and of the paths other commands print)."""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_field(text: str) -> str:
    """Backslash, tab, newline, CR -> \\\\ \\t \\n \\r; other control characters and bytes that are
    not UTF-8 (surrogate escapes) -> \\xHH. Everything else is kept."""
    if text.isprintable() and "\\" not in text and is_utf8(text):
        return text
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

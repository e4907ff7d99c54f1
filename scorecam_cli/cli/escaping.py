"""One line per record, whatever the names hold: the escaping of ``paths`` and ``tsv`` records
(and of the paths other commands print)."""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_field(text: str) -> str:
    """Backslash, tab, newline, CR -> \\\\ \\t \\n \\r; other control characters and bytes that are
    not UTF-8 (surrogate escapes) -> \\xHH. Everything else is kept."""
    return _escaped(text, _ESCAPES)


def escape_line(text: str) -> str:
    """For lines people read (errors, logs): tab, newline, CR, other control characters and
    bytes that are not UTF-8 escaped as in :func:`escape_field`, backslashes kept as they are
    (a message may already show a name escaped)."""
    return _escaped(text, {k: v for k, v in _ESCAPES.items() if k != "\\"})


def _escaped(text: str, escapes: dict[str, str]) -> str:
    if text.isprintable() and not any(c in text for c in escapes) and is_utf8(text):
        return text
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
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

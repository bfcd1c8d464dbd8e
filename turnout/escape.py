"""Showing free text safely: on one terminal line, or as markdown/HTML that renders as the text itself.

A reason comes from an operator (`--reason`), an alert or a backend's error message, so it may hold
newlines, terminal escapes or markup. Shown raw, it could forge a row of `turnout history` or put
live HTML into a report. The ledger keeps the text as given; these functions are for showing it.
"""

from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["one_line", "markdown_text", "code_fence"]

# Control characters, invisible format characters (bidi overrides, zero-width joiners) and the
# Unicode line and paragraph separators: anything that can break or disguise a line.
_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Markdown that takes effect mid-line: emphasis, code, links and images, tables, strike-through.
# (Line-start syntax such as `#` or `>` cannot start a line once newlines are escaped.)
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def one_line(text: str) -> str:
    """`text` on one line: control, format and line-separator characters shown as escapes (`\\n`, `\\x1b`)."""
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in str(text))


def markdown_text(text: str) -> str:
    """`text` for a markdown line or table cell: one line, HTML and markdown characters escaped."""
    return _MARKDOWN.sub(r"\\\1", html.escape(one_line(text), quote=False))


def code_fence(content: str) -> str:
    """A backtick fence longer than any run of backticks in `content`, so the content cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", content)), default=0)
    return "`" * max(3, longest + 1)

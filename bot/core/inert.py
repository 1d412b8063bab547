"""Text made inert. Anything a remote side sends (a server's stderr, fault text, output
excerpts, a directory's names) can reach the log, `status`, the terminal and Slack. `inert`
escapes control and format characters, so a hostile endpoint cannot forge a log line
("\\nINFO all servers OK") or send terminal escapes (ESC[2J).
"""
from __future__ import annotations

import re
import unicodedata

#: Control characters (C0, DEL, C1), line and paragraph separators, format characters
#: (bidirectional overrides, zero-width characters) and lone surrogates: what can rewrite a
#: line when printed, or hide in it.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|[^\x00-\x7f]")
#: Format characters that names need: ZWNJ and ZWJ join or part letters in Persian and Indic
#: scripts, and neither can move or hide text on a line.
_NAME_JOINERS = "\u200c\u200d"


def inert(text: str) -> str:
    """`text` with every control or format character written as an escape (\\n, \\x1b, \\u202e)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    ch = match.group()
    if ch in _NAME_JOINERS or (ch >= "\x80" and ch not in "\u2028\u2029"
                               and unicodedata.category(ch) not in ("Cc", "Cf", "Cs")):
        return ch   # ordinary non-ASCII text (names in any script) stays as it is
    if "\ud800" <= ch <= "\udfff":
        return f"\\u{ord(ch):04x}"   # unicode_escape cannot encode a lone surrogate
    return ch.encode("unicode_escape").decode("ascii")

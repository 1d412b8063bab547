"""What a server's bytes mean as text: the encoding of wevtutil's output.

Encoding. No evidence shows that wevtutil honours the shell's code page (WINRS_CODEPAGE); one
report says it writes the ANSI code page (windows-1252: `á` = 0xE1), which cannot hold a
Cyrillic name at all. So the event query asks for `/uni:true` ("Displays the output in
Unicode", wevtutil's documentation), UTF-16LE, which holds every name exactly. The decoder
does not trust that either: it reads what the bytes are. UTF-16LE when they start with its
byte-order mark or with `<` and a zero byte; otherwise UTF-8 when they are valid UTF-8; otherwise
the server's ANSI code page (read once from its registry by the caller). Only bytes that none of
these explain are replaced, and that is recorded as a problem that says so.
"""
from __future__ import annotations

import codecs
import re
from collections.abc import Callable

from bot.core.inert import inert
from bot.core.model import Problem

BOM_UTF16_LE = codecs.BOM_UTF16_LE
BOM_UTF8 = codecs.BOM_UTF8
EXCERPT_BYTES = 60
def looks_utf16le(raw: bytes) -> bool:
    """wevtutil's /uni:true output: a UTF-16LE BOM, or zero bytes in most odd positions of its
    start (XML and gli text are ASCII markup there, and never hold U+0000 in any 8-bit form)."""
    odd = raw[1:64:2]
    return raw.startswith(BOM_UTF16_LE) or (len(odd) >= 2 and odd.count(0) * 2 > len(odd))


def xml_start(raw: bytes) -> int:
    """Where XML output starts after `wevtutil gli` text (plain `name: value` lines): the first
    byte-order mark or `<` (a mark before the gli text itself belongs to it); len(raw) when
    there is none."""
    found = [i for i in (raw.find(BOM_UTF16_LE, 1), raw.find(BOM_UTF8, 1), raw.find(b"<"))
             if i >= 0]
    return min(found, default=len(raw))


def decode(raw: bytes, server: str, ansi_codepage: Callable[[], int | None], *,
           partial: bool = False) -> tuple[str, list[Problem], str]:
    """Decode one command's output (see the module's docstring): (text, problems, the codec's
    name: "utf-16-le", "utf-8" or an ANSI code page's such as "cp1252").

    `partial`: the output was cut off (see bot.sources.winrm's output cap), so an incomplete
    character at its end is dropped rather than taken for damage.
    """
    if not raw:
        return "", [], ""   # nothing to tell the encoding by
    if looks_utf16le(raw):
        return _decode_as(raw.removeprefix(BOM_UTF16_LE), "utf-16-le", server, partial)
    raw = raw.removeprefix(BOM_UTF8)
    try:
        return _incremental("utf-8", raw, partial, "strict"), [], "utf-8"
    except UnicodeDecodeError:
        pass
    codec = _codec(ansi_codepage())
    if codec is None:
        return _decode_as(raw, "utf-8", server, partial)
    return _decode_as(raw, codec, server, partial)


def _decode_as(raw: bytes, codec: str, server: str,
               partial: bool) -> tuple[str, list[Problem], str]:
    try:
        return _incremental(codec, raw, partial, "strict"), [], codec
    except UnicodeDecodeError as exc:
        start = exc.start
    text = _incremental(codec, raw, partial, "replace")
    excerpt = raw[max(0, start - EXCERPT_BYTES): start + 20].decode(codec, errors="replace")
    return text, [Problem(
        server, "invalid_text",
        f"the server's output was not valid {codec.upper()} (first bad byte at {start}); the "
        "damaged characters were replaced with U+FFFD, so a name shown with \ufffd is not exact",
        inert(excerpt))], codec


def _incremental(codec: str, raw: bytes, partial: bool, errors: str) -> str:
    return codecs.getincrementaldecoder(codec)(errors).decode(raw, final=not partial)


def _codec(codepage: int | None) -> str | None:
    if not codepage:
        return None
    try:
        return codecs.lookup("utf-8" if codepage == 65001 else f"cp{codepage}").name
    except LookupError:
        return None


_ACP = re.compile(r"\bACP\s+REG_SZ\s+(\d{3,5})\b")


def parse_acp(text: str) -> int | None:
    """The ANSI code page from `reg query ...\\Nls\\CodePage /v ACP` output (None: not found)."""
    match = _ACP.search(text)
    return int(match.group(1)) if match else None

"""Rich-text building blocks: where untrusted names are shown exactly as they are.

mrkdwn has no way to escape `*`, `_` or `~`: an account named `*boss*` would be shown bold.
A rich_text block's `text` elements are never parsed by Slack (no formatting, no mentions, no
links), so prose that carries an untrusted name is built from these parts. Only control and
invisible characters are changed, into visible escapes (`\\x1b`, `\\x200b`), because a name must
never hide part of itself.

A line is a list of parts: a str is our own words, a dict one element (`name`, `bold`,
`date`, `user` ...). Pure: no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from bot.core.names import is_invisible

Part = str | dict

#: Slack user IDs: a mention is built only for a value of this shape (an escaping rule).
USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


def visible(text: str) -> str:
    """Control and invisible characters as escapes; everything else as it is."""
    return "".join(f"\\x{ord(ch):02x}" if not ch.isprintable() or is_invisible(ch) else ch
                   for ch in text)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str, **style: bool) -> dict:
    element: dict = {"type": "text", "text": text}
    if style:
        element["style"] = style
    return element


def bold(text: str) -> dict:
    return plain(text, bold=True)


def code(text: str) -> dict:
    return plain(text, code=True)


def name(value: str, limit: int = 200, *, strong: bool = True) -> dict:
    """An untrusted name: shortened, invisible characters made visible, otherwise literal."""
    return plain(clip(visible(value), limit), **({"bold": True} if strong else {}))


def date(moment: datetime) -> dict:
    """Shown in each reader's own time zone, with a UTC fallback."""
    return {"type": "date", "timestamp": int(moment.timestamp()),
            "format": "{date_short_pretty} {time}",
            "fallback": moment.strftime("%Y-%m-%d %H:%M UTC")}


def user(user_id: str | None) -> dict:
    """A mention for a Slack user ID; anything that is not one is shown as text."""
    if user_id and USER_ID.fullmatch(user_id):
        return {"type": "user", "user_id": user_id}
    return name(user_id or "someone", 40, strong=False)


def emoji(short_name: str) -> dict:
    return {"type": "emoji", "name": short_name}


def joined(parts: Iterable[Part], separator: str = ", ") -> list[Part]:
    """Parts with `separator` between them (for lists of names)."""
    out: list[Part] = []
    for part in parts:
        if out:
            out.append(separator)
        out.append(part)
    return out


def elements(parts: Iterable[Part]) -> list[dict]:
    """Parts as rich-text elements; empty text is dropped (Slack refuses an empty element)."""
    out = [plain(p) if isinstance(p, str) else p for p in parts]
    return [e for e in out if not (e.get("type") == "text" and not e.get("text"))]


def rich(*lines: list[Part]) -> dict:
    """A rich_text block of one section, the lines separated by line breaks."""
    parts: list[Part] = []
    for line in lines:
        if parts:
            parts.append("\n")
        parts.extend(line)
    return {"type": "rich_text", "elements": [
        {"type": "rich_text_section", "elements": _merged(elements(parts))}]}


def preformatted(text: str) -> dict:
    """Text Slack shows literally in a code block: the PowerShell commands."""
    return {"type": "rich_text", "elements": [
        {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": text}]}]}


def text_of(block: dict) -> str:
    """The plain text of a rich_text block as a reader sees it (how the tests read one)."""
    out = []
    for section in block.get("elements", []):
        for element in section.get("elements", []):
            kind = element.get("type")
            if kind == "text":
                out.append(element["text"])
            elif kind == "date":
                out.append(element["fallback"])
            elif kind == "user":
                out.append(f"@{element['user_id']}")
            elif kind == "emoji":
                out.append(f":{element['name']}:")
    return "".join(out)


def _merged(items: list[dict]) -> list[dict]:
    """Adjacent unstyled text elements as one (a shorter payload, the same text)."""
    out: list[dict] = []
    for item in items:
        if (out and item.get("type") == "text" and "style" not in item
                and out[-1].get("type") == "text" and "style" not in out[-1]):
            out[-1] = plain(out[-1]["text"] + item["text"])
        else:
            out.append(item)
    return out

"""Slack's building blocks, written once: escaping untrusted text for mrkdwn, cutting within
Slack's limits without breaking an entity or a token, dates, mentions and the block builders.
Rich text (names shown exactly) is bot.slack.richtext's."""
from __future__ import annotations

import re
from datetime import datetime

from bot.slack import richtext as rt

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
NAME_LIMIT = 200            # how much of an untrusted name is shown in prose
MESSAGE_BLOCKS = 50
HOME_BLOCKS = 100
BARS = "▁▂▃▄▅▆▇█"
#: A Slack channel ID: public C..., private G..., direct D... (what conversations.* take).
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
GROUP_ID = re.compile(r"S[A-Z0-9]+")


# --- untrusted text in mrkdwn ---------------------------------------------------------------

def escape(text: str) -> str:
    """Make untrusted text inert in mrkdwn: no pings, no links, no fake entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


clip = rt.clip


def cut(mrkdwn: str, limit: int = SECTION_LIMIT) -> str:
    """Shorten mrkdwn that is already escaped without splitting an &entity; or a <token>."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    text = mrkdwn[: limit - 1]
    amp = text.rfind("&")
    if amp != -1 and ";" not in text[amp:]:
        text = text[:amp]
    lt = text.rfind("<")
    if lt != -1 and ">" not in text[lt:]:
        text = text[:lt]
    return text + "…"


def show(text: str, limit: int = NAME_LIMIT) -> str:
    """An untrusted value for mrkdwn: shortened, escaped, control characters made visible.

    A backtick becomes U+02CB (ˋ), which looks the same but cannot open or close a code span in
    our own text; the commands, in rich text, keep the exact name.
    """
    return escape(clip(rt.visible(text), limit).replace("`", "\u02cb"))


def literal(text: str, limit: int = NAME_LIMIT) -> str:
    """An untrusted name for mrkdwn, in a code span: Slack formats nothing inside one, so
    `*boss*` is not bold; `show` keeps a backtick from the name from closing the span."""
    return f"`{show(text, limit)}`"


# --- dates, people, places, amounts ---------------------------------------------------------

def slack_date(moment: datetime) -> str:
    """Shown in each reader's own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def utc_time(moment: datetime) -> str:
    """'14:02 UTC on 27 Nov': plain text, the same for every reader and in the audit."""
    return f"{moment:%H:%M} UTC on {moment.day} {moment:%b}"


def span(seconds: float) -> str:
    """A length of time in at most two units: '45s', '12m', '3h 5m', '2d 4h'."""
    seconds = int(abs(seconds))
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            rest = (seconds % size) // small_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds // 60}m" if seconds >= 60 else f"{seconds}s"


def mention(user_id: str | None) -> str:
    """A Slack user ID as a mention; anything else (it should not happen) as inert text."""
    if not user_id:
        return "someone"
    return f"<@{user_id}>" if rt.USER_ID.fullmatch(user_id) else show(user_id, 40)


#: A Slack user group ID, as routes' owners give it.
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,20}")


def owner_mention(owner: str) -> str:
    """A route's owner (a user or user group ID from the configuration) as a mention that
    notifies; anything else (the configuration refuses it) as inert text."""
    if rt.USER_ID.fullmatch(owner):
        return f"<@{owner}>"
    if USERGROUP_ID.fullmatch(owner):
        return f"<!subteam^{owner}>"
    return show(owner, 40)


def channel_ref(channel: str | None) -> str:
    if not channel:
        return "(no channel)"
    return f"<#{channel}>" if CHANNEL_ID.fullmatch(channel) else f"*{show(channel, 80)}*"


def window(seconds: float) -> str:
    """The --since window in words: 7d -> '7 days', 90m -> '90 minutes'."""
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {word}" + ("s" if n != 1 else "")
    return f"{seconds:g} seconds"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("s" if n != 1 else "")


def sparkline(counts: list[int]) -> str:
    """One bar per day. A day without events is ▁; any event lifts a day to at least ▂ and the
    busiest day is █, so a burst stands out and a quiet day never looks like an empty one."""
    peak = max(counts, default=0)
    if peak == 0:
        return BARS[0] * len(counts)
    return "".join(BARS[0] if n == 0 else BARS[max(1, -(-n * 7 // peak))] for n in counts)


# --- blocks ---------------------------------------------------------------------------------

def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text)}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(text)}]}


def header(text: str) -> dict:
    """Only for our own words: plain_text, never parsed."""
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def divider() -> dict:
    return {"type": "divider"}


preformatted = rt.preformatted


def pack(lines: list[str], title: str | None = None) -> list[dict]:
    """Lines into as few sections as fit 3000 characters each (a line is never split)."""
    blocks: list[dict] = []
    current = title or ""
    for line in lines:
        line = cut(line, SECTION_LIMIT // 2)
        if current and len(current) + 1 + len(line) > SECTION_LIMIT:
            blocks.append(section(current))
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        blocks.append(section(current))
    return blocks


def fit(blocks: list[dict], limit: int = MESSAGE_BLOCKS) -> list[dict]:
    """The last guard: never more blocks than Slack takes, and say so when some were cut."""
    if len(blocks) <= limit:
        return blocks
    return blocks[: limit - 1] + [context(f"{len(blocks) - limit + 1} more block(s) did not fit "
                                          "in one Slack message; narrow the question.")]

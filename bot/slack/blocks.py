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
#: Slack refuses a message whose blocks hold too much text in total (`msg_blocks_too_long`, seen
#: from about 13,170 characters; not in its published limits: DOMAIN.md section 10). Every
#: message is shaped to stay within this many UTF-16 units of block text (`size`): well below.
BUDGET = 11_000
#: The Home tab is a view, not a message: Slack's limit there is 250 kB of JSON, not the
#: block text of a message; it gets a larger budget, still measured the same way.
HOME_BUDGET = 40_000
#: The budget of the one retry after Slack refused a message as too long or invalid.
SMALL_BUDGET = 3_000
#: The fallback `text` of a message (what notifications show): Slack recommends at most 4,000.
TEXT_LIMIT = 4_000
OPTION_LIMIT = 75           # a select option's or a button's text
BARS = "▁▂▃▄▅▆▇█"
#: A Slack channel ID: public C..., private G..., direct D... (what conversations.* take).
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
GROUP_ID = re.compile(r"S[A-Z0-9]+")


# --- untrusted text in mrkdwn ---------------------------------------------------------------

def escape(text: str) -> str:
    """Make untrusted text inert in mrkdwn: no pings, no links, no fake entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


clip = rt.clip


# --- measuring: Slack does not say whether it counts code points or UTF-16 units -----------------

def units(text: str) -> int:
    """Length in UTF-16 code units (an emoji or a rare CJK character counts two): the larger
    of the two measures Slack might use."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _prefix(text: str, most: int) -> str:
    """The longest start of `text` within `most` UTF-16 units (never half a surrogate pair)."""
    if len(text) * 2 <= most or units(text) <= most:
        return text
    total = 0
    for i, ch in enumerate(text):
        total += 2 if ord(ch) > 0xFFFF else 1
        if total > most:
            return text[:i]
    return text


def clip_units(text: str, limit: int) -> str:
    """`text` within `limit` UTF-16 units, ending in … when shortened (headers, options)."""
    return text if units(text) <= limit else _prefix(text, limit - 1) + "…"


#: Keys whose string values are text Slack shows (and counts); `name`/ids of rich elements
#: are counted with the element (see _texts).
_TEXT_KEYS = ("text", "fallback", "url", "alt_text")
_ENTITY_ELEMENTS = {"user": "user_id", "usergroup": "usergroup_id", "channel": "channel_id",
                    "emoji": "name", "broadcast": "range"}


def _texts(node):
    if isinstance(node, list):
        for item in node:
            yield from _texts(item)
    elif isinstance(node, dict):
        entity = _ENTITY_ELEMENTS.get(node.get("type", ""))
        if entity and isinstance(node.get(entity), str):
            yield f"<@{node[entity]}>"      # a mention or :emoji: as its written form
        for key, value in node.items():
            if isinstance(value, str):
                if key in _TEXT_KEYS:
                    yield value
            elif isinstance(value, (dict, list)):
                yield from _texts(value)


def size(blocks: list[dict] | dict) -> int:
    """The text in a message's blocks as Slack's `msg_blocks_too_long` may count it, the
    conservative way: UTF-16 units of every text of every block (section text and fields,
    rich text elements, preformatted, context, header, button, option and placeholder texts,
    date fallbacks, mentions and emoji as written)."""
    return sum(units(text) for text in _texts(blocks))


def fallback(text: str, limit: int = TEXT_LIMIT) -> str:
    """A message's top-level `text` within Slack's recommended 4,000 characters (counted in
    UTF-16 units), never empty."""
    return cut(text, limit) if text.strip() else "SubmitWatch"


def cut(mrkdwn: str, limit: int = SECTION_LIMIT) -> str:
    """Shorten mrkdwn that is already escaped without splitting an &entity; or a <token>
    (`limit` in UTF-16 units)."""
    if units(mrkdwn) <= limit:
        return mrkdwn
    text = _prefix(mrkdwn, limit - 1)
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


#: mrkdwn's markers, swapped for look-alikes Slack does not parse: `*bold*`, `_italic_`,
#: `~strike~`. (A backtick is swapped by `show`; `:` is handled apart, see `inert`.)
_LOOK_ALIKES = str.maketrans({"*": "\u2217", "_": "\u02cd", "~": "\u02dc"})
#: A colon that could open an :emoji: code (followed by what a code's name may hold).
_EMOJI_COLON = re.compile(r":(?=[^\s:])")


def inert(text: str, limit: int = NAME_LIMIT) -> str:
    """An untrusted value for text Slack formats where a code span or rich text cannot be used:
    the fallback `text` notifications show. As `show`, and `*` `_` `~` become look-alikes
    (∗ ˍ ˜) and a colon that could open an emoji code becomes ꞉ (U+A789), so `*boss*`,
    `:fire:` and `<!channel>` read literally and format, draw or ping nothing."""
    return markers_off(show(text, limit))


def markers_off(mrkdwn: str) -> str:
    """Text already escaped for mrkdwn with its formatting markers and emoji codes broken (the
    fallback of a rich block, where our words and untrusted names are merged)."""
    return _EMOJI_COLON.sub("\ua789", mrkdwn.translate(_LOOK_ALIKES))


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
    """Only for our own words: plain_text, never parsed; clipped in UTF-16 units."""
    title = clip_units(text, HEADER_LIMIT)
    return {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}}


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


def fit(blocks: list[dict], limit: int = MESSAGE_BLOCKS, *, tail: int = 0,
        more: str | None = None, budget: int = BUDGET) -> list[dict]:
    """The last guard: never more blocks than Slack takes nor more text than `budget` (`size`).
    The middle is cut: the first blocks and the last `tail` (facts, buttons, footer) are
    kept, and a line says where the rest is (`more`, else how many blocks were left out)."""
    sizes = [size(b) for b in blocks]
    if len(blocks) <= limit and sum(sizes) <= budget:
        return blocks
    tail = min(tail, len(blocks))
    head = len(blocks) - tail
    end, end_size = blocks[head:], sum(sizes[head:])
    keep = max(0, min(head, limit - 1 - tail))
    while True:
        note = context(more or f"{head - keep} more block(s) did not fit in one Slack "
                               "message; narrow the question.")
        if keep == 0 or sum(sizes[:keep]) + size(note) + end_size <= budget:
            return blocks[:keep] + [note] + end
        keep -= 1

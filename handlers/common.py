"""What every chat handler shares: the request it answers, the reply it gives, argument parsing.

A subcommand is a function `(Request, args: list[str]) -> Reply`. It raises CommandError for a
user's mistake (unknown incident, bad duration ...); the dispatcher shows that message with the
subcommand's usage, never a stack trace.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bot.core.config import MAX_DURATION, Config, parse_duration
from bot.slack.blocks import show

#: Longest slash-command text we read; Slack itself allows a few thousand characters.
MAX_TEXT = 1000
#: Longest free text (ack notes, snooze reasons) we keep.
MAX_NOTE = 300


@dataclass(frozen=True)
class Request:
    db: Database
    config: Config
    now: datetime
    user_id: str
    channel_id: str | None = None
    client: Any = None          # slack_sdk WebClient of the Bolt app, for what needs Slack
    permissions: Any = None     # bot.engine.permissions.Permissions, shared so group look-ups are
                                # cached


@dataclass
class Reply:
    text: str                               # mrkdwn; the notification fallback when blocks are set
    blocks: list[dict] | None = None
    share: bool = False                     # post in the channel for everyone (--share)


class CommandError(ValueError):
    """A user's mistake, said in safe mrkdwn (untrusted parts already passed through `show`)."""


Subcommand = Callable[[Request, list[str]], Reply]


#: Quote pairs a word may start with. Curly ones too: phones and Macs turn '...' into ‘...’.
_QUOTES = {'"': '"', "'": "'", "\u2018": "\u2019"}


def words_of(text: str) -> list[str]:
    """Split slash-command text into words the way a shell would, with two differences.

    A word that starts with a quote ("double", 'single', “curly” or ‘curly’) runs to the
    matching closing quote, spaces and all, and the quotes are not part of it:
    `fix "CONTOSO\\svc scan" 'EX01\\Client Frontend EX01'` gives two words. Unlike a shell,
    a quote inside a word is just a character (`O'Brien`, `it's`), and backslashes are always
    kept as they are (`DOMAIN\\account`). A quote that is never closed is a CommandError.

    Slack sends &, < and > as HTML entities; they are decoded so an account is matched as typed.
    """
    text = html.unescape(text or "")[:MAX_TEXT].replace("\u201c", '"').replace("\u201d", '"')
    words: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        word = ""
        if text[i] in _QUOTES:
            close = text.find(_QUOTES[text[i]], i + 1)
            if close < 0:
                raise CommandError(
                    f"the quote {text[i]} before `{show(text[i + 1:i + 41], 40)}` is never "
                    "closed: close it, or put a name that holds that quote in the other kind "
                    "of quotes")
            word, i = text[i + 1:close], close + 1
        end = i
        while end < len(text) and not text[end].isspace():
            end += 1
        words.append(word + text[i:end])  # what follows a closing quote belongs to the word
        i = end
    return words


def take_options(args: list[str], options: dict[str, Callable[[str], Any]],
                 switches: AbstractSet[str] = frozenset()) -> tuple[list[str], dict[str, Any]]:
    """Pull `--name value` options and `--switch` flags out of args; the rest stays in order."""
    rest: list[str] = []
    found: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        name = word.lower()
        if name in switches:
            found[name] = True
        elif name in options:
            if i + 1 >= len(args):
                raise CommandError(f"`{name}` needs a value")
            found[name] = options[name](args[i + 1])
            i += 1
        elif name.startswith("--") and len(name) > 2:
            known = ", ".join(f"`{o}`" for o in sorted([*options, *switches])) or "none"
            raise CommandError(f"unknown option `{show(word, 40)}`; options here: {known}")
        else:
            rest.append(word)
        i += 1
    return rest, found


def duration(text: str) -> float:
    """A duration a person typed: '90m', '4h', '7d'."""
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise CommandError(f"`{show(text, 40)}` is not a duration; write it like `30m`, `4h` or "
                           "`7d`")
    if seconds > MAX_DURATION:  # checked before any date arithmetic, which would overflow
        raise CommandError(f"`{show(text, 40)}` is too long: durations go up to `3650d` "
                           "(ten years)")
    return seconds


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise CommandError(f"`{show(text, 40)}` is not a whole number above 0")
    return int(text)


#: Longest account, server or connector name a command looks up (real ones are far shorter).
MAX_NAME = 256


def checked_name(word: str, what: str) -> str:
    """A name a person typed, refused in words when it is empty or absurdly long."""
    if not word.strip():
        raise CommandError(f"the {what} is empty")
    if len(word) > MAX_NAME:
        raise CommandError(f"that {what} is {len(word):,} characters long; names are at most "
                           f"{MAX_NAME}")
    return word


def incident_id(text: str) -> int:
    """`#123` or `123`."""
    digits = text[1:] if text.startswith("#") else text
    if not digits.isdigit() or len(digits) > 12:
        raise CommandError(f"`{show(text, 40)}` is not an incident number; write it like `#42` "
                           "(the number is in each alert's footer)")
    return int(digits)


def looks_like_incident(text: str) -> bool:
    return bool(re.fullmatch(r"#?\d{1,12}", text))

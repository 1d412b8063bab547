"""The outbox's rows as plain data: what the engine queues (Message, DigestMessage, Hurry,
HurryDigest) and how a row's stored detail reads back (the notes, ServerDown, ServerUp, BotLate).

A leaf like bot.core.model: store/ writes and reads these, bot.engine.outbox decides them,
bot.slack renders them. No rules here (they are bot.engine.outbox's).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

#: In a set of pending kinds: a post still waiting (not claimed by a worker), which renders the
#: incident as it will be when sent.
UNCLAIMED_POST = "post, not yet claimed"


@dataclass(frozen=True)
class Message:
    """One outbox row to write: a post, an in-place update or a thread reply of an incident."""

    kind: Literal["post", "update", "reply"]
    incident_id: int
    not_before: datetime | None = None   # None: as soon as possible
    detail: dict | None = None           # a reply's note


@dataclass(frozen=True)
class Hurry:
    """Send the incident's waiting update now instead of after its coalescing delay."""

    incident_id: int


@dataclass(frozen=True)
class DigestMessage:
    """One outbox row about a storm digest: its post, an update, or a reply in its thread."""

    kind: Literal["post", "update", "reply"]
    digest_id: int
    not_before: datetime | None = None
    detail: dict | None = None


@dataclass(frozen=True)
class HurryDigest:
    """Send the digest's waiting update now (a person acted on it)."""

    digest_id: int


Instruction = Message | Hurry | DigestMessage | HurryDigest

#: In a digest's pending kinds: a thread reply detailing new lines is waiting.
DETAILS = "details"


# --- what each kind of row carries -----------------------------------------------------------
#
# Rows store their detail as JSON text (store.db.iso times); these types are how it is read
# back, in one place: which note a reply is, and every time parsed once.
def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))   # store.db.iso's trailing Z reads as UTC


def _optional_time(value: Any) -> datetime | None:
    return _time(value) if value else None


@dataclass(frozen=True)
class SpreadNote:
    """A thread reply: the incident reached servers or connectors its alert did not show."""

    servers: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionNote:
    """A thread reply: what a responder, or a snooze's end, did to the incident."""

    action: str                       # ack, unack, snooze, unsnooze, snooze_expired
    at: datetime
    by: str | None = None             # a Slack user ID
    note: str | None = None           # the responder's own words (untrusted)
    took_over_from: str | None = None
    was: str | None = None            # who had acknowledged it (unack)
    until: datetime | None = None     # snooze
    reason: str | None = None         # snooze (untrusted)
    scope: str | None = None          # snooze: "incident" or "account"
    # action "reminder": the incident is open, unowned and still failing
    # actions of the closed loop (bot.engine.fixloop): "fixed" (marked), "fix_seen" (the directory
    # shows the right), "still_failing", "confirmed"
    finding: str | None = None        # what the directory says now (untrusted names in it)
    seconds: float | None = None      # fix_seen: since marked; confirmed: the quiet window
    directory: bool = False           # fixed: a [directory] will be read; fix_seen: it was
    builtin: bool = False             # fix_seen: the directory shows a built-in account


Note = SpreadNote | ActionNote


def note_of(detail: Mapping[str, Any]) -> Note:
    """A reply row's note: an action note names its action; any other records a spread."""
    if "action" in detail:
        return ActionNote(action=detail["action"], at=_time(detail["at"]), by=detail.get("by"),
                          note=detail.get("note"), took_over_from=detail.get("took_over_from"),
                          was=detail.get("was"), until=_optional_time(detail.get("until")),
                          reason=detail.get("reason"), scope=detail.get("scope"),
                          finding=detail.get("finding"), seconds=detail.get("seconds"),
                          directory=bool(detail.get("directory")),
                          builtin=bool(detail.get("builtin")))
    return SpreadNote(tuple(detail.get("servers", ())), tuple(detail.get("connectors", ())))


@dataclass(frozen=True)
class ServerDown:
    """The "not being watched" alert: since the last good poll (or since SubmitWatch started
    watching, when `never` polled well)."""

    error: str
    failures: int
    since: datetime
    never: bool = False

    @classmethod
    def of(cls, detail: Mapping[str, Any]) -> ServerDown:
        return cls(detail["error"], int(detail["failures"]), _time(detail["since"]),
                   bool(detail.get("never")))


@dataclass(frozen=True)
class ServerUp:
    """The recovery notice in that alert's thread."""

    since: datetime
    at: datetime

    @classmethod
    def of(cls, detail: Mapping[str, Any]) -> ServerUp:
        return cls(_time(detail["since"]), _time(detail["at"]))


@dataclass(frozen=True)
class BotLate:
    """SubmitWatch's own jobs did not start on time (bot.ops.watchdog)."""

    jobs: tuple[str, ...]
    late_seconds: float

    @classmethod
    def of(cls, detail: Mapping[str, Any]) -> BotLate:
        return cls(tuple(detail.get("jobs", ())), float(detail.get("late_seconds") or 0))

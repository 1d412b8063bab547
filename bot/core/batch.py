"""One batch as plain data: what its decision reads (`Snapshot`) and what it writes (`Writes`).

bot.engine.decision decides a batch from a Snapshot; store.batch reads the Snapshot and
writes the Writes, both in one transaction. An incident or digest that the batch opens has no
id yet: the decision names it by a placeholder (a negative number, `NEW_INCIDENT(i)`,
`NEW_DIGEST(i)`) in the messages and joins it writes, and the writer puts in the id its insert
got.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.messages import Instruction
from bot.core.model import Digest, Event, Incident, Problem


def NEW_INCIDENT(index: int) -> int:  # noqa: N802 (reads as the constant it stands for)
    """The placeholder id of the `index`-th incident this batch opens."""
    return -(index + 1)


NEW_DIGEST = NEW_INCIDENT   # the same numbering, in the digests' own space


@dataclass(frozen=True)
class StormState:
    """One channel's storm, as the decision needs it."""

    opened_recently: int            # incidents opened in the channel within the storm window
    live: Digest | None             # its live digest, if a storm is on


@dataclass(frozen=True)
class DigestState:
    """A digest that the batch may touch: its row, its waiting messages, whether its thread
    has detailed all it ever will."""

    digest: Digest
    pending: frozenset[str]
    thread_full: bool


@dataclass(frozen=True)
class Snapshot:
    """What one batch's decision needs, read once inside the write transaction."""

    fresh: tuple[Event, ...] = ()                   # the batch's events not stored before
    incidents: Mapping[str, Incident] = field(default_factory=dict)  # open, by account key
    snoozed_ids: frozenset[str] = frozenset()       # incident ids (as text) snoozed now
    snoozed_keys: frozenset[str] = frozenset()      # account keys snoozed now
    pending: Mapping[int, frozenset[str]] = field(default_factory=dict)  # per incident id
    storms: Mapping[str, StormState] = field(default_factory=dict)       # per channel
    digests: Mapping[int, DigestState] = field(default_factory=dict)     # per digest id


@dataclass(frozen=True)
class FixMove:
    """The fix loop's compare-and-set move of one incident (bot.engine.fixloop). `check_now`
    asks the directory again at once; `note` is the thread note the move calls for, which the
    decision has queued among the batch's messages in order (the snapshot is read under the
    same write lock as the write, so the move it decided from still holds)."""

    was: str
    to: str
    failed_at: datetime
    check_now: bool = False
    note: dict | None = None


@dataclass(frozen=True)
class IncidentWrite:
    """One incident to save (`incident.id` None: insert it; its placeholder is `ref`), the
    events it takes, the digest it joins, its fix-loop move."""

    incident: Incident
    ref: int
    events: tuple[Event, ...] = ()
    joins: int | None = None        # a digest id, or a NEW_DIGEST placeholder
    fix: FixMove | None = None


@dataclass(frozen=True)
class PollProgress:
    """Where the server's cursor stands after the batch (store.db.save_poll_success)."""

    server: str
    generation: int
    cursor: int
    oldest_record: int | None
    newest_record: int | None
    log: str


@dataclass(frozen=True)
class Writes:
    """Everything one batch writes, in the order the writer applies it."""

    incidents: tuple[IncidentWrite, ...] = ()
    new_digests: tuple[str, ...] = ()               # channels: NEW_DIGEST(i) is the i-th
    messages: tuple[Instruction, ...] = ()          # may name placeholders
    generation: int = 0                             # the events' generation
    problems: tuple[Problem, ...] = ()
    progress: PollProgress | None = None
    clock_skew: float | None = None                 # None: this batch cannot tell

    @property
    def stored(self) -> int:
        return sum(len(w.events) for w in self.incidents)

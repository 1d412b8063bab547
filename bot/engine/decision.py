"""One batch of events, decided: what changes in the incidents, the outbox, the storm digests and
the fix loop, as one pure function of what was read and `now`.

A poll is read -> decide -> write: store.batch.read_snapshot reads everything the decision
needs once per batch (bot.core.batch.Snapshot), `decide_batch` (or `decide_changes`, for
changes made elsewhere, such as the quiet sweep's) returns every write as plain data
(bot.core.batch.Writes), and store.batch.write_batch writes it in the same transaction.
Nothing here touches SQLite, Slack or the clock, so the rules are tested as tables
(tests/test_decision.py), as bot.engine.outbox's are.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from bot.core.batch import (
    NEW_DIGEST,
    NEW_INCIDENT,
    FixMove,
    IncidentWrite,
    PollProgress,
    Snapshot,
    Writes,
)
from bot.core.config import Config
from bot.core.messages import DETAILS, UNCLAIMED_POST, DigestMessage, Instruction
from bot.core.model import Event, Incident, Problem
from bot.engine import fixloop, outbox
from bot.engine.incidents import IncidentChange, decide
from store.db import iso

#: A difference between Exchange's event times and the bot's clock under this is not reported.
SKEW_LIMIT = timedelta(minutes=5)


def decide_batch(snapshot: Snapshot, now: datetime, config: Config, *,
                 generation: int = 0, problems: Iterable[Problem] = (),
                 progress: PollProgress | None = None, read: Iterable[Event] = (),
                 previous: datetime | None = None) -> Writes:
    """A batch of events read from a server: fold the new ones into incidents (bot.engine.
    incidents.decide) and decide every write that follows. `read`: every event the batch
    read, stored before or not, and `previous`, when the last good poll began: the clock
    skew is measured on them."""
    changes = decide(snapshot.fresh, snapshot.incidents, now,
                     timedelta(seconds=config.incidents.quiet_period), config.channel_of)
    writes = decide_changes(changes, snapshot, now, config)
    return replace(writes, generation=generation, problems=tuple(problems), progress=progress,
                   clock_skew=clock_skew(read, previous, now))


def decide_changes(changes: Iterable[IncidentChange], snapshot: Snapshot, now: datetime,
                   config: Config) -> Writes:
    """The writes incident changes call for: the incidents, the Slack messages (bot.engine.
    outbox), storm digests, and the fix loop's moves.

    A snoozed incident is updated in place but gets no thread notes, and one that opens while
    its account is snoozed is not posted until the snooze ends; an acknowledged incident is
    updated but gets no thread notes either (someone already owns it). A newly opened one
    joins its channel's digest when the storm rule says so; an incident in a digest never gets
    a post, update or note of its own: its digest is updated instead.
    """
    interval = timedelta(seconds=config.incidents.update_interval)
    storms = _Storms(snapshot, config, now)
    has_directory = config.directory is not None
    incident_writes: list[IncidentWrite] = []
    messages: list[Instruction] = []
    opened = 0
    for change in changes:
        incident = change.after
        if change.opened:
            ref = NEW_INCIDENT(opened)
            opened += 1
        else:
            ref = incident.stored_id
        silenced = str(incident.id) in snapshot.snoozed_ids or \
            incident.key in snapshot.snoozed_keys
        fix = _fix_move(incident, change.events, now, has_directory) \
            if incident.fix_state and change.events else None
        if fix is not None and fix.note is not None:
            messages += _tell(incident, fix.note, snapshot, messages)
        joins = None
        if change.opened and not silenced:
            joins, opening = storms.place(incident.channel)
            messages += opening   # a digest opened here is posted after the alerts before it
        digest_id = joins if joins is not None else incident.digest_id
        incident_writes.append(IncidentWrite(incident, ref, tuple(change.events), joins, fix))
        if digest_id is not None:   # its digest shows it: no post, update or note
            storms.touch(digest_id, joined=change.opened)
            continue
        messages += outbox.for_change(
            ref, opened=change.opened, message_ts=incident.message_ts,
            pending=snapshot.pending.get(ref, frozenset()), has_events=bool(change.events),
            resolved=change.resolved, new_servers=change.new_servers,
            new_connectors=change.new_connectors, silenced=silenced,
            acked=bool(incident.acked_by),
            last_message_at=change.before.last_message_at if change.before else None,
            now=now, update_interval=interval)
    return Writes(incidents=tuple(incident_writes), new_digests=tuple(storms.new),
                  messages=tuple(messages + storms.updates(messages)))


def _fix_move(incident: Incident, events: list[Event], now: datetime,
              has_directory: bool) -> FixMove | None:
    """New events of an incident marked fixed: after the right showed, the fix did not take.
    With a directory it is read again at once to say why (the note follows that read);
    without one, the thread says so now."""
    if not fixloop.fails_again(incident, events):
        return None
    if has_directory:
        return FixMove("watching", fixloop.FAILING_CHECK, now, check_now=True)
    return FixMove("watching", "failing", now, note={"action": "still_failing", "at": iso(now)})


def _tell(incident: Incident, note: dict, snapshot: Snapshot,
          decided: list[Instruction]) -> list[Instruction]:
    """bot.engine.notify.tell, decided from the snapshot and what this batch `decided` so
    far: the alert's update and a thread note, or for a digest's incident, its digest's."""
    if incident.digest_id is not None:
        state = snapshot.digests.get(incident.digest_id)
        pending: Collection[str] = _digest_kinds(decided, incident.digest_id) | (
            state.pending if state else frozenset())
        return outbox.for_digest_action(incident.digest_id, pending, {
            **note, "incident": incident.id, "account": incident.account})
    pending = snapshot.pending.get(incident.stored_id, frozenset()) - {UNCLAIMED_POST}
    return outbox.for_action(incident.stored_id, incident.message_ts, pending, note)


class _Storms:
    """The storm digests of one batch's changes: how many incidents opened in each channel
    within the storm window, and its live digest, as read, then kept up to date here, so a
    sweep that opens thousands of incidents costs nothing more per incident; each digest
    touched gets one coalesced update at the end (bot.engine.outbox.for_digest_change)."""

    def __init__(self, snapshot: Snapshot, config: Config, now: datetime):
        self.snapshot, self.now = snapshot, now
        self.threshold = config.incidents.storm_threshold
        self.interval = outbox.digest_interval(
            timedelta(seconds=config.incidents.update_interval))
        self.opened = {c: s.opened_recently for c, s in snapshot.storms.items()}
        self.live = {c: s.live.id if s.live else None for c, s in snapshot.storms.items()}
        self.new: list[str] = []                 # channels whose digest this batch opens
        self.touched: dict[int, bool] = {}       # digest id: did lines join it

    def place(self, channel: str) -> tuple[int | None, list[Instruction]]:
        """The digest a newly opened incident joins (None: it is posted on its own), and the
        messages of a digest it opens."""
        if not self.threshold:
            return None, []
        joins = outbox.joins_digest(opened_recently=self.opened.get(channel, 0),
                                    live_digest=self.live.get(channel) is not None,
                                    threshold=self.threshold)
        self.opened[channel] = self.opened.get(channel, 0) + 1
        if not joins:
            return None, []
        digest_id = self.live.get(channel)
        if digest_id is not None:
            return digest_id, []
        digest_id = self.live[channel] = NEW_DIGEST(len(self.new))
        self.new.append(channel)
        return digest_id, outbox.for_new_digest(digest_id)

    def touch(self, digest_id: int, *, joined: bool) -> None:
        self.touched[digest_id] = self.touched.get(digest_id, False) or joined

    def updates(self, decided: list[Instruction]) -> list[Instruction]:
        """One coalesced update of each digest touched; what waits for it counts what this
        batch has decided already (a new digest's post and first reply, a fix note)."""
        out: list[Instruction] = []
        for digest_id, joined in self.touched.items():
            state = self.snapshot.digests.get(digest_id)
            if state is None and digest_id >= 0:
                continue   # gone since (pruned): nothing to update
            pending = _digest_kinds(decided, digest_id) | (state.pending if state else set())
            out += outbox.for_digest_change(
                digest_id, pending=pending,
                joined=joined and not (state is not None and state.thread_full),
                last_message_at=state.digest.last_message_at if state else None, now=self.now,
                interval=self.interval)
        return out


def _digest_kinds(instructions: Iterable[Instruction], digest_id: int) -> set[str]:
    """The kinds of message `instructions` queue for a digest, as store.digests.pending_kinds
    would read them once written."""
    kinds: set[str] = set()
    for item in instructions:
        if isinstance(item, DigestMessage) and item.digest_id == digest_id:
            kinds.add(item.kind)
            if item.kind == "reply" and (item.detail or {}).get(DETAILS):
                kinds.add(DETAILS)
    return kinds


def clock_skew(events: Iterable[Event], previous: datetime | None,
               now: datetime) -> float | None:
    """How far the server's event times are off the bot's clock, in seconds (0 when within
    SKEW_LIMIT; None when this batch cannot tell).

    Ahead: an event stamped after the bot's now. Behind: the newest of the events logged since
    the last good poll (`previous`; they were written after it began) stamped well before it.
    """
    times = [event.time for event in events]
    if not times:
        return None
    newest = max(times)
    if newest - now > SKEW_LIMIT:
        return (newest - now).total_seconds()
    if previous is not None and previous - newest > SKEW_LIMIT:
        return -(previous - newest).total_seconds()
    return 0.0

"""The two ends of one batch: read what its decision needs (`read_snapshot`), and write what it
decided (`write_batch`). Both run inside one write_transaction; the decision between them is
bot.engine.decision's, pure. Plain data in and out: the messages and joins may name placeholders
for the incidents and digests the batch opens (bot.core.batch.NEW_INCIDENT), resolved here
to the ids their inserts get.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlite_utils import Database

from bot.core.batch import NEW_DIGEST, DigestState, Snapshot, StormState, Writes
from bot.core.messages import DigestMessage, Hurry, HurryDigest, Instruction, Message
from bot.core.model import Event, Incident

from . import chat, digests, fixes
from . import db as store


def read_snapshot(db: Database, *, now: datetime, events: Iterable[Event] = (),
                  generation: int = 0, incidents: Iterable[Incident] | None = None,
                  channels: Iterable[str] = (), storm_since: datetime | None = None) -> Snapshot:
    """What a batch's decision needs, once: the events not stored before, the open incidents
    of their accounts (or `incidents`, for changes decided elsewhere), snoozes, waiting
    messages, and the storm state of `channels` (counted since `storm_since`) and of every
    digest these incidents are listed in."""
    fresh = store.new_events(db, list(events), generation)
    if incidents is None:
        open_by_key = store.open_incidents(db, {e.incident_key for e in fresh}) if fresh else {}
    else:
        open_by_key = {i.key: i for i in incidents}
    snoozed_ids, snoozed_keys = chat.snoozed_keys(db, now)
    ids = [i.stored_id for i in open_by_key.values()]
    pending = {i: frozenset(kinds) for i, kinds in store.pending_kinds_of(db, ids).items()}
    storms: dict[str, StormState] = {}
    digest_ids = {i.digest_id for i in open_by_key.values() if i.digest_id is not None}
    if storm_since is not None:
        for channel in set(channels):
            live = digests.live_digest(db, channel)
            storms[channel] = StormState(digests.opened_since(db, channel, storm_since), live)
            if live is not None:
                digest_ids.add(live.id)
    return Snapshot(fresh=tuple(fresh), incidents=open_by_key,
                    snoozed_ids=frozenset(snoozed_ids), snoozed_keys=frozenset(snoozed_keys),
                    pending=pending, storms=storms, digests=_digest_states(db, digest_ids))


def _digest_states(db: Database, digest_ids: Iterable[int]) -> dict[int, DigestState]:
    states = {}
    for digest_id in digest_ids:
        digest = digests.get_digest(db, digest_id)
        if digest is not None:
            states[digest_id] = DigestState(digest, frozenset(digests.pending_kinds(db, digest_id)),
                                            digests.thread_full(db, digest))
    return states


def write_batch(db: Database, writes: Writes, now: datetime) -> None:
    """Write what the batch decided, in one go (inside the caller's write_transaction)."""
    digest_ids = {}
    for index, channel in enumerate(writes.new_digests):
        digest_ids[NEW_DIGEST(index)] = digests.open_digest(db, channel, now).id
    incident_ids: dict[int, int] = {}
    linked: list[tuple[Event, int | None]] = []
    for write in writes.incidents:
        incident = store.save_incident(db, write.incident)
        incident_ids[write.ref] = incident.stored_id
        linked += [(event, incident.stored_id) for event in write.events]
        fix = write.fix
        if fix is not None and fixes.move(db, incident.stored_id, was=fix.was, to=fix.to,
                                          failed_at=fix.failed_at) and fix.check_now:
            fixes.check_now(db, incident.stored_id, now)
        if write.joins is not None:
            digests.join(db, digest_ids.get(write.joins, write.joins), incident.stored_id, now)
    store.enqueue_messages(db, _resolved(writes.messages, incident_ids, digest_ids), now)
    if linked:
        store.insert_events(db, linked, writes.generation, now)
    store.record_problems(db, writes.problems, now)
    progress = writes.progress
    if progress is not None:
        store.save_poll_success(
            db, store.ServerState(progress.server), generation=progress.generation,
            cursor=progress.cursor, oldest_record=progress.oldest_record,
            newest_record=progress.newest_record, stored=writes.stored, now=now,
            log=progress.log)
        if writes.clock_skew is not None:
            store.set_clock_skew(db, progress.server, writes.clock_skew, now)


def _resolved(instructions: Iterable[Instruction], incident_ids: dict[int, int],
              digest_ids: dict[int, int]) -> list[Instruction]:
    """The instructions with each placeholder id replaced by the id its insert got."""
    out: list[Instruction] = []
    for item in instructions:
        if isinstance(item, Message | Hurry) and item.incident_id < 0:
            item = replace(item, incident_id=incident_ids[item.incident_id])
        elif isinstance(item, DigestMessage | HurryDigest) and item.digest_id < 0:
            item = replace(item, digest_id=digest_ids[item.digest_id])
        out.append(item)
    return out

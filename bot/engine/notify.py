"""Queue what a change of one incident calls for in Slack: an update of its alert and a note
in its thread, or, for an incident listed in a storm digest (which has no alert of its own),
an update of the digest and the note in the digest's thread. Chat-ops and the closed loop
(bot.engine.fixloop) both tell incidents through here; the rules are bot.engine.outbox's. Call
inside the transaction that made the change."""
from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from bot.core.model import Incident
from bot.engine import outbox
from store import chat, digests
from store import db as store


def tell(db: Database, incident: Incident, now: datetime, note: dict | None) -> None:
    """The alert's in-place update and a thread note (`note` None: the update only). An
    incident never posted (its account was snoozed when it opened) has nothing to update."""
    if incident.digest_id is not None:
        tell_digest(db, incident.digest_id, now, note and {
            **note, "incident": incident.id, "account": incident.account})
        return
    incident_id = incident.stored_id
    store.enqueue_messages(db, outbox.for_action(
        incident_id, incident.message_ts, store.pending_kinds(db, incident_id), note), now)


def tell_digest(db: Database, digest_id: int, now: datetime, note: dict | None) -> None:
    """The digest's update now, and a note in its thread about one line or all of it."""
    store.enqueue_messages(db, outbox.for_digest_action(
        digest_id, digests.pending_kinds(db, digest_id), note), now)


def snooze_ended(db: Database, incident: Incident, now: datetime, note: dict | None) -> None:
    """Bring an incident back after its last snooze ended (an account snooze may remain). A
    digest's incident never gets a post of its own, even now; `note` None: its digest is told
    once for many (bot.engine.chatops.end_expired_snoozes). One never posted (snoozed since it
    opened) joins its channel's digest while a storm is on there, instead of a post of its own."""
    if incident.digest_id is not None:
        still = bool(chat.snoozes_for(db, incident, now))
        tell_digest(db, incident.digest_id, now, None if still or note is None else {
            **note, "incident": incident.id, "account": incident.account})
        return
    incident_id = incident.stored_id
    pending = store.pending_kinds(db, incident_id)
    still = bool(chat.snoozes_for(db, incident, now))
    live = digests.live_digest(db, incident.channel) if not still and outbox.never_posted(
        incident.message_ts, pending) else None
    if live is not None:   # silent since it opened, and a storm is on: one more digest line
        digests.join(db, live.id, incident_id, now)
        tell_digest(db, live.id, now, None)
        return
    store.enqueue_messages(db, outbox.for_snooze_end(
        incident_id, incident.message_ts, pending, still_snoozed=still, note=note or {}), now)

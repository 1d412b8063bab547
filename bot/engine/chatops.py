"""What responders do to incidents from chat: acknowledge, snooze, and undo either.

Each operation is one transaction: the state change, its audit row (before and after), and the
outbox rows that update the alert in place and note the change in its thread. The alert itself
is changed by the delivery job, like every other message, so order and retries stay in one place.
Errors a person made (unknown incident, nothing to undo ...) raise ActionError in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.model import Incident, Snooze, incident_key
from bot.core.realtime import StepAware
from bot.engine import fixloop, notify
from bot.slack.alerts import show
from bot.slack.blocks import mention
from store import chat, digests, fixes
from store import db as store

#: Longer silence than this hides a problem rather than pausing it: fix the cause instead.
MAX_SNOOZE = timedelta(days=90)
SYSTEM = "SubmitWatch"   # the audit's user for what the bot does by itself (snooze expiry)


class ActionError(ValueError):
    """The action cannot be done as asked; the message is safe mrkdwn for the person."""


@dataclass(frozen=True)
class Actor:
    user_id: str
    via: str                  # "slash", "button"
    channel: str | None = None


def acknowledge(db: Database, incident_id: int, actor: Actor, note: str | None,
                now: datetime) -> Incident:
    with store.write_transaction(db):
        before = _open_incident(db, incident_id, "acknowledge")
        if before.acked_by == actor.user_id:
            raise ActionError(f"You already acknowledged #{incident_id}.")
        state = _state(db, before, now)
        chat.set_ack(db, incident_id, actor.user_id, note, now)
        after = _current(db, incident_id)
        _audit(db, actor, "ack", now, after, state, detail=note)
        notify.tell(db, after, now, {"action": "ack", "by": actor.user_id, "at": store.iso(now),
                                     "note": note, "took_over_from": before.acked_by})
    return after


def mark_fixed(db: Database, incident_id: int, actor: Actor, note: str | None, now: datetime,
               *, has_directory: bool) -> Incident:
    """Someone says it is fixed: the closed loop starts (bot.engine.fixloop). With a directory, it
    is read at once and then every few minutes until the right shows; without one, the events
    alone are watched from now."""
    with store.write_transaction(db):
        before = _open_incident(db, incident_id, "mark fixed")
        if before.fix_state in ("waiting", "watching", fixloop.FAILING_CHECK):
            doing = {"waiting": "waiting for the directory to show the right",
                     "watching": "watching the events"}.get(
                before.fix_state, "reading the directory again after a new failure")
            raise ActionError(f"#{incident_id} is already marked fixed by "
                              f"{mention(before.fixed_by)}; SubmitWatch is {doing}.")
        state = _state(db, before, now)
        loop = fixloop.state_when_marked(has_directory)
        fixes.mark_fixed(db, incident_id, by=actor.user_id, note=note, state=loop, now=now,
                         seen_at=None if loop == "waiting" else now)
        if has_directory:
            fixes.check_now(db, incident_id, now)
        after = _current(db, incident_id)
        _audit(db, actor, "fixed", now, after, state, detail=note)
        notify.tell(db, after, now, {"action": "fixed", "by": actor.user_id,
                                     "at": store.iso(now), "note": note,
                                     "directory": has_directory})
    return after


def unacknowledge(db: Database, incident_id: int, actor: Actor, now: datetime) -> Incident:
    with store.write_transaction(db):
        before = _open_incident(db, incident_id, "unacknowledge")
        if before.acked_by is None:
            raise ActionError(f"#{incident_id} is not acknowledged.")
        state = _state(db, before, now)
        chat.set_ack(db, incident_id, None, None, None)
        after = _current(db, incident_id)
        _audit(db, actor, "unack", now, after, state)
        notify.tell(db, after, now, {"action": "unack", "by": actor.user_id,
                                     "at": store.iso(now), "was": before.acked_by})
    return after


def snooze(db: Database, target: int | str, seconds: float, reason: str, actor: Actor,
           now: datetime) -> Snooze:
    """Snooze incident `target` (an int) or every incident of account `target` (a str)."""
    length = timedelta(seconds=seconds)
    if length > MAX_SNOOZE:
        raise ActionError(f"A snooze may last at most {MAX_SNOOZE.days} days; a longer silence "
                          "hides the problem. Grant the right, or stop the account from trying.")
    with store.write_transaction(db):
        if isinstance(target, int):
            incident = _open_incident(db, target, "snooze")
            kind, key, account, covered = "incident", str(target), incident.account, [incident]
        else:
            kind, key, account = "account", incident_key(target), target
            covered = list(store.open_incidents(db, [key]).values())
        before = {i.id: _state(db, i, now) for i in covered}
        for old in _snoozes_on(db, kind, key, now):   # a new snooze replaces the old one
            chat.end_snooze(db, old.id, now, actor.user_id)
        new = chat.add_snooze(db, kind=kind, target=key, account=account, until=now + length,
                              reason=reason, user_id=actor.user_id, now=now)
        if not covered:
            _audit(db, actor, "snooze", now, None, None, target=f"account {account}",
                   detail=_snooze_detail(new))
        for incident in covered:
            _audit(db, actor, "snooze", now, incident, before[incident.id],
                   detail=_snooze_detail(new))
            notify.tell(db, incident, now, {"action": "snooze", "by": actor.user_id,
                                            "at": store.iso(now), "until": store.iso(new.until),
                                            "reason": reason, "scope": kind})
    return new


def unsnooze(db: Database, target: int | str, actor: Actor, now: datetime) -> list[Snooze]:
    """End every snooze silencing incident `target` (int) or account `target` (str)."""
    with store.write_transaction(db):
        if isinstance(target, int):
            incident = store.get_incident(db, target)
            if incident is None:
                raise ActionError(f"There is no incident #{target}.")
            ending = chat.snoozes_for(db, incident, now)
            covered = [incident] if incident.status == "open" else []
            label = f"#{target}"
        else:
            key = incident_key(target)
            covered = list(store.open_incidents(db, [key]).values())
            ending = _snoozes_on(db, "account", key, now)
            for incident in covered:
                ending += [s for s in chat.snoozes_for(db, incident, now) if s not in ending]
            label = f"*{show(target)}*"
        if not ending:
            raise ActionError(f"Nothing silences {label}: no snooze is in force for it.")
        before = {i.id: _state(db, i, now) for i in covered}
        for s in ending:
            chat.end_snooze(db, s.id, now, actor.user_id)
        if not covered:
            _audit(db, actor, "unsnooze", now, None, None,
                   target=f"account {target}" if isinstance(target, str) else f"#{target}")
        for incident in covered:
            _audit(db, actor, "unsnooze", now, incident, before[incident.id])
            notify.snooze_ended(db, incident, now, {"action": "unsnooze",
                                                    "by": actor.user_id, "at": store.iso(now)})
    return ending


def end_expired_snoozes(db: Database, now: datetime, guard: StepAware | None = None) -> int:
    """Called by the scheduler: end snoozes whose time is up and bring their alerts back
    (`guard`: a snooze set before a clock step forward lasts its real length)."""
    with store.write_transaction(db):
        due = [s for s in chat.due_snoozes(db, now)
               if guard is None or guard.real_now(s.created_at, now) >= s.until]
        ended_in: dict[int, list[Incident]] = {}   # digest id: its incidents whose snooze ended
        for s in due:
            covered = chat.incidents_covered(db, s)
            chat.end_snooze(db, s.id, now, None)
            for incident in covered:
                _audit(db, Actor(SYSTEM, "schedule"), "snooze_expired", now, incident,
                       _state(db, incident, now) | {"snoozed_until": store.iso(s.until)},
                       detail=_snooze_detail(s))
                note: dict | None = {"action": "snooze_expired", "at": store.iso(now),
                                     "since": store.iso(s.created_at)}
                if incident.digest_id is not None:   # "Snooze all" ends as one note, below
                    ended_in.setdefault(incident.digest_id, []).append(incident)
                    note = None
                notify.snooze_ended(db, incident, now, note)
        for digest_id, ended in ended_in.items():
            about = ({"incident": ended[0].id, "account": ended[0].account} if len(ended) == 1
                     else {"count": len(ended)})
            notify.tell_digest(db, digest_id, now, {"action": "snooze_expired",
                                                    "at": store.iso(now), **about})
    return len(due)


def acknowledge_digest(db: Database, digest_id: int, actor: Actor, now: datetime) -> int:
    """Acknowledge every open incident of a storm digest not already the actor's: each is
    audited as its own ack; the digest is updated once and its thread says so once. Returns
    how many."""
    with store.write_transaction(db):
        taken = [i for i in _digest_members(db, digest_id)
                 if i.acked_by != actor.user_id]
        if not taken:
            raise ActionError("Every open incident of this digest is already acknowledged by "
                              "you.")
        for incident in taken:
            state = _state(db, incident, now)
            chat.set_ack(db, incident.stored_id, actor.user_id, None, now)
            _audit(db, actor, "ack", now, incident, state, detail=f"digest #{digest_id}")
        notify.tell_digest(db, digest_id, now, {"action": "ack", "by": actor.user_id,
                                                "at": store.iso(now), "count": len(taken)})
    return len(taken)


def snooze_digest(db: Database, digest_id: int, seconds: float, reason: str, actor: Actor,
                  now: datetime) -> int:
    """Snooze every open incident of a storm digest (each its own snooze and audit row; a
    new one replaces an older snooze of the same incident). Returns how many."""
    length = timedelta(seconds=seconds)
    if length > MAX_SNOOZE:
        raise ActionError(f"A snooze may last at most {MAX_SNOOZE.days} days.")
    with store.write_transaction(db):
        covered = _digest_members(db, digest_id)
        for incident in covered:
            before = _state(db, incident, now)
            for old in _snoozes_on(db, "incident", str(incident.id), now):
                chat.end_snooze(db, old.id, now, actor.user_id)
            new = chat.add_snooze(db, kind="incident", target=str(incident.id),
                                  account=incident.account, until=now + length, reason=reason,
                                  user_id=actor.user_id, now=now)
            _audit(db, actor, "snooze", now, incident, before, detail=_snooze_detail(new))
        notify.tell_digest(db, digest_id, now, {
            "action": "snooze", "by": actor.user_id, "at": store.iso(now),
            "until": store.iso(now + length), "reason": reason, "count": len(covered)})
    return len(covered)


def _digest_members(db: Database, digest_id: int) -> list[Incident]:
    if digests.get_digest(db, digest_id) is None:
        raise ActionError(f"There is no storm digest #{digest_id}.")
    members = digests.members(db, digest_id, status="open")
    if not members:
        raise ActionError("Every incident of this digest is resolved: nothing to do.")
    return members


def record_refusal(db: Database, actor: Actor, action: str, target: str, reason: str,
                   now: datetime, incident_id: int | None = None) -> None:
    """Someone without permission tried to act: the audit keeps it."""
    with store.write_transaction(db):
        chat.audit(db, now=now, user_id=actor.user_id, action=action, target=target,
                   via=actor.via, outcome="refused", incident_id=incident_id,
                   channel=actor.channel, detail=reason)


# --- helpers ------------------------------------------------------------------------------------

def _open_incident(db: Database, incident_id: int, verb: str) -> Incident:
    incident = store.get_incident(db, incident_id)
    if incident is None:
        raise ActionError(f"There is no incident #{incident_id}; `/submitwatch history` lists "
                          "them.")
    if incident.status != "open":
        raise ActionError(f"#{incident_id} is resolved: nothing to {verb}. A new event opens a "
                          "new incident.")
    return incident


def _snoozes_on(db: Database, kind: str, target: str, now: datetime) -> list[Snooze]:
    return [s for s in chat.active_snoozes(db, now) if s.kind == kind and s.target == target]


def _snooze_detail(s: Snooze) -> str:
    return f"until {store.iso(s.until)}: {s.reason}"


def _current(db: Database, incident_id: int) -> Incident:
    """The incident as it stands now, read again inside the transaction that found it (so it is
    there; if not, the transaction fails rather than audit or notify nothing)."""
    incident = store.get_incident(db, incident_id)
    if incident is None:
        raise LookupError(f"incident #{incident_id} vanished inside its own transaction")
    return incident



def _state(db: Database, incident: Incident, now: datetime) -> dict:
    snapshot = chat.incident_snapshot(incident, chat.snoozes_for(db, incident, now))
    if snapshot is None:   # incident_snapshot gives None only for no incident
        raise ValueError(f"no snapshot of incident {incident.id}")
    return snapshot


def _audit(db: Database, actor: Actor, action: str, now: datetime, incident: Incident | None,
           before: dict | None, *, target: str | None = None, detail: str | None = None) -> None:
    """One audit row; the state after is read back from the database, as it now stands."""
    after = None
    if incident is not None:
        after = _state(db, _current(db, incident.stored_id), now)
        target = target or f"#{incident.id} {incident.account}"
    if target is None:   # the audit's target is NOT NULL: name the caller's slip, not SQLite's
        raise ValueError(f"an audit of {action} without an incident needs a target")
    chat.audit(db, now=now, user_id=actor.user_id, action=action, target=target, via=actor.via,
               outcome="done", incident_id=incident.id if incident else None,
               channel=actor.channel, before=before, after=after, detail=detail)

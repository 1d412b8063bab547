"""The closed loop: "I granted it" -> the directory shows the right -> the events stop ->
Confirmed fixed; or -> it fails again -> the thread says so at once, with what the directory
shows now.

States of an incident marked fixed (store.fixes keeps them; the rules here are pure):

    waiting    the directory does not show the right yet (replication takes time): it is read
               again every RECHECK; events are expected meanwhile and change nothing
    watching   the right shows (or there is no [directory]: the events alone are watched);
               quiet for the confirmation window -> confirmed; an event logged after -> failing
    confirmed  the incident closed as Confirmed fixed (its own kind of resolved)
    failing    it failed again after the right showed; Mark fixed may start the loop again

Every open incident with an alert of its own also gets a directory check (its alert's
"Directory" line), refreshed every REFRESH. Directory reads happen outside any transaction
(they may take seconds); what they change is written in one, compare-and-set, so two jobs
never post the same note twice.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.config import Config
from bot.core.findings import Finding
from bot.core.model import Event, Incident
from bot.directory import adcheck
from bot.engine import notify
from store import db as store
from store import fixes

log = logging.getLogger("submitwatch")
Clock = Callable[[], datetime]

#: While waiting for the right to show, the directory is read again this often.
RECHECK = timedelta(minutes=5)
#: Any other open incident's Directory line is read again this often.
REFRESH = timedelta(hours=6)
#: The least quiet time that confirms a fix (the default window is derived from the rate).
MIN_CONFIRM = timedelta(hours=1)
#: Directory checks per job run: a storm of new incidents must not hold the job for long.
CHECKS_PER_RUN = 20
#: Transient: the directory will be read again for an incident whose last event fell after the
#: right showed (the thread says "still failing" once it has read what the directory says now).
FAILING_CHECK = "failing_check"
#: The states in which the loop, not the quiet period, ends the incident.
WATCHED = ("watching", FAILING_CHECK)


# --- the rules ----------------------------------------------------------------------------

def state_when_marked(has_directory: bool) -> str:
    return "waiting" if has_directory else "watching"


def after_check(state: str | None, granted: bool) -> str | None:
    """The state a directory check moves the loop to (None: it stays)."""
    if state == "waiting" and granted:
        return "watching"
    if state == FAILING_CHECK:
        return "failing"
    return None


def next_check(state: str | None, now: datetime) -> datetime:
    return now + (RECHECK if state == "waiting" else REFRESH)


def fails_again(incident: Incident, events: list[Event]) -> bool:
    """An event logged after the right showed (Exchange's time: one logged before and read
    late is not a failure of the fix)."""
    since = incident.fix_seen_at
    return incident.fix_state == "watching" and since is not None and any(
        e.time > since for e in events)


def confirm_window(incident: Incident, configured: float, quiet_period: float) -> timedelta:
    """How long without an event confirms the fix: `configured`, else three of the incident's
    own gaps between events, at least MIN_CONFIRM and at most 90% of the quiet period. (An
    incident being watched is never resolved as quiet: it ends confirmed or failing.)"""
    if configured > 0:
        return timedelta(seconds=configured)
    gap = ((incident.last_seen - incident.first_seen) / (incident.event_count - 1)
           if incident.event_count > 1 else timedelta(0))
    window = max(MIN_CONFIRM, 3 * gap)
    return min(window, timedelta(seconds=quiet_period * 0.9))


def confirmed(incident: Incident, now: datetime, window: timedelta) -> bool:
    if incident.fix_state != "watching" or incident.fix_seen_at is None:
        return False
    quiet_since = max(incident.fix_seen_at, incident.last_stored_at or incident.fix_seen_at)
    return now - quiet_since >= window


# --- what the jobs do ---------------------------------------------------------------------

def places_of(incident: Incident) -> list[tuple[str, str | None]]:
    """The connectors the incident's events named, as (server, name)."""
    places: list[tuple[str, str | None]] = []
    for connector in incident.connectors:
        place = adcheck.split_place(connector)
        if place and place not in places:
            places.append(place)
    return places


def run_checks(db: Database, config: Config, clock: Clock, limit: int = CHECKS_PER_RUN) -> int:
    """Read the directory for the incidents whose check is due (the loop's first); store each
    finding, move the loop, and queue the alert update and thread note it calls for."""
    if config.directory is None:
        return 0
    due = fixes.due_checks(db, clock(), limit)
    for incident in due:
        found = adcheck.check(config.directory, incident.account, places_of(incident), clock(),
                              named=incident.connectors, each_place=True)
        with store.write_transaction(db):
            _record(db, incident.stored_id, found, clock())
    return len(due)


def _record(db: Database, incident_id: int, found: Finding, now: datetime) -> None:
    current = store.get_incident(db, incident_id)
    if current is None or current.status != "open":
        return
    before = fixes.finding(db, incident_id)
    state = current.fix_state
    # The events decide when there is nothing to read (no event named a connector) and for a
    # built-in account, which no right lets through (it shows the right or not, Exchange still
    # refuses it): only a device set up with another account stops its events.
    builtin = found.builtin is not None
    new = after_check(state, (found.granted and not builtin) or builtin
                      or not (found.error or found.connectors))
    fixes.save_finding(db, incident_id, found, next_check(new or state, now))
    note = None
    if new and fixes.move(db, incident_id, was=state or "", to=new,
                          seen_at=now if new == "watching" else None):
        if new == "watching":
            since = (now - current.fixed_at).total_seconds() if current.fixed_at else None
            note = {"action": "fix_seen", "at": store.iso(now), "finding": found.summary(),
                    "seconds": since, "directory": bool(found.connectors) and not builtin,
                    "builtin": builtin}
        else:
            note = {"action": "still_failing", "at": store.iso(now),
                    "finding": found.summary(), "directory": True}
    if note is None and before is not None and before.summary() == found.summary():
        return   # nothing the alert shows has changed
    notify.tell(db, current, now, note)


def confirm_fixes(db: Database, config: Config, clock: Clock) -> int:
    """Close as Confirmed fixed the incidents watched and quiet for their window."""
    now = clock()
    watched = [i for i in fixes.in_states(db, "watching") if confirmed(
        i, now, confirm_window(i, config.incidents.confirm_after,
                               config.incidents.quiet_period))]
    if not watched:
        return 0
    with store.write_transaction(db):
        for incident in watched:
            window = confirm_window(incident, config.incidents.confirm_after,
                                    config.incidents.quiet_period)
            if fixes.confirm(db, incident.stored_id, now):
                notify.tell(db, incident, now, {"action": "confirmed", "at": store.iso(now),
                                                "seconds": window.total_seconds()})
    return len(watched)

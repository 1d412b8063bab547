"""The two steps the scheduler repeats, each callable on its own from tests and `poll-once`.

poll_server_once: ask one server for new events, store them, fold them into incidents and write
    the outbox rows, all in one transaction per batch; the cursor moves in that same transaction.
deliver_once: send due outbox rows to Slack in order; mark each sent only after Slack said ok.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from sqlite_utils import Database

from store import db as store

from . import render
from .config import Config
from .incidents import IncidentChange, decide, resolve_quiet
from .model import Problem
from .parse import LogInfo, parse_events
from .slack_out import DeliveryError, SlackSender
from .source import SourceError, WinRMSource

log = logging.getLogger("submitwatch")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class PollResult:
    server: str
    stored: int = 0
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None
    round_trips: int = 0

    def summary(self) -> str:
        if self.error:
            return f"{self.server}: FAILED: {self.error}"
        text = f"{self.server}: {self.stored} new event(s) in {self.round_trips} round trip(s)"
        if self.problems:
            text += f", {len(self.problems)} problem(s): " + "; ".join(
                p.detail for p in self.problems[:3])
        return text


def poll_server_once(db: Database, source: WinRMSource, config: Config,
                     clock: Clock = utc_now) -> PollResult:
    """One sweep of one server. Never raises for a server-side failure: it is recorded."""
    server = source.server
    result = PollResult(server.name)
    try:
        with source.open() as shell:
            state = store.server_state(db, server.name)
            info = shell.log_info()
            generation, cursor, notes = _check_log(state, info)
            result.problems += notes
            lookback_ms = None if cursor is not None else int(config.polling.lookback * 1000)
            cursor = cursor or 0
            while True:
                raw = shell.query(cursor, config.polling.batch_size, lookback_ms)
                result.round_trips += 1
                text, problems = _decode(raw, server.name)
                batch = parse_events(text, server.name)
                problems += batch.problems
                full = batch.complete_events >= config.polling.batch_size
                next_cursor = max(cursor, batch.highest_record or 0)
                if not full:
                    # Everything up to the newest record (read before this query) was examined.
                    next_cursor = max(next_cursor, info.newest_record or 0)
                result.stored += _store_batch(db, config, state, batch.events, notes + problems,
                                              generation, next_cursor, info, clock())
                result.problems += problems
                notes = []
                if not full or next_cursor == cursor:
                    break
                cursor, lookback_ms = next_cursor, None
                state = store.server_state(db, server.name)
        for problem in result.problems[:5]:
            log.warning("%s: %s", server.name, problem.detail)
    except SourceError as exc:
        result.error = str(exc)
        log.warning("poll failed: %s", exc)
        with store.write_transaction(db):
            store.save_poll_failure(db, server.name, str(exc), clock())
    return result


def _check_log(state: store.ServerState, info: LogInfo) -> tuple[int, int | None, list[Problem]]:
    """Detect a cleared or wrapped log from the cursor; return (generation, cursor, problems)."""
    if state.cursor is None:
        return state.generation, None, []
    newest = info.newest_record
    if state.cursor > (newest or 0):
        return state.generation + 1, 0, [Problem(
            state.server, "log_cleared",
            f"the Application log was cleared (the cursor {state.cursor} is above the newest "
            f"record {newest or 'none'}); reading the new log from its start")]
    if info.oldest_record is not None and info.oldest_record > state.cursor + 1:
        lost = info.oldest_record - state.cursor - 1
        return state.generation, state.cursor, [Problem(
            state.server, "log_wrapped",
            f"{lost} log record(s) after {state.cursor} were overwritten before SubmitWatch "
            "read them (any 1018/1020 among them are lost): raise the Application log's "
            "maximum size or poll more often")]
    return state.generation, state.cursor, []


def _decode(raw: bytes, server: str) -> tuple[str, list[Problem]]:
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="replace"), [Problem(
            server, "invalid_utf8",
            f"the server's output was not valid UTF-8 (first bad byte at {exc.start}); "
            "damaged characters were replaced with U+FFFD",
            raw[max(0, exc.start - 60): exc.start + 20].decode("utf-8", errors="replace"))]


def _store_batch(db: Database, config: Config, state: store.ServerState, events, problems,
                 generation: int, cursor: int, info: LogInfo, now: datetime) -> int:
    with store.write_transaction(db):
        stored = store.store_new_events(db, events, generation, now)
        store.record_problems(db, problems, now)
        fresh = [event for _row, event in stored]
        row_ids = {(e.server, e.record_id): row for row, e in stored}
        changes = decide(fresh, store.open_incidents(db, (e.incident_key for e in fresh)), now,
                         timedelta(seconds=config.incidents.quiet_period), config.channel_for)
        apply_changes(db, changes, now, config, row_ids)
        store.save_poll_success(db, state, generation=generation, cursor=cursor,
                                newest_record=info.newest_record, stored=len(stored), now=now)
    return len(stored)


def apply_changes(db: Database, changes: Iterable[IncidentChange], now: datetime, config: Config,
                  row_ids: dict | None = None) -> None:
    """Save incident changes and the Slack messages they call for (inside a transaction)."""
    for change in changes:
        incident = store.save_incident(db, change.after)
        if row_ids:
            store.link_events(db, (row_ids[(e.server, e.record_id)] for e in change.events),
                              incident.id)
        if change.opened:
            store.enqueue(db, incident.id, "post", now)
            continue
        pending = store.pending_kinds(db, incident.id)
        if (change.events or change.resolved) and not pending & {"post", "update"}:
            # Coalesce: at most one update per update_interval; the update renders the
            # incident as it is when sent, so later events ride along.
            last = change.before.last_message_at if change.before else None
            wait = timedelta(seconds=config.incidents.update_interval)
            store.enqueue(db, incident.id, "update", now,
                          not_before=max(now, last + wait) if last else now)
        if change.new_servers or change.new_connectors:
            store.enqueue(db, incident.id, "reply", now, detail={
                "servers": list(change.new_servers), "connectors": list(change.new_connectors)})


def resolve_quiet_incidents(db: Database, config: Config, clock: Clock = utc_now) -> int:
    """Close incidents that have been quiet for the configured period."""
    now = clock()
    with store.write_transaction(db):
        changes = resolve_quiet(store.open_incidents(db).values(), now,
                                timedelta(seconds=config.incidents.quiet_period))
        apply_changes(db, changes, now, config)
    return len(changes)


@dataclass
class DeliveryResult:
    sent: int = 0
    failed: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


def deliver_once(db: Database, sender: SlackSender, config: Config,
                 clock: Clock = utc_now) -> DeliveryResult:
    """Send what is due, in order. Stops early when Slack itself is unreachable."""
    result = DeliveryResult()
    blocked: set[int] = set()  # incidents whose earlier message failed or waits: keep order
    for row in store.pending_messages(db):
        now = clock()
        incident = store.get_incident(db, row.incident_id)
        if row.incident_id in blocked or row.not_before > now or (
                row.kind != "post" and incident.message_ts is None):
            blocked.add(row.incident_id)
            result.waiting += 1
            continue
        try:
            _send(db, sender, row, incident, config, now)
            result.sent += 1
        except DeliveryError as exc:
            blocked.add(row.incident_id)
            result.failed += 1
            result.errors.append(str(exc))
            retry_at = now + _backoff(row.attempts, exc.permanent)
            with store.write_transaction(db):
                store.mark_retry(db, row.id, str(exc), retry_at)
            (log.error if exc.permanent else log.warning)(
                "delivery failed (attempt %d, next try %s): %s", row.attempts + 1,
                store.iso(retry_at), exc)
            if exc.code == "unreachable" or exc.code.startswith("http_"):
                break  # Slack is down: do not hammer it with every row
    return result


def _send(db: Database, sender: SlackSender, row: store.OutboxRow, incident, config: Config,
          now: datetime) -> None:
    servers = {s.name: s for s in config.servers}
    if row.kind == "reply":
        text, blocks = render.thread_note(incident, row.detail, servers)
        sender.post(incident.channel, text, blocks, thread_ts=incident.message_ts)
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return
    text, blocks = render.alert(incident, servers)
    if row.kind == "post":
        ts = sender.post(incident.channel, text, blocks, metadata={
            "event_type": "submitwatch_incident",
            "event_payload": {"incident_id": incident.id}})
    else:
        sender.update(incident.channel, incident.message_ts, text, blocks)
        ts = None
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        store.set_message(db, incident.id, ts=ts, now=now)
        # A poll may have added events while this render was on its way (it saw the pending
        # row and did not queue another): queue one more update so the message catches up.
        current = store.get_incident(db, incident.id)
        if _shown(current) != _shown(incident) and not store.pending_kinds(
                db, incident.id) & {"post", "update"}:
            store.enqueue(db, incident.id, "update", now, not_before=now + timedelta(
                seconds=config.incidents.update_interval))


def _shown(incident) -> tuple:
    """What the alert message displays; a change here needs a chat.update."""
    return (incident.status, incident.event_count, incident.last_seen, incident.servers,
            incident.connectors)


def _backoff(attempts: int, permanent: bool) -> timedelta:
    """5 s, 10 s, 20 s ... capped at 5 min; 15 min for errors a person must fix first."""
    if permanent:
        return timedelta(minutes=15)
    return timedelta(seconds=min(300, 5 * 2 ** attempts))

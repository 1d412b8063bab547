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

from store import chat
from store import db as store

from . import render
from .config import Config
from .incidents import IncidentChange, decide, resolve_quiet
from .model import Problem
from .parse import LogInfo, parse_events
from .slack_out import DeliveryError, SlackSender
from .source import SourceError, WinRMSource
from .workers import OWNER, claim_is_dead

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
    """One sweep of one server. Never raises: a failure is recorded for `status` and the log."""
    server = source.server
    result = PollResult(server.name)
    try:
        _poll(db, source, config, clock, result)
        for problem in result.problems[:5]:
            log.warning("%s: %s", server.name, problem.detail)
    except SourceError as exc:
        result.error = str(exc)
    except Exception as exc:  # a bug or a database failure: say so, keep the other servers going
        log.exception("unexpected error while polling %s", server.name)
        result.error = (f"{server.name}: unexpected {type(exc).__name__} while polling: {exc} "
                        "(see the log; please report it)")
    if result.error:
        log.warning("poll failed: %s", result.error)
        try:
            with store.write_transaction(db):
                store.save_poll_failure(db, server.name, result.error, clock())
        except Exception:
            log.exception("could not record the failure of %s", server.name)
    return result


def _poll(db: Database, source: WinRMSource, config: Config, clock: Clock,
          result: PollResult) -> None:
    batch_size = config.polling.batch_size
    with source.open() as shell:
        state = store.server_state(db, source.server.name)
        info = shell.log_info()  # read before querying: every record up to its newest is covered
        generation, cursor, notes = check_log(state, info)
        # A server seen for the first time is read from the look-back, not from record 0.
        lookback_ms = int(config.polling.lookback * 1000) if cursor is None else None
        cursor = cursor or 0
        while True:
            raw = shell.query(cursor, batch_size, lookback_ms)
            result.round_trips += 1
            text, problems = _decode(raw, source.server.name)
            batch = parse_events(text, source.server.name)
            problems += batch.problems
            next_cursor = max(cursor, batch.highest_record or 0)
            truncated = any(p.kind == "truncated_event" for p in batch.problems)
            more = batch.complete_events >= batch_size and not truncated
            if not more and not truncated:
                # Nothing more matched up to the newest record gli saw: skip past it all, so
                # a log that later wraps through unrelated records is not taken for a loss.
                # After a cut-off event the cursor stays before it: the next poll reads it again.
                next_cursor = max(next_cursor, info.newest_record or 0)
            result.stored += _store_batch(db, config, state, batch.events, notes + problems,
                                          generation, next_cursor, info, clock())
            result.problems += notes + problems
            notes = []
            if not more or next_cursor == cursor:
                return
            cursor, lookback_ms = next_cursor, None
            state = store.server_state(db, source.server.name)


def check_log(state: store.ServerState, info: LogInfo) -> tuple[int, int | None, list[Problem]]:
    """Compare the log with the cursor: (generation, cursor to read from, problems).

    Cleared: the cursor is above the newest record, or the oldest record went down (the log
    was numbered again). The generation moves on so old and new record ids never collide.
    Wrapped: records after the cursor are gone; said only when the last poll saw the log's
    oldest record too, so a first poll or the poll after a clear never cries wolf.
    """
    if state.cursor is None:
        return state.generation, None, []
    newest, oldest = info.newest_record, info.oldest_record
    renumbered = (oldest is not None and state.oldest_record is not None
                  and oldest < state.oldest_record)
    if state.cursor > (newest or 0) or renumbered:
        return state.generation + 1, 0, [Problem(
            state.server, "log_cleared",
            f"the Application log was cleared (SubmitWatch had read up to record {state.cursor}; "
            f"the log now holds {info.record_count} record(s), oldest "
            f"{oldest if oldest is not None else 'none'}); reading the new log from its start")]
    if oldest is not None and state.oldest_record is not None and oldest > state.cursor + 1:
        lost = oldest - state.cursor - 1
        return state.generation, state.cursor, [Problem(
            state.server, "log_wrapped",
            f"{lost} log record(s) after {state.cursor} were removed (the log wrapped or was "
            "cleared) before SubmitWatch read them; any 1018/1020 among them are lost. Raise the "
            "Application log's maximum size or poll more often")]
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
                                oldest_record=info.oldest_record,
                                newest_record=info.newest_record, stored=len(stored), now=now)
    return len(stored)


def apply_changes(db: Database, changes: Iterable[IncidentChange], now: datetime, config: Config,
                  row_ids: dict | None = None) -> None:
    """Save incident changes and the Slack messages they call for (inside a transaction).

    A snoozed incident is updated in place but gets no thread notes, and one that opens while
    its account is snoozed is not posted until the snooze ends; an acknowledged incident is
    updated but gets no thread notes either (someone already owns it).
    """
    changes = list(changes)
    if not changes:
        return
    snoozed_ids, snoozed_keys = chat.snoozed_keys(db, now)
    for change in changes:
        incident = store.save_incident(db, change.after)
        if row_ids:
            store.link_events(db, (row_ids[(e.server, e.record_id)] for e in change.events),
                              incident.id)
        silenced = str(incident.id) in snoozed_ids or incident.key in snoozed_keys
        if change.opened:
            if not silenced:
                store.enqueue(db, incident.id, "post", now)
            continue
        pending = store.pending_kinds(db, incident.id)
        if incident.message_ts is None and "post" not in pending:
            continue  # never posted (snoozed since it opened): it is posted when that ends
        if (change.events or change.resolved) and not pending & {"post", "update"}:
            # Coalesce: at most one update per update_interval; the update renders the
            # incident as it is when sent, so later events ride along.
            last = change.before.last_message_at if change.before else None
            wait = timedelta(seconds=config.incidents.update_interval)
            store.enqueue(db, incident.id, "update", now,
                          not_before=max(now, last + wait) if last else now)
        if (change.new_servers or change.new_connectors) and not (silenced or incident.acked_by):
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
    for row in store.pending_messages(db, clock()):
        now = clock()
        if row.state == "sending" and not claim_is_dead(row.claimed_by, row.claimed_at, now,
                                                        store.CLAIM_TIMEOUT):
            blocked.add(row.incident_id)  # another worker is sending it right now
            result.waiting += 1
            continue
        incident = store.get_incident(db, row.incident_id)
        if row.incident_id in blocked or row.not_before > now or (
                row.kind != "post" and incident.message_ts is None):
            # An update held back only to coalesce renders the latest state whenever it goes,
            # so later thread replies need not wait for it; anything else keeps its order.
            if not (row.kind == "update" and row.attempts == 0):
                blocked.add(row.incident_id)
            result.waiting += 1
            continue
        with store.write_transaction(db):
            claimed = store.claim(db, row, now, OWNER)
        if not claimed:  # another worker (a cron poll-once beside `run`) is sending it
            blocked.add(row.incident_id)
            continue
        try:
            incident = store.get_incident(db, row.incident_id)
            if not _already_sent(db, sender, row, incident, now):
                _send(db, sender, row, incident, config, now)
            result.sent += 1
        except DeliveryError as exc:
            blocked.add(row.incident_id)
            result.failed += 1
            result.errors.append(str(exc))
            if exc.code == "message_not_found" and row.kind == "update":
                _repost(db, row, now)
                continue
            retry_at = now + _backoff(row.attempts, exc.permanent)
            with store.write_transaction(db):
                store.mark_retry(db, row.id, str(exc), retry_at)
            (log.error if exc.permanent else log.warning)(
                "delivery failed (attempt %d, next try %s): %s", row.attempts + 1,
                store.iso(retry_at), exc)
            if exc.code == "unreachable" or exc.code.startswith("http_"):
                break  # Slack is down: do not hammer it with every row
        except Exception as exc:  # a bug (say, in rendering): keep the row, say so, go on
            log.exception("could not send outbox row %d", row.id)
            blocked.add(row.incident_id)
            result.failed += 1
            result.errors.append(f"unexpected {type(exc).__name__}: {exc}")
            with store.write_transaction(db):
                store.mark_retry(db, row.id, f"unexpected {type(exc).__name__}: {exc}",
                                 now + _backoff(row.attempts, permanent=True))
    return result


def _already_sent(db: Database, sender: SlackSender, row: store.OutboxRow, incident,
                  now: datetime) -> bool:
    """Did an earlier attempt at this post or reply reach Slack after all?

    A worker killed between Slack's ok and its database commit, or a timeout after Slack took
    the message, leaves a row that looks unsent. Its message carries the row id in its metadata:
    if Slack has it, record it as sent instead of posting it twice.
    """
    if row.kind == "update" or (row.state == "pending" and row.attempts == 0):
        return False
    try:
        ts = sender.find_sent(incident.channel, {"outbox_id": row.id},
                              thread_ts=incident.message_ts if row.kind == "reply" else None)
    except DeliveryError as exc:
        if exc.code != "missing_scope":
            raise
        # Better a possible duplicate than a lost alert; the log says how to avoid it.
        log.warning("cannot look for outbox row %d in Slack before sending it again (the app "
                    "lacks channels:history/groups:history; reinstall it from manifest.yml); "
                    "sending it, which may show it twice", row.id)
        return False
    if ts is None:
        return False
    log.warning("outbox row %d had reached Slack before (ts %s); recorded, not sent again",
                row.id, ts)
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        if row.kind == "post":
            store.set_message(db, incident.id, ts=ts, now=now)
    return True


def _repost(db: Database, row: store.OutboxRow, now: datetime) -> None:
    """Someone deleted the alert in Slack: post it again rather than update nothing forever."""
    log.warning("the alert for incident %d was deleted in Slack; posting it again",
                row.incident_id)
    with store.write_transaction(db):
        store.mark_superseded(db, row.id)
        store.forget_message(db, row.incident_id)
        store.enqueue(db, row.incident_id, "post", now)


def _send(db: Database, sender: SlackSender, row: store.OutboxRow, incident, config: Config,
          now: datetime) -> None:
    servers = {s.name: s for s in config.servers}
    if row.kind == "reply":
        if "action" in row.detail:
            text, blocks = render.action_note(incident, row.detail)
        else:
            text, blocks = render.thread_note(incident, row.detail, servers)
        sender.post(incident.channel, text, blocks, thread_ts=incident.message_ts, metadata={
            "event_type": "submitwatch_note",
            "event_payload": {"incident_id": incident.id, "outbox_id": row.id}})
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return
    snoozes = chat.snoozes_for(db, incident, now)
    text, blocks = render.alert(incident, servers, snoozes)
    if row.kind == "post":
        ts = sender.post(incident.channel, text, blocks, metadata={
            "event_type": "submitwatch_incident",
            "event_payload": {"incident_id": incident.id, "outbox_id": row.id}})
    else:
        sender.update(incident.channel, incident.message_ts, text, blocks)
        ts = None
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        store.set_message(db, incident.id, ts=ts, now=now)
        # A poll may have added events while this render was on its way (it saw the pending
        # row and did not queue another): queue one more update so the message catches up.
        current = store.get_incident(db, incident.id)
        changed = _shown(current, chat.snoozes_for(db, current, now)) != _shown(incident, snoozes)
        if changed and not store.pending_kinds(db, incident.id) & {"post", "update"}:
            store.enqueue(db, incident.id, "update", now, not_before=now + timedelta(
                seconds=config.incidents.update_interval))


def _shown(incident, snoozes) -> tuple:
    """What the alert message displays; a change here needs a chat.update."""
    return (incident.status, incident.event_count, incident.last_seen, incident.servers,
            incident.connectors, incident.acked_by, incident.ack_note,
            tuple(s.id for s in snoozes))


def _backoff(attempts: int, permanent: bool) -> timedelta:
    """5 s, 10 s, 20 s ... capped at 5 min; 15 min for errors a person must fix first."""
    if permanent:
        return timedelta(minutes=15)
    return timedelta(seconds=min(300, 5 * 2 ** attempts))

"""The two steps the scheduler repeats, each callable on its own from tests and `poll-once`.

poll_server_once: ask one server for new events, store them, fold them into incidents and write
    the outbox rows, all in one transaction per batch; the cursor moves in that same transaction.
resolve_quiet_incidents: close incidents that have been quiet for the configured period.
Delivery to Slack is bot.engine.delivery's.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from bot.core import counters, messages
from bot.core.batch import PollProgress
from bot.core.config import Config
from bot.core.model import Incident, Problem
from bot.core.realtime import StepAware
from bot.engine import fixloop, outbox
from bot.engine.decision import decide_batch, decide_changes
from bot.engine.incidents import resolve_quiet
from bot.sources.base import Answer, EventSource, SourceError
from bot.sources.parse import LogInfo, parse_events
from store import batch, chat, digests
from store import db as store

log = logging.getLogger("submitwatch")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PollResult:
    server: str
    stored: int = 0
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None
    round_trips: int = 0
    disk_full: bool = False     # the database could not be written: nothing was stored

    def summary(self) -> str:
        if self.error:
            return f"{self.server}: FAILED: {self.error}"
        text = f"{self.server}: {self.stored} new event(s) in {self.round_trips} round trip(s)"
        if self.problems:
            text += f", {len(self.problems)} problem(s): " + "; ".join(
                p.detail for p in self.problems[:3])
        return text


def poll_server_once(db: Database, source: EventSource, config: Config,
                     clock: Clock = utc_now, guard: StepAware | None = None) -> PollResult:
    """One sweep of one server. Never raises: a failure is recorded for `status` and the log.
    `guard` (a bot.ops.clockguard.ClockGuard, whose `now` the clock should be): a snooze set
    before a clock step forward silences for its real length here too, as in
    bot.engine.chatops.end_expired_snoozes."""
    server = source.server
    result = PollResult(server.name)
    started = time.monotonic()
    try:
        _poll(db, source, config, clock, result, guard)
        for problem in result.problems[:5]:
            log.warning("%s: %s", server.name, problem.detail, extra={"server": server.name})
    except SourceError as exc:
        result.error = str(exc)
    except store.StoreError as exc:   # locked, full, read-only: already in words
        result.error = f"{server.name}: {exc}"
        result.disk_full = isinstance(exc, store.DiskFullError)
    except Exception as exc:  # a bug or a database failure: say so, keep the other servers going
        log.exception("unexpected error while polling %s", server.name,
                      extra={"server": server.name})
        result.error = (f"{server.name}: unexpected {type(exc).__name__} while polling: {exc} "
                        "(see the log; please report it)")
    counters.record_poll(server.name, time.monotonic() - started, result.stored,
                        failed=result.error is not None)
    if result.disk_full:
        return result   # recording its health would fail the same way; the caller says it once
    try:
        _record_health(db, server.name, result, config.polling.alert_after_failures, clock())
    except Exception:
        log.exception("could not record the health of %s", server.name)
    return result


def _record_health(db: Database, server: str, result: PollResult, alert_after: int,
                   now: datetime) -> None:
    """Store the failure; raise one "not being watched" alert after `alert_after` failures in
    a row, and one recovery notice at the next success: never one message per poll."""
    if not result.error and store.server_state(db, server).down_since is None:
        return  # the usual case: all is well and was well
    with store.write_transaction(db):
        if result.error:
            log.warning("poll failed: %s", result.error, extra={"server": server})
            store.save_poll_failure(db, server, result.error, now)
            state = store.server_state(db, server)
            if (state.consecutive_failures >= alert_after
                    and store.mark_server_down(db, server, now)):
                # "since": the last good poll; a server that never had one says since when
                # SubmitWatch has watched it instead (no made-up "last good poll").
                last_good = state.last_success_at
                store.enqueue(db, None, "server_down", now, server=server, detail={
                    "error": result.error, "failures": state.consecutive_failures,
                    "since": store.iso(state.first_poll_at or now if last_good is None
                                       else last_good), "never": last_good is None})
            return
        down_since = store.mark_server_up(db, server)
        if down_since is not None:
            store.enqueue(db, None, "server_up", now, server=server, detail={
                "since": store.iso(down_since), "at": store.iso(now)})


def _poll(db: Database, source: EventSource, config: Config, clock: Clock,
          result: PollResult, guard: StepAware | None = None) -> None:
    batch_size = config.polling.batch_size
    lookback = int(config.polling.lookback * 1000)
    answer: Answer | None   # None: the next page is still to be asked for
    with source.open() as shell:
        state, notes = _state_for_log(db, source.server.name, source.server.log)
        # The log's state is read before its events (one command line, gli then qe), so every
        # record up to the newest gli saw is covered. A server seen for the first time is read
        # from the look-back, not from record 0.
        info, answer = shell.log_info_and_query(
            state.cursor or 0, batch_size, lookback if state.cursor is None else None)
        generation, cursor, log_notes = check_log(state, info)
        notes += log_notes
        # Events read now were written after the last good poll began: the reference for skew.
        previous = state.last_success_at if state.cursor is not None else None
        if cursor != state.cursor:
            answer = None  # the log was cleared: read it again from its start
        lookback_ms = lookback if cursor is None else None
        cursor = cursor or 0
        while True:
            if answer is None:
                answer = shell.query(cursor, batch_size, lookback_ms)
            result.round_trips += 1
            batch = parse_events(_complete_part(answer), source.server.name, source.origin_of)
            if answer.cut and not batch.complete_events:
                raise SourceError(f"{source.server.name}: {answer.cut.split(';')[0]} before a "
                                  "single complete event arrived; nothing was stored. Raise "
                                  "polling.max_output or polling.read_timeout")
            # Output cut at the size cap or the deadline lost its end: the cut problem says so
            # once, and the cursor stays before what was not read, as after a truncated answer.
            problems = answer.problems + [p for p in batch.problems
                                          if not (answer.cut and p.kind == "truncated_output")]
            problems += _left_out(source.server.name, batch.left_out)
            # A collector says where its page ended; a server's own log, by its record ids.
            read_to = answer.position if answer.position is not None else batch.highest_record
            next_cursor = max(cursor, read_to or 0)
            truncated = bool(answer.cut) or any(p.kind in ("truncated_event", "truncated_output")
                                                for p in batch.problems)
            more = batch.complete_events >= (answer.asked or batch_size) and not truncated
            if not more and not truncated:
                # Nothing more matched up to the newest record gli saw: skip past it all, so
                # a log that later wraps through unrelated records is not taken for a loss.
                # After a cut-off event the cursor stays before it: the next poll reads it again.
                next_cursor = max(next_cursor, info.newest_record or 0)
            result.stored += _store_batch(db, config, state, batch.events, notes + problems,
                                          generation, next_cursor, info, clock(), previous,
                                          source.server.log, guard)
            result.problems += notes + problems
            notes = []
            if not more or next_cursor == cursor:
                return
            cursor, lookback_ms, answer = next_cursor, None, None


def _left_out(endpoint: str, left_out: dict[str, int]) -> list[Problem]:
    """One problem per page for the events of computers that are no configured server, when
    the source is set to leave them out."""
    if not left_out:
        return []
    names = sorted(left_out)
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return [Problem(endpoint, "unconfigured_origin",
                    f"{sum(left_out.values())} event(s) from {listed} were left out: not a "
                    "configured server, and unconfigured_origins is \"ignore\" (add it under "
                    "[[servers]] to watch it)")]


def _complete_part(answer) -> str:
    """A cut answer up to its last complete event: the partial one after it was cut by us, not
    by the server, and is read again next time."""
    if not answer.cut:
        return answer.text
    end = answer.text.rfind("</Event>")
    return answer.text[:end + len("</Event>")] if end >= 0 else ""


def _state_for_log(db: Database, server: str,
                   log: str) -> tuple[store.ServerState, list[Problem]]:
    """The server's state, or a fresh start in a new generation when its configured log is not
    the one its cursor counts in (a record number of one log means nothing in another): the
    new log is read from the look-back, like a new server."""
    state = store.server_state(db, server)
    if state.cursor is None or (state.log or "Application") == log:
        return state, []
    fresh = replace(state, generation=state.generation + 1, cursor=None, oldest_record=None,
                    last_success_at=None)
    was = state.log or "Application"
    return fresh, [Problem(server, "log_changed", f"servers.log changed from {was!r} to "
                           f"{log!r}: reading the new log from polling.lookback ago")]


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
            f"the event log was cleared (SubmitWatch had read up to record {state.cursor}; "
            f"the log now holds {info.record_count} record(s), oldest "
            f"{oldest if oldest is not None else 'none'}); reading the new log from its start")]
    if oldest is not None and state.oldest_record is not None and oldest > state.cursor + 1:
        lost = oldest - state.cursor - 1
        return state.generation, state.cursor, [Problem(
            state.server, "log_wrapped",
            f"{lost} log record(s) after {state.cursor} were removed (the log wrapped or was "
            "cleared) before SubmitWatch read them; any 1018/1020 among them are lost. Raise the "
            "event log's maximum size or poll more often")]
    return state.generation, state.cursor, []


def _store_batch(db: Database, config: Config, state: store.ServerState, events, problems,
                 generation: int, cursor: int, info: LogInfo, now: datetime,
                 previous: datetime | None = None, log: str = "Application",
                 guard: StepAware | None = None) -> int:
    """Read -> decide -> write, for one batch, in one transaction: two round trips to the
    store (store.batch), the decision between them pure (bot.engine.decision)."""
    with store.write_transaction(db):
        snapshot = batch.read_snapshot(db, now=now, events=events, generation=generation,
                                       **_storm_scope(config, events, now))
        if guard is not None:
            snapshot = _held_snoozes(db, snapshot, now, guard)
        writes = decide_batch(snapshot, now, config, generation=generation, problems=problems,
                              progress=PollProgress(state.server, generation, cursor,
                                                    info.oldest_record, info.newest_record,
                                                    log),
                              read=events, previous=previous)
        batch.write_batch(db, writes, now)
    _say_storms(config, writes)
    return writes.stored


def _held_snoozes(db: Database, snapshot, now: datetime, guard: StepAware):
    """The snapshot with the snoozes that only a clock step forward made look over: they
    silence until housekeeping ends them (the same test, bot.engine.chatops)."""
    held = [s for s in chat.due_snoozes(db, now) if guard.real_now(s.created_at, now) < s.until]
    if not held:
        return snapshot
    return replace(snapshot, snoozed_ids=snapshot.snoozed_ids | {
        s.target for s in held if s.kind == "incident"}, snoozed_keys=snapshot.snoozed_keys | {
        s.target for s in held if s.kind != "incident"})


def _say_storms(config: Config, writes) -> None:
    for channel in writes.new_digests:
        log.warning("storm in %s: more than %d incidents opened within the storm window; new "
                    "ones are listed in one digest message", channel,
                    config.incidents.storm_threshold)


def _storm_scope(config: Config, events, now: datetime) -> dict:
    """The channels whose storm state a batch may need: those its events would open
    incidents in (none when storm digests are off)."""
    if not config.incidents.storm_threshold:
        return {}
    return {"channels": {config.channel_of(e) for e in events},
            "storm_since": now - timedelta(seconds=config.incidents.storm_window)}


def ingest(db: Database, config: Config, events: list, generation: int, now: datetime) -> int:
    """Store the events not seen before, fold them into incidents and queue the Slack messages
    that calls for (inside a transaction), as one batch without a cursor to move (tests and
    benchmarks feed events so). Returns how many events were new."""
    snapshot = batch.read_snapshot(db, now=now, events=events, generation=generation,
                                   **_storm_scope(config, events, now))
    writes = decide_batch(snapshot, now, config, generation=generation)
    batch.write_batch(db, writes, now)
    _say_storms(config, writes)
    return writes.stored


def resolve_quiet_incidents(db: Database, config: Config, clock: Clock = utc_now,
                            guard: StepAware | None = None) -> int:
    """Close incidents that have been quiet for the configured period (`guard`, a
    bot.ops.clockguard.ClockGuard, leaves clock steps forward out of the quiet time)."""
    now = clock()
    elapsed = guard.elapsed if guard is not None else (lambda since, at: at - since)
    with store.write_transaction(db):
        # One marked fixed whose right shows ends confirmed or failing (bot.engine.fixloop), never
        # as merely quiet.
        unwatched = [i for i in store.open_incidents(db).values()
                     if i.fix_state not in fixloop.WATCHED]
        changes = resolve_quiet(unwatched, now, timedelta(seconds=config.incidents.quiet_period),
                                elapsed)
        if changes:
            snapshot = batch.read_snapshot(db, now=now, incidents=[c.before for c in changes
                                                                   if c.before])
            batch.write_batch(db, decide_changes(changes, snapshot, now, config), now)
    return len(changes)


def remind_owners(db: Database, config: Config, clock: Clock = utc_now,
                  guard: StepAware | None = None) -> int:
    """Queue a thread reminder for each open incident that nobody owns and that keeps failing
    (bot.engine.outbox.reminder_due), when its route names owners; returns how many. A reminder
    never posts the alert again. The write lock is taken only when one is due. `guard` (a
    bot.ops.clockguard.ClockGuard): a clock step forward makes no reminder early and ends no
    snooze early here either."""
    if config.incidents.reminder_after <= 0 or not any(r.owners for r in config.routes):
        return 0
    now = clock()
    after = timedelta(seconds=config.incidents.reminder_after)
    interval = timedelta(seconds=config.incidents.reminder_interval)
    snoozed_ids, snoozed_keys = chat.snoozed_keys(db, now)
    if guard is not None:
        held = [s for s in chat.due_snoozes(db, now)
                if guard.real_now(s.created_at, now) < s.until]
        snoozed_ids |= {s.target for s in held if s.kind == "incident"}
        snoozed_keys |= {s.target for s in held if s.kind != "incident"}

    def real(incident: Incident) -> datetime:
        return guard.real_now(incident.opened_at, now) if guard is not None else now

    due = [i for i in store.open_incidents(db).values() if outbox.reminder_due(
        status=i.status, message_ts=i.message_ts, acked=bool(i.acked_by),
        silenced=str(i.id) in snoozed_ids or i.key in snoozed_keys, opened_at=i.opened_at,
        last_stored_at=i.last_stored_at, last_reminded_at=i.last_reminded_at, now=real(i),
        after=after, interval=interval) and config.route_of(i).owners]
    if not due:
        return 0
    with store.write_transaction(db):
        for incident in due:
            store.enqueue_messages(db, [messages.Message("reply", incident.stored_id, detail={
                "action": "reminder", "at": store.iso(now)})], now)
            store.set_reminded(db, incident.stored_id, now)
    return len(due)


def end_storms(db: Database, config: Config, clock: Clock = utc_now,
               guard: StepAware | None = None) -> int:
    """End the digests no incident joined for a whole storm window (bot.engine.outbox.storm_over):
    the digest says the storm is over, and the next incident in its channel is posted on its
    own again. Returns how many ended. The write lock is taken only when one is over. `guard`:
    a clock step forward ends no storm early."""
    now = clock()
    window = timedelta(seconds=config.incidents.storm_window)
    over = [d for d in digests.live_digests(db) if outbox.storm_over(
        last_joined_at=d.last_joined_at, window=window,
        now=guard.real_now(d.last_joined_at, now) if guard is not None else now)]
    if not over:
        return 0
    ended = 0
    with store.write_transaction(db):
        for digest in over:
            if not digests.end(db, digest.id, now, now - window):
                continue   # ended elsewhere, or an incident joined since it was read
            ended += 1
            store.enqueue_messages(db, outbox.for_storm_end(
                digest.id, digests.pending_kinds(db, digest.id), at=now), now)
            log.info("storm in %s is over: digest #%d lists its incidents", digest.channel,
                     digest.id)
    return ended

"""deliver_once: send due outbox rows to Slack in order; mark each sent only after Slack said ok.

Rows are about an incident (its post, in-place updates, thread replies) or about a server (the
"not being watched" alert and its recovery). Order is kept per incident and per server: a row
that fails or waits holds back the later rows of the same subject, never those of others.

Errors:
- transient (Slack unreachable, 5xx, 429 left after slack_sdk's retries): back off 5 s
  doubling to 5 min; stop the round, since every other row would fail the same way;
- a person must fix it (not_in_channel, token_revoked ...): retried after 15 min, doubling to
  4 h, and given up ("failed") after a day, shown in `status` and App Home with the fix in
  words. A given-up row is revived when a later message gets through in a way that shows the
  cause fixed (same channel, or any message for app-wide errors such as a revoked token);
- Slack refused the message as it is (msg_blocks_too_long, invalid_blocks, no_text ...): it
  would refuse it again, so an alert, a digest or a thread note is rendered once more within
  a much smaller budget and sent at once; if that is refused too (or it cannot be shortened)
  the row is given up ("dead"), never retried nor revived, counted in the metrics, listed by
  `status`, Home and `check`, and one plain notice says so in the channel.

A write that would record what became of a claimed row may fail (a full disk): the claim is
released, in this process at once and in the database when it can be written, so the row is
sent (after a look in Slack) as soon as writes work again rather than after CLAIM_TIMEOUT.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core import counters, messages
from bot.core.config import Config
from bot.core.model import Digest, Incident, Problem, Snooze
from bot.engine import outbox
from bot.engine.poller import Clock, utc_now
from bot.engine.summary import unwatched
from bot.engine.workers import OWNER, claim_is_dead
from bot.slack import alerts, replies
from bot.slack import digests as digest_view
from bot.slack.blocks import BUDGET, CHANNEL_ID, SMALL_BUDGET
from bot.slack.sender import DeliveryError, Posted, SlackSender
from store import chat, digests, fixes, queries
from store import db as store
from store import devices as device_store

log = logging.getLogger("submitwatch")
#: How long an error a person must fix is retried before the row is given up.
GIVE_UP_AFTER = timedelta(days=1)
#: The kinds of row that create a new message (and may have reached Slack before a crash).
CREATES_MESSAGE = ("post", "reply", "server_down", "server_up", "bot_late", "summary",
                   "refused")
#: After an attempt that got no answer, how long before the look-up and the retry: Slack may
#: still be acting on it (seen: posted after the client's timeout).
LOOK_AGAIN_AFTER = timedelta(seconds=60)
#: After such a retry, when to look for a twin that Slack posted later still.
TWIN_CHECK_AFTER = timedelta(minutes=2)
#: The kinds of row a smaller rendering can help when Slack refused one as too long.
SHRINKS = ("post", "update", "reply")
#: A notice that Slack refused a message; it is itself never the subject of another.
REFUSED_NOTICE = "refused"

#: Rows this process has claimed and is sending right now (any thread). A row claimed by this
#: process but not in here was left behind by a write that failed: its claim is not live.
_in_flight: set[int] = set()
_in_flight_lock = threading.Lock()


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
    blocked: set = set()  # subjects whose earlier message failed or waits: keep their order
    for row in store.pending_messages(db, clock()):
        if deliver_one(db, sender, row, config, clock(), blocked, result) == "stop":
            break
    return result


def _subject(row: store.OutboxRow) -> Hashable:
    """What a row keeps its order with: its incident, or its server (the bot's own notices
    share ("server", None))."""
    if row.kind == "dedupe":
        return ("dedupe", row.id)   # a later check holds nothing else back
    if isinstance(row, store.IncidentRow):
        return row.incident_id
    if isinstance(row, store.DigestRow):
        return ("digest", row.digest_id)
    if row.kind in ("summary", REFUSED_NOTICE):
        return (row.kind, row.id)   # one that waits (a wrong channel) holds back nothing
    return ("server", row.server)


def _incident_of(db: Database, row: store.OutboxRow) -> Incident | None:
    """The incident a row is about, as it is now; None for a row about a server or the bot."""
    return store.get_incident(db, row.incident_id) if isinstance(row, store.IncidentRow) else None


def _digest_of(db: Database, row: store.OutboxRow) -> Digest | None:
    """The digest a row is about, as it is now; None for any other row."""
    if not isinstance(row, store.DigestRow):
        return None
    digest = digests.get_digest(db, row.digest_id)
    if digest is None:   # digests are never deleted; as for _must_have, retried as a bug
        raise LookupError(f"outbox row {row.id} is about digest {row.digest_id}, which is not "
                          "in the database")
    return digest


def _must_have(incident: Incident | None, row: store.OutboxRow) -> Incident:
    """The incident of a row about one. It cannot be missing (it is purged only once none of its
    rows is left); if it were, the row is retried as after any bug."""
    if incident is None:
        raise LookupError(f"outbox row {row.id} is about incident {row.incident_id}, which is "
                          "not in the database")
    return incident


def deliver_one(db: Database, sender: SlackSender, row: store.OutboxRow, config: Config,
                now: datetime, blocked: set, result: DeliveryResult) -> str | None:
    """Send one row if bot.engine.outbox says it is due; "stop" when Slack is unreachable."""
    subject = _subject(row)
    incident = _incident_of(db, row)
    digest = _digest_of(db, row)
    alert = incident or digest   # the message an update edits and a reply threads under
    needs_message = (row.kind in ("update", "reply") and alert is not None
                     and alert.message_ts is None)
    if needs_message and _post_given_up(db, row, now):
        return None
    verdict = outbox.verdict(
        row.kind, row.attempts, subject_blocked=subject in blocked,
        due=not _not_due(row, now, config),
        needs_message=needs_message,
        sending_elsewhere=row.state == "sending" and not _left_behind(row) and not claim_is_dead(
            row.claimed_by, row.claimed_at, now, store.CLAIM_TIMEOUT))
    if verdict is not outbox.Verdict.DUE:
        if verdict is outbox.Verdict.BLOCK:
            blocked.add(subject)
        result.waiting += 1
        return None
    with store.write_transaction(db):
        claimed = store.claim(db, row, now, OWNER)
    if not claimed:  # another worker (a cron poll-once beside `run`) is sending it
        blocked.add(subject)
        return None
    with _in_flight_lock:
        _in_flight.add(row.id)
    try:
        return _deliver_claimed_row(db, sender, row, config, now, subject, alert, blocked,
                                    result)
    except store.StoreError:
        _release(db, row)   # the write recording its result failed (a full disk ...)
        raise
    finally:
        with _in_flight_lock:
            _in_flight.discard(row.id)


def _left_behind(row: store.OutboxRow) -> bool:
    """Claimed by this process, which is not sending it: a write that would have recorded its
    result failed. Its claim is not live, whatever claimed_at says."""
    if row.claimed_by != OWNER:
        return False
    with _in_flight_lock:
        return row.id not in _in_flight


def _release(db: Database, row: store.OutboxRow) -> None:
    """Release this process's claim in the database too, if it can be written now (others,
    a cron poll-once, then need not wait for CLAIM_TIMEOUT either)."""
    try:
        with store.write_transaction(db):
            store.release_claim(db, row.id, OWNER)
    except store.StoreError:
        pass   # still failing: this process takes it over at its next round all the same
    log.warning("could not record what became of outbox row %d; it is sent (after a look in "
                "Slack) once the database takes writes again", row.id,
                extra={"outbox_id": row.id, "incident": row.incident_id})


def _deliver_claimed_row(db: Database, sender: SlackSender, row: store.OutboxRow,
                         config: Config, now: datetime, subject: Hashable,
                         alert: Incident | Digest | None, blocked: set,
                         result: DeliveryResult) -> str | None:
    try:
        _deliver_claimed(db, sender, row, config, now)
        result.sent += 1
    except DeliveryError as exc:
        blocked.add(subject)
        result.failed += 1
        result.errors.append(str(exc))
        if exc.code == "message_not_found" and row.kind == "update" and alert is not None:
            _repost(db, row, now)
            return None
        if exc.refused:
            _give_up(db, row, exc, now)
            return None
        _retry_later(db, row, exc, now)
        if exc.code == "unreachable" or exc.code.startswith("http_"):
            return "stop"  # Slack is down: do not hammer it with every row
    except store.StoreError:
        raise   # not a bug of this row: deliver_one releases its claim, the round stops
    except Exception as exc:  # a bug (say, in rendering): keep the row, say so, go on
        log.exception("could not send outbox row %d", row.id,
                      extra={"outbox_id": row.id, "incident": row.incident_id})
        blocked.add(subject)
        result.failed += 1
        result.errors.append(f"unexpected {type(exc).__name__}: {exc}")
        _retry_later(db, row, DeliveryError(f"unexpected {type(exc).__name__}: {exc}",
                                            code="bug", permanent=True), now)
    return None


def _deliver_claimed(db: Database, sender: SlackSender, row: store.OutboxRow, config: Config,
                     now: datetime) -> None:
    """Send a claimed row (unless an earlier attempt reached Slack after all), then revive
    given-up messages to the same channel: this one shows their cause fixed."""
    incident = _incident_of(db, row)
    channel = _channel_of(db, row, incident, config)
    if not _already_sent(db, sender, row, incident, channel, now):
        late = _slack_may_act_late(row)
        thread = _thread_of(db, row, incident) if late else None  # before _send moves it
        try:
            posted = _send(db, sender, row, incident, channel, config, now)
        except DeliveryError as exc:
            if not exc.refused or row.kind not in SHRINKS:
                raise
            # Slack would refuse it again as it is: once more, much smaller.
            log.warning("Slack refused outbox row %d (%s); sending it again shortened",
                        row.id, exc.code, extra={"outbox_id": row.id,
                                                 "incident": row.incident_id})
            posted = _send(db, sender, row, incident, channel, config, now,
                           budget=SMALL_BUDGET)
            counters.record_refused("shortened", exc.code)
        if posted is not None and late:
            _check_for_a_late_twin(db, row, posted, thread, now)
    if store.has_given_up(db):  # rare: no write transaction per message otherwise
        with store.write_transaction(db):
            revived = store.requeue_failed(db, channel, now)
        if revived:
            log.info("a message to %s got through: %d given-up message(s) will be sent "
                     "again", channel, revived)


def _give_up(db: Database, row: store.OutboxRow, exc: DeliveryError, now: datetime) -> None:
    """Slack refused the message as it is (and shortened, where it can be): give the row up
    at once, counted and recorded, with one plain notice in the channel per message (an
    incident's alert, a digest) rather than one per refused row."""
    incident_id = row.incident_id
    digest_id = row.digest_id if isinstance(row, store.DigestRow) else None
    with store.write_transaction(db):
        first = row.kind == REFUSED_NOTICE or not (
            store.dead_rows(db, incident_id=incident_id) if incident_id is not None else
            store.dead_rows(db, digest_id=digest_id) if digest_id is not None else 0)
        store.mark_dead(db, row.id, str(exc), exc.code, now)
        if row.kind == "post" and (incident_id is not None or digest_id is not None):
            store.bury_waiting(db, str(exc), exc.code, now, incident_id=incident_id,
                               digest_id=digest_id)
        if first and row.kind != REFUSED_NOTICE:
            store.enqueue(db, None, REFUSED_NOTICE, now, detail=_notice_detail(db, row, exc))
    counters.record_refused("given_up", exc.code)
    log.error("gave up outbox row %d: %s. Slack would refuse it again as it is, so it is not "
              "retried; `/submitwatch status` lists it", row.id, exc,
              extra={"outbox_id": row.id, "incident": row.incident_id, "server": row.server})


def _notice_detail(db: Database, row: store.OutboxRow, exc: DeliveryError) -> dict:
    """What the notice about a refused row says, and the channel it goes to (the row's)."""
    channel = None
    ref: int | str | None
    if isinstance(row, store.IncidentRow):
        incident = store.get_incident(db, row.incident_id)
        channel = incident.channel if incident else None
        what, ref = ("alert" if row.kind in ("post", "update") else "reply"), row.incident_id
    elif isinstance(row, store.DigestRow):
        digest = digests.get_digest(db, row.digest_id)
        channel = digest.where if digest else None
        what, ref = "digest", row.digest_id
    elif isinstance(row, store.ServerRow):
        what, ref = "server", row.server
    else:
        what, ref = "bot", None
        channel = row.detail.get("channel")
    detail = {"what": what, "ref": ref, "code": exc.code, "outbox_id": row.id}
    if channel:
        detail["channel"] = channel
    return detail


def _post_given_up(db: Database, row: store.OutboxRow, now: datetime) -> bool:
    """A row waiting for its alert or digest to be posted, whose post Slack refused and was
    given up: it can never be sent; give it up too (the channel was told once)."""
    incident_id = row.incident_id
    digest_id = row.digest_id if isinstance(row, store.DigestRow) else None
    if incident_id is None and digest_id is None:
        return False
    if not (store.dead_rows(db, incident_id=incident_id, kind="post") if incident_id is not None
            else store.dead_rows(db, digest_id=digest_id, kind="post")):
        return False
    with store.write_transaction(db):
        store.mark_dead(db, row.id, "its message was never posted: Slack refused it",
                        "no_message", now)
    return True


def _retry_later(db: Database, row: store.OutboxRow, exc: DeliveryError, now: datetime) -> None:
    failed_since = (row.failed_since or now) if exc.permanent else None
    with store.write_transaction(db):
        if failed_since and now - failed_since >= GIVE_UP_AFTER:
            store.mark_failed(db, row.id, str(exc))
            log.error("gave up sending outbox row %d after trying since %s: %s. It is sent "
                      "again once a message gets through; `/submitwatch status` lists it",
                      row.id, store.iso(failed_since), exc)
            return
        retry_at = now + backoff(row.attempts, exc.permanent)
        if row.kind in CREATES_MESSAGE and exc.code == "unreachable":
            # Slack may act on it later still (_slack_may_act_late): give it time before the
            # look-up and the retry.
            retry_at = max(retry_at, now + LOOK_AGAIN_AFTER)
        store.mark_retry(db, row.id, str(exc), retry_at, code=exc.code,
                         failed_since=failed_since)
    (log.error if exc.permanent else log.warning)(
        "delivery failed (attempt %d, next try %s): %s", row.attempts + 1, store.iso(retry_at),
        exc, extra={"outbox_id": row.id, "incident": row.incident_id, "server": row.server})


def _not_due(row: store.OutboxRow, now: datetime, config: Config) -> bool:
    """Still waiting. A wait longer than any SubmitWatch sets (a backoff, a coalescing delay)
    means the wall clock was stepped back since it was set: the row is due now, instead of
    slipping by the size of the step."""
    if row.not_before <= now:
        return False
    longest = max(backoff(99, row.failed_since is not None),
                  timedelta(seconds=config.incidents.update_interval))
    return row.not_before - now <= longest


def backoff(attempts: int, permanent: bool) -> timedelta:
    """Transient: 5 s doubling to 5 min. A person must act: 15 min doubling to 4 h."""
    if permanent:
        return timedelta(minutes=min(240, 15 * 2 ** min(attempts, 8)))
    return timedelta(seconds=min(300, 5 * 2 ** min(attempts, 8)))


def _already_sent(db: Database, sender: SlackSender, row: store.OutboxRow,
                  incident: Incident | None, channel: str, now: datetime) -> bool:
    """Did an earlier attempt at this message reach Slack after all?

    A worker killed between Slack's ok and its database commit, or a timeout after Slack took
    the message, leaves a row that looks unsent. Its message carries the row id in its metadata:
    if Slack has it, record it as sent instead of posting it twice.
    """
    if row.kind not in CREATES_MESSAGE:
        return False
    # Only a worker that died mid-send, or an attempt whose answer never came, may have reached
    # Slack; a message Slack refused (not_in_channel ...) did not.
    if row.state != "sending" and not _unanswered(row):
        return False
    thread = _thread_of(db, row, incident)
    if not CHANNEL_ID.fullmatch(channel):
        # conversations.history takes only IDs; the first post of a channel given by its name
        # (`#alerts`) cannot be looked up. Better a possible duplicate than a lost alert.
        log.warning("cannot look for outbox row %d in %s before sending it again (a channel "
                    "name, not an ID: `submitwatch check` gives the ID); sending it", row.id,
                    channel)
        return False
    try:
        ts = sender.find_sent(channel, {"outbox_id": row.id}, thread_ts=thread)
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
                row.id, ts, extra={"outbox_id": row.id, "incident": row.incident_id})
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        if isinstance(row, store.IncidentRow) and row.kind == "post":
            store.set_message(db, row.incident_id, ts=ts, now=now)
        elif isinstance(row, store.ServerRow) and row.kind == "server_down":
            store.set_server_alert(db, row.server, ts, channel)
        elif isinstance(row, store.DigestRow) and row.kind == "post":
            digests.set_message(db, row.digest_id, ts=ts, channel_id=channel, now=now)
        elif isinstance(row, store.DigestRow) and "through" in row.detail:
            _detailed(db, row.digest_id, row.detail, now, outbox.DIGEST_INTERVAL)
    return True


def _unanswered(row: store.OutboxRow) -> bool:
    """The last attempt got no answer (a timeout, a reset, a 5xx): Slack may have acted on it."""
    return row.error_code == "unreachable" or (row.error_code or "").startswith("http_")


def _slack_may_act_late(row: store.OutboxRow) -> bool:
    """The last attempt to create this message timed out or was cut off (not refused): Slack
    may post it after the retry's look-up, so a twin is looked for later."""
    return row.kind in CREATES_MESSAGE and row.error_code == "unreachable"


def _check_for_a_late_twin(db: Database, row: store.OutboxRow, posted: Posted,
                           thread: str | None, now: datetime) -> None:
    """An attempt that timed out may still be posted by Slack after the look-up before this
    retry: look again a little later, and delete the twin (a dedupe row, never blocking)."""
    with store.write_transaction(db):
        store.enqueue(db, row.incident_id, "dedupe", now, not_before=now + TWIN_CHECK_AFTER,
                      server=row.server, detail={"outbox_id": row.id, "keep": posted.ts,
                                                 "channel": posted.channel, "thread": thread})


def _remove_duplicates(db: Database, sender: SlackSender, row: store.OutboxRow,
                       now: datetime) -> None:
    detail = row.detail
    try:
        found = sender.find_all_sent(detail["channel"], {"outbox_id": detail["outbox_id"]},
                                     thread_ts=detail.get("thread"))
        extra = [ts for ts in found if ts != detail["keep"]]
        for ts in extra:
            sender.delete(detail["channel"], ts)
    except DeliveryError as exc:
        if not exc.permanent:
            raise   # Slack down: look again later
        # No history scope, the twin deleted by someone, ...: a check is not worth a day of
        # retries; the message itself was sent.
        log.warning("could not check outbox row %d for a duplicate: %s", detail["outbox_id"],
                    exc, extra={"outbox_id": detail["outbox_id"]})
        extra = []
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        if extra:
            log.warning("Slack posted outbox row %d twice (it acted on an attempt after our "
                        "timeout); deleted the extra message(s) %s", detail["outbox_id"],
                        ", ".join(extra), extra={"outbox_id": detail["outbox_id"]})
            store.record_problems(db, [Problem(
                "slack", "slack_duplicate_removed",
                f"Slack posted message {detail['outbox_id']} twice after a timed-out attempt; "
                f"the extra copy ({', '.join(extra)}) was deleted")], now)


def _channel_of(db: Database, row: store.OutboxRow, incident: Incident | None,
                config: Config) -> str:
    """Where a row goes: the incident's channel (the ID once its alert was posted), the channel
    of the server's "not being watched" alert for its recovery, else the server's configured
    one; the bot's own notices go to the default channel."""
    if incident is not None:
        return incident.channel
    digest = _digest_of(db, row)
    if digest is not None:
        return digest.where
    if not isinstance(row, store.ServerRow):   # the bot's own: a summary names its channel
        return row.detail.get("channel") or config.slack.channel
    if row.kind == "server_up":
        return store.server_alert(db, row.server)[1] or config.channel_for(row.server)
    return config.channel_for(row.server)


def _thread_of(db: Database, row: store.OutboxRow, incident: Incident | None) -> str | None:
    """The thread a reply goes to (None: a top-level message)."""
    digest = _digest_of(db, row)
    if row.kind == "reply" and digest is not None:
        return digest.message_ts
    if row.kind == "reply":
        return _must_have(incident, row).message_ts
    if isinstance(row, store.ServerRow) and row.kind == "server_up":
        return store.server_alert_ts(db, row.server)
    return None


def _repost(db: Database, row: store.OutboxRow, now: datetime) -> None:
    """Someone deleted the alert (or digest) in Slack: post it again rather than update nothing
    forever."""
    with store.write_transaction(db):
        store.mark_superseded(db, row.id)
        if isinstance(row, store.DigestRow):
            log.warning("storm digest #%d was deleted in Slack; posting it again", row.digest_id)
            digests.forget_message(db, row.digest_id)
            store.enqueue_messages(db, [messages.DigestMessage("post", row.digest_id)], now)
        elif isinstance(row, store.IncidentRow):
            log.warning("the alert for incident %d was deleted in Slack; posting it again",
                        row.incident_id)
            store.forget_message(db, row.incident_id)
            store.enqueue_messages(db, outbox.after_deleted_alert(row.incident_id), now)


def _marker(row: store.OutboxRow, event_type: str, **payload) -> dict:
    return {"event_type": event_type, "event_payload": {**payload, "outbox_id": row.id}}


def _send(db: Database, sender: SlackSender, row: store.OutboxRow, incident: Incident | None,
          channel: str, config: Config, now: datetime, *, budget: int = BUDGET) -> Posted | None:
    """Send one row; the message it created, if it created one. `budget`: the most block text
    of an alert, digest or note (bot.slack.blocks.size)."""
    if row.kind == "dedupe":   # whatever its subject
        _remove_duplicates(db, sender, row, now)
        return None
    if isinstance(row, store.ServerRow):   # server_down, server_up
        return _send_server_health(db, sender, row, channel, now)
    if isinstance(row, store.DigestRow):
        return _send_digest(db, sender, row, channel, config, now, budget=budget)
    if isinstance(row, store.BotRow) and row.kind == REFUSED_NOTICE:
        text, blocks = alerts.refused_notice(row.detail)
        posted = sender.post(channel, text, blocks, metadata=_marker(row, "submitwatch_bot"))
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return posted
    if isinstance(row, store.BotRow) and row.kind == "summary":
        since, until = (store.required_time(row.detail[k], f"a summary's {k}")
                        for k in ("since", "until"))
        text, blocks = replies.summary_view(
            queries.summary(db, since=since, until=until),
            since_seconds=(until - since).total_seconds(), unwatched=unwatched(db, config))
        posted = sender.post(channel, text, blocks, metadata=_marker(row, "submitwatch_bot"))
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return posted
    if isinstance(row, store.BotRow):      # bot_late
        text, blocks = alerts.bot_late(messages.BotLate.of(row.detail))
        posted = sender.post(channel, text, blocks, metadata=_marker(row, "submitwatch_bot"))
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return posted
    if row.kind == "reply":
        return _send_reply(db, sender, row, _must_have(incident, row), channel, config, now,
                           budget=budget)
    return _send_alert(db, sender, row, _must_have(incident, row), channel, config, now,
                       budget=budget)


def _send_reply(db: Database, sender: SlackSender, row: store.IncidentRow, incident: Incident,
                channel: str, config: Config, now: datetime, *,
                budget: int = BUDGET) -> Posted | None:
    """A note in the thread of the incident's alert."""
    note = messages.note_of(row.detail)
    if isinstance(note, messages.ActionNote) and note.action == "reminder" and (
            incident.status != "open" or incident.acked_by
            or chat.snoozes_for(db, incident, now)):
        with store.write_transaction(db):   # owned, snoozed or resolved since it was queued
            store.mark_superseded(db, row.id)
        return None
    if isinstance(note, messages.ActionNote):
        owners = config.route_of(incident).owners if note.action == "reminder" else ()
        text, blocks = alerts.action_note(incident, note, owners)
    else:
        text, blocks = alerts.thread_note(incident, note, {s.name: s for s in config.servers},
                                          budget=budget)
    posted = sender.post(channel, text, blocks, thread_ts=incident.message_ts,
                         metadata=_marker(row, "submitwatch_note", incident_id=row.incident_id))
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
    return posted


def _send_alert(db: Database, sender: SlackSender, row: store.IncidentRow, incident: Incident,
                channel: str, config: Config, now: datetime, *,
                budget: int = BUDGET) -> Posted | None:
    """The incident's alert: its post, or an update of it in place."""
    snoozes = chat.snoozes_for(db, incident, now)
    text, blocks = alerts.alert(
        incident, {s.name: s for s in config.servers}, snoozes,
        owners=config.route_of(incident).owners,
        finding=fixes.finding(db, incident.stored_id) if config.directory else None,
        directory=config.directory is not None,
        devices=device_store.lookup_of(db, incident.stored_id) if config.devices.enabled
        else None, budget=budget)
    posted: Posted | None = None
    ts: str | None = None            # an update leaves the message's ts and channel as they are
    channel_id: str | None = None
    if row.kind == "post":
        posted = sender.post(channel, text, blocks, metadata=_marker(
            row, "submitwatch_incident", incident_id=row.incident_id))
        ts, channel_id = posted
    else:
        sender.update(channel, _alert_ts(incident), text, blocks)
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        store.set_message(db, row.incident_id, ts=ts, now=now, channel=channel_id)
        # A poll may have added events while this render was on its way (it saw the pending
        # row and did not queue another): queue one more update so the message catches up.
        current = _must_have(store.get_incident(db, row.incident_id), row)
        changed = _shown(current, chat.snoozes_for(db, current, now)) != _shown(incident, snoozes)
        store.enqueue_messages(db, outbox.after_send(
            row.incident_id, changed, store.pending_kinds(db, row.incident_id), now,
            timedelta(seconds=config.incidents.update_interval)), now)
    return posted


def _alert_ts(incident: Incident) -> str:
    """The ts of the alert an update edits. An update waits until its alert is posted
    (outbox.verdict); were the ts gone all the same, this says what Slack answers an update
    without one, and the alert is posted again (deliver_one)."""
    if incident.message_ts is None:
        raise DeliveryError(f"incident {incident.id} has no alert in Slack to update",
                            code="message_not_found", permanent=True)
    return incident.message_ts


def _send_server_health(db: Database, sender: SlackSender, row: store.ServerRow, channel: str,
                        now: datetime) -> Posted:
    """The one "not being watched" alert of a server, and its recovery in the same thread."""
    if row.kind == "server_down":
        text, blocks = alerts.server_down(row.server, messages.ServerDown.of(row.detail))
        posted = sender.post(channel, text, blocks, metadata=_marker(
            row, "submitwatch_server", server=row.server))
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
            store.set_server_alert(db, row.server, posted.ts, posted.channel)
        return posted
    up = messages.ServerUp.of(row.detail)
    text, blocks = alerts.server_up(row.server, up)
    alert_ts = store.server_alert_ts(db, row.server)
    if alert_ts:
        down_text, down_blocks = alerts.server_back(row.server, up.since)
        try:
            sender.update(channel, alert_ts, down_text, down_blocks)
        except DeliveryError as exc:
            if exc.code != "message_not_found":
                raise
            alert_ts = None   # the alert was deleted: the recovery stands on its own
    posted = sender.post(channel, text, blocks, thread_ts=alert_ts,
                         metadata=_marker(row, "submitwatch_server", server=row.server))
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        store.set_server_alert(db, row.server, None)
    return posted


def _shown(incident: Incident, snoozes: list[Snooze]) -> tuple:
    """What the alert message displays; a change here needs a chat.update."""
    return (incident.status, incident.event_count, incident.last_seen, incident.servers,
            incident.connectors, incident.sightings, incident.acked_by, incident.ack_note,
            tuple(s.id for s in snoozes), incident.fix_state)


def _send_digest(db: Database, sender: SlackSender, row: store.DigestRow, channel: str,
                 config: Config, now: datetime, *, budget: int = BUDGET) -> Posted | None:
    """A storm digest: its post, an update in place, or a reply in its thread."""
    digest = _digest_of(db, row)
    assert digest is not None   # _digest_of raises for a missing one
    servers = {s.name: s for s in config.servers}
    interval = outbox.digest_interval(timedelta(seconds=config.incidents.update_interval))
    marker = _marker(row, "submitwatch_digest", digest_id=digest.id)
    if row.kind == "reply" and row.detail.get(messages.DETAILS):
        return _send_details(db, sender, row, digest, channel, servers, interval, now,
                             devices_on=config.devices.enabled, budget=budget)
    if row.kind == "reply":
        text, blocks = digest_view.note(row.detail, digest)
        reply = sender.post(channel, text, blocks, thread_ts=digest.message_ts, metadata=marker)
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)
        return reply
    shown = digests.shown_state(db, digest.id)
    lines = digests.lines(db, digest)
    snoozed_ids, snoozed_keys = chat.snoozed_keys(db, now)
    text, blocks = digest_view.digest(
        lines, servers, snoozed=[i.stored_id for i in lines.incidents
                                 if str(i.id) in snoozed_ids or i.key in snoozed_keys],
        owners=_owners(config, lines.incidents),
        devices=device_store.lookups_of(db, [i.stored_id for i in lines.incidents])
        if config.devices.enabled else {}, first_seen=_first_seen(db, digest.id),
        budget=budget)
    posted: Posted | None = None
    if row.kind == "post":
        posted = sender.post(channel, text, blocks, metadata=marker)
    else:
        if digest.message_ts is None:   # as _alert_ts: the digest is posted again
            raise DeliveryError(f"storm digest #{digest.id} has no message in Slack to update",
                                code="message_not_found", permanent=True)
        sender.update(channel, digest.message_ts, text, blocks)
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        digests.set_message(db, digest.id, ts=posted.ts if posted else None,
                            channel_id=posted.channel if posted else None, now=now)
        changed = digests.shown_state(db, digest.id) != shown
        store.enqueue_messages(db, outbox.after_digest_send(
            digest.id, changed, digests.pending_kinds(db, digest.id), now, interval), now)
    return posted


def _first_seen(db: Database, digest_id: int) -> datetime | None:
    """The earliest event of a digest's incidents: its "since", on the events' clock as its
    lines' "first seen" (the bot's clock, when the digest opened, may disagree)."""
    found = db.execute("SELECT min(first_seen) FROM incidents WHERE digest_id = ?",
                       [digest_id]).fetchone()
    return store.from_iso(found[0]) if found else None


def _send_details(db: Database, sender: SlackSender, row: store.DigestRow, digest: Digest,
                  channel: str, servers: dict, interval: timedelta,
                  now: datetime, *, devices_on: bool = False,
                  budget: int = BUDGET) -> Posted | None:
    """A thread reply detailing the digest's lines its thread has not detailed yet, at most
    DETAIL_BATCH at a time (fewer when they would not fit `budget`) and DETAIL_MOST in all;
    `devices_on`: each line says its devices."""
    done = digests.detailed_count(db, digest)
    room = max(0, digests.DETAIL_MOST - done)
    batch = digests.undetailed(db, digest, min(digests.DETAIL_BATCH, room))
    if not batch:
        with store.write_transaction(db):
            store.mark_sent(db, row.id, now)   # nothing new to detail
        return None
    found = device_store.lookups_of(db, [i.stored_id for i in batch]) if devices_on else {}
    batch = batch[:digest_view.details_that_fit(batch, servers, devices=found, budget=budget)]
    undetailed = digests.count_undetailed(db, digest)
    remaining = undetailed - len(batch)
    full = done + len(batch) >= digests.DETAIL_MOST
    text, blocks = digest_view.details(
        batch, servers, not_detailed=remaining if full else 0, devices=found, done=done,
        total=done + undetailed, budget=budget)
    through = {messages.DETAILS: True, "through": batch[-1].stored_id, "remaining": remaining,
               "full": full}
    with store.write_transaction(db):   # what this reply details, should it reach Slack and
        store.set_detail(db, row.id, through)   # the worker die before it records so
    posted = sender.post(channel, text, blocks, thread_ts=digest.message_ts,
                         metadata=_marker(row, "submitwatch_digest", digest_id=digest.id))
    with store.write_transaction(db):
        store.mark_sent(db, row.id, now)
        _detailed(db, digest.id, through, now, interval)
    return posted


def _detailed(db: Database, digest_id: int, through: dict, now: datetime,
              interval: timedelta) -> None:
    """A detail reply reached Slack: its lines are detailed; queue one for the rest."""
    digests.set_detailed(db, digest_id, int(through["through"]))
    store.enqueue_messages(db, outbox.more_details(
        digest_id, remaining=int(through["remaining"]), full=bool(through["full"]),
        pending=digests.pending_kinds(db, digest_id), now=now, interval=interval), now)


def _owners(config: Config, incidents) -> list[str]:
    """The owners of the routes of a digest's listed incidents (configuration only)."""
    owners: list[str] = []
    for incident in incidents:
        for owner in config.route_of(incident).owners:
            if owner not in owners:
                owners.append(owner)
    return owners

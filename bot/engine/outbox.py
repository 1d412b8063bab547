"""Which Slack messages an incident change calls for, and when a waiting one may go: pure rules.

Every Slack message goes through the outbox (store.db). This module decides which messages an
incident's changes call for and whether a waiting row is sent now (rows about a server's health,
the bot's own lateness and duplicate checks are written where those are noticed). The poller
(new events, quiet incidents), chat-ops (ack, snooze) and delivery (catching up, a deleted
alert) each hand it what they know and write back what it returns, with
`store.db.enqueue_messages`. Nothing here touches SQLite or Slack, so the rules are tested as
tables (tests/test_outbox_policy.py), the way `bot.engine.incidents.decide` is (Alertmanager's pure
`needsUpdate` is the model).

The rules, in words:
- one top-level post per incident, when it opens, unless it is snoozed (then when that ends);
- updates are coalesced: at most one waiting, sent no sooner than `update_interval` after the
  last one (it renders the incident as it is when sent, so later events ride along); a person's
  action sends the waiting one at once;
- a thread note when the incident spreads to a new server or connector, unless it is snoozed,
  acknowledged, or its post has not been claimed yet (that post will show them itself);
- nothing is updated or noted for an incident never posted;
- in a storm (more than `storm_threshold` incidents opening in one channel within
  `storm_window`), the ones beyond it join the channel's *digest* instead of being posted: one
  message listing them, updated at most every DIGEST_INTERVAL, its thread detailing them; an
  incident in a digest never gets a post of its own, and what would have updated or noted its
  alert updates the digest instead. The digest ends when none joined for a storm window.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from enum import Enum

from bot.core.messages import (
    DETAILS,
    UNCLAIMED_POST,
    DigestMessage,
    Hurry,
    HurryDigest,
    Instruction,
    Message,
)

#: A digest is edited at most this often, whatever incidents.update_interval says: in a storm
#: the channel's Slack rate (about one message a second) is shared by everything it carries.
DIGEST_INTERVAL = timedelta(seconds=30)


def never_posted(message_ts: str | None, pending: Collection[str]) -> bool:
    """No alert in Slack and none on its way (its account was snoozed when it opened)."""
    return message_ts is None and "post" not in pending


def for_change(incident_id: int, *, opened: bool, message_ts: str | None,
               pending: Collection[str], has_events: bool, resolved: bool,
               new_servers: tuple = (), new_connectors: tuple = (), silenced: bool,
               acked: bool, last_message_at: datetime | None, now: datetime,
               update_interval: timedelta) -> list[Instruction]:
    """What one change of an incident (new events, new places, resolved) calls for."""
    if opened:
        return [] if silenced else [Message("post", incident_id)]
    if never_posted(message_ts, pending):
        return []   # posted when its snooze ends
    out: list[Instruction] = []
    if (has_events or resolved) and not set(pending) & {"post", "update"}:
        not_before = max(now, last_message_at + update_interval) if last_message_at else now
        out.append(Message("update", incident_id, not_before=not_before))
    if (new_servers or new_connectors) and not (silenced or acked or UNCLAIMED_POST in pending):
        out.append(Message("reply", incident_id, detail={
            "servers": list(new_servers), "connectors": list(new_connectors)}))
    return out


def for_action(incident_id: int, message_ts: str | None, pending: Collection[str],
               note: dict | None) -> list[Instruction]:
    """A person acknowledged or snoozed: update the alert now, and say so in its thread."""
    if never_posted(message_ts, pending):
        return []
    out: list[Instruction] = [Hurry(incident_id) if set(pending) & {"post", "update"}
                              else Message("update", incident_id)]
    if note is not None:
        out.append(Message("reply", incident_id, detail=note))
    return out


def for_snooze_end(incident_id: int, message_ts: str | None, pending: Collection[str],
                   still_snoozed: bool, note: dict) -> list[Instruction]:
    """The last snooze of an incident ended (or one ended while another holds)."""
    if still_snoozed:
        return for_action(incident_id, message_ts, pending, None)  # only its snooze line
    if never_posted(message_ts, pending):
        return [Message("post", incident_id)]   # silent since it opened: alert now
    return for_action(incident_id, message_ts, pending, note)


def after_send(incident_id: int, shown_changed: bool, pending: Collection[str],
               now: datetime, update_interval: timedelta) -> list[Instruction]:
    """A post or update went out rendering the incident as it was; a poll may have changed it
    meanwhile (it saw the pending row and queued nothing): one more update catches up."""
    if shown_changed and not set(pending) & {"post", "update"}:
        return [Message("update", incident_id, not_before=now + update_interval)]
    return []


def joins_digest(*, opened_recently: int, live_digest: bool, threshold: int) -> bool:
    """Does a newly opened (not snoozed) incident go into its channel's digest rather than get
    its own post? While the channel's digest is live, yes; otherwise when `threshold`
    incidents already opened in the channel within the storm window (threshold 0: never)."""
    return threshold > 0 and (live_digest or opened_recently >= threshold)


def digest_interval(update_interval: timedelta) -> timedelta:
    return max(update_interval, DIGEST_INTERVAL)


def for_digest_change(digest_id: int, *, pending: Collection[str], joined: bool,
                      last_message_at: datetime | None, now: datetime,
                      interval: timedelta) -> list[Instruction]:
    """Incidents of a digest changed, or new ones `joined` it: one coalesced update (a waiting
    post or update renders the digest as it is when sent) and, for new lines its thread still
    details (`joined` is False once it is full), one coalesced reply detailing them."""
    not_before = max(now, last_message_at + interval) if last_message_at else now
    out: list[Instruction] = []
    if not set(pending) & {"post", "update"}:
        out.append(DigestMessage("update", digest_id, not_before=not_before))
    if joined and DETAILS not in pending:
        out.append(DigestMessage("reply", digest_id, not_before=not_before,
                                 detail={DETAILS: True}))
    return out


def for_new_digest(digest_id: int) -> list[Instruction]:
    """A storm began in a channel: post its digest, and detail its first line in the thread."""
    return [DigestMessage("post", digest_id),
            DigestMessage("reply", digest_id, detail={DETAILS: True})]


def for_digest_action(digest_id: int, pending: Collection[str],
                      note: dict | None) -> list[Instruction]:
    """A person acted on incidents of a digest (one line or all of it): update it now, and
    say so in its thread (`note`: None when only the lines change)."""
    out: list[Instruction] = [HurryDigest(digest_id) if set(pending) & {"post", "update"}
                              else DigestMessage("update", digest_id)]
    if note is not None:
        out.append(DigestMessage("reply", digest_id, detail=note))
    return out


def storm_over(*, last_joined_at: datetime, now: datetime, window: timedelta) -> bool:
    """A storm ends once no incident joined its digest for a whole storm window."""
    return now - last_joined_at >= window


def for_storm_end(digest_id: int, pending: Collection[str], *, at: datetime) -> list[Instruction]:
    return for_digest_action(digest_id, pending, {"storm": "ended", "at": at.isoformat()})


def more_details(digest_id: int, *, remaining: int, full: bool, pending: Collection[str],
                 now: datetime, interval: timedelta) -> list[Instruction]:
    """After a reply detailed some lines: another for the rest, one interval later, unless the
    thread is `full` (it detailed as many as it ever will; the history lists them all)."""
    if remaining <= 0 or full or DETAILS in pending:
        return []
    return [DigestMessage("reply", digest_id, not_before=now + interval,
                          detail={DETAILS: True})]


def after_digest_send(digest_id: int, shown_changed: bool, pending: Collection[str],
                      now: datetime, interval: timedelta) -> list[Instruction]:
    """As after_send, for a digest: lines that joined while it was being sent catch up."""
    if shown_changed and not set(pending) & {"post", "update"}:
        return [DigestMessage("update", digest_id, not_before=now + interval)]
    return []


def after_deleted_alert(incident_id: int) -> list[Instruction]:
    """Someone deleted the alert in Slack: post it again rather than update nothing forever."""
    return [Message("post", incident_id)]


def reminder_due(*, status: str, message_ts: str | None, acked: bool, silenced: bool,
                 opened_at: datetime, last_stored_at: datetime | None,
                 last_reminded_at: datetime | None, now: datetime, after: timedelta,
                 interval: timedelta) -> bool:
    """Remind the owners in the alert's thread: an open incident nobody acknowledged or
    snoozed, posted, still receiving events since the last reminder (or since it opened), once
    `after` has passed since it opened and then at most every `interval`. `after` 0: never."""
    if after <= timedelta(0) or status != "open" or acked or silenced or message_ts is None:
        return False
    since = last_reminded_at or opened_at
    wait = interval if last_reminded_at else after
    return now - since >= wait and last_stored_at is not None and last_stored_at > since


class Verdict(Enum):
    DUE = "due"          # send it now
    WAIT = "wait"        # not now; later rows of its subject may still go
    BLOCK = "block"      # not now, and later rows of its subject wait behind it


def verdict(kind: str, attempts: int, *, subject_blocked: bool, due: bool,
            needs_message: bool, sending_elsewhere: bool) -> Verdict:
    """Whether a waiting row is sent now. Order is kept per subject (an incident, a server):
    a row that waits holds back the later rows of the same subject, except

    - an update held back only to coalesce (never tried): it renders the latest state whenever
      it goes, so thread replies behind it need not wait;
    - a row waiting for its alert to be (re)posted: it must not hold back that post.
    """
    if sending_elsewhere:
        return Verdict.BLOCK   # another worker is sending it right now
    if not (subject_blocked or not due or needs_message):
        return Verdict.DUE
    if (kind == "update" and attempts == 0) or (needs_message and not subject_blocked):
        return Verdict.WAIT
    return Verdict.BLOCK

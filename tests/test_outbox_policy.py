"""bot.engine.outbox as tables: which messages a change calls for, and when a waiting row may go.
No SQLite, no Slack: the rules alone (the end-to-end behaviour is in test_pipeline.py and
test_chatops.py)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core import messages
from bot.core.messages import UNCLAIMED_POST, Hurry, Message
from bot.engine import outbox
from bot.engine.outbox import Verdict

NOW = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
TEN = timedelta(seconds=10)
POSTED = "1700000000.000100"


def change(**overrides):
    args = dict(opened=False, message_ts=POSTED, pending=set(), has_events=True, resolved=False,
                new_servers=(), new_connectors=(), silenced=False, acked=False,
                last_message_at=NOW - timedelta(minutes=5), now=NOW, update_interval=TEN)
    args.update(overrides)
    return outbox.for_change(7, **args)


SPREAD = {"servers": ["EX02"], "connectors": []}

CHANGES = [
    # (what happened, overrides, what is written)
    ("a new incident is posted", dict(opened=True, message_ts=None), [Message("post", 7)]),
    ("a new incident whose account is snoozed waits for the snooze's end",
     dict(opened=True, message_ts=None, silenced=True), []),
    ("more events: one update, at once after a quiet spell", {},
     [Message("update", 7, not_before=NOW)]),
    ("more events soon after the last message: the update waits out update_interval",
     dict(last_message_at=NOW - timedelta(seconds=4)),
     [Message("update", 7, not_before=NOW + timedelta(seconds=6))]),
    ("an update already waits: nothing more (it renders the latest state)",
     dict(pending={"update"}), []),
    ("the post still waits: nothing more", dict(pending={"post"}, message_ts=None), []),
    ("resolved: one update", dict(has_events=False, resolved=True),
     [Message("update", 7, not_before=NOW)]),
    ("never posted (snoozed since it opened): nothing", dict(message_ts=None), []),
    ("spread to a new server: an update and a thread note", dict(new_servers=("EX02",)),
     [Message("update", 7, not_before=NOW), Message("reply", 7, detail=SPREAD)]),
    ("spread while snoozed: the update only", dict(new_servers=("EX02",), silenced=True),
     [Message("update", 7, not_before=NOW)]),
    ("spread while acknowledged: the update only", dict(new_servers=("EX02",), acked=True),
     [Message("update", 7, not_before=NOW)]),
    ("spread before the post was claimed: the post shows it, no note",
     dict(new_servers=("EX02",), pending={"post", UNCLAIMED_POST}, message_ts=None), []),
    ("spread while the post is being sent: the note follows it",
     dict(new_servers=("EX02",), pending={"post"}, message_ts=None),
     [Message("reply", 7, detail=SPREAD)]),
]


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])
def test_what_a_change_calls_for(overrides, expected):
    assert change(**overrides) == expected


NOTE = {"action": "ack", "user": "U0ALICE"}


@pytest.mark.parametrize("message_ts, pending, note, expected", [
    (POSTED, set(), NOTE, [Message("update", 7), Message("reply", 7, detail=NOTE)]),
    (POSTED, {"update"}, NOTE, [Hurry(7), Message("reply", 7, detail=NOTE)]),
    (None, {"post"}, None, [Hurry(7)]),
    (None, set(), NOTE, []),     # never posted: nothing to update, nowhere to note
], ids=["posted", "an update waits: hurry it", "post on its way", "never posted"])
def test_what_a_persons_action_calls_for(message_ts, pending, note, expected):
    assert outbox.for_action(7, message_ts, pending, note) == expected


@pytest.mark.parametrize("message_ts, pending, still, expected", [
    (None, set(), False, [Message("post", 7)]),            # silent since it opened: alert now
    (None, set(), True, []),                              # another snooze holds, never posted
    (POSTED, set(), True, [Message("update", 7)]),        # only its snooze line changes
    (POSTED, set(), False, [Message("update", 7), Message("reply", 7, detail=NOTE)]),
])
def test_what_the_end_of_a_snooze_calls_for(message_ts, pending, still, expected):
    assert outbox.for_snooze_end(7, message_ts, pending, still, NOTE) == expected


@pytest.mark.parametrize("changed, pending, expected", [
    (True, set(), [Message("update", 7, not_before=NOW + TEN)]),
    (True, {"update"}, []),
    (False, set(), []),
])
def test_a_render_overtaken_by_a_poll_catches_up_once(changed, pending, expected):
    assert outbox.after_send(7, changed, pending, NOW, TEN) == expected


def test_a_deleted_alert_is_posted_again():
    assert outbox.after_deleted_alert(7) == [Message("post", 7)]


VERDICTS = [
    # kind, attempts, subject blocked, due, needs its alert, being sent elsewhere -> verdict
    ("post", 0, False, True, False, False, Verdict.DUE),
    ("reply", 0, False, True, False, False, Verdict.DUE),
    ("post", 0, False, True, False, True, Verdict.BLOCK),     # another worker sends it
    ("post", 2, False, False, False, False, Verdict.BLOCK),   # backing off: order kept
    ("reply", 0, True, True, False, False, Verdict.BLOCK),    # behind a failed row
    ("update", 0, False, False, False, False, Verdict.WAIT),  # coalescing: replies may pass
    ("update", 1, False, False, False, False, Verdict.BLOCK),  # a failed update keeps order
    ("reply", 0, False, True, True, False, Verdict.WAIT),     # waits for its (re)post only
    ("update", 1, True, True, True, False, Verdict.BLOCK),
]


@pytest.mark.parametrize("kind, attempts, blocked, due, needs, elsewhere, expected", VERDICTS)
def test_when_a_waiting_row_goes(kind, attempts, blocked, due, needs, elsewhere, expected):
    assert outbox.verdict(kind, attempts, subject_blocked=blocked, due=due,
                          needs_message=needs, sending_elsewhere=elsewhere) is expected


def test_a_reply_row_is_read_back_as_the_note_it_is_with_its_times_parsed_once():
    action = messages.note_of({"action": "snooze", "by": "U0ALICE", "at": "2026-03-08T12:00:00.000000Z",
                             "until": "2026-03-08T16:00:00.000000Z", "reason": "vendor",
                             "scope": "account"})
    assert action == messages.ActionNote("snooze", NOW, by="U0ALICE", reason="vendor",
                                       scope="account", until=NOW + timedelta(hours=4))
    assert messages.note_of({"servers": ["EX02"], "connectors": []}) == messages.SpreadNote(("EX02",))
    down = messages.ServerDown.of({"error": "boom", "failures": 3,
                                 "since": "2026-03-08T12:00:00.000000Z", "never": True})
    assert down == messages.ServerDown("boom", 3, NOW, never=True)
    assert messages.BotLate.of({"jobs": ["poll EX01"], "late_seconds": 130}).late_seconds == 130.0


H = timedelta(hours=1)


def due(**overrides):
    args = dict(status="open", message_ts=POSTED, acked=False, silenced=False,
                opened_at=NOW - 5 * H, last_stored_at=NOW - timedelta(minutes=1),
                last_reminded_at=None, now=NOW, after=4 * H, interval=24 * H)
    args.update(overrides)
    return outbox.reminder_due(**args)


@pytest.mark.parametrize("overrides, expected", [
    ({}, True),                                                   # open 5 h, still failing
    ({"opened_at": NOW - 3 * H}, False),                          # not 4 h yet
    ({"last_stored_at": NOW - 5 * H}, False),                     # quiet since it opened
    ({"acked": True}, False),
    ({"silenced": True}, False),
    ({"message_ts": None}, False),                                # never posted: nothing to remind
    ({"status": "resolved"}, False),
    ({"after": timedelta(0)}, False),                             # reminders off
    ({"last_reminded_at": NOW - 23 * H}, False),                  # at most every interval
    ({"last_reminded_at": NOW - 25 * H, "last_stored_at": NOW - 24 * H}, True),
    ({"last_reminded_at": NOW - 25 * H, "last_stored_at": NOW - 26 * H}, False),  # quiet since
], ids=["due", "too early", "quiet", "acked", "snoozed", "never posted", "resolved", "off",
        "within the interval", "again after the interval", "quiet since the last"])
def test_when_owners_are_reminded(overrides, expected):
    assert due(**overrides) is expected

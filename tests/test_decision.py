"""bot.engine.decision as tables: one batch's snapshot in, every write it calls for out. No
SQLite, no Slack: plain data (the snapshot store.batch would read) and `now`; the whole Writes
(or the exact message list) is asserted, so a changed rule fails here. The end-to-end behaviour
is in test_pipeline.py, test_storm.py and test_fixloop.py."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.batch import (
    NEW_DIGEST,
    NEW_INCIDENT,
    DigestState,
    FixMove,
    IncidentWrite,
    PollProgress,
    Snapshot,
    StormState,
    Writes,
)
from bot.core.messages import DETAILS, UNCLAIMED_POST, DigestMessage, Hurry, HurryDigest, Message
from bot.core.model import Digest, Event, Incident, Problem, Sighting, incident_key
from bot.engine.decision import clock_skew, decide_batch, decide_changes
from bot.engine.incidents import IncidentChange
from tests.helpers import lookup_config

NOW = datetime(2026, 3, 8, 15, 0, tzinfo=UTC)
NOW_TEXT = "2026-03-08T15:00:00.000000Z"     # store.db.iso(NOW), as notes carry it
POSTED = "1700000000.000100"
SCANNER, PRINTER, COPIER, FAX = ("CONTOSO\\svc-scanner", "CONTOSO\\printer", "CONTOSO\\copier",
                                 "CONTOSO\\fax")

#: update_interval 60 s (a digest's interval is then 60 s too), a digest beyond 2 per channel;
#: EX01 and EX03 post to C0ALERTS, EX02 to C0EX02.
CONFIG = lookup_config(incidents={"update_interval": 60, "storm_threshold": 2})
DIRECTORY = lookup_config(incidents={"update_interval": 60, "storm_threshold": 2},
                          directory={"urls": ["ldaps://dc.contoso.local"],
                                     "user": "CONTOSO\\svc-read", "password_env": "PW"})
NO_STORMS = lookup_config(incidents={"update_interval": 60, "storm_threshold": 0})


def event(record, account=SCANNER, *, minutes=-1, server="EX01"):
    """A 1020 event (no connector) logged `minutes` from NOW."""
    return Event(server=server, record_id=record, provider="MSExchangeTransport", event_id=1020,
                 time=NOW + timedelta(minutes=minutes), account=account, connector=None,
                 computer=f"{server}.contoso.local")


def opened(ev, channel="C0ALERTS"):
    """The incident one event opens at NOW, as it is written (no id yet)."""
    return Incident(id=None, key=incident_key(ev.account), account=ev.account, status="open",
                    channel=channel, first_seen=ev.time, last_seen=ev.time, event_count=1,
                    servers=((ev.origin, ev.origin),), connectors=(), event_ids=(1020,),
                    opened_at=NOW, sightings=(Sighting(1020, ev.origin, None),),
                    last_stored_at=NOW)


def existing(id=7, account=SCANNER, **overrides):
    """An open incident as read: posted, its last event and message half an hour ago."""
    base = Incident(id=id, key=incident_key(account), account=account, status="open",
                    channel="C0ALERTS", first_seen=NOW - timedelta(hours=2),
                    last_seen=NOW - timedelta(minutes=30), event_count=2,
                    servers=(("EX01", "EX01"),), connectors=(), event_ids=(1020,),
                    opened_at=NOW - timedelta(hours=2), message_ts=POSTED,
                    last_message_at=NOW - timedelta(minutes=30),
                    sightings=(Sighting(1020, "EX01", None),),
                    last_stored_at=NOW - timedelta(minutes=30))
    return replace(base, **overrides)


def grown(incident, *events):
    """`incident` after `events` on a server it already had, stored at NOW."""
    return replace(incident, last_seen=max(e.time for e in events),
                   event_count=incident.event_count + len(events), last_stored_at=NOW)


def spread(incident, ev):
    """`incident` after one event on a server it did not have."""
    return replace(grown(incident, ev), servers=(*incident.servers, (ev.origin, ev.origin)),
                   sightings=(*incident.sightings, Sighting(1020, ev.origin, None)))


def snapshot(*fresh, incidents=(), **fields):
    return Snapshot(fresh=tuple(fresh), incidents={i.key: i for i in incidents}, **fields)


def pending(**kinds):
    """Snapshot.pending: incident 7's (and so on) waiting kinds."""
    return {int(name[1:]): frozenset(k) for name, k in kinds.items()}


LIVE = Digest(id=3, channel="C0ALERTS", opened_at=NOW - timedelta(minutes=5),
              last_joined_at=NOW - timedelta(minutes=1), message_ts="1700000000.000300",
              last_message_at=NOW - timedelta(seconds=20))
IN_A_MINUTE = NOW + timedelta(seconds=40)        # LIVE's next update: 60 s after its last
STORMING = {"C0ALERTS": StormState(2, None)}     # the threshold reached, no digest yet
DETAIL = {DETAILS: True}


def live(pending=frozenset(), full=False):
    return {"storms": {"C0ALERTS": StormState(0, LIVE)},
            "digests": {3: DigestState(LIVE, frozenset(pending), full)}}


E1, E2, E3 = event(1, PRINTER, minutes=-3), event(2, COPIER, minutes=-2), event(3, FAX)
EX02 = event(9, server="EX02")
OPEN = existing()
SPREAD = {"servers": ["EX02"], "connectors": []}
WATCHING = existing(fix_state="watching", fix_seen_at=NOW - timedelta(minutes=10))
STILL_FAILING = {"action": "still_failing", "at": NOW_TEXT}
IN_DIGEST = existing(digest_id=3, message_ts=None, last_message_at=None)
QUIET = existing(last_seen=NOW - timedelta(hours=25), last_stored_at=NOW - timedelta(hours=25))

BATCHES = [
    # (what happened, config, snapshot, what is written)

    # --- new accounts ---------------------------------------------------------------------
    ("a new account opens an incident, posted under its placeholder",
     CONFIG, snapshot(E3),
     Writes(incidents=(IncidentWrite(opened(E3), NEW_INCIDENT(0), (E3,)),),
            messages=(Message("post", NEW_INCIDENT(0)),))),
    ("new accounts take placeholders in the order their first events were logged",
     CONFIG, snapshot(E2, EX02, E1),
     Writes(incidents=(IncidentWrite(opened(E1), -1, (E1,)), IncidentWrite(opened(E2), -2, (E2,)),
                       IncidentWrite(opened(EX02, "C0EX02"), -3, (EX02,))),
            messages=(Message("post", -1), Message("post", -2), Message("post", -3)))),
    ("an account's events in one batch open one incident",
     CONFIG, snapshot(event(4, minutes=-2), event(5)),
     Writes(incidents=(IncidentWrite(
         replace(opened(event(4, minutes=-2)), last_seen=NOW - timedelta(minutes=1),
                 event_count=2), -1, (event(4, minutes=-2), event(5))),),
            messages=(Message("post", -1),))),
    ("a snoozed account opens silently: no post (it comes when the snooze ends)",
     CONFIG, snapshot(E3, snoozed_keys=frozenset({incident_key(FAX)})),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,)),))),

    # --- events of an open incident -------------------------------------------------------
    ("more events after a quiet spell: one update, at once, and no post",
     CONFIG, snapshot(event(5), incidents=[OPEN]),
     Writes(incidents=(IncidentWrite(grown(OPEN, event(5)), 7, (event(5),)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("more events soon after the last message: the update waits out update_interval",
     CONFIG, snapshot(event(5), incidents=[replace(OPEN, last_message_at=NOW - timedelta(
         seconds=20))]),
     Writes(incidents=(IncidentWrite(grown(replace(OPEN, last_message_at=NOW - timedelta(
         seconds=20)), event(5)), 7, (event(5),)),),
            messages=(Message("update", 7, not_before=NOW + timedelta(seconds=40)),))),
    ("an update already waits: no second one",
     CONFIG, snapshot(event(5), incidents=[OPEN], pending=pending(i7={"update"})),
     Writes(incidents=(IncidentWrite(grown(OPEN, event(5)), 7, (event(5),)),))),
    ("its post still waits: nothing more",
     CONFIG, snapshot(event(5), incidents=[replace(OPEN, message_ts=None)],
                      pending=pending(i7={"post", UNCLAIMED_POST})),
     Writes(incidents=(IncidentWrite(grown(replace(OPEN, message_ts=None), event(5)), 7,
                                     (event(5),)),))),
    ("never posted (snoozed since it opened): nothing",
     CONFIG, snapshot(event(5), incidents=[replace(OPEN, message_ts=None)]),
     Writes(incidents=(IncidentWrite(grown(replace(OPEN, message_ts=None), event(5)), 7,
                                     (event(5),)),))),
    ("an event after the quiet period: the old incident resolves, a new one opens",
     CONFIG, snapshot(event(5), incidents=[QUIET]),
     Writes(incidents=(IncidentWrite(replace(QUIET, status="resolved", resolved_at=NOW), 7),
                       IncidentWrite(opened(event(5)), -1, (event(5),))),
            messages=(Message("update", 7, not_before=NOW), Message("post", -1)))),

    # --- spreading to a new server ----------------------------------------------------------
    ("spread to a new server, unacknowledged: an update and a thread note",
     CONFIG, snapshot(EX02, incidents=[OPEN]),
     Writes(incidents=(IncidentWrite(spread(OPEN, EX02), 7, (EX02,)),),
            messages=(Message("update", 7, not_before=NOW), Message("reply", 7, detail=SPREAD)))),
    ("spread while acknowledged: the update only (someone owns it)",
     CONFIG, snapshot(EX02, incidents=[replace(OPEN, acked_by="U0ALICE")]),
     Writes(incidents=(IncidentWrite(spread(replace(OPEN, acked_by="U0ALICE"), EX02), 7,
                                     (EX02,)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("spread while the incident is snoozed: the update only",
     CONFIG, snapshot(EX02, incidents=[OPEN], snoozed_ids=frozenset({"7"})),
     Writes(incidents=(IncidentWrite(spread(OPEN, EX02), 7, (EX02,)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("spread while its account is snoozed: the update only",
     CONFIG, snapshot(EX02, incidents=[OPEN], snoozed_keys=frozenset({OPEN.key})),
     Writes(incidents=(IncidentWrite(spread(OPEN, EX02), 7, (EX02,)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("spread while an update waits: the note only",
     CONFIG, snapshot(EX02, incidents=[OPEN], pending=pending(i7={"update"})),
     Writes(incidents=(IncidentWrite(spread(OPEN, EX02), 7, (EX02,)),),
            messages=(Message("reply", 7, detail=SPREAD),))),

    # --- storms -----------------------------------------------------------------------------
    ("threshold reached: the next incident opens a digest, posted with its first details",
     CONFIG, snapshot(E3, storms=STORMING),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,), joins=NEW_DIGEST(0)),),
            new_digests=("C0ALERTS",),
            messages=(DigestMessage("post", NEW_DIGEST(0)),
                      DigestMessage("reply", NEW_DIGEST(0), detail=DETAIL)))),
    ("one short of the threshold: the first is posted, the rest share one new digest",
     CONFIG, snapshot(E1, E2, E3, storms={"C0ALERTS": StormState(1, None)}),
     Writes(incidents=(IncidentWrite(opened(E1), -1, (E1,)),
                       IncidentWrite(opened(E2), -2, (E2,), joins=-1),
                       IncidentWrite(opened(E3), -3, (E3,), joins=-1)),
            new_digests=("C0ALERTS",),
            messages=(Message("post", -1), DigestMessage("post", -1),
                      DigestMessage("reply", -1, detail=DETAIL)))),
    ("an open incident's update comes before the digest that opens after it",
     CONFIG, snapshot(event(5, minutes=-2), E3, incidents=[OPEN], storms=STORMING),
     Writes(incidents=(IncidentWrite(grown(OPEN, event(5, minutes=-2)), 7,
                                     (event(5, minutes=-2),)),
                       IncidentWrite(opened(E3), -1, (E3,), joins=-1)),
            new_digests=("C0ALERTS",),
            messages=(Message("update", 7, not_before=NOW), DigestMessage("post", -1),
                      DigestMessage("reply", -1, detail=DETAIL)))),
    ("a storm in one channel: another channel's incident is still posted",
     CONFIG, snapshot(EX02, storms={**STORMING, "C0EX02": StormState(0, None)}),
     Writes(incidents=(IncidentWrite(opened(EX02, "C0EX02"), -1, (EX02,)),),
            messages=(Message("post", -1),))),
    ("storm_threshold 0: never a digest",
     NO_STORMS, snapshot(E3, storms={"C0ALERTS": StormState(100, None)}),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,)),), messages=(Message("post", -1),))),
    ("a snoozed account opening in a storm neither joins nor counts",
     CONFIG, snapshot(E2, E3, storms={"C0ALERTS": StormState(1, None)},
                      snoozed_keys=frozenset({incident_key(COPIER)})),
     Writes(incidents=(IncidentWrite(opened(E2), -1, (E2,)), IncidentWrite(opened(E3), -2, (E3,))),
            messages=(Message("post", -2),))),
    ("a live digest is joined, not a new one: its update and a details reply, coalesced",
     CONFIG, snapshot(E3, **live()),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,), joins=3),),
            messages=(DigestMessage("update", 3, not_before=IN_A_MINUTE),
                      DigestMessage("reply", 3, not_before=IN_A_MINUTE, detail=DETAIL)))),
    ("a live digest joined twice in one batch: still one update and one reply",
     CONFIG, snapshot(E2, E3, **live()),
     Writes(incidents=(IncidentWrite(opened(E2), -1, (E2,), joins=3),
                       IncidentWrite(opened(E3), -2, (E3,), joins=3)),
            messages=(DigestMessage("update", 3, not_before=IN_A_MINUTE),
                      DigestMessage("reply", 3, not_before=IN_A_MINUTE, detail=DETAIL)))),
    ("a live digest whose update and details already wait: nothing more",
     CONFIG, snapshot(E3, **live({"update", "reply", DETAILS})),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,), joins=3),))),
    ("a live digest whose thread is full: the update only",
     CONFIG, snapshot(E3, **live(full=True)),
     Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,), joins=3),),
            messages=(DigestMessage("update", 3, not_before=IN_A_MINUTE),))),
    ("a digested incident's events (and spread): only its digest's update",
     CONFIG, snapshot(EX02, incidents=[IN_DIGEST], **live()),
     Writes(incidents=(IncidentWrite(spread(IN_DIGEST, EX02), 7, (EX02,)),),
            messages=(DigestMessage("update", 3, not_before=IN_A_MINUTE),))),
    ("a digested incident whose digest is gone (pruned): nothing",
     CONFIG, snapshot(event(5), incidents=[replace(IN_DIGEST, digest_id=9)]),
     Writes(incidents=(IncidentWrite(grown(replace(IN_DIGEST, digest_id=9), event(5)), 7,
                                     (event(5),)),))),

    # --- the fix loop -----------------------------------------------------------------------
    ("watching, an event logged after the right showed, no directory: failing, said now",
     CONFIG, snapshot(event(5), incidents=[WATCHING]),
     Writes(incidents=(IncidentWrite(grown(WATCHING, event(5)), 7, (event(5),), fix=FixMove(
         "watching", "failing", NOW, note=STILL_FAILING)),),
            messages=(Message("update", 7), Message("reply", 7, detail=STILL_FAILING),
                      Message("update", 7, not_before=NOW)))),
    ("watching, an event after the right showed, with a directory: read it again at once",
     DIRECTORY, snapshot(event(5), incidents=[WATCHING]),
     Writes(incidents=(IncidentWrite(grown(WATCHING, event(5)), 7, (event(5),), fix=FixMove(
         "watching", "failing_check", NOW, check_now=True)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("watching, an event logged before the right showed (read late): no move",
     CONFIG, snapshot(event(5, minutes=-20), incidents=[WATCHING]),
     Writes(incidents=(IncidentWrite(grown(WATCHING, event(5, minutes=-20)), 7,
                                     (event(5, minutes=-20),)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("still waiting for the directory: events change nothing in the loop",
     DIRECTORY, snapshot(event(5), incidents=[replace(WATCHING, fix_state="waiting")]),
     Writes(incidents=(IncidentWrite(grown(replace(WATCHING, fix_state="waiting"), event(5)), 7,
                                     (event(5),)),),
            messages=(Message("update", 7, not_before=NOW),))),
    ("failing while an update waits: hurry it, and the note; no second update",
     CONFIG, snapshot(event(5), incidents=[WATCHING], pending=pending(i7={"update"})),
     Writes(incidents=(IncidentWrite(grown(WATCHING, event(5)), 7, (event(5),), fix=FixMove(
         "watching", "failing", NOW, note=STILL_FAILING)),),
            messages=(Hurry(7), Message("reply", 7, detail=STILL_FAILING)))),
    ("failing in a digest: the digest's update and note (which stands for its coalesced one)",
     CONFIG, snapshot(event(5), incidents=[replace(IN_DIGEST, fix_state="watching",
                                                   fix_seen_at=NOW - timedelta(minutes=10))],
                      **live()),
     Writes(incidents=(IncidentWrite(
         grown(replace(IN_DIGEST, fix_state="watching", fix_seen_at=NOW - timedelta(minutes=10)),
               event(5)), 7, (event(5),),
         fix=FixMove("watching", "failing", NOW, note=STILL_FAILING)),),
            messages=(DigestMessage("update", 3),
                      DigestMessage("reply", 3, detail={**STILL_FAILING, "incident": 7,
                                                        "account": SCANNER})))),
]


@pytest.mark.parametrize("config, snap, expected", [b[1:] for b in BATCHES],
                         ids=[b[0] for b in BATCHES])
def test_what_a_batch_writes(config, snap, expected):
    assert decide_batch(snap, NOW, config) == expected


def test_nothing_fresh_writes_nothing():
    assert decide_batch(snapshot(incidents=[OPEN], **live()), NOW, CONFIG) == Writes()


# --- changes decided elsewhere (the quiet sweep) ---------------------------------------------

def resolved(incident):
    return IncidentChange(before=incident, after=replace(incident, status="resolved",
                                                         resolved_at=NOW))


CHANGES = [
    # (what happened, the change, snapshot fields, the messages written)
    ("a posted incident resolves: one update", OPEN, {},
     (Message("update", 7, not_before=NOW),)),
    ("resolves soon after its last message: the update waits out update_interval",
     replace(OPEN, last_message_at=NOW - timedelta(seconds=50)), {},
     (Message("update", 7, not_before=NOW + timedelta(seconds=10)),)),
    ("resolves while snoozed: still its update", OPEN, {"snoozed_ids": frozenset({"7"})},
     (Message("update", 7, not_before=NOW),)),
    ("resolves with an update waiting: nothing more", OPEN, {"pending": pending(i7={"update"})},
     ()),
    ("resolves never posted: nothing", replace(OPEN, message_ts=None), {}, ()),
    ("a digested incident resolves: its digest's update", IN_DIGEST, live(),
     (DigestMessage("update", 3, not_before=IN_A_MINUTE),)),
]


@pytest.mark.parametrize("incident, fields, expected", [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])
def test_what_changes_decided_elsewhere_write(incident, fields, expected):
    change = resolved(incident)
    writes = decide_changes([change], snapshot(incidents=[incident], **fields), NOW, CONFIG)
    assert writes == Writes(incidents=(IncidentWrite(change.after, 7),), messages=expected)
    assert writes.stored == 0


def test_an_opening_change_decided_elsewhere_is_posted_or_joins_a_storm():
    changes = [IncidentChange(before=None, after=opened(ev), events=[ev]) for ev in (E1, E2)]
    writes = decide_changes(changes, snapshot(storms={"C0ALERTS": StormState(1, None)}), NOW,
                            CONFIG)
    assert writes == Writes(
        incidents=(IncidentWrite(opened(E1), -1, (E1,)),
                   IncidentWrite(opened(E2), -2, (E2,), joins=-1)),
        new_digests=("C0ALERTS",),
        messages=(Message("post", -1), DigestMessage("post", -1),
                  DigestMessage("reply", -1, detail=DETAIL)))


def test_no_changes_write_nothing():
    assert decide_changes([], snapshot(), NOW, CONFIG) == Writes()


# --- what a poll passes through: progress, problems, generation, clock skew -----------------

def test_progress_problems_and_generation_are_passed_through_and_the_skew_measured_on_all_read():
    problem = Problem("EX01", "malformed_event", "record 4 has no account", "<Event>")
    progress = PollProgress("EX01", 4, 1203, 1000, 1203, "Application")
    seen_before = event(2, minutes=12)    # read again, not fresh: still counts for the skew
    writes = decide_batch(snapshot(E3), NOW, CONFIG, generation=4, problems=[problem],
                          progress=progress, read=[seen_before, E3],
                          previous=NOW - timedelta(minutes=1))
    assert writes == Writes(incidents=(IncidentWrite(opened(E3), -1, (E3,)),),
                            messages=(Message("post", -1),), generation=4, problems=(problem,),
                            progress=progress, clock_skew=720.0)
    assert writes.stored == 1


def test_a_batch_with_nothing_fresh_still_moves_the_cursor():
    progress = PollProgress("EX02", 0, 77, 1, 77, "Application")
    assert decide_batch(snapshot(), NOW, CONFIG, progress=progress) == Writes(progress=progress)


@pytest.mark.parametrize("fresh, incidents, stored", [
    ((), (), 0),
    ((E3,), (), 1),
    ((E1, E2, E3, event(4, FAX, minutes=-4)), (), 4),        # three incidents, four events
    ((event(5), EX02), (OPEN,), 2),                          # one grows by two
    ((event(5),), (QUIET,), 1),                              # the resolved one takes none
], ids=["none", "one", "four over three incidents", "one incident grows", "quiet split"])
def test_stored_counts_the_events_written(fresh, incidents, stored):
    assert decide_batch(snapshot(*fresh, incidents=incidents), NOW, CONFIG).stored == stored


SKEW = [
    # (what was read, previous poll began, skew in seconds)
    ("nothing read: cannot tell", [], NOW - timedelta(minutes=1), None),
    ("ahead: an event stamped 10 minutes after now", [3, 10], None, 600.0),
    ("ahead by the limit exactly: within", [5], None, 0.0),
    ("ahead by just over the limit", [5.5], None, 330.0),
    ("behind: the newest event 10 minutes before the previous poll began", [-40, -30],
     NOW - timedelta(minutes=20), -600.0),
    ("behind by the limit exactly: within", [-25], NOW - timedelta(minutes=20), 0.0),
    ("old events but no previous poll: cannot call it behind", [-600], None, 0.0),
    ("within 5 minutes either way", [-3, 4], NOW - timedelta(minutes=4), 0.0),
]


@pytest.mark.parametrize("minutes, previous, expected", [s[1:] for s in SKEW],
                         ids=[s[0] for s in SKEW])
def test_clock_skew(minutes, previous, expected):
    events = [event(n, minutes=m) for n, m in enumerate(minutes)]
    assert clock_skew(events, previous, NOW) == expected
    assert decide_batch(snapshot(), NOW, CONFIG, read=events,
                        previous=previous).clock_skew == expected


def test_two_incidents_of_one_digest_failing_in_one_batch_update_the_digest_once():
    # The second incident's note sees the update the first one queued (as the store would
    # show it), so the digest is hurried rather than updated twice.
    watched = dict(fix_state="watching", fix_seen_at=NOW - timedelta(minutes=10))
    first = replace(IN_DIGEST, **watched)
    second = replace(IN_DIGEST, id=8, key=incident_key(PRINTER), account=PRINTER, **watched)
    writes = decide_batch(snapshot(event(5), event(6, PRINTER), incidents=[first, second],
                                   **live()), NOW, CONFIG)
    assert writes.messages == (
        DigestMessage("update", 3),
        DigestMessage("reply", 3, detail={**STILL_FAILING, "incident": 7, "account": SCANNER}),
        HurryDigest(3),
        DigestMessage("reply", 3, detail={**STILL_FAILING, "incident": 8, "account": PRINTER}))

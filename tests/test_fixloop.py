"""The closed loop: Mark fixed -> the directory shows the right -> quiet -> Confirmed fixed; or
-> it fails again -> "still failing" with what the directory shows now. The rules as tables;
the loop end to end through the WinRM simulator, the pipeline, the Slack stand-in, real Bolt
for the button, and a real Samba AD where the grant appears (tests/samba_ad.py)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.findings import Finding
from bot.core.model import Incident
from bot.engine import fixloop
from bot.slack.alerts import ACTION_FIXED, ACTION_SHOW_FIX
from store import chat, fixes
from store import db as store
from tests.blocks import preformatted, prose
from tests.conftest import CHANNEL
from tests.helpers import BE, ask, bolt_actions, click, sweep
from tests.samba_ad import PASSWORD, submit_ace, unique

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def incident(**kw) -> Incident:
    base = dict(id=1, key="k", account="CONTOSO\\app", status="open", channel=CHANNEL,
                first_seen=T0, last_seen=T0, event_count=1, servers=(("EX01", "EX01"),),
                connectors=(), event_ids=(1018,), opened_at=T0)
    return Incident(**{**base, **kw})


# --- the rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("count, span_, configured, window", [
    (1, timedelta(0), 0, HOUR),                         # one event: at least an hour
    (11, 10 * HOUR, 0, 3 * HOUR),                      # an event an hour: three of its gaps
    (5, 4 * timedelta(minutes=1), 0, HOUR),            # a fast one still waits an hour
    (3, 2 * 20 * HOUR, 0, timedelta(hours=24 * 0.9)),  # never past the quiet period
    (11, 10 * HOUR, 600, timedelta(minutes=10)),       # incidents.confirm_after decides
])
def test_the_confirmation_window_follows_the_incidents_own_rate(count, span_, configured,
                                                               window):
    one = incident(event_count=count, last_seen=T0 + span_)
    assert fixloop.confirm_window(one, configured, 24 * 3600) == window


@pytest.mark.parametrize("state, granted, after", [
    ("waiting", False, None), ("waiting", True, "watching"), ("watching", False, None),
    (fixloop.FAILING_CHECK, True, "failing"), (None, True, None)])
def test_a_directory_check_moves_the_loop(state, granted, after):
    assert fixloop.after_check(state, granted) == after


def test_only_an_event_logged_after_the_right_showed_is_a_failure_of_the_fix():
    from bot.core.model import Event
    watched = incident(fix_state="watching", fix_seen_at=T0)
    before = Event("EX01", 1, "p", 1018, T0 - timedelta(seconds=1), "CONTOSO\\app", None, "EX01")
    after = Event("EX01", 2, "p", 1018, T0 + timedelta(seconds=1), "CONTOSO\\app", None, "EX01")
    assert not fixloop.fails_again(watched, [before])
    assert fixloop.fails_again(watched, [before, after])
    assert not fixloop.fails_again(incident(fix_state="waiting", fix_seen_at=T0), [after])


def test_quiet_for_the_window_since_the_right_showed_confirms():
    watched = incident(fix_state="watching", fix_seen_at=T0, last_stored_at=T0 - HOUR)
    assert not fixloop.confirmed(watched, T0 + HOUR - timedelta(seconds=1), HOUR)
    assert fixloop.confirmed(watched, T0 + HOUR, HOUR)
    assert not fixloop.confirmed(incident(fix_state="waiting", fix_seen_at=T0), T0 + 9 * HOUR,
                                 HOUR)


def test_a_finding_survives_its_json_and_says_what_it_found():
    found = Finding("CORP\\erin", T0, found=True, sid="S-1-5-21-1-2-3-1105", rid=1105, groups=2)
    assert Finding.from_json(found.to_json()) == found
    admin = Finding("CORP\\boss", T0, found=True, rid=500, builtin="Administrator")
    assert "built-in Administrator (RID 500)" in admin.summary()


# --- without a directory: the events alone --------------------------------------------------

def test_mark_fixed_without_a_directory_watches_the_events_then_confirms(posted, db, slack,
                                                                        clock):
    config, first, message = posted
    app = bolt_actions(slack, db, config, clock)
    assert click(app, slack, "U0ALICE", ACTION_FIXED, message, value=str(first.id)) == []
    marked = store.get_incident(db, first.stored_id)
    assert (marked.fix_state, marked.fixed_by) == ("watching", "U0ALICE")
    assert chat.audit_trail(db, first.stored_id)[-1]["action"] == "fixed"
    sweep(db, config, clock)
    [note] = slack.message(CHANNEL, message["ts"])["replies"]
    assert "no [directory] is configured, so SubmitWatch watches the events alone" in note["text"]
    clock.advance(minutes=59)
    assert fixloop.confirm_fixes(db, config, clock) == 0
    clock.advance(minutes=2)
    assert fixloop.confirm_fixes(db, config, clock) == 1
    sweep(db, config, clock)
    done = store.get_incident(db, first.stored_id)
    assert (done.status, done.fix_state) == ("resolved", "confirmed")
    alert = slack.message(CHANNEL, message["ts"])
    assert alert["text"].startswith("Confirmed fixed: CONTOSO\\svc-scanner")
    assert "Confirmed fixed: no failure for 1h" in alert["replies"][-1]["text"]
    assert "Mark fixed" not in str(alert["blocks"])


def test_a_new_failure_after_mark_fixed_says_so_at_once(posted, logs, db, slack, clock):
    config, first, message = posted
    assert "Marked #1 fixed" in ask(db, config, clock, f"fixed #{first.id} granted it").text
    clock.advance(minutes=5)
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    sweep(db, config, clock)
    again = store.get_incident(db, first.stored_id)
    assert again.fix_state == "failing" and again.status == "open"
    replies = slack.message(CHANNEL, message["ts"])["replies"]
    assert "Still failing after it was marked fixed" in replies[-1]["text"]
    assert "cannot say why" in replies[-1]["text"]
    alert = slack.message(CHANNEL, message["ts"])
    assert "but it failed again" in prose(alert["blocks"])
    assert "Mark fixed" in str(alert["blocks"])      # it may be marked again
    assert "already marked" not in ask(db, config, clock, f"fixed #{first.id}").text


# --- with Samba AD: the grant appears, or a Deny explains why it still fails -------------------

@pytest.fixture
def directory_world(samba_ad, logs, db, make_config, slack, clock):
    """An account failing 1018 on a connector of EX01 that exists in Samba without a grant."""
    name = unique("Client Frontend")
    dn = samba_ad.add_connector("EX01", name)
    user = samba_ad.add_user(unique("scan"))
    config = make_config(servers=("EX01",), directory={
        "urls": [samba_ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
        "password_env": "DIRECTORY_PASSWORD", "ca_file": str(samba_ad.ca_file)},
        environ={"DIRECTORY_PASSWORD": PASSWORD})
    account = f"CORP\\{user.name}"
    logs["EX01"].append(BE, 1018, (account, name))
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    return config, incident, dn, user, account, name


def test_the_alert_shows_what_the_directory_says(directory_world, db, slack, clock):
    config, incident, dn, user, account, name = directory_world
    assert fixloop.run_checks(db, config, clock) == 1
    sweep(db, config, clock)
    alert = slack.message(CHANNEL, store.get_incident(db, incident.stored_id).message_ts)
    assert f"EX01\\{name}: Submit not granted" in prose(alert["blocks"])
    assert fixloop.run_checks(db, config, clock) == 0        # next in REFRESH, not each minute
    shown = prose(ask(db, config, clock, f"show #{incident.id}").blocks)   # in full
    assert f"EX01\\{name}: not granted on EX01\\{name}: no entry in its DACL" in shown
    assert "enabled · role FrontendTransport" in shown
    [fix] = click(bolt_actions(slack, db, config, clock), slack, "U0ALICE", ACTION_SHOW_FIX,
                  alert, value=str(incident.id))
    assert f"EX01\\{name}: not granted" in prose(fix["blocks"])


def test_mark_fixed_then_the_grant_appears_then_quiet_confirms(directory_world, samba_ad, db,
                                                             slack, clock):
    config, incident, dn, user, account, name = directory_world
    ts = store.get_incident(db, incident.stored_id).message_ts
    ask(db, config, clock, f"fixed #{incident.id}")
    fixloop.run_checks(db, config, clock)
    assert store.get_incident(db, incident.stored_id).fix_state == "waiting"  # not yet there
    sweep(db, config, clock)
    assert "waiting for the directory to show the right" in prose(
        slack.message(CHANNEL, ts)["blocks"])
    samba_ad.add_ace(dn, submit_ace(user.sid))                 # the admin's grant replicates
    clock.advance(minutes=4)
    assert fixloop.run_checks(db, config, clock) == 0          # read again after 5 minutes
    clock.advance(minutes=1)
    assert fixloop.run_checks(db, config, clock) == 1
    watched = store.get_incident(db, incident.stored_id)
    assert watched.fix_state == "watching" and watched.fix_seen_at == clock()
    sweep(db, config, clock)
    replies = slack.message(CHANNEL, ts)["replies"]
    assert "The directory shows the right now 5m after it was marked fixed" in replies[-1]["text"]
    assert "Submit granted" in replies[-1]["text"]
    clock.advance(hours=1)
    assert fixloop.confirm_fixes(db, config, clock) == 1
    sweep(db, config, clock)
    assert slack.message(CHANNEL, ts)["text"].startswith("Confirmed fixed:")
    assert fixes.finding(db, incident.stored_id).granted


def test_a_failure_after_the_grant_shows_is_reported_with_what_the_directory_says_now(
        directory_world, samba_ad, logs, db, slack, clock):
    config, incident, dn, user, account, name = directory_world
    ts = store.get_incident(db, incident.stored_id).message_ts
    samba_ad.add_ace(dn, submit_ace(user.sid))
    ask(db, config, clock, f"fixed #{incident.id}")
    fixloop.run_checks(db, config, clock)
    assert store.get_incident(db, incident.stored_id).fix_state == "watching"
    group = samba_ad.add_group(unique("Blocked"), members=[user.dn])
    samba_ad.set_aces(dn, [submit_ace(group.sid, deny=True), submit_ace(user.sid)])
    clock.advance(minutes=10)
    logs["EX01"].append(BE, 1018, (account, name))        # logged after the right showed
    sweep(db, config, clock)
    assert store.get_incident(db, incident.stored_id).fix_state == fixloop.FAILING_CHECK
    assert fixloop.run_checks(db, config, clock) == 1     # read at once, not in 5 minutes
    sweep(db, config, clock)
    failing = store.get_incident(db, incident.stored_id)
    assert failing.fix_state == "failing" and failing.status == "open"
    note = slack.message(CHANNEL, ts)["replies"][-1]["text"]
    assert "Still failing after it was marked fixed" in note
    assert f"EX01\\{name}: Submit denied by a Deny entry" in note


def test_a_directory_that_cannot_answer_is_said_in_the_alert_and_polling_goes_on(
        posted, logs, db, make_config, slack, clock):
    config, first, message = posted
    config = make_config(servers=("EX01", "EX02"), directory={
        "urls": ["ldaps://127.0.0.1:1"], "user": "CORP\\reader", "auth": "simple",
        "password_env": "DIRECTORY_PASSWORD", "connect_timeout": 1},
        environ={"DIRECTORY_PASSWORD": PASSWORD})
    assert fixloop.run_checks(db, config, clock) == 1
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\svc-scanner",))
    results, _ = sweep(db, config, clock)
    assert all(r.error is None for r in results) and results[0].stored == 1
    alert = slack.message(CHANNEL, message["ts"])
    assert "Directory" in prose(alert["blocks"]) and "could not be read" in prose(alert["blocks"])
    assert "127.0.0.1:1" in prose(alert["blocks"])


def test_an_incident_being_watched_is_confirmed_never_resolved_as_merely_quiet(
        posted, db, slack, clock):
    config, first, message = posted
    ask(db, config, clock, f"fixed #{first.id}")
    clock.advance(hours=25)                       # past the quiet period as well
    from bot.ops.scheduler import housekeeping
    housekeeping(db, config, clock=clock)
    done = store.get_incident(db, first.stored_id)
    assert (done.status, done.fix_state) == ("resolved", "confirmed")


def test_a_1020_names_no_connector_so_the_loop_watches_the_events_at_once(
        samba_ad, logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",), directory={
        "urls": [samba_ad.ldaps_url], "user": "CORP\\reader", "auth": "simple",
        "password_env": "DIRECTORY_PASSWORD", "ca_file": str(samba_ad.ca_file)},
        environ={"DIRECTORY_PASSWORD": PASSWORD})
    logs["EX01"].append("MSExchangeFrontEndTransport", 1020, ("CORP\\Administrator",))
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    fixloop.run_checks(db, config, clock)
    sweep(db, config, clock)
    alert = slack.message(CHANNEL, store.get_incident(db, incident.stored_id).message_ts)
    assert "the domain's built-in Administrator (RID 500)" in prose(alert["blocks"])
    # The 1020's diagnosis is settled as a fact: no SID check to run, no grant to try.
    assert "is the domain's built-in Administrator (RID 500)" in prose(alert["blocks"])
    assert "cannot fix this" in prose(alert["blocks"])
    assert preformatted(alert["blocks"]) == []
    ask(db, config, clock, f"fixed #{incident.id} the scanner has its own account now")
    fixloop.run_checks(db, config, clock)
    assert store.get_incident(db, incident.stored_id).fix_state == "watching"
    sweep(db, config, clock)
    # A built-in account never "shows the right now": only its events can tell.
    note = slack.message(CHANNEL, alert["ts"])["replies"][-1]["text"]
    assert "no right lets one through" in note and "shows the right now" not in note


def test_the_right_shows_where_the_connectors_exist_a_gone_one_cannot_hold_the_loop_up():
    from bot.core.findings import ConnectorFact
    granted = ConnectorFact("EX01", "Client Frontend EX01", found=True, right="granted",
                            enabled=True)
    gone = ConnectorFact("EX99", "(its connectors)", found=False,
                         why="no Exchange server named EX99")
    assert Finding("CORP\\x", T0, found=True, connectors=(granted, gone)).granted
    assert not Finding("CORP\\x", T0, found=True, connectors=(gone,)).granted
    denied = ConnectorFact("EX02", "Relay", found=True, right="denied", enabled=True)
    assert not Finding("CORP\\x", T0, found=True, connectors=(granted, denied)).granted
    assert "EX99\\(its connectors): no Exchange server named EX99" in Finding(
        "CORP\\x", T0, found=True, connectors=(granted, gone)).summary()

"""Name the device, end to end: refusals written as Exchange writes them (the event and the
protocol-log line in one code path), polled over real pywinrm, the look-up job reading the
server's SMTP Receive protocol log through the same WinRM endpoint, the join, the store, and the
alert in the Slack stand-in naming the device."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bot.core.devices import FAILED, FOUND, NO_MATCH, NOT_LOGGING, PENDING
from bot.engine import devices
from bot.engine.devices import ReverseDNS
from bot.sources.winrm import WinRMSource
from sim.protocollog import ProtocolLogWriter, log_refusal
from store import db as store
from store import devices as device_store
from tests.blocks import prose
from tests.conftest import CHANNEL
from tests.helpers import sweep

MFP = "CONTOSO\\svc-mfp"
PORT25 = "Default Frontend EX01"
NAMES = {"10.20.30.41": "mfp-3f.contoso.local"}


@pytest.fixture
def writer(winrm):
    log = ProtocolLogWriter("EX01")
    winrm.set_protocol_log("EX01", log)
    return log


def look_up(db, config, clock, resolve=NAMES.get):
    return devices.run_lookups(db, config, clock,
                               lambda server: WinRMSource(server, config.polling).open(), resolve)


def refuse(logs, writer, clock, address, *, account=MFP, connector=PORT25, seconds=0):
    log_refusal(logs["EX01"], writer, 1018, account, (address, 50_000 + seconds),
                connector=connector, time=clock() + timedelta(seconds=seconds))


def alert_words(slack, db):
    [incident] = store.open_incidents(db).values()
    return prose(slack.message(CHANNEL, incident.message_ts)["blocks"]), incident


def test_the_alert_names_the_devices_behind_the_account(logs, writer, db, make_config, slack,
                                                         clock):
    config = make_config(servers=("EX01",))
    for n in range(3):
        refuse(logs, writer, clock, "10.20.30.41", seconds=n)
    refuse(logs, writer, clock, "10.20.30.57", seconds=1)   # a second device, the same second
    sweep(db, config, clock)
    words, incident = alert_words(slack, db)
    assert "Devices: not looked up yet" in words
    # Exchange writes a row a few seconds after it stamps it: fresh events wait for a later run.
    assert look_up(db, config, clock) == 1
    assert device_store.lookup_of(db, incident.stored_id).state == PENDING
    clock.advance(minutes=1)
    assert look_up(db, config, clock) == 1
    found = device_store.lookup_of(db, incident.stored_id)
    assert found.state == FOUND
    assert [(d.address, d.name, d.sessions) for d in found.devices] == [
        ("10.20.30.41", "mfp-3f.contoso.local", 3), ("10.20.30.57", None, 1)]
    sweep(db, config, clock)
    words, _ = alert_words(slack, db)
    assert "10.20.30.41 (mfp-3f.contoso.local) 3 sessions" in words and "10.20.30.57" in words
    # Nothing new: no look-up, no read (at most one per incident per interval, and only new events).
    assert look_up(db, config, clock) == 0


def test_new_failures_add_up_and_a_file_is_never_read_twice(logs, writer, db, make_config,
                                                             slack, clock):
    config = make_config(servers=("EX01",))
    refuse(logs, writer, clock, "10.20.30.41")
    sweep(db, config, clock)
    clock.advance(minutes=2)
    look_up(db, config, clock)
    refuse(logs, writer, clock, "10.20.30.41")
    sweep(db, config, clock)
    clock.advance(minutes=2)
    assert look_up(db, config, clock) == 1
    [incident] = store.open_incidents(db).values()
    [device] = device_store.lookup_of(db, incident.stored_id).devices
    assert device.sessions == 2          # one per failure: the first file's line counted once


def test_a_backlog_of_many_hours_is_read_a_few_hours_at_a_time_and_nothing_is_left(
        logs, writer, db, make_config, slack, clock):
    config = make_config(servers=("EX01",), polling={"lookback": "12h"})
    start = clock()
    for hour in range(9):     # one failure an hour, each from its own address
        clock.now = start - timedelta(hours=9 - hour)
        refuse(logs, writer, clock, f"10.20.30.{hour + 1}")
    clock.now = start
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    runs = 0
    while device_store.lookup_of(db, incident.stored_id).checked_at is None or len(
            device_store.lookup_of(db, incident.stored_id).devices) < 9:
        clock.advance(minutes=2)       # one look-up per incident per polling interval
        assert look_up(db, config, clock) == 1
        runs += 1
        assert runs <= 5
    assert runs >= 3                   # at most four hours of files per read
    clock.advance(minutes=2)
    assert look_up(db, config, clock) == 0       # nothing is left


def test_lines_read_for_one_incident_name_the_devices_of_others_too(logs, writer, db,
                                                                     make_config, slack, clock):
    config = make_config(servers=("EX01",))
    refuse(logs, writer, clock, "10.20.30.41")
    refuse(logs, writer, clock, "10.20.30.99", account="CONTOSO\\svc-copier", seconds=1)
    sweep(db, config, clock)
    clock.advance(minutes=1)
    # One incident due per run: its read passes the other account's line too.
    assert devices.run_lookups(db, config, clock, lambda server: WinRMSource(
        server, config.polling).open(), NAMES.get, limit=1) == 1
    found = {i.account: device_store.lookup_of(db, i.stored_id).devices
             for i in store.open_incidents(db).values()}
    assert {a: [d.address for d in ds] for a, ds in found.items()} == {
        MFP: ["10.20.30.41"], "CONTOSO\\svc-copier": ["10.20.30.99"]}


def test_a_line_read_before_its_event_was_stored_joins_it_later(logs, writer, db, make_config,
                                                                slack, clock):
    config = make_config(servers=("EX01",))
    refuse(logs, writer, clock, "10.20.30.41")
    # The copier's line is in the log, its event not yet in the store (a later poll reads it).
    writer.failed_auth(clock() + timedelta(seconds=2), PORT25, ("10.20.30.99", 50_002),
                       event_id=1018, user="CONTOSO\\svc-copier")
    sweep(db, config, clock)
    clock.advance(minutes=1)
    look_up(db, config, clock)                     # reads both lines; one joins nothing yet
    logs["EX01"].append_refusal(1018, "CONTOSO\\svc-copier", PORT25,
                                time=clock() - timedelta(minutes=1) + timedelta(seconds=2))
    sweep(db, config, clock)
    clock.advance(minutes=2)
    look_up(db, config, clock)
    copier = store.open_incidents(db)["contoso\\svc-copier"]
    assert [d.address for d in device_store.lookup_of(db, copier.stored_id).devices] == [
        "10.20.30.99"]
    # Never someone else's: the copier's line did not become the printer's device meanwhile.
    mfp = store.open_incidents(db)[MFP.casefold()]
    assert [d.address for d in device_store.lookup_of(db, mfp.stored_id).devices] == [
        "10.20.30.41"]


def test_a_connector_that_does_not_log_is_said_with_how_to_turn_it_on(
        logs, writer, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    refuse(logs, writer, clock, "10.20.30.41", connector="Client Frontend EX01")   # logs nothing
    sweep(db, config, clock)
    clock.advance(minutes=1)
    look_up(db, config, clock)
    [incident] = store.open_incidents(db).values()
    found = device_store.lookup_of(db, incident.stored_id)
    assert (found.state, found.quiet_connectors) == (NOT_LOGGING, ("EX01\\Client Frontend EX01",))
    assert found.devices == ()           # never a guess


def test_an_unreadable_log_folder_is_said_on_the_device_line_and_polling_goes_on(
        logs, writer, winrm, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    winrm.deny_protocol_log("EX01")
    refuse(logs, writer, clock, "10.20.30.41")
    sweep(db, config, clock)
    clock.advance(minutes=1)
    look_up(db, config, clock)
    [incident] = store.open_incidents(db).values()
    found = device_store.lookup_of(db, incident.stored_id)
    assert found.state == FAILED and "denied" in (found.problem or "")
    refuse(logs, writer, clock, "10.20.30.41", seconds=5)
    [result], _ = sweep(db, config, clock)
    assert result.error is None and result.stored == 1        # the poll never heard of it
    words, _ = alert_words(slack, db)
    assert "could not be read" in words
    # Once it can be read, the events not looked up yet are read after all.
    winrm.deny_protocol_log("EX01", False)
    clock.advance(minutes=2)
    look_up(db, config, clock)
    assert device_store.lookup_of(db, incident.stored_id).state == FOUND


def test_nothing_in_the_log_for_the_events_is_said_as_such(logs, writer, db, make_config,
                                                           slack, clock):
    config = make_config(servers=("EX01",))
    logs["EX01"].append_refusal(1018, MFP, PORT25, time=clock())   # no line was written
    sweep(db, config, clock)
    clock.advance(minutes=1)
    look_up(db, config, clock)
    [incident] = store.open_incidents(db).values()
    assert device_store.lookup_of(db, incident.stored_id).state == NO_MATCH


def test_the_look_up_is_off_when_devices_are_disabled(logs, writer, db, make_config, slack,
                                                      clock):
    config = make_config(servers=("EX01",), devices={"enabled": False})
    refuse(logs, writer, clock, "10.20.30.41")
    sweep(db, config, clock)
    clock.advance(minutes=1)
    assert look_up(db, config, clock) == 0
    words, _ = alert_words(slack, db)
    assert "Devices" not in words


def test_reverse_dns_is_bounded_and_cached():
    asked = []

    def slow(address):
        asked.append(address)
        if address == "10.0.0.9":
            import threading
            threading.Event().wait(2)        # longer than the timeout: given up on
        return {"10.0.0.1": "mfp.contoso.local"}.get(address) or _no_name(address)

    ticks = [0.0]
    resolve = ReverseDNS(lambda: ticks[0], lookup=slow, timeout=0.2, ttl=60)
    try:
        assert resolve("10.0.0.1") == "mfp.contoso.local"
        assert resolve("10.0.0.9") is None
        assert resolve("10.0.0.2") is None
        assert resolve("10.0.0.1") == "mfp.contoso.local" and asked.count("10.0.0.1") == 1
        ticks[0] = 61.0
        resolve("10.0.0.1")
        assert asked.count("10.0.0.1") == 2          # the cache expires
    finally:
        resolve.close()


def _no_name(address):
    raise OSError(1, f"no name for {address}")

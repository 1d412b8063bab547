"""Grouping events into incidents: pure decisions with `now` passed in."""
from datetime import UTC, datetime, timedelta

from bot.core.model import Event
from bot.engine.incidents import decide, resolve_quiet

T0 = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)
QUIET = timedelta(hours=24)


def event(record, account="CONTOSO\\svc-scanner", server="EX01", minutes=0, connector=None):
    return Event(server=server, record_id=record, provider="MSExchangeTransport",
                 event_id=1018 if connector else 1020, time=T0 + timedelta(minutes=minutes),
                 account=account, connector=connector, computer=f"{server}.contoso.local")


def channel_for(event):
    return {"EX02": "C0EX02"}.get(event.origin, "C0ALERTS")


def run(events, open_incidents=None, now=T0 + timedelta(hours=1)):
    return decide(events, open_incidents or {}, now, QUIET, channel_for)


def test_repeats_of_one_account_are_one_incident_case_insensitively():
    [change] = run([event(1), event(2, "contoso\\SVC-SCANNER", minutes=5), event(3, minutes=9)])
    assert change.opened
    incident = change.after
    assert incident.account == "CONTOSO\\svc-scanner"  # as first seen
    assert incident.event_count == 3
    assert (incident.first_seen, incident.last_seen) == (T0, T0 + timedelta(minutes=9))
    assert incident.servers == (("EX01", "EX01"),)
    assert len(change.events) == 3


def test_different_accounts_are_different_incidents_and_take_their_servers_channel():
    changes = run([event(1, "a"), event(2, "b", server="EX02")])
    assert [(c.after.account, c.after.channel) for c in changes] == [("a", "C0ALERTS"), ("b", "C0EX02")]


def test_growing_an_open_incident_reports_new_servers_and_connectors():
    [opened] = run([event(1)])
    incident = opened.after
    [change] = run([event(7, server="EX02", minutes=30, connector="EX02\\Client Frontend EX02"),
                    event(8, minutes=31)], {incident.key: incident})
    assert not change.opened and not change.resolved
    assert change.new_servers == ("EX02",)
    assert change.new_connectors == ("EX02\\Client Frontend EX02",)
    assert change.after.event_count == 3
    assert change.after.event_ids == (1018, 1020)
    assert change.after.server_names == ("EX01", "EX02")


def test_out_of_order_events_keep_first_and_last_seen_right():
    [change] = run([event(2, minutes=10), event(1, minutes=-10)])
    assert change.after.first_seen == T0 - timedelta(minutes=10)
    assert change.after.last_seen == T0 + timedelta(minutes=10)


def test_an_event_after_the_quiet_period_closes_the_old_incident_and_opens_a_new_one():
    [opened] = run([event(1)], now=T0)      # stored as it happened
    old = opened.after
    late = T0 + QUIET + timedelta(minutes=1)
    changes = decide([event(9, minutes=24 * 60 + 1)], {old.key: old}, late, QUIET, channel_for)
    assert [(c.opened, c.after.status) for c in changes] == [(False, "resolved"), (True, "open")]
    assert changes[0].resolved and changes[0].after.resolved_at == late
    assert changes[1].after.event_count == 1


def test_quiet_incidents_resolve_and_busy_ones_do_not():
    [quiet] = run([event(1, "quiet")], now=T0)
    [busy] = run([event(2, "busy", minutes=60)], now=T0 + timedelta(minutes=60))
    now = T0 + QUIET + timedelta(minutes=30)
    changes = resolve_quiet([quiet.after, busy.after], now, QUIET)
    assert [(c.after.account, c.after.status, c.after.resolved_at) for c in changes] == [
        ("quiet", "resolved", now)]


def test_nothing_new_changes_nothing():
    assert run([]) == []


def test_an_incident_keeps_each_event_id_server_and_connector_once_in_first_seen_order():
    from dataclasses import replace

    from bot.core.model import Sighting
    first = run([event(1, connector="EX01\\Relay", minutes=1), event(2, server="EX02", minutes=2),
                 event(3, connector="EX01\\Relay", minutes=3)])[0].after
    assert first.sightings == (Sighting(1018, "EX01", "EX01\\Relay"), Sighting(1020, "EX02", None))
    stored = replace(first, id=1)
    [grown] = run([event(4, server="EX02", minutes=4),
                   replace(event(5, server="EX02", minutes=5, connector="EX02\\Client"),
                           event_id=1020)], {stored.key: stored})
    assert grown.after.sightings == (*first.sightings, Sighting(1020, "EX02", "EX02\\Client"))
    assert grown.new_connectors == ("EX02\\Client",)   # named by a 1020: news all the same


def test_an_exchange_clock_behind_the_bots_neither_resolves_nor_splits_a_live_incident():
    """The bot's clock two days ahead of Exchange's (or Exchange's stepped back): quietness
    counts from when the bot stored the events too."""
    now = T0 + timedelta(days=2)
    [opened] = run([event(1)], now=now)
    live = opened.after
    assert resolve_quiet([live], now + timedelta(minutes=5), QUIET) == []
    # Exchange's clock jumps ahead a day: the bot stored this incident's events minutes ago,
    # so it grows instead of closing and posting again.
    [grown] = decide([event(2, minutes=24 * 60 + 5)], {live.key: live},
                     now + timedelta(minutes=5), QUIET, channel_for)
    assert not grown.opened and grown.after.status == "open" and grown.after.event_count == 2
    # Quiet for a real day by both clocks: resolved.
    assert resolve_quiet([grown.after], now + QUIET + timedelta(minutes=6), QUIET) != []

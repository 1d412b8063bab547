"""`/submitwatch summary`: the period's figures on a database filled by the pipeline's own
functions, at a fixed `now`."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import ConfigError, SummaryConfig
from bot.engine.chatops import Actor, acknowledge
from bot.engine.poller import resolve_quiet_incidents
from bot.engine.summary import due_slot
from bot.ops.scheduler import housekeeping
from store import db as store
from store import queries
from tests.blocks import mrkdwn_texts
from tests.conftest import CHANNEL
from tests.helpers import FE, NOW, RELAY, SCANNER, Feed, ask, lookup_config, sweep

PRINTER, OLD = "CONTOSO\\printer", "CONTOSO\\old"


def test_the_summary_counts_what_is_new_open_owned_and_where_it_comes_from(db):
    config = lookup_config()
    feed = Feed(db, config)
    feed.burst(OLD, NOW - timedelta(days=20), 1)                  # an account seen before...
    resolve_quiet_incidents(db, config, lambda: NOW - timedelta(days=15))
    feed.burst("contoso\\OLD", NOW - timedelta(days=2), 1)        # ...back in the window
    feed.burst(SCANNER, NOW - timedelta(days=3), 4, connector=RELAY)
    feed.burst(PRINTER, NOW - timedelta(days=1), 2, server="EX02")
    incidents = {i.key: i for i in store.open_incidents(db).values()}
    scanner = incidents[SCANNER.casefold()]
    acknowledge(db, scanner.stored_id, Actor("U0ALICE", "button", "C0ALERTS"), None,
                scanner.opened_at + timedelta(minutes=30))
    resolve_quiet_incidents(db, config, lambda: NOW - timedelta(hours=1))   # old, scanner go
    figures = queries.summary(db, since=NOW - timedelta(days=7), until=NOW)
    assert (figures.new_accounts, figures.opened, figures.events) == (2, 3, 7)
    assert (figures.open_now, figures.acknowledged_now) == (1, 0)           # the printer
    assert figures.top_servers == [("EX01", 5), ("EX02", 2)]
    assert figures.top_connectors == [(RELAY, 4)]
    assert figures.median_to_ack == 30 * 60
    assert figures.median_to_resolve is not None and figures.median_to_resolve > 86400

    reply = ask(db, config, lambda: NOW, "summary --since 7d")
    text = "\n".join(mrkdwn_texts(reply.blocks))
    assert "*Summary of the last 7 days*" in text
    assert "• new accounts: 2; incidents opened: 3; events: 7" in text
    assert "• top connectors: `EX01\\Relay Scanners` (4)" in text
    assert "• median time to acknowledge: 30m" in text
    assert "• servers not watched: *EX01*, *EX02*, *EX03*" in text   # never polled here


def test_an_empty_period_says_so_and_bad_options_are_refused(db):
    config = lookup_config()
    reply = ask(db, config, lambda: NOW, "summary")
    text = "\n".join(mrkdwn_texts(reply.blocks))
    assert "• new accounts: 0; incidents opened: 0; events: 0" in text
    assert "median time to acknowledge: none in the period; to resolve: none in the period" \
        in text
    assert "takes only `--since`" in ask(db, config, lambda: NOW, "summary everything").text


# --- the scheduled post ([summary]) -----------------------------------------------------------

DAILY = SummaryConfig(every="day", at=(9, 0))
WEEKLY = SummaryConfig(every="week", at=(9, 0), weekday=0)     # Mondays
TUESDAY_9 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)            # 2026-12-01 is a Tuesday


@pytest.mark.parametrize("summary, now, last, slot", [
    (DAILY, TUESDAY_9, None, TUESDAY_9),
    (DAILY, TUESDAY_9 - timedelta(minutes=1), None, None),          # yesterday's is 24 h old
    (DAILY, TUESDAY_9 + timedelta(minutes=59), None, TUESDAY_9),    # late after a restart
    (DAILY, TUESDAY_9 + timedelta(minutes=61), None, None),         # too stale: skipped
    (DAILY, TUESDAY_9 + timedelta(minutes=5), TUESDAY_9, None),     # already queued
    (DAILY, TUESDAY_9 + timedelta(days=1), TUESDAY_9, TUESDAY_9 + timedelta(days=1)),
    (WEEKLY, TUESDAY_9, None, None),                                # Monday's was yesterday
    (WEEKLY, TUESDAY_9 + timedelta(days=6), None, TUESDAY_9 + timedelta(days=6)),
    (SummaryConfig(), TUESDAY_9, None, None),                       # off
])
def test_when_the_scheduled_summary_is_due(summary, now, last, slot):
    assert due_slot(now, summary, last) == slot


def test_the_summary_key_is_checked_in_words():
    with pytest.raises(ConfigError, match="summary.at must be a time of day as HH:MM"):
        lookup_config(summary={"every": "day", "at": "9am"})
    with pytest.raises(ConfigError, match="summary.every must be one of 'day', 'week', 'off'"):
        lookup_config(summary={"every": "hourly"})
    config = lookup_config(summary={"every": "week", "weekday": "friday", "at": "17:30",
                                    "channel": "C0REPORTS"})
    assert config.summary == SummaryConfig("week", (17, 30), 4, "C0REPORTS")


def test_the_daily_summary_is_posted_once_to_its_channel(logs, db, make_config, slack, clock):
    # The simulator stamps events with the real time: the slot is the next full hour.
    slot = (clock.now + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    config = make_config(servers=("EX01",), summary={"every": "day", "at": f"{slot:%H:%M}"})
    logs["EX01"].append(FE, 1018, ("CONTOSO\\scan-1", "Client Frontend EX01"))
    sweep(db, config, clock)
    clock.now = slot + timedelta(seconds=20)
    housekeeping(db, config, clock=clock)
    housekeeping(db, config, clock=clock)          # the next minute's run: nothing more
    sweep(db, config, clock)
    [summary] = [m for m in slack.messages(CHANNEL) if m["text"].startswith("Summary")]
    assert summary["text"] == ("Summary: 1 new account(s), 1 open incident(s), 1 event(s) in "
                               "the last 1 day")
    assert "servers not watched: none, every server polls" in "\n".join(
        mrkdwn_texts(summary["blocks"]))


def test_a_summary_that_cannot_be_posted_holds_back_no_other_notice(db, make_config, slack,
                                                                   clock):
    config = make_config(servers=("EX01",), summary={"every": "day", "channel": "C0GONE"})
    with store.write_transaction(db):
        store.enqueue(db, None, "summary", clock(), detail={
            "since": store.iso(clock() - timedelta(days=1)), "until": store.iso(clock()),
            "channel": "C0GONE"})
        store.enqueue(db, None, "bot_late", clock(), detail={"jobs": ["poll EX01"],
                                                             "late_seconds": 300})
    _, delivery = sweep(db, config, clock)
    assert delivery.failed == 1 and "channel_not_found" in delivery.errors[0]
    [late] = slack.messages(CHANNEL)
    assert late["text"].startswith(":warning: *SubmitWatch could not poll on time*")


def test_check_verifies_the_summary_channel(make_config, slack):
    from bot.ops.check import run_check
    config = make_config(servers=("EX01",), summary={"every": "week", "channel": "C0EX02"})
    slack.set_joined("C0EX02", False)
    lines: list[str] = []
    run_check(config, lines.append)
    assert any(line.startswith("FAILED   channel C0EX02") for line in lines)


@pytest.mark.parametrize("since_minutes, until_minutes", [
    (0, 600), (7, 593), (30, 50), (60, 120), (59, 61), (0, 0), (125, 600)])
def test_the_counts_from_whole_hours_and_part_hours_equal_counting_the_events(
        db, since_minutes, until_minutes):
    """The hourly counts (m015) plus the part-hours at the window's ends: the same figures
    as counting every event of the window, whatever the window's edges."""
    config = lookup_config()
    feed = Feed(db, config)
    start = NOW - timedelta(hours=10)
    for n, account in enumerate((SCANNER, PRINTER, OLD)):
        feed.burst(account, start + timedelta(minutes=3 * n), 200, connector=RELAY if n else None,
                   server="EX02" if n == 2 else "EX01")   # an event a minute for 200 minutes
    since, until = (start + timedelta(minutes=since_minutes),
                    start + timedelta(minutes=until_minutes))
    figures = queries.summary(db, since=since, until=until)
    window = [store.iso(since), store.iso(until)]
    assert figures.events == db.execute("SELECT count(*) FROM events WHERE time >= ? AND "
                                        "time < ?", window).fetchone()[0]
    assert figures.top_servers == [tuple(r) for r in db.execute(
        "SELECT origin, count(*) AS n FROM events WHERE time >= ? AND time < ? GROUP BY origin "
        "ORDER BY n DESC, origin", window)]
    assert figures.top_connectors == [tuple(r) for r in db.execute(
        "SELECT connector, count(*) AS n FROM events WHERE time >= ? AND time < ? AND connector "
        "IS NOT NULL GROUP BY connector ORDER BY n DESC, connector", window)]


def test_retention_deletes_the_hourly_counts_before_its_cutoff(db):
    feed = Feed(db, lookup_config())
    feed.burst(SCANNER, NOW - timedelta(days=200), 3)
    feed.burst(PRINTER, NOW - timedelta(days=1), 2)
    hours = "SELECT sum(n) FROM event_hours"
    assert db.execute(hours).fetchone()[0] == 5
    assert store.prune(db, NOW - timedelta(days=180), pause=0)["event_hours"] == 1
    assert db.execute(hours).fetchone()[0] == 2

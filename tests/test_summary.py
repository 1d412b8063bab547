"""`/submitwatch summary`: the period's figures on a database filled by the pipeline's own
functions, at a fixed `now`."""
from __future__ import annotations

from datetime import timedelta

from bot.chatops import Actor, acknowledge
from bot.poller import resolve_quiet_incidents
from store import db as store
from store import queries
from tests.blocks import mrkdwn_texts
from tests.helpers import NOW, RELAY, SCANNER, Feed, ask, lookup_config

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

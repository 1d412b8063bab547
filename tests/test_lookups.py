"""The read-only subcommands (history, show, fix, status, servers, snoozes) through
handlers.commands.answer: real SQLite files filled by the pipeline's own functions, exact
content, hostile text, and Block Kit's limits."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bot.engine.poller import resolve_quiet_incidents
from bot.slack.blocks import BUDGET, size, slack_date
from handlers.commands import answer
from handlers.common import Reply, Request
from sim.slack_blocks import validate_blocks
from store import chat
from store import db as store
from store.db import write_transaction
from tests import blocks
from tests.blocks import mrkdwn_texts, sections
from tests.helpers import (
    ANCIENT,
    COPIER,
    FRONTEND,
    NOW,
    OLD,
    PRINTER,
    RELAY,
    SCANNER,
    Feed,
    assert_no_markup,
    at,
    lookup_config,
    many_incidents,
)
from tests.pwsh_parse import parse_pipeline


@pytest.fixture
def config():
    return lookup_config()


@pytest.fixture
def world(db, config):
    """A week with a burst, as the poller would have stored it, then the quiet sweep at NOW.

    UTC day:   03-01 03-02 03-03 03-04 03-05 03-06 03-07 03-08
    events:      1     0     2     0    14     7     0     1    (after --since 7d = 03-01 15:00)
    """
    feed = Feed(db, config)
    feed.burst(ANCIENT, at(1, 1) - timedelta(days=10), 1)     # long before the window
    feed.burst(OLD, at(1, 10), 1)                             # before the window...
    feed.burst("contoso\\OLD", at(1, 16), 1)                  # ...and in it: the same account
    feed.burst(COPIER, at(3, 9), 2, server="EX02")
    feed.burst(SCANNER, at(5, 9), 14, connector=RELAY)
    feed.burst("contoso\\SVC-Scanner", at(6, 8), 7, server="EX02")
    resolve_quiet_incidents(db, config, lambda: NOW - timedelta(hours=1))
    feed.burst(PRINTER, at(8, 12), 1, connector=FRONTEND)
    ids = {r["account"]: r["id"] for r in db.query("SELECT id, account FROM incidents")}
    return feed, ids


def ask(db, config, text, user="U0ALICE", now=NOW) -> Reply:
    return answer(Request(db=db, config=config, now=now, user_id=user, channel_id="C0ALERTS"),
                  text)


# --- what every answer must be ------------------------------------------------------------------


def contexts(reply):
    return [e["text"] for b in reply.blocks if b["type"] == "context" for e in b["elements"]]


def preformatted(reply):
    return blocks.preformatted(reply.blocks)


def assert_inert(reply):
    """No markup from untrusted text, and within Block Kit's limits for a message."""
    assert_no_markup(mrkdwn_texts(reply.blocks) + [reply.text])
    if reply.blocks is not None:
        assert len(reply.blocks) <= 50
        assert validate_blocks(reply.blocks) == []


# --- history ------------------------------------------------------------------------------------

def test_history_shows_the_burst_the_totals_and_incidents_newest_first(db, config, world):
    _, ids = world
    reply = ask(db, config, "history")
    summary, listing = sections(reply)
    assert summary == (
        "*History* of all accounts, the last 7 days\n"
        "`▂▁▂▁█▅▁▂` 2026-03-01 → 2026-03-08 (events per UTC day, peak 14 on 2026-03-05)\n"
        "*4* incidents (*1* open) · *25* events in the window")
    assert listing.split("\n") == [
        f"`#{ids[PRINTER]}` `CONTOSO\\printer` · open · 1 event · EX01 · "
        f"last {slack_date(at(8, 12))}",
        f"`#{ids[SCANNER]}` `CONTOSO\\svc-scanner` · resolved · 21 events · EX01, EX02 · "
        f"last {slack_date(at(6, 8, 6))}",
        f"`#{ids[COPIER]}` `CONTOSO\\copier` · resolved · 2 events · EX02 · "
        f"last {slack_date(at(3, 9, 1))}",
        f"`#{ids[OLD]}` `CONTOSO\\old` · resolved · 2 events · EX01 · "
        f"last {slack_date(at(1, 16))}",
    ]
    assert contexts(reply) == ["Showing all 4, newest first. `/submitwatch show #N` tells one's "
                               "story."]
    assert reply.text.startswith("History of all accounts, the last 7 days: 4 incidents (1 "
                                 "open), 25 events. ▂▁▂▁█▅▁▂")
    assert reply.share is False
    assert_inert(reply)


def test_history_of_one_account_matches_it_case_insensitively(db, config, world):
    reply = ask(db, config, "history contoso\\SVC-SCANNER")
    summary = sections(reply)[0]
    assert summary.startswith("*History* of account `contoso\\SVC-SCANNER`, the last 7 days\n"
                              "`▁▁▁▁█▅▁▁` ")
    assert summary.endswith("*1* incident (*0* open) · *21* events in the window")
    assert [line.split(" · ")[0] for line in sections(reply)[1].split("\n")] == [
        f"`#{world[1][SCANNER]}` `CONTOSO\\svc-scanner`"]
    assert_inert(reply)


def test_history_of_a_server_by_its_name_in_any_case(db, config, world):
    reply = ask(db, config, "history ex02")
    summary, listing = sections(reply)
    assert summary.startswith("*History* of server `EX02`, the last 7 days\n`▁▁▃▁▁█▁▁` ")
    assert summary.endswith("*2* incidents (*0* open) · *9* events in the window")
    assert "`CONTOSO\\svc-scanner`" in listing and "`CONTOSO\\copier`" in listing
    assert "printer" not in listing


def test_history_of_an_account_with_nothing_in_the_window_points_to_its_last_incident(
        db, config, world):
    reply = ask(db, config, "history CONTOSO\\ancient")
    assert sections(reply)[1] == (
        f"No incident for account `CONTOSO\\ancient` in the last 7 days. Its newest is "
        f"`#{world[1][ANCIENT]}`, last event {slack_date(at(1, 1) - timedelta(days=10))}: "
        "widen the window with `--since`.")
    assert sections(ask(db, config, "history nobody"))[1] == (
        "No incident for account `nobody` in the last 7 days.")


def test_history_since_cuts_the_window_to_the_minute(db, config, world):
    reply = ask(db, config, "history --since 2d")
    summary, listing = sections(reply)
    assert summary == (
        "*History* of all accounts, the last 2 days\n"
        "`▁▁█` 2026-03-06 → 2026-03-08 (events per UTC day, peak 1 on 2026-03-08)\n"
        "*1* incident (*1* open) · *1* event in the window")
    assert listing.startswith(f"`#{world[1][PRINTER]}` `CONTOSO\\printer`")


@pytest.mark.parametrize("text, error", [
    ("history --since 5x", "`5x` is not a duration; write it like `30m`, `4h` or `7d`"),
    ("history --since 0m", "`0m` is not a duration"),
    ("history --since 400d", "`--since` goes back at most 366 days"),
    ("history --limit 0", "`0` is not a whole number above 0"),
    ("history --limit -3", "`-3` is not a whole number above 0"),
    ("history --limit 101", "`--limit` is at most 100"),
    ("history --since", "`--since` needs a value"),
    ("history --frobnicate", "unknown option `--frobnicate`; options here: `--limit`, `--since`"),
    ("history a b --limit 5", "give one account or server"),
])
def test_history_refuses_bad_options_with_the_usage(db, config, world, text, error):
    reply = ask(db, config, text)
    assert error in reply.text
    assert reply.text.endswith(
        "Usage: `/submitwatch history [account|server] [--since 7d] [--limit N]`")
    assert reply.blocks is None


def test_history_refuses_overlong_names(db, config):
    reply = ask(db, config, "history " + "x" * 5000)   # Slack allows it; words_of keeps 1000
    assert reply.text.startswith("that account or server is 992 characters long; names are at "
                                 "most 256")


def test_history_with_thousands_of_incidents_is_cut_and_says_so(db, config):
    many_incidents(db, config, 4312)
    reply = ask(db, config, "history")
    assert contexts(reply) == ["Showing 20 of 4,312, newest first; use `--limit` (up to 100) "
                               "or `--since` to see others."]
    listed = [line for text in sections(reply)[1:] for line in text.split("\n")]
    assert len(listed) == 20 and listed[0].startswith("`#4312` ")
    assert sections(reply)[0].endswith("*4,312* incidents (*4,312* open) · *4,312* events in "
                                       "the window")
    assert reply.text.endswith("Showing 20 of 4,312.")
    assert_inert(reply)

    most = ask(db, config, "history --limit 100")
    listed = [line for text in sections(most)[1:] for line in text.split("\n")]
    # As many of the 100 as one message holds (these names escape to five times their length).
    assert 10 < len(listed) < 100 and listed[-1].startswith(f"`#{4312 - len(listed) + 1}` ")
    assert size(most.blocks) <= BUDGET
    assert contexts(most) == [f"Showing {len(listed)} of 4,312, newest first; narrow it with "
                              "`--since`, an account or a server."]
    assert_inert(most)
    assert all(len(t) <= 3000 for t in mrkdwn_texts(most.blocks))


def test_share_posts_the_answer_in_the_channel(db, config, world):
    assert ask(db, config, "history --share").share is True
    assert ask(db, config, "status --share").share is True
    assert ask(db, config, "show --share #1").share is True
    assert ask(db, config, "snoozes").share is False


# --- show ---------------------------------------------------------------------------------------

@pytest.fixture
def story(db, world):
    """Chat activity on the scanner's incident, written with store.chat as the actions do."""
    _, ids = world
    number = ids[SCANNER]
    before = chat.incident_snapshot(store.get_incident(db, number))
    chat.set_ack(db, number, "U0ALICE", "vendor <@U0BOSS> & `co`", at(7, 10))
    chat.audit(db, now=at(7, 10), user_id="U0ALICE", action="ack", target=f"#{number}",
               via="button", outcome="done", incident_id=number, channel="C0ALERTS",
               before=before, after=chat.incident_snapshot(store.get_incident(db, number)),
               detail="vendor <@U0BOSS> & `co`")
    mine = chat.add_snooze(db, kind="incident", target=str(number), account=SCANNER,
                           until=at(7, 15), reason="waiting for *vendor*", user_id="U0BOB",
                           now=at(7, 11))
    chat.end_snooze(db, mine.id, at(7, 12), "U0BOB")
    chat.add_snooze(db, kind="account", target=SCANNER.casefold(), account=SCANNER,
                    until=at(7, 14), reason="patching", user_id="U0CAROL", now=at(7, 13))
    # An account snooze that ended before this incident began is not part of its story.
    chat.add_snooze(db, kind="account", target=SCANNER.casefold(), account=SCANNER,
                    until=at(2, 1), reason="long ago", user_id="U0CAROL", now=at(1, 1))
    chat.audit(db, now=at(7, 14, 30), user_id="U0MALLORY", action="ack", target=f"#{number}",
               via="slash", outcome="refused", incident_id=number, channel="C0RANDOM")
    return number


def test_show_tells_the_whole_story(db, config, story):
    reply = ask(db, config, f"show #{story}")
    assert reply.blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "text": f"Incident #{story}", "emoji": True}}
    head, devices, causes, groups, timeline, acted = sections(reply)
    assert devices == "Devices: not looked up yet"
    assert head == (f"`CONTOSO\\svc-scanner` · *resolved* {slack_date(NOW - timedelta(hours=1))}"
                    f" · acknowledged by <@U0ALICE> {slack_date(at(7, 10))}\n"
                    "Note: “vendor &lt;@U0BOSS&gt; &amp; ˋcoˋ”")
    assert [f["text"] for f in reply.blocks[2]["fields"]] == [
        "*Events*\n21 (IDs 1018, 1020)", "*Servers*\nEX01, EX02",
        f"*First seen*\n{slack_date(at(5, 9))}", f"*Last seen*\n{slack_date(at(6, 8, 6))}"]
    # Each cause with its first fix: the 1018s on EX01's relay (not one of Exchange's default
    # connectors, no ExchangeUsers): stop signing in, not a grant; the 1020s on EX02 (version not
    # configured: 2013 and later's rule): a built-in identity, an account of its own.
    assert causes.split("\n") == [
        "Signed in on a custom connector without ExchangeUsers (event 1018) on EX01: Stop "
        "signing in on the device.",
        "A built-in account, refused whatever its rights on EX02: Give the device or "
        "application an account of its own."]
    assert groups.split("\n") == [
        "*Events per server and connector*",
        f"• *EX01* · `EX01\\Relay Scanners` · 14 events (1018) · {slack_date(at(5, 9))} → "
        f"{slack_date(at(5, 9, 13))}",
        f"• *EX02* · connector not named by the event · 7 events (1020) · "
        f"{slack_date(at(6, 8))} → {slack_date(at(6, 8, 6))}",
    ]
    assert timeline.split("\n") == [
        "*Timeline*",
        f"• {slack_date(at(5, 9))} first event",
        f"• {slack_date(at(5, 9, 14))} opened",
        f"• {slack_date(at(6, 8, 6))} last event",
        f"• {slack_date(at(7, 10))} acknowledged by <@U0ALICE>: “vendor &lt;@U0BOSS&gt; &amp; "
        "ˋcoˋ”",
        f"• {slack_date(at(7, 11))} incident snoozed until {slack_date(at(7, 15))} by <@U0BOB>: "
        "“waiting for *vendor*”",
        f"• {slack_date(at(7, 12))} snooze ended by <@U0BOB>",
        f"• {slack_date(at(7, 13))} account snoozed until {slack_date(at(7, 14))} by <@U0CAROL>:"
        " “patching”",
        f"• {slack_date(at(7, 14))} snooze expired",
        f"• {slack_date(NOW - timedelta(hours=1))} resolved",
    ]
    assert acted.split("\n") == [
        "*Who acted*",
        f"• {slack_date(at(7, 10))} <@U0ALICE> `ack` via button in <#C0ALERTS>: done "
        "(ack_note: – → vendor &lt;@U0BOSS&gt; &amp; ˋcoˋ; acked_by: – → <@U0ALICE>) "
        "“vendor &lt;@U0BOSS&gt; &amp; ˋcoˋ”",
        f"• {slack_date(at(7, 14, 30))} <@U0MALLORY> `ack` via slash in <#C0RANDOM>: refused",
    ]
    assert reply.text == f"Incident #{story}: CONTOSO\\svc-scanner, resolved, 21 events"
    assert_inert(reply)


def test_show_an_open_snoozed_incident_says_until_when(db, config, world):
    number = world[1][PRINTER]
    chat.add_snooze(db, kind="account", target="contoso\\printer", account="CONTOSO\\printer",
                    until=NOW + timedelta(hours=4), reason="toner", user_id="U0BOB", now=NOW)
    head = sections(ask(db, config, f"show {number}"))[0]
    assert head == (f"`CONTOSO\\printer` · *open* · not acknowledged\nSnoozed until "
                    f"{slack_date(NOW + timedelta(hours=4))} (4h left): events are counted, "
                    "nobody is alerted.")


def test_show_mentions_only_real_user_ids(db, config, world):
    number = world[1][PRINTER]
    chat.set_ack(db, number, "<!channel>", None, NOW)
    reply = ask(db, config, f"show #{number}")
    assert "acknowledged by &lt;!channel&gt; " in sections(reply)[0]
    assert_inert(reply)


@pytest.mark.parametrize("text, error", [
    ("show #999", "there is no incident #999; `/submitwatch history` lists them"),
    ("show 999", "there is no incident #999"),
    ("show abc", "`abc` is not an incident number; write it like `#42`"),
    ("show &lt;!channel&gt;", "`&lt;!channel&gt;` is not an incident number"),
    ("show #1234567890123", "`#1234567890123` is not an incident number"),
    ("show", "give one incident number, like `#42`"),
    ("show #1 #2", "give one incident number, like `#42`"),
])
def test_show_refuses_what_is_not_an_incident(db, config, world, text, error):
    reply = ask(db, config, text)
    assert reply.text.startswith(error)
    assert reply.text.endswith("Usage: `/submitwatch show &lt;#incident&gt;`")
    assert "<!channel>" not in reply.text



def test_show_with_a_flood_of_everything_stays_within_block_kit_limits(db, config):
    feed = Feed(db, config)
    nasty = "<!channel> & `x` " * 20
    feed.ingest([feed.event(SCANNER, NOW - timedelta(minutes=n), connector=f"EX01\\{nasty}{n}")
                 for n in range(40)], NOW)
    [incident] = store.open_incidents(db).values()
    for _ in range(60):
        chat.audit(db, now=NOW, user_id="U0ALICE", action="ack", target=f"#{incident.id}",
                   via="slash", outcome="done", incident_id=incident.id, channel="C0ALERTS",
                   before={"ack_note": None}, after={"ack_note": nasty}, detail=nasty * 2)
        chat.add_snooze(db, kind="incident", target=str(incident.id), account=SCANNER,
                        until=NOW + timedelta(hours=1), reason=nasty, user_id="U0BOB", now=NOW)
    reply = ask(db, config, f"show #{incident.id}")
    assert "15 smaller group(s) not shown." in contexts(reply)
    assert any(text.startswith("*Timeline* (the last 30 of 33)") for text in sections(reply))
    assert_inert(reply)

# --- fix ----------------------------------------------------------------------------------------

#: Cmdlets that change something; any other command in a reply only reads.
CHANGING = {"Add-ADPermission", "Remove-ADPermission", "Set-ReceiveConnector", "Restart-Service"}
LISTING = "# read-only: every Submit, all-rights and Deny entry"
VERIFY = "# read-only: every Submit, all-rights and Deny entry on the connector, whoever it names"
WHATIF = "# try it first: changes nothing"
GRANT = "# grant Submit"
UNDO = ("# undo, only if the grant added the entry (Add-ADPermission warns that the entry is "
        "already present when it did not: then leave it)")
SID_CHECK = "# read-only: the account's SID (-500 = built-in Administrator, -501 = Guest)"


def steps(block: str):
    """A command block as [(comment, parsed command)]: every command stands under its comment."""
    rows = block.split("\n")
    assert len(rows) % 2 == 0 and all(row.startswith("# ") for row in rows[::2]), block
    return [(comment, parse_pipeline(line))
            for comment, line in zip(rows[::2], rows[1::2], strict=True)]


def command(lines: str, after_comment: str):
    """The command that follows a `# comment` line in a preformatted block, parsed."""
    rows = lines.split("\n")
    return parse_pipeline(rows[rows.index(after_comment) + 1])


def commands_after(reply, comment: str):
    """Every command under that `# comment`, in all of the reply's command blocks, parsed."""
    return [pipeline for block in preformatted(reply) for c, pipeline in steps(block)
            if c == comment]


def read_only(block: str) -> bool:
    return not any(set(pipeline.names) & CHANGING for _, pipeline in steps(block))


def literal(arg):
    assert arg is not None and arg.is_verbatim_literal, arg
    return arg.value


def assert_submit_grant(block: str, connector: str, account: str):
    """Dry run, grant and undo of ms-Exch-SMTP-Submit for the account on the connector, each
    argument one literal equal to the input."""
    found = steps(block)
    assert [comment for comment, _ in found] == [WHATIF, GRANT, UNDO]
    for comment, pipeline in found:
        assert pipeline.names == ("Get-ReceiveConnector",
                                  "Remove-ADPermission" if comment == UNDO else "Add-ADPermission")
        assert literal(pipeline.commands[0].arg("-Identity")) == connector
        assert literal(pipeline.commands[1].arg("-User")) == account
        assert literal(pipeline.commands[1].arg("-ExtendedRights")) == "ms-Exch-SMTP-Submit"
    whatif, grant, undo = (pipeline.commands[1].param_names for _, pipeline in found)
    assert whatif[-1] == "-WhatIf" and "-WhatIf" not in grant and undo[-1] == "-Confirm"


def assert_listing(pipeline, connector: str):
    """The read-only listing of every entry that can decide Submit on the connector, whoever it
    names (`Get-ADPermission -User` would hide grants and Deny entries through groups)."""
    assert pipeline.names == ("Get-ReceiveConnector", "Get-ADPermission", "Where-Object",
                              "Format-Table")
    assert literal(pipeline.commands[0].arg("-Identity")) == connector
    assert pipeline.commands[1].params == () and pipeline.commands[1].positional == ()


def test_fix_with_a_connector_gives_the_exact_commands_for_it(db, config):
    # Client Frontend admits every signed-in account (ExchangeUsers), so something on it decides
    # against this one: finding that entry comes first (read-only), a grant only after it.
    reply = ask(db, config, "fix CONTOSO\\svc-scanner EX01\\Client Frontend EX01 1018")  # unquoted
    understood, cause, where, find, grant_words, verify = sections(reply)
    assert understood == ("Understood: account CONTOSO\\svc-scanner, connector "
                          "EX01\\Client Frontend EX01, event 1018 (you said).")
    assert cause.startswith(
        "Refused on a connector meant for signed-in accounts (event 1018) on EX01\n"
        "The account CONTOSO\\svc-scanner was refused on EX01\\Client Frontend EX01, a connector "
        "meant for signed-in accounts (ExchangeUsers gives every authenticated account Submit "
        "there).")
    assert cause.endswith("\nRests on: Microsoft documentation, Exchange code, inference.")
    assert where == "Connector EX01\\Client Frontend EX01 on EX01 (the connector you gave)"
    assert find.startswith("1. Find the entry that decides: In the listing, an entry with Deny "
                           "True whose User is the account, one of its groups")
    assert grant_words.startswith("2. Grant Submit to this one account, if the listing shows no "
                                  "Deny that applies: ")
    assert verify.startswith("Verify: Get-ADPermission -User shows only entries that name the "
                             "account itself")
    listing, grant, check = preformatted(reply)
    [(comment, pipeline)] = steps(listing)
    assert comment == LISTING
    assert_listing(pipeline, FRONTEND)
    assert_submit_grant(grant, FRONTEND, SCANNER)
    [(comment, pipeline)] = steps(check)
    assert comment == VERIFY
    assert_listing(pipeline, FRONTEND)
    quoted = ask(db, config, "fix 'CONTOSO\\svc-scanner' \"EX01\\Client Frontend EX01\" 1018")
    assert quoted.blocks == reply.blocks
    assert_inert(reply)


def test_fix_on_the_internet_facing_connector_gives_port_587_first(db, config):
    # Default Frontend takes mail from the internet and has no ExchangeUsers: a device signed in
    # on port 25. Port 587 first, anonymous second, and the grant last, said to widen it.
    default = "EX01\\Default Frontend EX01"
    reply = ask(db, config, f"fix CONTOSO\\svc-scanner '{default}' 1018")
    understood, cause, where, port, anonymous, widen, verify = sections(reply)
    assert understood == (f"Understood: account CONTOSO\\svc-scanner, connector {default}, "
                          "event 1018 (you said).")
    assert cause.startswith(
        "Signed in on the internet-facing connector (event 1018) on EX01\n"
        f"The account CONTOSO\\svc-scanner signed in on {default}, the connector that takes mail "
        "from the internet")
    assert where == f"Connector {default} on EX01 (the connector you gave)"
    assert port.startswith("1. Submit on port 587 with STARTTLS, same account: Set the device to "
                           "port 587 (connector EX01\\Client Frontend EX01) with STARTTLS and "
                           "keep its credentials")
    assert anonymous.startswith("2. Send without signing in on port 25 (internal recipients "
                                "only): ")
    assert widen.startswith("3. Grant Submit to this one account on the internet-facing "
                            "connector (widens the internet-facing connector): Possible, but ")
    assert verify.startswith("Verify: ")
    client, grant, check = preformatted(reply)
    [(comment, pipeline)] = steps(client)       # port 587: only a look at the client connector
    assert comment == "# read-only: the client submission connector"
    assert pipeline.names == ("Get-ReceiveConnector", "Format-List")
    assert literal(pipeline.commands[0].arg("-Identity")) == FRONTEND
    assert_submit_grant(grant, default, SCANNER)   # the grant: on the connector given
    [(comment, pipeline)] = steps(check)
    assert comment == VERIFY
    assert_listing(pipeline, default)
    assert_inert(reply)


def test_fix_splits_words_like_a_shell_and_says_what_it_understood(db, config):
    reply = ask(db, config, "fix \"CONTOSO\\svc scan\" 'EX01\\Client Frontend EX01' 1018")
    assert sections(reply)[0] == ("Understood: account CONTOSO\\svc scan, connector "
                                  "EX01\\Client Frontend EX01, event 1018 (you said).")
    [grant] = commands_after(reply, GRANT)
    assert literal(grant.commands[1].arg("-User")) == "CONTOSO\\svc scan"   # no quotes in it
    assert literal(grant.commands[0].arg("-Identity")) == FRONTEND
    curly = ask(db, config, "fix “CONTOSO\\svc scan” ‘EX01\\Client Frontend EX01’ 1018")
    assert curly.blocks == reply.blocks
    # A quote inside a word is a character, as in O'Brien; only an unclosed opening one fails.
    assert "O'Brien" in sections(ask(db, config, "fix CONTOSO\\O'Brien 1018"))[0]
    for text in ("fix \"CONTOSO\\svc scan", "fix CONTOSO\\a 'EX01\\Client Frontend"):
        unbalanced = ask(db, config, text)
        assert unbalanced.blocks is None
        assert unbalanced.text.startswith("I could not read that: the quote ")
        assert "is never closed" in unbalanced.text
    unquoted = ask(db, config, "fix CONTOSO\\svc scan EX01\\Client Frontend EX01")
    assert "put an account or connector with spaces in quotes" in unquoted.text


def test_fix_reads_the_cause_from_the_stored_events(db, config, world):
    # EX01's events of this account are 1018 on a relay connector: the grant there.
    reply = ask(db, config, f"fix {SCANNER} '{RELAY}'")
    assert sections(reply)[0].endswith("event 1018 (from its stored events).")
    assert "Add-ADPermission" in "\n".join(preformatted(reply))
    # Its EX02 events are 1020 (EX02's version is not configured: 2013 or later's code).
    reply = ask(db, config, f"fix {SCANNER} 'EX02\\Client Frontend EX02'")
    assert sections(reply)[0].endswith("event 1020 (from its stored events).")
    assert sections(reply)[1].startswith("A built-in account, refused whatever its rights")
    [sid] = preformatted(reply)
    assert "Add-ADPermission" not in sid
    assert literal(command(sid, "# read-only: the account's SID (-500 = built-in Administrator, "
                                "-501 = Guest)").commands[0].arg("-ArgumentList")) == SCANNER
    assert_inert(reply)


def test_fix_on_a_2010_server_for_1020_gives_the_documented_grant_and_the_check(db, config):
    reply = ask(db, config, "fix CONTOSO\\scan 'EX03\\Client EX03' 1020")
    understood, cause, where, own, grant_words, verify = sections(reply)
    assert cause.startswith(
        "Not authorized to use the server (event 1020, Exchange 2007/2010) on EX03\n"
        "Microsoft documents event 1020 on Exchange 2007 and 2010 as a missing "
        "ms-Exch-SMTP-Submit right on the Receive connector; their code is not public, and on "
        "2013 and later 1020 means a built-in identity")
    assert cause.endswith("\nRests on: Microsoft documentation, inference.")
    assert where == "Connector EX03\\Client EX03 on EX03 (the connector you gave)"
    # The check first (a SID ending in -500 or -501 is a built-in account: no grant helps it),
    # then Microsoft's documented grant on the connector given.
    assert own.startswith("1. If the SID ends in -500 or -501: give the device an account of "
                          "its own: ")
    assert grant_words.startswith("2. If not: Microsoft's documented fix for 2007/2010, grant "
                                  "Submit on the connector: ")
    assert verify.startswith("Verify: ")
    sid, grant, check = preformatted(reply)
    [(comment, pipeline)] = steps(sid)
    assert comment == SID_CHECK
    assert pipeline.names == ("New-Object", "ForEach-Object")
    assert literal(pipeline.commands[0].arg("-ArgumentList")) == "CONTOSO\\scan"
    assert_submit_grant(grant, "EX03\\Client EX03", "CONTOSO\\scan")
    [(comment, pipeline)] = steps(check)
    assert comment == VERIFY
    assert_listing(pipeline, "EX03\\Client EX03")
    assert_inert(reply)


def test_fix_without_a_known_cause_says_both(db, config):
    reply = ask(db, config, "fix CONTOSO\\never-seen")
    assert "No stored event of this account says whether it gets 1018 or 1020" in \
        sections(reply)[0]
    words = "\n".join(sections(reply))
    assert ("Event 1018: the fix depends on the Receive connector CONTOSO\\never-seen signed in "
            "on (the internet-facing one on port 25, a relay, or one meant for signed-in "
            "accounts).") in words
    # Each server's most likely candidate (EX01's Client Frontend, EX02's configured one, EX03's
    # Client on 2010) is meant for signed-in accounts: find the entry that decides, no grant.
    assert words.count("Refused on a connector meant for signed-in accounts (event 1018) on the "
                       "most likely one. What to do: Find the entry that decides: ") == 3
    assert "A built-in account, refused whatever its rights on EX01, EX02\n" in words
    assert "Not authorized to use the server (event 1020, Exchange 2007/2010) on EX03\n" in words
    # No event names a connector: nothing changes anything, and each 1020 cause has the check.
    assert preformatted(reply) and all(read_only(block) for block in preformatted(reply))
    assert [literal(check.commands[0].arg("-ArgumentList"))
            for check in commands_after(reply, SID_CHECK)] == ["CONTOSO\\never-seen"] * 2
    assert reply.text == "Fix for CONTOSO\\never-seen (event 1018 and 1020)"
    assert_inert(reply)


def test_fix_quotes_hostile_names_and_shows_them_literally(db, config):
    account = "CONTOSO\\O'Brien’s $(whoami) <!channel> & `x` *bold*"
    connector = "EX01\\Relay ‘Scan’ <@U0BOSS>"
    # As Slack sends it: &, < and > as entities.
    text = (f'fix "{account}" "{connector}" 1018'.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;"))
    reply = ask(db, config, text)
    # Not one of Exchange's default connectors: stop signing in first. Every command of every
    # fix, and the check, is on the connector given and for the account given.
    relay = "# try it first (only if it must send to other domains): changes nothing"
    relay_grant = "# grant Accept-Any-Recipient (only if it must send to other domains)"
    found = [step for block in preformatted(reply) for step in steps(block)]
    assert [comment for comment, _ in found] == [
        "# read-only: what the connector accepts",            # 1. stop signing in
        "# read-only: what the connector accepts",            # 2. add ExchangeUsers
        WHATIF, GRANT, UNDO, relay, relay_grant, UNDO,        # 3. grant Submit (and relay)
        VERIFY]
    for _comment, pipeline in found:
        assert pipeline.names[0] == "Get-ReceiveConnector"
        assert literal(pipeline.commands[0].arg("-Identity")) == connector
        if pipeline.names[1] in ("Add-ADPermission", "Remove-ADPermission"):
            assert literal(pipeline.commands[1].arg("-User")) == account
    assert [literal(pipeline.commands[1].arg("-ExtendedRights")) for comment, pipeline in found
            if comment in (GRANT, relay_grant)] == ["ms-Exch-SMTP-Submit",
                                                    "ms-Exch-SMTP-Accept-Any-Recipient"]
    assert sections(reply)[0] == (f"Understood: account {account}, connector {connector}, "
                                  "event 1018 (you said).")
    assert sections(reply)[1].startswith("Signed in on a custom connector without ExchangeUsers "
                                         "(event 1018) on EX01\n")
    assert sections(reply)[3].startswith("1. Stop signing in on the device: ")
    names = [e["text"] for e in blocks.rich_elements(reply.blocks) if e["type"] == "text"]
    assert account in names and connector in names   # literal text elements, never mrkdwn
    assert_inert(reply)


@pytest.mark.parametrize("text, error", [
    ("fix", "name the account, like `CONTOSO\\svc-scanner`"),
    ("fix CONTOSO\\a Relay", "write the connector as `SERVER\\Name`, like `EX01\\Client Frontend "
                             "EX01` (got `Relay`)"),
    ("fix CONTOSO\\a \\Relay", "write the connector as `SERVER\\Name`"),
    ("fix CONTOSO\\a EX01\\", "write the connector as `SERVER\\Name`"),
    ("fix CONTOSO\\a EX01\\Relay 1018 1020", "give one event kind, `1018` or `1020`, or none"),
    ("fix CONTOSO\\evil\u202etxt.exe",
     "No command can be built: account name contains a bidirectional text control (U+202E) at "
     "position 13; it can make the command look different from what it does, so SubmitWatch "
     "will not put it in a command"),
    ("fix CONTOSO\\ev\u200bil",
     "No command can be built: account name contains an invisible character, zero width space "
     "(U+200B) at position 11; it draws nothing"),
    ("fix " + "a" * 300, "that account is 300 characters long; names are at most 256"),
    ("fix a EX01\\" + "c" * 300, "that connector is 305 characters long; names are at most 256"),
])
def test_fix_refuses_in_words(db, config, text, error):
    reply = ask(db, config, text)
    assert reply.text.startswith(error)
    assert reply.text.endswith("Usage: `/submitwatch fix &lt;account&gt; [SERVER\\Connector] "
                               "[1018|1020]`")
    assert reply.blocks is None


def test_fix_gives_one_bad_connector_its_reason_and_keeps_the_others(db, config):
    reply = ask(db, config, "fix CONTOSO\\a EX01\\Relay\x1bX 1018")
    words = sections(reply)
    assert words[1].startswith("Signed in on a custom connector without ExchangeUsers (event "
                               "1018) on EX01\nThe account CONTOSO\\a signed in on "
                               "EX01\\Relay\\x1bX, ")
    assert words[2] == ("No command is shown: connector name contains an escape character "
                        "(U+001B) at position 11; Receive connector names never contain control "
                        "characters or line breaks, so SubmitWatch will not put it in a command")
    # The rest of the advice stays: every fix, in words, in its order.
    assert [w.split(": ")[0] for w in words if re.match(r"\d\. ", w)] == [
        "1. Stop signing in on the device",
        "2. Add ExchangeUsers to this connector, if signed-in submission is what it is for",
        "3. Grant Submit to this one account, and Accept-Any-Recipient if it must reach other "
        "domains"]
    assert preformatted(reply) == []
    assert_inert(reply)


def test_fix_without_a_connector_lists_the_candidates_on_every_server(db, config, world):
    _, ids = world
    reply = ask(db, config, "fix contoso\\SVC-SCANNER 1018")
    understood, intro, ex01, ex01_advice, ex02, ex02_advice, ex03, ex03_advice = sections(reply)
    assert understood == "Understood: account contoso\\SVC-SCANNER, event 1018 (you said)."
    assert intro.startswith("Event 1018: the fix depends on the Receive connector "
                            "contoso\\SVC-SCANNER signed in on ")           # the account as typed
    assert intro.endswith(f"Its newest incident is #{ids[SCANNER]} (resolved, last event "
                          "2026-03-06 08:06 UTC).")
    assert ex01.split("\n") == [
        "EX01 (Exchange host EX01)",
        "• most likely: EX01\\Relay Scanners: named by this account's 1018 events (14 events, "
        "last 2026-03-05 09:13 UTC)",
        "• or: EX01\\Client Frontend EX01: named by events of other accounts on this server",
    ]
    assert ex02.split("\n") == [
        "EX02 (Exchange host EX02)",
        "• most likely: EX02\\Client Frontend EX02: configured as this server's submission "
        "connector",
    ]
    assert ex03.split("\n") == [   # never polled, Exchange 2010: the legacy default, a guess
        "EX03 (Exchange host EX03)",
        "• most likely: EX03\\Client EX03: not named by any event: the usual client submission "
        "connector, a guess",
    ]
    # The most likely candidate's advice by its kind, never a grant first: EX01's relay is not
    # one of Exchange's defaults (stop signing in); Client Frontend EX02 and 2010's Client EX03
    # are meant for signed-in accounts (find the entry that decides).
    assert ex01_advice.startswith("Signed in on a custom connector without ExchangeUsers (event "
                                  "1018) on the most likely one. What to do: Stop signing in on "
                                  "the device: ")
    for advice in (ex02_advice, ex03_advice):
        assert advice.startswith("Refused on a connector meant for signed-in accounts (event "
                                 "1018) on the most likely one. What to do: Find the entry that "
                                 "decides: ")
    commands = preformatted(reply)
    assert len(commands) == 6
    for n, (connector, server, first) in enumerate((
            (RELAY, "EX01", "# read-only: what the connector accepts"),
            ("EX02\\Client Frontend EX02", "EX02", LISTING),
            ("EX03\\Client EX03", "EX03", LISTING))):
        listing, advice = commands[2 * n], commands[2 * n + 1]
        [(comment, pipeline)] = steps(listing)
        assert comment == f"# read-only: {server}'s Receive connectors"
        assert pipeline.names == ("Get-ReceiveConnector", "Format-Table")
        assert literal(pipeline.commands[0].arg("-Server")) == server
        [(comment, pipeline)] = steps(advice)
        assert comment == first and read_only(advice)
        assert literal(pipeline.commands[0].arg("-Identity")) == connector
    assert reply.text == "Fix for contoso\\SVC-SCANNER (event 1018)"
    assert_inert(reply)


def test_fix_for_an_incident_number_uses_its_account(db, config, world):
    by_number = ask(db, config, f"fix #{world[1][SCANNER]}")
    assert by_number.text == "Fix for CONTOSO\\svc-scanner (event 1018 and 1020)"
    assert by_number.blocks == ask(db, config, "fix CONTOSO\\svc-scanner").blocks
    assert ask(db, config, "fix #999").text.startswith("there is no incident #999")


def test_fix_skips_a_connector_that_cannot_be_quoted_and_says_why(db, config, world):
    feed, _ = world
    feed.burst("CONTOSO\\victim", NOW - timedelta(minutes=30), 1, connector="EX01\\Bad\x1bName")
    reply = ask(db, config, "fix CONTOSO\\victim")
    assert sections(reply)[0].endswith("event 1018 (from its stored events).")
    ex01 = sections(reply)[2]
    assert ex01.split("\n") == [   # never "most likely", though this account's events named it
        "EX01 (Exchange host EX01)",
        "• most likely: EX01\\Client Frontend EX01: named by events of other accounts on this "
        "server",
        "• or: EX01\\Relay Scanners: named by events of other accounts on this server",
        "• no command for one of them: connector name contains an escape character (U+001B) at "
        "position 9; Receive connector names never contain control characters or line breaks, "
        "so SubmitWatch will not put it in a command",
    ]


def test_fix_on_many_servers_is_cut_and_says_so(db):
    servers = [{"name": f"EX{n:02d}", "url": f"https://127.0.0.1:{5000 + n}/wsman",
                "username": "u", "password_env": "PW"} for n in range(25)]
    config = lookup_config(servers=servers)
    feed = Feed(db, config)
    feed.ingest([feed.event(f"CONTOSO\\user{n}", NOW, server="EX00",
                            connector=f"EX00\\{n:02d} Relay {'&' * 90}") for n in range(12)], NOW)
    reply = ask(db, config, "fix CONTOSO\\svc-scanner 1018")
    assert_inert(reply)
    words = sections(reply)
    ex00 = words[2].split("\n")
    # The first ten connectors seen there (by name) and the guess: five shown, six not.
    assert [line.split(": ")[1][5:7] for line in ex00[1:6]] == ["00", "01", "02", "03", "04"]
    assert ex00[6:] == ["• and 6 more candidate(s) not shown"]
    # Whole servers, in order, each with its listing and its advice's first commands; the ones
    # left out are counted.
    shown = [w.split(" ")[0] for w in words if re.match(r"EX\d\d \(Exchange host EX\d\d\)", w)]
    assert shown == [f"EX{n:02d}" for n in range(len(shown))] and 0 < len(shown) < 25
    assert contexts(reply) == [f"{25 - len(shown)} more server(s) not shown."]
    assert len(preformatted(reply)) == 2 * len(shown)
    assert len([w for w in words if "(event 1018) on the most likely one." in w]) == len(shown)

# --- status, servers, snoozes -------------------------------------------------------------------

@pytest.fixture
def polled(db):
    """EX01 healthy, EX02 failing after a good poll, EX03 never polled, OLD01 since removed."""
    store.save_poll_success(db, store.ServerState("EX01"), generation=0, cursor=1234,
                            oldest_record=1, newest_record=1300, stored=5,
                            now=NOW - timedelta(seconds=42))
    store.save_poll_success(db, store.ServerState("EX02"), generation=1, cursor=50_010,
                            oldest_record=1, newest_record=50_010, stored=5,
                            now=NOW - timedelta(hours=2, minutes=3))
    for minutes in (30, 20, 10):
        store.save_poll_failure(db, "EX02", "connection refused by <!here> & `x`",
                                NOW - timedelta(minutes=minutes))
    store.save_poll_success(db, store.ServerState("OLD01"), generation=0, cursor=7,
                            oldest_record=1, newest_record=7, stored=1,
                            now=NOW - timedelta(days=2))


def test_status_shows_every_configured_server_with_lag_cursor_and_last_error(
        db, config, world, polled):
    reply = ask(db, config, "status")
    servers, totals = sections(reply)
    assert servers.split("\n") == [
        "*Servers* (each polled every 1m)",
        "• *EX01*: :white_check_mark: ok · last good poll 42s ago · cursor 1234",
        "• *EX02*: :x: failing · last good poll 2h 3m ago · cursor 50010 · log cleared 1 time · "
        f"*3 failures in a row*, last error {slack_date(NOW - timedelta(minutes=10))}: "
        "connection refused by &lt;!here&gt; &amp; ˋxˋ",
        "• *EX03*: :white_circle: not polled yet · no poll has run yet",
        "• *OLD01* (no longer configured): :warning: late · last good poll 2d ago · cursor 7",
    ]
    assert totals == (f"*Open incidents:* 1   *Alerts waiting to be sent:* "
                      f"{store.outbox_depth(db)}")
    assert store.outbox_depth(db) > 0
    assert reply.text.startswith("*Servers*\n• *EX01*: :white_check_mark: ok")
    assert_inert(reply)


def test_status_after_recovery_keeps_the_last_error_and_says_recovered(db, config, polled):
    store.save_poll_success(db, store.server_state(db, "EX02"), generation=1, cursor=50_020,
                            oldest_record=1, newest_record=50_020, stored=0,
                            now=NOW - timedelta(minutes=1))
    ex02 = sections(ask(db, config, "status"))[0].split("\n")[2]
    assert ex02 == ("• *EX02*: :white_check_mark: ok · last good poll 1m ago · cursor 50020 · "
                    f"log cleared 1 time · recovered; last error "
                    f"{slack_date(NOW - timedelta(minutes=10))}: connection refused by "
                    "&lt;!here&gt; &amp; ˋxˋ")


def test_servers_lists_how_each_server_is_reached(db, config, polled):
    reply = ask(db, config, "servers")
    [text] = sections(reply)
    assert text.split("\n") == [
        "*Servers watched* (3)",
        "• *EX01* `127.0.0.1:5986` · ntlm · https, certificate checked · alerts to <#C0ALERTS> "
        "(default) · :white_check_mark: ok · Exchange 2016",
        "• *EX02* `127.0.0.1:5985` · ntlm · http (no TLS: the WinRM message encryption protects "
        "it) · alerts to <#C0EX02> · :x: failing · submission connector `Client Frontend EX02`",
        "• *EX03* `127.0.0.1:5987` · ntlm · https, *certificate not checked* · alerts to "
        "<#C0ALERTS> (default) · :white_circle: not polled yet · Exchange 2010",
        "Polled before but no longer configured: *OLD01*",
    ]
    assert reply.text == "3 servers watched"
    assert_inert(reply)


def test_snoozes_lists_those_in_force_soonest_first(db, config, world):
    chat.add_snooze(db, kind="account", target="<!channel> & `x`", account="<!channel> & `x`",
                    until=NOW + timedelta(hours=4), reason="maintenance <@U0BOSS> *window*",
                    user_id="U0BOB", now=NOW - timedelta(minutes=5))
    number = world[1][PRINTER]
    chat.add_snooze(db, kind="incident", target=str(number), account="CONTOSO\\printer",
                    until=NOW + timedelta(minutes=90), reason="toner", user_id="<!here>", now=NOW)
    gone = chat.add_snooze(db, kind="account", target="x", account="x", until=NOW + timedelta(
        hours=1), reason="ended", user_id="U0BOB", now=NOW)
    chat.end_snooze(db, gone.id, NOW, "U0BOB")
    chat.add_snooze(db, kind="account", target="y", account="y", until=NOW - timedelta(
        minutes=1), reason="expired", user_id="U0BOB", now=NOW - timedelta(hours=1))
    reply = ask(db, config, "snoozes")
    [text] = sections(reply)
    assert text.split("\n") == [
        "*Snoozes in force* (2), soonest to end first",
        f"• incident `#{number}` (`CONTOSO\\printer`) until "
        f"{slack_date(NOW + timedelta(minutes=90))} (1h 30m left) · by &lt;!here&gt;: “toner”",
        f"• account `&lt;!channel&gt; &amp; ˋxˋ` until {slack_date(NOW + timedelta(hours=4))} "
        "(4h left) · by <@U0BOB>: “maintenance &lt;@U0BOSS&gt; *window*”",
    ]
    assert reply.text == "2 snoozes in force"
    assert_inert(reply)


def test_no_snooze(db, config):
    reply = ask(db, config, "snoozes")
    assert sections(reply) == ["No snooze in force: every incident alerts."]


@pytest.mark.parametrize("name", ["status", "servers", "snoozes"])
def test_commands_without_arguments_refuse_extra_words(db, config, name):
    reply = ask(db, config, f"{name} &lt;!channel&gt;")
    assert reply.text.startswith(f"`{name}` takes no arguments (got `&lt;!channel&gt;`)")


# --- mutation-testing gaps: lateness and escaping of what the database holds --------------------

def test_a_server_polled_two_intervals_ago_is_not_late_yet(db, config):
    store.save_poll_success(db, store.ServerState("EX01"), generation=0, cursor=5,
                            oldest_record=1, newest_record=5, stored=0,
                            now=NOW - timedelta(seconds=130))
    text = str(ask(db, config, "status").blocks)
    assert "*EX01*: :white_check_mark: ok" in text
    later = str(ask(db, config, "status", now=NOW + timedelta(seconds=60)).blocks)
    assert "*EX01*: :warning: late" in later


def test_status_escapes_delivery_errors_channels_and_old_server_names(db, config, world):
    _, ids = world
    with write_transaction(db):
        store.enqueue(db, None, "server_down", NOW, server="EX01")
    [row] = [r for r in store.pending_messages(db, NOW) if r.kind == "server_down"]
    store.mark_retry(db, row.id, "Slack said <!channel> & <@U0BOSS>", NOW, code="weird",
                     failed_since=NOW)
    store.save_poll_success(db, store.ServerState("<!here>"), generation=0, cursor=1,
                            oldest_record=1, newest_record=1, stored=0, now=NOW)
    chat.audit(db, now=NOW, user_id="U0ALICE", action="ack", target="#1", via="button",
               outcome="done", incident_id=ids[PRINTER], channel="<!everyone>")
    status = ask(db, config, "status")
    servers = ask(db, config, "servers")
    shown = ask(db, config, f"show #{ids[PRINTER]}")
    for reply in (status, servers, shown):
        assert_no_markup(mrkdwn_texts(reply.blocks))
    assert "Slack said &lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in str(status.blocks)
    assert "&lt;!here&gt;" in str(servers.blocks) and "&lt;!everyone&gt;" in str(shown.blocks)

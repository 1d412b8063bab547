"""The device line (issue 22): the client addresses the SMTP Receive protocol log joined to an
incident, on the alert, in Show fix, `show`, the digest and history; where a connector does not
log, the read-only check and the change. Every address and name is untrusted text (the log,
reverse DNS): shown literally, never pinging; an address is shown only when a log line gave it."""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.core.config import ServerConfig
from bot.core.devices import (
    FAILED,
    FOUND,
    NO_MATCH,
    NOT_LOGGING,
    PENDING,
    DeviceLookup,
    DeviceSeen,
)
from bot.core.model import Digest, DigestLines, History, Incident, IncidentDetail
from bot.exchange.remediation import (
    UnsafeValueError,
    protocol_logging_check_command,
    protocol_logging_on_command,
    ps_quote,
)
from bot.slack import alerts, digests, replies
from bot.slack import richtext as rt
from bot.slack.alerts import ACTION_SHOW_FIX
from bot.slack.devices import (
    ADDRESS_LIMIT,
    COMMANDS_MOST,
    NAME_LIMIT,
    device_blocks,
    device_brief,
    device_line,
)
from handlers.commands import answer
from handlers.common import Request
from sim.slack_blocks import validate_blocks
from store import db as store
from store import devices as device_store
from store.db import write_transaction
from tests.blocks import mrkdwn_texts, preformatted, prose, rich_elements
from tests.conftest import CHANNEL
from tests.helpers import (
    NOW,
    Feed,
    assert_no_markup,
    bolt_actions,
    click,
    lookup_config,
    scanner,
    sweep,
)
from tests.pwsh_parse import assert_quotes_doubled, parse_pipeline

T0 = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)
SERVERS = {"EX01": ServerConfig(name="EX01", url="https://ex01:5986/wsman", username="u",
                                password_env="P")}
CLIENT_FE = "EX01\\Client Frontend EX01"
PROP = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow])


def seen(address="10.20.30.41", name=None, sessions=1, minutes=0, shown=True):
    return DeviceSeen(address=address, name=name, sessions=sessions, first=T0,
                      last=T0 + timedelta(minutes=minutes), account_shown=shown)


def found(*devices, **more):
    return DeviceLookup(FOUND, devices=tuple(devices), checked_at=T0, **more)


def words(line) -> str:
    return rt.text_of(rt.rich(line))


def incident(status="open", connectors=(CLIENT_FE,), id=12):
    return Incident(id=id, key="contoso\\svc-scanner", account="CONTOSO\\svc-scanner",
                    status=status, channel="C0ALERTS", first_seen=T0,
                    last_seen=T0 + timedelta(minutes=9), event_count=3,
                    servers=(("EX01", "EX01"),), connectors=connectors, event_ids=(1018,),
                    opened_at=T0,
                    resolved_at=T0 + timedelta(hours=30) if status == "resolved" else None)


# --- every state's words ------------------------------------------------------------------------

def test_found_names_at_most_three_addresses_most_sessions_first():
    lookup = found(seen("10.20.30.57", sessions=3, minutes=5),
                   seen("10.20.30.41", "mfp-3f.contoso.local", sessions=12, minutes=9),
                   seen("10.20.30.60", sessions=1), seen("10.20.30.61", sessions=2),
                   seen("10.20.30.62", sessions=1))
    text = words(device_line(lookup))
    assert text == ("Devices: 10.20.30.41 (mfp-3f.contoso.local) 12 sessions, last "
                    "2026-03-08 08:09 UTC; 10.20.30.57 3 sessions, last 2026-03-08 08:05 UTC; "
                    "10.20.30.61 2 sessions, last 2026-03-08 08:00 UTC; 2 more")
    dates = [e for e in device_line(lookup) if isinstance(e, dict) and e["type"] == "date"]
    assert [d["timestamp"] for d in dates] == [int((T0 + timedelta(minutes=m)).timestamp())
                                                for m in (9, 5, 0)]


def test_one_device_one_session_and_nothing_more():
    assert words(device_line(found(seen(sessions=1)))) == \
        "Devices: 10.20.30.41 1 session, last 2026-03-08 08:00 UTC"


def test_an_address_whose_lines_hid_the_account_says_so():
    text = words(device_line(found(seen(shown=False), seen("10.0.0.9", sessions=2))))
    assert text == ("Devices: 10.0.0.9 2 sessions, last 2026-03-08 08:00 UTC; "
                    "10.20.30.41 1 session, last 2026-03-08 08:00 UTC "
                    "(account not shown in the log)")


@pytest.mark.parametrize("unmatched, said", [(1, "1 event matched no log line"),
                                             (4, "4 events matched no log line")])
def test_found_with_events_no_line_explained(unmatched, said):
    text = words(device_line(found(seen(), unmatched_events=unmatched)))
    assert text.endswith(f"last 2026-03-08 08:00 UTC; {said}")


def test_found_whose_last_read_failed_keeps_the_devices_and_says_why():
    text = words(device_line(found(seen(), problem="Access is denied")))
    assert text == ("Devices: 10.20.30.41 1 session, last 2026-03-08 08:00 UTC; "
                    "the last read of the protocol log failed: Access is denied")


@pytest.mark.parametrize("lookup, said", [
    (DeviceLookup(NO_MATCH), "Devices: no line in the protocol log matched these events"),
    (DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE,)),
     f"Devices: {CLIENT_FE} does not write a protocol log by default (ProtocolLoggingLevel "
     "None): no device can be named. Show fix tells how to turn it on"),
    (DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE, "EX02\\Relay")),
     f"Devices: {CLIENT_FE}, EX02\\Relay do not write a protocol log by default "
     "(ProtocolLoggingLevel None): no device can be named. Show fix tells how to turn it on"),
    (DeviceLookup(NOT_LOGGING),
     "Devices: the connector does not write a protocol log by default (ProtocolLoggingLevel "
     "None): no device can be named. Show fix tells how to turn it on"),
    (DeviceLookup(FAILED, problem="\\\\EX01\\C$\\...\\SmtpReceive: Access is denied"),
     "Devices: the protocol log could not be read: \\\\EX01\\C$\\...\\SmtpReceive: "
     "Access is denied"),
    (DeviceLookup(FAILED), "Devices: the protocol log could not be read: no reason was given"),
    (DeviceLookup(PENDING), "Devices: not looked up yet"),
])
def test_every_other_state_in_words(lookup, said):
    assert words(device_line(lookup)) == said


@pytest.mark.parametrize("state", [NO_MATCH, NOT_LOGGING, FAILED, PENDING])
def test_no_address_is_shown_unless_a_log_line_gave_it(state):
    """Never a guess: a look-up that did not find shows no address, whatever it carries."""
    lookup = DeviceLookup(state, devices=(seen("10.99.99.99", "guess.contoso.local"),),
                          quiet_connectors=(CLIENT_FE,), problem="timed out")
    for blocks in ([rt.rich(device_line(lookup))], device_blocks(lookup)):
        text = prose(blocks)
        assert "10.99.99.99" not in text and "guess" not in text
        assert not re.search(r"\d+\.\d+\.\d+\.\d+", text)


def test_an_unknown_state_is_a_bug_not_a_line():
    with pytest.raises(ValueError, match="unknown device look-up state"):
        device_line(DeviceLookup("guessed"))


def test_show_and_show_fix_give_up_to_ten_addresses_with_first_and_last():
    lookup = found(*(seen(f"10.0.0.{n}", sessions=20 - n, minutes=n) for n in range(12)))
    [block] = device_blocks(lookup)
    text = rt.text_of(block)
    assert "10.0.0.9 " in text and "10.0.0.10 " not in text and text.endswith("; 2 more")
    assert ("10.0.0.1 19 sessions, first 2026-03-08 08:00 UTC, last 2026-03-08 08:01 UTC"
            in text)
    assert "10.0.0.0 20 sessions, last 2026-03-08 08:00 UTC" in text   # first == last: once


# --- hostile text from the log and from reverse DNS ---------------------------------------------

PIECES = ["<!channel>", "<!here>", "<@U0BOSS>", "<https://evil.example|click>", "&lt;!here&gt;",
          "&", "`", "```", "*bold*", "_it_", "~s~", "> quote", ":rotating_light:", "\u202e",
          "\u200b", "\ufeff", "\x00", "\n", "\x1b[31m", "'", "\u2019", "$(x)", "10.0.0.1"]
hostile = st.lists(st.one_of(st.sampled_from(PIECES), st.characters(exclude_categories=("Cs",))),
                   min_size=1, max_size=20).map("".join)


def assert_inert(blocks, *values):
    """Rich text: only text and date elements (no user, link, broadcast, channel), each value
    shown as itself with invisible characters as escapes; mrkdwn: only our own tokens."""
    kinds = {e["type"] for e in rich_elements(blocks)}
    assert kinds <= {"text", "date"}, kinds
    shown = "".join(e["text"] for e in rich_elements(blocks) if e["type"] == "text")
    for value, limit in values:
        assert rt.clip(rt.visible(value), limit) in shown
    assert_no_markup(mrkdwn_texts(blocks))
    assert validate_blocks(blocks) == []


@PROP
@given(address=hostile, name=hostile, problem=hostile)
@example(address="<!channel>", name="<@U0BOSS> `x` *y*", problem="<https://evil.example|x>")
@example(address="10.0.0.1\u200b", name="mfp\u202e.contoso.local", problem="\x1b[31m")
def test_hostile_addresses_and_names_are_shown_literally_and_never_ping(address, name, problem):
    lookup = found(seen(address, name, sessions=2), problem=problem)
    assert_inert([rt.rich(device_line(lookup))], (address, ADDRESS_LIMIT), (name, NAME_LIMIT))
    assert_inert(device_blocks(lookup), (address, ADDRESS_LIMIT), (name, NAME_LIMIT))
    text, blocks = alerts.alert(incident(), SERVERS, devices=lookup)
    assert_inert(blocks, (address, ADDRESS_LIMIT), (name, NAME_LIMIT))
    assert_no_markup([text])
    for quiet in (DeviceLookup(FAILED, problem=problem),
                  DeviceLookup(NOT_LOGGING, quiet_connectors=(address,))):
        assert_inert(device_blocks(quiet))


@PROP
@given(address=hostile, other=hostile)
@example(address="<!channel>*boss*`", other="x")
def test_briefs_are_inert_mrkdwn(address, other):
    lookup = found(seen(address, sessions=5), seen(other, sessions=1))
    brief = device_brief(lookup)
    assert_no_markup([brief])
    assert brief.startswith("from `") and brief.endswith("` (+1)")
    assert brief.count("`") == 2        # a backtick from the address cannot end the span
    assert not any(c in brief for c in "\u202e\u200b\ufeff\x00\n")


# --- where a connector does not log: the check and the change -----------------------------------

HOSTILE_CONNECTORS = [
    CLIENT_FE, "EX01\\O'Brien's relay", "EX01\\a\u2019b", "EX01\\\u2018\u201a\u201b'",
    "EX01\\x' -ProtocolLoggingLevel None; Remove-Item C:\\ -Recurse; '",
    "EX01\\$(Remove-Item C:\\)", "EX01\\`whoami`", 'EX01\\"; Stop-Service x; "', "EX01\\<!channel>",
    "EX01\\<@U0BOSS>", "EX01\\#comment", "EX01\\<#", "EX01\\@'", "EX01\\\u2013WhatIf",
    "EX01\\-Confirm:$false", "EX01\\jürgen 📠", "'", "''''",
]


def commands_for(connector: str) -> list[str]:
    blocks = device_blocks(DeviceLookup(NOT_LOGGING, quiet_connectors=(connector,)))
    assert validate_blocks(blocks) == []
    [text] = preformatted(blocks)
    return [line for line in text.splitlines() if not line.startswith("# ")]


@pytest.mark.parametrize("connector", HOSTILE_CONNECTORS)
def test_the_check_and_the_change_name_the_connector_as_one_verbatim_literal(connector):
    check, dry_run, change = commands_for(connector)

    def identity(command):
        assert command.name.endswith("-ReceiveConnector") and command.positional == ()
        arg = command.arg("-Identity")
        assert arg is not None and arg.is_verbatim_literal
        assert arg.value == connector
        assert_quotes_doubled(arg.text[1:-1])

    p = parse_pipeline(check)
    assert p.names == ("Get-ReceiveConnector", "Format-List")
    identity(p.commands[0])
    assert p.commands[0].param_names == ("-Identity",)
    [columns] = p.commands[1].positional
    assert columns.items == ("Identity", "ProtocolLoggingLevel")
    for line, last in ((dry_run, ("-WhatIf",)), (change, ())):
        p = parse_pipeline(line)
        assert p.names == ("Set-ReceiveConnector",)
        (command,) = p.commands
        identity(command)
        assert command.param_names == ("-Identity", "-ProtocolLoggingLevel", *last)
        assert command.arg("-ProtocolLoggingLevel").text == "Verbose"


def test_the_exact_commands_the_dry_run_first():
    quoted = ps_quote(CLIENT_FE, "connector")
    assert protocol_logging_check_command(CLIENT_FE) == (
        f"Get-ReceiveConnector -Identity {quoted} | Format-List Identity,ProtocolLoggingLevel")
    assert protocol_logging_on_command(CLIENT_FE, whatif=True) == (
        f"Set-ReceiveConnector -Identity {quoted} -ProtocolLoggingLevel Verbose -WhatIf")
    assert protocol_logging_on_command(CLIENT_FE) == (
        f"Set-ReceiveConnector -Identity {quoted} -ProtocolLoggingLevel Verbose")
    assert commands_for(CLIENT_FE) == [protocol_logging_check_command(CLIENT_FE),
                                       protocol_logging_on_command(CLIENT_FE, whatif=True),
                                       protocol_logging_on_command(CLIENT_FE)]


def test_the_change_says_what_it_costs():
    blocks = device_blocks(DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE,)))
    text = prose(blocks)
    assert "ProtocolLoggingLevel Verbose" in text and "read-only" in text
    assert "disk" in text and "30 days by default" in text and "size bound" in text
    assert f"Connector {CLIENT_FE}" in text


@pytest.mark.parametrize("bad", ["EX01\\Relay\u202e", "EX01\\a\nb", "EX01\\zero\u200bwidth",
                                 "", "EX01\\" + "x" * 1100])
def test_a_connector_that_cannot_be_quoted_gets_the_reason_and_no_command(bad):
    with pytest.raises(UnsafeValueError) as refused:
        protocol_logging_check_command(bad)
    blocks = device_blocks(DeviceLookup(NOT_LOGGING, quiet_connectors=(bad, CLIENT_FE)))
    assert validate_blocks(blocks) == []
    text = prose(blocks)
    assert f"no command for it: {refused.value}" in text
    [commands] = preformatted(blocks)        # only the good connector's
    assert all(CLIENT_FE in line for line in commands.splitlines() if not line.startswith("#"))
    assert bad not in commands or bad == ""


def test_many_quiet_connectors_stay_within_a_message():
    quiet = tuple(f"EX{n:02}\\Client Frontend EX{n:02}" for n in range(12))
    blocks = device_blocks(DeviceLookup(NOT_LOGGING, quiet_connectors=quiet))
    assert len(preformatted(blocks)) == COMMANDS_MOST
    assert "9 more connector(s) do not log" in prose(blocks)
    assert "and 7 more do not write a protocol log" in prose(blocks)
    _, fix = alerts.fix_message(incident(), SERVERS,
                                devices=DeviceLookup(NOT_LOGGING, quiet_connectors=quiet))
    assert validate_blocks(fix) == [] and len(fix) <= 50


# --- the alert, Show fix and show ---------------------------------------------------------------

def test_the_alert_without_a_look_up_has_no_device_line():
    text, blocks = alerts.alert(incident(), SERVERS, devices=None)
    assert validate_blocks(blocks) == []
    assert "Devices" not in prose(blocks) and "Devices" not in text
    assert alerts.alert(incident(), SERVERS) == (text, blocks)


def test_the_alert_names_the_devices_right_after_the_facts():
    lookup = found(seen("10.20.30.41", "mfp-3f.contoso.local", sessions=12))
    text, blocks = alerts.alert(incident(), SERVERS, devices=lookup)
    assert validate_blocks(blocks) == []
    plain, with_devices = alerts.alert(incident(), SERVERS)[1], blocks
    assert len(plain) == len(with_devices)            # a line of the facts block, not a block
    facts = rt.text_of(blocks[-3]).splitlines()
    assert facts[-2].startswith("First / last seen: ")
    assert facts[-1] == ("Devices: 10.20.30.41 (mfp-3f.contoso.local) 12 sessions, last "
                         "2026-03-08 08:00 UTC")
    assert "10.20.30.41" not in text                  # the notification stays as it was


def test_a_resolved_alert_has_no_device_line():
    _, blocks = alerts.alert(incident(status="resolved"), SERVERS, devices=found(seen()))
    assert validate_blocks(blocks) == [] and "Devices" not in prose(blocks)


def test_the_alert_where_the_connector_does_not_log():
    lookup = DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE,))
    _, blocks = alerts.alert(incident(), SERVERS, devices=lookup)
    assert validate_blocks(blocks) == []
    assert "does not write a protocol log by default (ProtocolLoggingLevel None)" in prose(blocks)
    assert "Set-ReceiveConnector" not in "\n".join(preformatted(blocks))   # Show fix has it


def test_show_fix_gives_the_devices_and_the_commands_to_turn_the_log_on():
    lookup = DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE,))
    _, blocks = alerts.fix_message(incident(), SERVERS, devices=lookup)
    assert validate_blocks(blocks) == []
    assert "no device can be named" in prose(blocks)
    lines = "\n".join(preformatted(blocks)).splitlines()
    assert lines.index(protocol_logging_check_command(CLIENT_FE)) < \
        lines.index(protocol_logging_on_command(CLIENT_FE, whatif=True)) < \
        lines.index(protocol_logging_on_command(CLIENT_FE))
    _, without = alerts.fix_message(incident(), SERVERS)
    assert "Devices" not in prose(without)
    assert "Set-ReceiveConnector" not in "\n".join(preformatted(without))


def detail(inc):
    return IncidentDetail(incident=inc, groups=[], group_count=0, timeline=[], audit=[],
                          snoozed_until=None)


def test_show_gives_the_device_blocks():
    lookup = found(seen("10.20.30.41", "mfp-3f.contoso.local", sessions=12))
    _, blocks = replies.show_view(detail(incident()), T0, devices=lookup)
    assert validate_blocks(blocks) == []
    assert "Devices: 10.20.30.41 (mfp-3f.contoso.local) 12 sessions" in prose(blocks)
    _, blocks = replies.show_view(detail(incident()), T0,
                                  devices=DeviceLookup(NOT_LOGGING, quiet_connectors=(CLIENT_FE,)))
    assert protocol_logging_check_command(CLIENT_FE) in "\n".join(preformatted(blocks))
    _, plain = replies.show_view(detail(incident()), T0)
    assert "Devices" not in prose(plain)


# --- the digest and history ---------------------------------------------------------------------

@pytest.mark.parametrize("lookup, brief", [
    (None, ""),
    (DeviceLookup(PENDING), ""),
    (found(seen("10.20.30.41", sessions=3)), "from `10.20.30.41`"),
    (found(seen("10.20.30.57", sessions=1), seen("10.20.30.41", sessions=3), seen("10.0.0.3")),
     "from `10.20.30.41` (+2)"),
    (DeviceLookup(NO_MATCH), "no protocol-log line matched"),
    (DeviceLookup(NOT_LOGGING), "device unknown: the connector writes no protocol log"),
    (DeviceLookup(FAILED, problem="x"), "device unknown: the protocol log could not be read"),
])
def test_the_brief(lookup, brief):
    assert device_brief(lookup) == brief


HOSTILE_ADDRESS = "<!channel> *x* `y` \u200b"
SHOWN_ADDRESS = "`&lt;!channel&gt; *x* \u02cby\u02cb \\x200b`"


def test_the_digest_lines_append_the_brief_escaped():
    incidents = (incident(id=12), incident(id=13))
    lookups = {12: found(seen(HOSTILE_ADDRESS, sessions=2), seen("10.0.0.2"))}
    lines = DigestLines(digest=Digest(id=1, channel="C0ALERTS", opened_at=T0, last_joined_at=T0),
                        incidents=incidents, total=2, open=2, acknowledged=0, resolved=0,
                        events=6, by_event=((1018, 2),))
    _, blocks = digests.digest(lines, SERVERS, devices=lookups)
    assert validate_blocks(blocks) == []
    texts = mrkdwn_texts(blocks)
    assert_no_markup(texts)
    body = "\n".join(texts)
    assert f"first seen <!date^{int(T0.timestamp())}" in body
    [mine] = [t for t in body.splitlines() if "*#12*" in t]
    [other] = [t for t in body.splitlines() if "*#13*" in t]
    assert mine.endswith(f" · from {SHOWN_ADDRESS} (+1)")
    assert "from" not in other.split("first seen")[1]
    _, plain = digests.digest(lines, SERVERS)
    assert "from `" not in "\n".join(mrkdwn_texts(plain))
    _, thread = digests.details(list(incidents), SERVERS, devices=lookups)
    assert f"from {SHOWN_ADDRESS} (+1) · `/submitwatch fix #12`" in "\n".join(mrkdwn_texts(thread))


def test_history_lines_append_the_brief_escaped():
    page = History(incidents=[incident(id=12), replace(incident(id=13), status="resolved")],
                   total=2, open=1, per_day=[("2026-03-08", 6)])
    lookups = {12: found(seen(HOSTILE_ADDRESS)), 13: DeviceLookup(NOT_LOGGING)}
    _, blocks = replies.history_view(page, subject=replies.Subject(), since_seconds=86400,
                                     limit=20, max_limit=100, devices=lookups)
    assert validate_blocks(blocks) == []
    texts = mrkdwn_texts(blocks)
    assert_no_markup(texts)
    body = "\n".join(texts)
    [mine] = [t for t in body.splitlines() if "`#12`" in t]
    [other] = [t for t in body.splitlines() if "`#13`" in t]
    assert mine.endswith(f" · from {SHOWN_ADDRESS}")
    assert other.endswith(" · device unknown: the connector writes no protocol log")
    _, plain = replies.history_view(page, subject=replies.Subject(), since_seconds=86400,
                                    limit=20, max_limit=100)
    assert "from `" not in "\n".join(mrkdwn_texts(plain))


# --- wired: the slash commands read the look-ups the store keeps -------------------------------

@pytest.mark.parametrize("enabled", [True, False])
def test_show_and_history_read_the_stored_look_up_unless_it_is_off(db, enabled):

    config = lookup_config(devices={"enabled": enabled})
    Feed(db, config).burst("CONTOSO\\svc-scanner", NOW - timedelta(minutes=30), 3,
                           connector=CLIENT_FE)
    [number] = [r["id"] for r in db.query("SELECT id FROM incidents")]
    with write_transaction(db):
        device_store.add_devices(db, number, "EX01", [DeviceSeen(
            HOSTILE_ADDRESS, "mfp-3f.contoso.local", 4, NOW - timedelta(minutes=30),
            NOW - timedelta(minutes=28), True)])
        device_store.save_check(db, number, checked_at=NOW, looked_until=NOW, problem=None,
                                unmatched=0, quiet_connectors=())

    def ask(text):
        return answer(Request(db=db, config=config, now=NOW, user_id="U0ALICE",
                              channel_id="C0ALERTS"), text)

    shown = ask(f"show #{number}")
    assert validate_blocks(shown.blocks) == []
    assert ("Devices: " + rt.visible(HOSTILE_ADDRESS) + " (mfp-3f.contoso.local) 4 sessions"
            in prose(shown.blocks)) is enabled
    history = "\n".join(mrkdwn_texts(ask("history").blocks))
    assert_no_markup([history])
    assert (f"from {SHOWN_ADDRESS}" in history) is enabled


def test_the_posted_alert_and_show_fix_carry_the_stored_look_up(posted, logs, db, slack, clock):
    """Through delivery (the alert's update) and the Show fix button on a real Bolt app."""

    config, incident, message = posted
    assert "Devices: not looked up yet" in prose(message["blocks"])
    with write_transaction(db):
        device_store.save_check(db, incident.stored_id, checked_at=clock(), looked_until=None,
                                problem=None, unmatched=0, quiet_connectors=(CLIENT_FE,))
    scanner(logs["EX01"], 1)                                 # a new event: the alert updates
    clock.advance(seconds=11)
    sweep(db, config, clock)
    alert = slack.message(CHANNEL, store.get_incident(db, incident.stored_id).message_ts)
    assert validate_blocks(alert["blocks"]) == []
    assert (f"Devices: {CLIENT_FE} does not write a protocol log by default"
            in prose(alert["blocks"]))
    [fix] = click(bolt_actions(slack, db, config, clock), slack, "U0ALICE", ACTION_SHOW_FIX,
                  alert, value=str(incident.id))
    assert protocol_logging_on_command(CLIENT_FE, whatif=True) in "\n".join(
        preformatted(fix["blocks"]))

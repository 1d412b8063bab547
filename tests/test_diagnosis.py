"""Events 1018 and 1020 diagnosed as Exchange's code decides them: the cause, the connector from
the event, the right fix per version; names that hide characters or mix scripts; the whole way
from the simulator through real pywinrm to the alert in the Slack stand-in."""
from __future__ import annotations

import json
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.config import ServerConfig
from bot.core.findings import ConnectorFact, Finding
from bot.core.model import Incident, Sighting
from bot.core.names import is_invisible, mixed_script_warning, mixed_script_words
from bot.exchange import advice
from bot.exchange.advice import CAUSES
from bot.exchange.diagnosis import (
    BUILTIN,
    LEGACY_1020,
    NO_SUBMIT,
    cause_of,
    diagnose,
    diagnose_incident,
    sightings_of,
)
from bot.exchange.remediation import (
    UnsafeValueError,
    check_value,
    default_receive_connectors,
    inspect_connector_command,
    sid_command,
)
from bot.slack import alerts
from bot.sources.parse import parse_events
from sim.eventlog import EventLog, event_xml
from sim.slack_blocks import validate_blocks
from store import db as store
from store.db import open_db
from store.migrations import migrations
from tests.blocks import mrkdwn_texts, preformatted, prose, rich_elements
from tests.conftest import CHANNEL
from tests.helpers import sweep
from tests.pwsh_parse import parse_pipeline

T0 = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)
FE, BE = "MSExchangeFrontEndTransport", "MSExchangeTransport"


def server(name, version=None, connector=None):
    return ServerConfig(name=name, url=f"https://{name.lower()}:5986/wsman", username="u",
                        password_env="P", version=version, submission_connector=connector)


SERVERS = {"EX01": server("EX01", "2016"), "EX02": server("EX02", "2010"),
           "EX03": server("EX03")}
HOSTS = {"EX01": "EX01", "EX02": "EX02", "EX03": "EX03"}


# --- which cause, from the event ID and the server's version -----------------------------------

@pytest.mark.parametrize("event_id, version, cause", [
    (1018, "2016", NO_SUBMIT), (1018, "2010", NO_SUBMIT), (1018, None, NO_SUBMIT),
    (1020, "2013", BUILTIN), (1020, "2016", BUILTIN), (1020, "2019", BUILTIN),
    (1020, "SE", BUILTIN), (1020, None, BUILTIN),       # unknown: 2013+'s code, the usual case
    (1020, "2010", LEGACY_1020), (1020, "2007", LEGACY_1020),
])
def test_the_cause_follows_exchanges_code(event_id, version, cause):
    assert cause_of(event_id, version) == cause


def test_1018_on_the_client_connector_lists_what_decides_before_any_grant():
    [d] = diagnose("CONTOSO\\app", [Sighting(1018, "EX01", "EX01\\Client Frontend EX01")],
                   HOSTS, SERVERS)
    assert (d.cause, d.servers) == (advice.SHOULD_ADMIT, ("EX01",))
    [t] = d.targets
    assert (t.connector, t.source) == ("EX01\\Client Frontend EX01", "event")
    assert [f.id for f in t.advice.fixes] == ["find_deciding_entry", "grant_submit"]
    grant = t.advice.fixes[1].lines()
    assert "EX01\\Client Frontend EX01' | Add-ADPermission -User 'CONTOSO\\app'" in "\n".join(grant)


def test_1018_on_a_custom_connector_says_why_and_stops_signing_in_first():
    [d] = diagnose("CONTOSO\\app", [Sighting(1018, "EX01", "EX01\\Relay Printers")],
                   HOSTS, SERVERS)
    assert d.cause == advice.CUSTOM_NO_USERS
    [t] = d.targets
    assert t.advice.fixes[0].id == "stop_authenticating"
    assert t.advice.fixes[0].steps[0].command == inspect_connector_command("EX01\\Relay Printers")
    blocks = alerts.diagnosis_blocks(d)
    assert "not one of Exchange's defaults" in prose(blocks)
    assert "remote IP ranges caught the device's address" in prose(blocks)


def test_1020_on_2016_is_a_built_in_identity_with_no_grant():
    [d] = diagnose("CONTOSO\\Administrator",
                   [Sighting(1020, "EX01", "EX01\\Client Frontend EX01")], HOSTS, SERVERS)
    assert d.cause == advice.BUILTIN and not d.grants
    assert d.advice.identify.command == sid_command("CONTOSO\\Administrator")
    [t] = d.targets
    assert t.connector == "EX01\\Client Frontend EX01" and t.source == "event"
    blocks = alerts.diagnosis_blocks(d)
    assert "Add-ADPermission" not in "\n".join(preformatted(blocks))
    assert "Seen on EX01\\Client Frontend EX01" in prose(blocks)
    assert "inferred from 2013's code" in prose(blocks)          # 2016: said, not hidden


def test_1020_on_2010_shows_both_the_documented_grant_and_the_check():
    [d] = diagnose("CONTOSO\\scan", [Sighting(1020, "EX02", "EX02\\Client EX02")], HOSTS, SERVERS)
    assert d.cause == advice.LEGACY_1020 and d.grants and d.advice.identify
    blocks = alerts.diagnosis_blocks(d, full=True)
    sid, grant = preformatted(blocks)[:2]
    assert "NTAccount" in sid and "-Identity 'EX02\\Client EX02' | Add-ADPermission" in grant
    assert "Microsoft's documented fix for 2007/2010" in prose(blocks)


def test_an_account_with_both_events_gets_each_cause_once():
    sightings = [Sighting(1018, "EX01", "EX01\\Client Frontend EX01"),
                 Sighting(1020, "EX03", "EX03\\Client Frontend EX03"),
                 Sighting(1018, "EX01", "EX01\\Client Frontend EX01"),
                 Sighting(1020, "EX01", "EX01\\Client Frontend EX01")]
    found = diagnose("CONTOSO\\x", sightings, HOSTS, SERVERS)
    assert [(d.cause, d.servers) for d in found] == [(advice.SHOULD_ADMIT, ("EX01",)),
                                                     (advice.BUILTIN, ("EX03", "EX01"))]
    assert len(found[0].targets) == 1


def test_connectors_of_one_event_kind_with_different_causes_are_told_apart():
    sightings = [Sighting(1018, "EX01", "EX01\\Default Frontend EX01"),
                 Sighting(1018, "EX01", "EX01\\Relay Printers")]
    found = diagnose("CONTOSO\\mfp", sightings, HOSTS, SERVERS)
    assert [d.cause for d in found] == [advice.INTERNET_AUTH, advice.CUSTOM_NO_USERS]


def test_1018_without_a_connector_is_an_unknown_connector_unless_one_is_configured():
    [d] = diagnose("CONTOSO\\x", [Sighting(1018, "EX02", None)], HOSTS, SERVERS)
    [t] = d.targets
    assert (d.cause, t.connector, t.source) == (advice.UNKNOWN_CONNECTOR, None, "none")
    assert not d.grants       # no grant on a connector nobody named
    configured = {"EX02": server("EX02", "2010", "Scanners")}
    [d] = diagnose("CONTOSO\\x", [Sighting(1018, "EX02", None)], HOSTS, configured)
    assert (d.targets[0].connector, d.targets[0].source) == ("EX02\\Scanners", "configured")


def test_one_bad_connector_name_spoils_only_itself():
    sightings = [Sighting(1018, "EX01", "EX01\\Bad\u200bName"),
                 Sighting(1018, "EX01", "EX01\\Relay")]
    [d] = diagnose("CONTOSO\\x", sightings, HOSTS, SERVERS)
    bad, good = d.targets
    assert "zero width space (U+200B)" in bad.advice.refusal
    assert good.advice.refusal is None
    blocks = alerts.diagnosis_blocks(d)
    words = prose(blocks)
    assert "Connector EX01\\Bad\\x200bName on EX01" in words
    assert "No command for it: " in words and "zero width space" in words
    [commands] = preformatted(blocks)
    assert "-Identity 'EX01\\Relay'" in commands and "Bad" not in commands


def test_an_account_that_cannot_be_quoted_gets_its_reason_and_no_command():
    for event_id in (1018, 1020):
        [d] = diagnose("CONTOSO\\a\nb", [Sighting(event_id, "EX01", "EX01\\Relay")], HOSTS,
                       SERVERS)
        assert "line break" in d.advice.refusal and d.advice.identify is None
        blocks = alerts.diagnosis_blocks(d, full=True)
        assert preformatted(blocks) == [] and "No command is shown" in prose(blocks)


def test_an_incident_stored_before_sightings_were_kept_is_still_diagnosed():
    old = Incident(id=1, key="k", account="CONTOSO\\x", status="open", channel=CHANNEL,
                   first_seen=T0, last_seen=T0, event_count=2,
                   servers=(("EX01", "EX01"), ("EX03", "EX03")),
                   connectors=("EX01\\Relay",), event_ids=(1018,), opened_at=T0)
    assert sightings_of(old) == (Sighting(1018, "EX01", "EX01\\Relay"),
                                 Sighting(1018, "EX03", None))
    found = diagnose_incident(old, SERVERS)
    assert [(d.cause, [t.connector for t in d.targets]) for d in found] == [
        (advice.CUSTOM_NO_USERS, ["EX01\\Relay"]), (advice.UNKNOWN_CONNECTOR, [None])]
    # A connector whose prefix is no server's still gets its commands (on the first server).
    odd = replace(old, connectors=("\\", "EX01\\Relay"))
    assert Sighting(1018, "EX01", "\\") in sightings_of(odd)


def test_the_directory_tells_the_story_and_the_alert_never_contradicts_it():
    """Granted in the directory although Exchange logged 1018: the Directory line, the
    diagnosis and the fix agree (no grant), and they say whether events came after."""
    fact = ConnectorFact("EX01", "Client Frontend EX01", found=True, right="granted",
                         why="granted", trustee="CONTOSO\\Scanners",
                         trustee_sid="S-1-5-21-1-2-3-1107", inherited=False,
                         permission_groups=("ExchangeUsers",), auth=("BasicAuth",))
    finding = Finding("CONTOSO\\svc", T0 + timedelta(minutes=5), found=True,
                      sid="S-1-5-21-1-2-3-1200", rid=1200, connectors=(fact,))
    inc = Incident(id=4, key="contoso\\svc", account="CONTOSO\\svc", status="open",
                   channel=CHANNEL, first_seen=T0, last_seen=T0 + timedelta(minutes=9),
                   event_count=5, servers=(("EX01", "EX01"),),
                   connectors=("EX01\\Client Frontend EX01",), event_ids=(1018,), opened_at=T0)
    _, blocks = alerts.alert(inc, SERVERS, finding=finding)
    words = prose(blocks)
    assert "Submit granted (through CONTOSO\\Scanners)" in words     # the Directory line
    assert CAUSES[advice.GRANTED_IN_DIRECTORY][0] in words
    assert "Events were logged after the directory showed the right" in words
    assert "Add-ADPermission" not in "\n".join(preformatted(alerts.fix_message(
        inc, SERVERS, finding)[1]))
    quiet = replace(inc, last_seen=T0 + timedelta(minutes=1))
    assert "No event has been logged since the directory showed the right" in prose(
        alerts.alert(quiet, SERVERS, finding=finding)[1])


def test_a_deny_the_directory_found_is_removed_not_granted_around():
    fact = ConnectorFact("EX01", "Client Frontend EX01", found=True, right="denied",
                         why="denied", trustee="CONTOSO\\NoMail",
                         trustee_sid="S-1-5-21-1-2-3-1300", inherited=False,
                         permission_groups=("ExchangeUsers",))
    finding = Finding("CONTOSO\\svc", T0, found=True, sid="S-1-5-21-1-2-3-1200", rid=1200,
                      connectors=(fact,))
    [d] = diagnose("CONTOSO\\svc", [Sighting(1018, "EX01", "EX01\\Client Frontend EX01")],
                   HOSTS, SERVERS, finding=finding)
    assert d.cause == advice.DENY_DECIDES and not d.grants
    assert [f.id for f in d.advice.fixes] == ["remove_deny", "leave_group"]
    assert ("Remove-ADPermission -User 'S-1-5-21-1-2-3-1300' -ExtendedRights "
            "'ms-Exch-SMTP-Submit' -Deny" in "\n".join(d.advice.fixes[0].lines()))
    assert "Submit denied by a Deny entry (for CONTOSO\\NoMail)" in finding.summary()


def test_an_edge_server_gets_edge_advice_and_no_directory_verdict():
    edge = {"EX01": replace(server("EX01", "2019"), role="Edge")}
    fact = ConnectorFact("EX01", "Default internal receive connector EX01", found=True,
                         right="granted", why="granted")
    finding = Finding("EDGE\\svc", T0, found=True, connectors=(fact,))
    [d] = diagnose("EDGE\\svc", [Sighting(1018, "EX01", "EX01\\Default internal receive "
                                                        "connector EX01")],
                   HOSTS, edge, finding=finding)
    assert d.cause == advice.EDGE_TRANSPORT and d.advice.verdict is None
    assert "on the Edge Transport server itself" in d.advice.where


# --- the commands: every argument one literal equal to the input --------------------------------

QUOTES = "'\u2018\u2019\u201a\u201b"


@pytest.mark.parametrize("account", ["CONTOSO\\Administrator", "printer@contoso.com",
                                     *[f"CONTOSO\\o{q}b{q}{q}" for q in QUOTES],
                                     "CONTOSO\\$(whoami) `n ;|&"])
def test_the_sid_command_parses_with_the_account_as_one_literal(account):
    pipeline = parse_pipeline(sid_command(account))
    assert pipeline.names == ("New-Object", "ForEach-Object")
    arg = pipeline.commands[0].arg("-ArgumentList")
    assert arg.is_verbatim_literal and arg.value == account
    for q in QUOTES:   # the five single-quote characters, each doubled with itself
        assert sid_command(account).count(q) == 2 * account.count(q) + (2 if q == "'" else 0)


@pytest.mark.parametrize("connector", ["EX01\\Relay", "EX01\\O'Brien’s relay"])
def test_the_inspect_command_is_read_only_and_quotes_the_connector(connector):
    pipeline = parse_pipeline(inspect_connector_command(connector))
    assert pipeline.names == ("Get-ReceiveConnector", "Format-List")
    assert pipeline.commands[0].arg("-Identity").value == connector
    assert {"Bindings", "RemoteIPRanges", "PermissionGroups", "AuthMechanism"} <= set(
        pipeline.commands[1].positional[0].items)


def test_every_command_of_every_cause_parses():
    sightings = [Sighting(1018, "EX01", "EX01\\Relay ‘A’"), Sighting(1020, "EX01", None),
                 Sighting(1020, "EX02", "EX02\\Client EX02"), Sighting(1018, "EX03", None),
                 Sighting(1018, "EX01", "EX01\\Default Frontend EX01"),
                 Sighting(1018, "EX02", "EX02\\Client EX02")]
    account = "CONTOSO\\O'Brien’s"
    text = []
    for d in diagnose(account, sightings, HOSTS, SERVERS):
        text += preformatted(alerts.diagnosis_blocks(d, full=True))
    lines = [line for block in text for line in block.splitlines() if not line.startswith("#")]
    assert sum("Add-ADPermission" in line for line in lines) >= 6
    for line in lines:
        pipeline = parse_pipeline(line)
        for command in pipeline.commands:
            for param, arg in command.params:
                if param.lower() in ("-user", "-argumentlist"):
                    assert arg.is_verbatim_literal and arg.value == account


@pytest.mark.parametrize("identity, version, default", [
    ("EX01\\Client Frontend EX01", "2016", True), ("EX01\\Default EX01", "2016", True),
    ("EX01\\Client EX01", "2016", False), ("EX01\\Client Frontend EX01", "2010", False),
    ("EX01\\Client EX01", "2010", True), ("EX01\\Default Frontend EX01", "2010", False),
    ("EX01\\Client Frontend EX01", None, True), ("EX01\\Client EX01", None, False),
    ("EX01\\Relay EX01", "2016", False), ("EX01\\Relay EX01", "2010", False),
    ("EX01\\Client Frontend EX02", "2016", False),
])
def test_default_connectors_per_version(identity, version, default):
    # A version that is not known is taken to be 2013 or later.
    defaults = {c.identity for c in default_receive_connectors("EX01.contoso.local", version)}
    assert (identity in defaults) is default


# --- names: invisible characters and look-alike scripts -----------------------------------------

@pytest.mark.parametrize("ch", ["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\U000e0001",
                                "\U000e0041", "\u115f", "\u1160", "\u3164", "\uffa0", "\u202e"])
def test_characters_that_draw_nothing_are_invisible(ch):
    assert is_invisible(ch)


@pytest.mark.parametrize("name, words", [
    ("CONTOSO\\\u0430dmin", ["\u0430dmin"]),             # Cyrillic а in a Latin word
    ("CONTOSO\\p\u0430yp\u0430l@x.com", ["p\u0430yp\u0430l"]),
    ("CONTOSO\\\u03bfffice", ["\u03bfffice"]),           # Greek ο
    ("CONTOSO\\Сканер", []), ("КОНТОСО\\Сканер", []),    # one script per word: honest
    ("CONTOSO\\jürgen.müller", []), ("CONTOSO\\山田", []),
])
def test_mixed_scripts_are_found_per_word(name, words):
    assert mixed_script_words(name) == words
    assert (mixed_script_warning(name) is not None) == bool(words)


_pieces = st.sampled_from(["\u200b", "\u200d", "\u2060", "\ufeff", "\U000e0041", "\u3164",
                           "\u115f", "\u00ad", "*", "_", "~", "`", ">", "*bold*", "_i_", "~s~",
                           "\u0430", "\u03bf", "a", "CONTOSO\\", "<!channel>", "&", " "])
_names = st.lists(st.one_of(_pieces, _pieces, st.characters(exclude_categories=("Cs",))),
                  min_size=1, max_size=20).map("".join).filter(lambda s: s.strip())


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(account=_names, connector=_names)
def test_names_are_refused_or_shown_literally_never_invisible_in_a_command(account, connector):
    inc = Incident(id=3, key=account.casefold(), account=account, status="open",
                   channel=CHANNEL, first_seen=T0, last_seen=T0, event_count=1,
                   servers=(("EX01", "EX01"),), connectors=(f"EX01\\{connector}",),
                   event_ids=(1018, 1020), opened_at=T0,
                   sightings=(Sighting(1018, "EX01", f"EX01\\{connector}"),
                              Sighting(1020, "EX01", None)))
    for text, blocks in (alerts.alert(inc, SERVERS), alerts.fix_message(inc, SERVERS)):
        assert validate_blocks(blocks) == []
        for command in preformatted(blocks):
            hidden = [c for c in command if is_invisible(c) or unicodedata.category(c) == "Cc"
                      and c != "\n"]
            assert not hidden, (command, hidden)
        # Prose: the name as one literal rich-text element (invisibles escaped), never mrkdwn.
        texts = [e["text"] for e in rich_elements(blocks) if e["type"] == "text"]
        assert not any(is_invisible(c) for t in texts for c in t)
        for mrkdwn in mrkdwn_texts(blocks) + [text]:
            assert not any(is_invisible(c) for c in mrkdwn)
        assert {e["type"] for e in rich_elements(blocks)} <= {"text", "date", "emoji"}
    try:
        check_value(account, "account")
    except UnsafeValueError:
        assert "Add-ADPermission" not in json.dumps(alerts.alert(inc, SERVERS)[1])


# --- the parser keeps 1020's connector ----------------------------------------------------------

@pytest.mark.parametrize("provider", [FE, BE])
@pytest.mark.parametrize("event_id", [1018, 1020])
def test_both_events_name_the_connector_when_it_is_there(provider, event_id):
    log = EventLog("EX01.contoso.local")
    with_name = log.append_refusal(event_id, "CONTOSO\\x", "Client Frontend EX01",
                                   provider=provider)
    log.connector_in_1020 = False
    without = log.append_refusal(event_id, "CONTOSO\\x", provider=provider)
    batch = parse_events("<Events>" + event_xml(with_name) + event_xml(without) + "</Events>",
                         "EX01")
    assert batch.problems == []
    named, bare = batch.events
    assert named.connector == "EX01\\Client Frontend EX01"
    # Exchange always logs the connector; a 1020 without it (older documentation) has none.
    assert bare.connector == ("EX01\\Client Frontend EX01" if event_id == 1018 else None)


# --- the whole way: simulator -> real pywinrm -> SQLite -> the Slack stand-in -------------------

def alert_of(slack, account):
    [message] = [m for m in slack.messages(CHANNEL)
                 if m["blocks"][0]["text"]["text"].endswith(account)]
    return message


def test_events_through_the_real_pipeline_get_the_cause_exchange_logged(
        logs, make_config, db, slack, clock):
    config = make_config(servers=({"name": "EX01", "version": "2016"},
                                  {"name": "EX02", "version": "2010"}))
    logs["EX01"].append_refusal(1020, "CONTOSO\\Administrator")            # connector named
    logs["EX01"].append_refusal(1018, "CONTOSO\\app-erp", "Relay EX01", provider=BE)
    logs["EX02"].connector_in_1020 = False
    logs["EX02"].append_refusal(1020, "CONTOSO\\scan2010")                 # none named
    sweep(db, config, clock)
    admin = alert_of(slack, "CONTOSO\\Administrator")["blocks"]
    assert f"{CAUSES[advice.BUILTIN][0]} on EX01" in prose(admin)
    assert "EX01\\Client Frontend EX01 (1020)" in prose(admin)       # from the event
    assert "a guess" not in prose(admin)
    assert "Add-ADPermission" not in "\n".join(preformatted(admin))
    erp = alert_of(slack, "CONTOSO\\app-erp")["blocks"]
    assert CAUSES[advice.CUSTOM_NO_USERS][0] in prose(erp)
    assert "Get-ReceiveConnector -Identity 'EX01\\Relay EX01' | Format-List" in preformatted(
        erp)[0]
    assert "not one of Exchange's defaults" in prose(erp)
    legacy = alert_of(slack, "CONTOSO\\scan2010")["blocks"]
    assert "(event 1020, Exchange 2007/2010) on EX02" in prose(legacy)
    [sid] = preformatted(legacy)          # no connector named: the check; no grant to guess
    assert "NTAccount" in sid and "Add-ADPermission" not in sid


def test_a_first_post_shows_every_server_of_its_first_batch_without_a_thread_note(
        logs, make_config, db, slack, clock):
    config = make_config()
    logs["EX01"].append_refusal(1018, "CONTOSO\\app")
    logs["EX02"].append_refusal(1018, "CONTOSO\\app", "Relay EX02")
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert message["replies"] == []
    assert "Servers: EX01, EX02" in prose(message["blocks"])
    # Once posted, spreading further is news: a thread note.
    clock.advance(seconds=30)
    logs["EX02"].append_refusal(1018, "CONTOSO\\app", "Client Frontend EX02")
    sweep(db, config, clock)
    [reply] = slack.messages(CHANNEL)[0]["replies"]
    assert "connector named by the event: *EX02\\Client Frontend EX02*" in reply["text"]


def test_the_migration_fills_sightings_from_stored_events(db_path):
    db = open_db(db_path, migrate=False)
    migrations.apply(db, stop_before="m007_sightings")
    db["incidents"].insert({"id": 1, "key": "k", "account": "A", "status": "open", "channel": "C",
                            "first_seen": "2026-03-08T08:00:00Z", "last_seen": "2026-03-08T09:00:00Z",
                            "event_count": 3, "servers": '[["EX01", "EX01"], ["EX02", "EX02"]]',
                            "connectors": '["EX01\\\\Relay"]', "event_ids": "[1018, 1020]",
                            "opened_at": "2026-03-08T08:00:00Z"})
    for n, (server, event_id, connector, minute) in enumerate(
            [("EX02", 1020, None, 5), ("EX01", 1018, "EX01\\Relay", 1), ("EX01", 1018,
                                                                          "EX01\\Relay", 9)]):
        db["events"].insert({"server": server, "generation": 0, "record_id": n + 1,
                             "provider": FE, "event_id": event_id,
                             "time": f"2026-03-08T08:{minute:02d}:00Z", "account": "A",
                             "account_key": "a", "connector": connector, "incident_id": 1,
                             "stored_at": "2026-03-08T09:00:00Z"})
    migrations.apply(db)
    assert store.get_incident(db, 1).sightings == (Sighting(1018, "EX01", "EX01\\Relay"),
                                                   Sighting(1020, "EX02", None))
    db.conn.close()


def test_rendered_alerts_for_every_cause_fit_block_kit(db):
    sightings = tuple(Sighting(event_id, name, f"{name}\\Relay {n}") for n in range(8)
                      for name in ("EX01", "EX02", "EX03") for event_id in (1018, 1020))
    inc = Incident(id=9, key="k", account="CONTOSO\\x", status="open", channel=CHANNEL,
                   first_seen=T0, last_seen=T0 + timedelta(hours=1), event_count=48,
                   servers=tuple((n, n) for n in ("EX01", "EX02", "EX03")),
                   connectors=tuple(s.connector for s in sightings), event_ids=(1018, 1020),
                   opened_at=T0, sightings=sightings)
    for _text, blocks in (alerts.alert(inc, SERVERS), alerts.fix_message(inc, SERVERS)):
        assert validate_blocks(blocks) == [] and len(blocks) <= 50
    blocks = alerts.alert(inc, SERVERS)[1]
    assert [b["type"] for b in blocks[-3:]] == ["rich_text", "actions", "context"]  # kept
    assert "SubmitWatch · incident #9" in blocks[-1]["elements"][0]["text"]

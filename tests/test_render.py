"""The alert message: what it says, and that nothing from an event can ping, link or inject."""
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import ServerConfig
from bot.core.messages import SpreadNote
from bot.core.model import Incident
from bot.exchange.advice import (
    BUILTIN,
    CAUSES,
    INTERNET_AUTH,
    SHOULD_ADMIT,
    UNKNOWN_CONNECTOR,
    advise,
)
from bot.slack import alerts
from bot.slack.blocks import BUDGET, size
from bot.slack.richtext import visible
from bot.slack.text import MORE_PER_CONNECTOR
from sim.slack_blocks import validate_blocks
from tests.blocks import mrkdwn_texts, preformatted, prose, rich_elements
from tests.pwsh_parse import parse_pipeline

T0 = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)
SERVERS = {"EX01": ServerConfig(name="EX01", url="https://ex01:5986/wsman", username="u",
                                password_env="P")}


def incident(account="CONTOSO\\svc-scanner", connectors=(), servers=(("EX01", "EX01"),),
             status="open", count=3):
    return Incident(id=12, key=account.casefold(), account=account, status=status,
                    channel="C0ALERTS", first_seen=T0, last_seen=T0 + timedelta(minutes=9),
                    event_count=count, servers=servers, connectors=connectors,
                    event_ids=(1018,) if connectors else (1020,), opened_at=T0,
                    resolved_at=T0 + timedelta(hours=30) if status == "resolved" else None)


def test_a_1018_alert_explains_and_gives_the_exact_commands():
    inc = incident(connectors=("EX01\\Client Frontend EX01",))
    text, blocks = alerts.alert(inc, SERVERS)
    assert validate_blocks(blocks) == []
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                                    "text": "SMTP submit denied: CONTOSO\\svc-scanner"}}
    words = prose(blocks)
    # Client Frontend admits every signed-in account: a 1018 there is a Deny or a changed
    # DACL, so the first thing is the listing of what decides, and a grant only second.
    assert CAUSES[SHOULD_ADMIT][0] in words
    assert "Rests on: Microsoft documentation, Exchange code, inference." in words
    assert "Events: 3" in words and "EX01\\Client Frontend EX01 (1018)" in words
    advice = advise(1018, inc.account, "EX01", "EX01\\Client Frontend EX01")
    first, second = advice.fixes
    assert f"What to do: {first.title}" in words
    assert f"Other fixes: 2. {second.title}. Show fix gives their commands." in words
    [commands] = preformatted(blocks)
    assert commands.splitlines() == first.lines()
    assert "Add-ADPermission" not in commands     # the grant is in Show fix, second
    assert text == "SMTP submit denied: CONTOSO\\svc-scanner on EX01 (3 events)"


def test_show_fix_gives_every_fix_in_order_with_its_commands_and_how_to_verify():
    inc = incident(connectors=("EX01\\Default Frontend EX01",))
    _, blocks = alerts.fix_message(inc, SERVERS)
    assert validate_blocks(blocks) == []
    words = prose(blocks)
    advice = advise(1018, inc.account, "EX01", "EX01\\Default Frontend EX01")
    assert advice.cause == INTERNET_AUTH and CAUSES[INTERNET_AUTH][0] in words
    titles = [f"{n}. {fix.title}" for n, fix in enumerate(advice.fixes, 1)]
    assert [words.index(t) for t in titles] == sorted(words.index(t) for t in titles)
    assert "port 587" in titles[0] and "widens the internet-facing connector" in titles[-1]
    commands = "\n".join(preformatted(blocks))
    for fix in advice.fixes:
        assert "\n".join(fix.lines()) in commands
    assert "Verify: " in words and advice.verify[0].command in commands


def test_a_1018_with_no_connector_named_says_so_and_how_to_list_them():
    inc = replace(incident(), event_ids=(1018,))
    words = prose(alerts.alert(inc, SERVERS)[1])
    assert CAUSES[UNKNOWN_CONNECTOR][0] in words and "no event named a connector" in words
    [commands] = preformatted(alerts.alert(inc, SERVERS)[1])
    assert "Get-ReceiveConnector -Server 'EX01' | Format-Table" in commands
    assert "Add-ADPermission" not in commands     # no grant on a connector nobody named


def test_a_1020_alert_says_built_in_identity_and_offers_no_grant():
    _, blocks = alerts.alert(incident(account="CONTOSO\\Administrator"), SERVERS)
    words = prose(blocks)
    assert CAUSES[BUILTIN][0] in words
    assert "cannot fix this" in words and "an account of its own" in words
    assert "transport code checks for them before it reads any permission" in words
    # No version configured: the rule is 2013's code, inferred for the others, and says so.
    assert "inferred from 2013's code" in words and "inference" in words
    [commands] = preformatted(blocks)
    assert "Add-ADPermission" not in commands
    assert "NTAccount -ArgumentList 'CONTOSO\\Administrator'" in commands


def test_a_configured_submission_connector_is_used_and_named_as_such():
    servers = {"EX01": ServerConfig(name="EX01", url="https://ex01:5986/wsman", username="u",
                                    password_env="P", submission_connector="EX01\\Scanners")}
    _, blocks = alerts.alert(replace(incident(), event_ids=(1018,)), servers)
    assert "configured as this server's submission connector" in prose(blocks)
    assert "-Identity 'EX01\\Scanners'" in preformatted(blocks)[0]


HOSTILE = [
    "<!channel>", "<!here> hi", "<@U0123ABC>", "<!subteam^S012|ops>", "<https://evil.example|click>",
    "a & b", "```\n<!channel>```", "`x` *bold* _i_ ~s~", "CONTOSO\\O'Brien’s", "$(Remove-Item C:\\)",
]


@pytest.mark.parametrize("account", HOSTILE)
def test_event_text_can_never_ping_link_or_break_out(account):
    inc = incident(account=account, connectors=(f"EX01\\{account}",))
    text, blocks = alerts.alert(inc, SERVERS)
    for mrkdwn in mrkdwn_texts(blocks) + [text]:
        # Our own <!date^...> tokens are the only angle brackets allowed.
        stripped = mrkdwn
        for token in ("<!date^",):
            while token in stripped:
                start = stripped.index(token)
                stripped = stripped[:start] + stripped[stripped.index(">", start) + 1:]
        assert "<" not in stripped and ">" not in stripped
        assert "&" not in stripped.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
    # In rich text the name is one literal text element: never a mention, link or broadcast.
    kinds = {e["type"] for e in rich_elements(blocks)}
    assert kinds <= {"text", "date", "emoji"}, kinds
    assert any(visible(account) in e["text"] for e in rich_elements(blocks) if e["type"] == "text")
    assert validate_blocks(blocks) == [] or "\n" in account  # refusal path checked below


@pytest.mark.parametrize("account", ["*boss*", "_x_", "~gone~", "`code`", "> quote"])
def test_mrkdwn_markers_in_a_name_are_shown_as_they_are(account):
    _, blocks = alerts.alert(incident(account=account, connectors=("EX01\\*Relay*",)), SERVERS)
    texts = [e["text"] for e in rich_elements(blocks) if e["type"] == "text"]
    assert any(account in t for t in texts) and "EX01\\*Relay*" in texts
    assert all(account not in m for m in mrkdwn_texts(blocks))  # never where Slack formats


def test_commands_for_hostile_names_are_literal_arguments_equal_to_the_input():
    account = "CONTOSO\\O'Brien’s $(whoami) `n <!channel>"
    inc = incident(account=account, connectors=("EX01\\Default Frontend EX01",))
    commands = "\n".join(preformatted(alerts.fix_message(inc, SERVERS)[1]))
    grant = next(line for line in commands.splitlines() if "Add-ADPermission" in line)
    pipeline = parse_pipeline(grant)
    user = pipeline.commands[1].arg("-User")
    assert user.is_verbatim_literal and user.value == account


def test_an_unsafe_name_gets_no_command_and_a_reason():
    for event_id, connectors in ((1018, ("EX01\\Client Frontend EX01",)), (1020, ())):
        inc = replace(incident(account="evil\nGet-Process", connectors=connectors),
                      event_ids=(event_id,))
        for _, blocks in (alerts.alert(inc, SERVERS), alerts.fix_message(inc, SERVERS)):
            assert preformatted(blocks) == []
            words = prose(blocks)
            assert "No command is shown" in words and "line break" in words
            assert validate_blocks(blocks) == []


def test_an_unsafe_name_still_gets_the_commands_that_do_not_name_it():
    inc = replace(incident(account="evil\nGet-Process"), event_ids=(1018,))
    [commands] = preformatted(alerts.alert(inc, SERVERS)[1])
    assert commands.splitlines()[1] == ("Get-ReceiveConnector -Server 'EX01' | Format-Table "
                                        "Identity,Bindings,AuthMechanism,PermissionGroups,"
                                        "TransportRole")


def test_very_long_names_stay_within_block_kit_limits():
    account = "CONTOSO\\" + "<&>" * 340  # 1028 chars, over the quoting limit too
    _, blocks = alerts.alert(incident(account=account, connectors=("EX01\\" + "c" * 900,)), SERVERS)
    assert validate_blocks(blocks) == []
    assert len(blocks[0]["text"]["text"]) <= 150
    _, blocks = alerts.alert(incident(account="A" * 1000), SERVERS)
    assert validate_blocks(blocks) == []


def test_control_and_invisible_characters_are_shown_visibly_in_prose():
    assert alerts.show("a\x1bb") == "a\\x1bb"
    assert alerts.show("a\u200bb\u3164c") == "a\\x200bb\\x3164c"
    _, blocks = alerts.alert(incident(account="CONTOSO\\ad\u200bmin"), SERVERS)
    assert "CONTOSO\\ad\\x200bmin" in prose(blocks)
    assert not any("\u200b" in e.get("text", "") for e in rich_elements(blocks))


def test_a_name_mixing_latin_and_cyrillic_in_one_word_gets_a_warning():
    _, blocks = alerts.alert(incident(account="CONTOSO\\\u0430dmin"), SERVERS)  # Cyrillic а
    assert "mixes Latin letters with Cyrillic letters" in prose(blocks)
    _, blocks = alerts.alert(incident(account="CONTOSO\\Сканер"), SERVERS)  # one script a word
    assert "mixes" not in prose(blocks)


def test_resolved_alert_says_so_and_drops_the_commands():
    text, blocks = alerts.alert(incident(status="resolved"), SERVERS)
    assert blocks[0]["text"]["text"].startswith("Resolved: ")
    assert text.startswith("Resolved: ")
    assert preformatted(blocks) == []
    assert "A new event opens a new alert" in prose(blocks)


def test_thread_note_for_a_new_server_carries_its_fix():
    inc = replace(incident(servers=(("EX01", "EX01"), ("EX02", "EX02"))), event_ids=(1018,))
    text, blocks = alerts.thread_note(inc, SpreadNote(servers=("EX02",)), SERVERS)
    assert "now also seen on *EX02*" in text
    [commands] = preformatted(blocks)
    assert "Get-ReceiveConnector -Server 'EX02'" in commands and "EX01" not in commands


def test_the_whole_message_is_json_serialisable():
    json.dumps(alerts.alert(incident(), SERVERS)[1])


QUOTES = "'\u2018\u2019\u201a\u201b"


@pytest.mark.parametrize("account", [a for a in HOSTILE if "\n" not in a] + [f"CONTOSO\\{q}x{q}{q}" for q in QUOTES] + [
    "CONTOSO\\" + "'" * 300, "DOMAIN\\ünïcødé-名前-🙂", "a;b|c&d#e", "${env:PATH}@(1)"])
def test_every_command_in_the_alert_parses_with_arguments_equal_to_the_input(account):
    connector = f"EX01\\{account}"
    _, blocks = alerts.fix_message(incident(account=account, connectors=(connector,)), SERVERS)
    lines = [line for commands in preformatted(blocks) for line in commands.splitlines()
             if not line.startswith("#")]
    # A custom connector: what it accepts (stop signing in; add ExchangeUsers), the dry run,
    # grant and undo of Submit and of Accept-Any-Recipient, and the listing that verifies.
    # 300 quotes, doubled in each of them, pass what one Slack message holds: the message is
    # cut within the budget and says where the rest is.
    assert size(blocks) <= BUDGET
    if account.count("'") == 300:
        assert 0 < len(lines) < 9 and MORE_PER_CONNECTOR in mrkdwn_texts(blocks)
        return
    assert len(lines) == 9
    assert sum("Add-ADPermission" in line for line in lines) == 4
    for line in lines:
        pipeline = parse_pipeline(line)  # fails on any parse error or smart quote left single
        first = pipeline.commands[0]
        assert first.arg("-Identity").is_verbatim_literal
        assert first.arg("-Identity").value == connector
        if "Add-ADPermission" in line or "Remove-ADPermission" in line:
            second = pipeline.commands[1]
            assert second.arg("-User").is_verbatim_literal and second.arg("-User").value == account


def test_backticks_in_names_cannot_open_or_close_code_spans():
    account = "CONTOSO\\a`b"
    inc = incident(account=account, connectors=("EX01\\Default Frontend EX01",))
    text, _ = alerts.alert(inc, SERVERS)
    blocks = alerts.fix_message(inc, SERVERS)[1]
    assert "CONTOSO\\a\u02cbb" in text                # the mrkdwn fallback gets the twin
    assert account in prose(blocks)                    # rich text shows the exact name
    assert f"-User '{account}'" in "\n".join(preformatted(blocks))  # the exact name


@pytest.mark.parametrize("account", HOSTILE)
def test_thread_notes_escape_names_too(account):
    inc = incident(account=account, connectors=(f"EX01\\{account}",),
                   servers=(("EX01", "EX01"), ("EX02", "EX02")))
    text, blocks = alerts.thread_note(inc, SpreadNote(("EX02",), (f"EX01\\{account}",)),
                                      SERVERS)
    for mrkdwn in mrkdwn_texts(blocks) + [text]:
        assert "<" not in mrkdwn and ">" not in mrkdwn
        assert "&" not in mrkdwn.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")


def test_an_unset_connector_role_reads_as_hub_transport_as_exchange_reads_it():
    from bot.core.findings import ConnectorFact, Finding
    fact = ConnectorFact("EX01", "Relay", found=True, right="not granted", role=None,
                         auth=("Tls",))
    words = prose(alerts.directory_blocks(Finding("CONTOSO\\a", T0, found=True,
                                                   connectors=(fact,))))
    assert "role HubTransport (unset)" in words and "role unset" not in words

"""Hostile input, property-based: account and connector names (the untrusted %1/%2 of events)
and slash-command text can never ping, link, spoof, break out of a code span, inject
PowerShell or break Block Kit; XML bombs and oversized events are refused without harm.

What tests/test_render.py, test_remediation.py, test_lookups.py and test_parse.py already pin with
fixed examples (and remediation's own property tests) is not repeated; this file generates input
and runs it through every renderer, the slash commands on a real SQLite file, the outbox's
thread notes and the App Home.

Two oracles besides the structural checks:
* twin rendering: each input is rendered a second time with every backtick replaced by U+02CB
  (what `show` prints instead); every mrkdwn text must come out identical, so no backtick from
  data ever reaches mrkdwn, where it could open or close a code span;
* tree-sitter-powershell (tests/pwsh_parse.py): every command line parses and each untrusted
  argument is one verbatim literal whose PowerShell value is exactly the input.

Hypothesis runs derandomized with no example database, so CI sees the same examples every run.
"""
from __future__ import annotations

import re
import socket
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.core.config import parse_config
from bot.core.messages import ActionNote, ServerDown, ServerUp, SpreadNote, note_of
from bot.core.model import Event, Incident, Snooze
from bot.engine.poller import ingest, poll_server_once
from bot.exchange.remediation import UnsafeValueError, check_value, connector_identity
from bot.slack import alerts
from bot.sources.parse import MAX_EVENT_CHARS, parse_event, parse_events
from bot.sources.winrm import WinRMSource
from handlers.commands import answer
from handlers.common import MAX_TEXT, CommandError, Request, words_of
from handlers.home import home_view
from sim.slack_blocks import validate_blocks
from store import db as store
from store.db import open_db, write_transaction
from tests.pwsh_parse import parse_pipeline

NOW = datetime(2026, 3, 8, 15, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=3)
FE = "MSExchangeFrontEndTransport"
ALICE, MALLORY = "U0ALICE", "U0MALLORY"    # Slack user IDs (Slack vouches for these)
CHANNELS = ("C0ALERTS", "C0EX02")
TWIN = "\u02cb"                             # what `show` prints for a backtick

PROP = settings(derandomize=True, database=None, deadline=None, max_examples=250,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SLOW_PROP = settings(PROP, max_examples=100)

# --- the input ----------------------------------------------------------------------------------

#: Pieces that mean something to Slack, mrkdwn, PowerShell, the command parser or a terminal.
PIECES = [
    "<!channel>", "<!here>", "<!everyone>", "<@U0BOSS>", "<@W0BOSS|boss>", "<!subteam^S0OPS|ops>",
    "<#C0SECRET>", "<https://evil.example|click here>", "<mailto:a@evil.example|mail>",
    "&lt;!channel&gt;", "&lt;@U0BOSS&gt;", "&amp;", "&amp;lt;", "&#60;!here&#62;", "&", "<", ">",
    "`", "```", "*", "_", "~", "> quote", ":rotating_light:", "'", "\u2018", "\u2019", "\u201a",
    "\u201b", '"', "\u201c", "\u201d", "\\", "CONTOSO\\", "$(Remove-Item C:\\)", "${env:PATH}",
    "; Stop-Service x", "| Out-Null", "@'", "'@", "#", "#42", "#1", "--since", "--limit", "--share",
    "-WhatIf", "\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\x00", "\n", "\r\n", "\t",
    "\x1b[31m", "\x85", "\u2028", " ", "  ", "EX01", "EX01\\Client Frontend EX01", "ü", "名前",
    "🙂",
]
_char = st.characters(exclude_characters=TWIN, exclude_categories=("Cs",))
hostile = st.lists(st.one_of(st.sampled_from(PIECES), st.sampled_from(PIECES), _char),
                   max_size=25).map("".join)
#: Long runs of what escaping makes longer (one character becomes five): the limits' worst case.
long_runs = st.tuples(st.sampled_from(["&", "<", ">", "<&>", "`", "'", "a"]),
                      st.integers(50, 1200)).map(lambda t: t[0] * t[1])
text = st.one_of(hostile, hostile, hostile, long_runs)
names = text.filter(lambda s: s.strip() != "")
user_ids = st.one_of(st.sampled_from([ALICE, "W0BOB", "U" + "A" * 30]), text)

#: Inputs every property gets besides the generated ones.
SPECIAL = ["&lt;!channel&gt; please", "<!here> & <@U0BOSS>", "```\n<!channel>```",
           "\u202eevil\u202c\u200b", "a\x00b", "x" * 10_000, "<&>" * 3_400, "`" * 3000,
           "O'Brien\u2019s \"quoted\" \\share\\"]


def twin(value):
    """The same input with every backtick as U+02CB: mrkdwn must not tell them apart."""
    return value.replace("`", TWIN) if isinstance(value, str) else value


def slack_encoded(value: str) -> str:
    """Slash-command text as Slack sends it: &, < and > as HTML entities."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the checks ---------------------------------------------------------------------------------

_DATE = r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: -]+UTC>"
_OURS = re.compile(rf"{_DATE}|<@[UW][A-Z0-9]+>|<#[CG][A-Z0-9]+>|<!subteam\^S[A-Z0-9]+>")
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def walk(node, found):
    """(kind, text) of every text object: 'mrkdwn', 'plain_text' or 'rich' (preformatted)."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("mrkdwn", "plain_text"):
            found.append((kind, node["text"]))
        elif kind == "rich_text_preformatted":
            found += [("rich", el["text"]) for el in node["elements"]]
            return found
        for value in node.values():
            walk(value, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, found)
    return found


def mrkdwn_of(text, blocks):
    return [text] + [t for kind, t in walk(blocks or [], []) if kind == "mrkdwn"]


def commands_of(blocks):
    return [line for kind, t in walk(blocks or [], []) if kind == "rich"
            for line in t.split("\n") if not line.startswith("# ")]


def assert_inert_mrkdwn(text: str, mentions: set[str]) -> None:
    """Only our own tokens may use <, > and &; data can never ping, link or hide characters."""
    for token in re.findall(r"<@([^>|]*)", text):
        assert token in mentions, f"a mention of {token!r} came from data: {text!r}"
    for ping in ("<!channel", "<!here", "<!everyone"):
        assert ping not in text, text
    assert not re.search(r"<(https?|mailto):", text), f"a link: {text!r}"
    rest = _OURS.sub("", text)
    assert "<" not in rest and ">" not in rest, f"an unescaped angle bracket: {text!r}"
    bare = re.search(r"&(?!amp;|lt;|gt;)", rest)
    assert not bare, f"a bare & (or an entity cut in half) at {bare.start()}: {rest[-60:]!r}"
    hidden = [c for c in text if c != "\n" and (unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                                                or c in _BIDI)]
    assert not hidden, f"invisible or control characters {hidden!r} reached mrkdwn"


def check_message(text, blocks, *, mentions=(), max_blocks=50) -> None:
    """Every rule for one Slack message (or Home tab): fallback text, blocks, plain text."""
    mentions = set(mentions)
    assert isinstance(text, str) and text.strip(), "a fallback text is always sent"
    for mrkdwn in mrkdwn_of(text, blocks):
        assert_inert_mrkdwn(mrkdwn, mentions)
    for kind, value in walk(blocks or [], []):
        if kind == "plain_text":
            bad = [c for c in value if not c.isprintable() and c != " "]
            assert not bad, f"control characters {bad!r} in plain_text {value!r}"
    if blocks is not None:
        assert validate_blocks(blocks, max_blocks=max_blocks) == []


def assert_same_mrkdwn(out, out_twin) -> None:
    assert len(out) == len(out_twin)
    for (label, text, blocks), (_, text2, blocks2) in zip(out, out_twin, strict=True):
        assert mrkdwn_of(text, blocks) == mrkdwn_of(text2, blocks2), (
            f"{label}: a backtick from data reached mrkdwn (it could open or close a code span)")


def check_commands(blocks, *, account: str | None, identities=None, servers=None) -> int:
    """Every command line parses as one pipeline; -User/-Identity/-Server are verbatim literals
    equal to what they must be. Returns how many command lines there were."""
    lines = commands_of(blocks)
    for line in lines:
        pipeline = parse_pipeline(line)     # fails on any error, second statement, stray quote
        for command in pipeline.commands:
            users = [p.lower() for p, _ in command.params].count("-user")
            if command.name in ("Add-ADPermission", "Remove-ADPermission"):
                assert users == 1, line
            elif command.name == "Get-ADPermission":
                # The read-only listing shows every entry on the connector, whoever it names:
                # `-User X` would hide grants and Deny entries through X's groups.
                assert users == 0 and pipeline.names[0] == "Get-ReceiveConnector", line
            if command.name.endswith(("ADPermission", "ReceiveConnector")):
                assert command.positional == (), line
            for param, arg in command.params:
                expected = {"-user": {account}, "-identity": identities,
                            "-server": servers}.get(param.lower(), False)
                if expected is False:
                    continue
                assert arg is not None and arg.is_verbatim_literal, (param, arg)
                if expected is not None:
                    assert arg.value in expected, (param, arg.value, expected)
    return len(lines)


def literal_values(blocks, param: str) -> set[str]:
    """The values of every `param` argument in the blocks' commands."""
    return {arg.value for line in commands_of(blocks)
            for command in parse_pipeline(line).commands
            for name, arg in command.params if name.lower() == param.lower()}


#: Cmdlets that change something; every other command only reads.
CHANGING = frozenset({"Add-ADPermission", "Remove-ADPermission", "Set-ReceiveConnector",
                      "Restart-Service"})


def connectors_in(blocks) -> tuple[set[str], set[str]]:
    """The connectors (Get-ReceiveConnector -Identity) the commands name: all of them, and
    those of commands that change something."""
    looked: set[str] = set()
    changed: set[str] = set()
    for line in commands_of(blocks):
        pipeline = parse_pipeline(line)
        for command in pipeline.commands:
            if command.name != "Get-ReceiveConnector":
                continue
            identity = {arg.value for name, arg in command.params if name.lower() == "-identity"}
            looked |= identity
            if set(pipeline.names) & CHANGING:
                changed |= identity
    return looked, changed


def refusable(*values: tuple[str, str]) -> bool:
    for value, what in values:
        try:
            check_value(value, what)
        except UnsafeValueError:
            return True
    return False


# --- A1: the pure renderers: alerts, notes, the fix, server health ------------------------------

SERVERS = {s.name: s for s in parse_config({
    "slack": {"channel": "C0ALERTS"},
    "servers": [{"name": "EX01", "url": "https://127.0.0.1:5986/wsman", "username": "u",
                 "password_env": "PW"},
                {"name": "EX02", "url": "https://127.0.0.1:5987/wsman", "username": "u",
                 "password_env": "PW", "submission_connector": "Scanners"}]},
    {"PW": "x", "SLACK_BOT_TOKEN": "xoxb-x"}).servers}


def render_everything(account, connector, host, note, by):
    """Every message bot.slack.alerts builds, for one set of untrusted values."""
    incident = Incident(
        id=7, key=account.casefold(), account=account, status="open", channel="C0ALERTS",
        first_seen=T0, last_seen=NOW, event_count=3, servers=(("EX01", "EX01"), ("EX02", host)),
        connectors=(connector,) if connector else (), event_ids=(1018, 1020), opened_at=T0,
        message_ts="1767225600.000100", acked_by=by, acked_at=NOW, ack_note=note)
    snooze = Snooze(id=1, kind="account", target=incident.key, account=account,
                    until=NOW + timedelta(hours=4), reason=note, created_by=by, created_at=T0)
    at, until = store.iso(NOW), store.iso(NOW + timedelta(hours=4))
    resolved = replace(incident, status="resolved", resolved_at=NOW, acked_by=None)
    return [
        ("alert", *alerts.alert(incident, SERVERS, [snooze])),
        ("alert, not acked", *alerts.alert(replace(incident, acked_by=None), SERVERS)),
        ("resolved", *alerts.alert(resolved, SERVERS)),
        ("fix", *alerts.fix_message(incident, SERVERS)),
        ("thread note", *alerts.thread_note(
            incident, note_of({"servers": ["EX02"], "connectors": [connector]}), SERVERS)),
        ("ack note", *alerts.action_note(incident, note_of({
            "action": "ack", "by": by, "at": at, "note": note, "took_over_from": by}))),
        ("unack note", *alerts.action_note(incident, note_of({
            "action": "unack", "by": by, "at": at, "was": by}))),
        ("snooze note", *alerts.action_note(incident, note_of({
            "action": "snooze", "by": by, "at": at, "until": until, "reason": note,
            "scope": "account"}))),
        ("unsnooze note", *alerts.action_note(incident, note_of({
            "action": "unsnooze", "by": by, "at": at}))),
        ("expiry note", *alerts.action_note(incident, note_of({
            "action": "snooze_expired", "at": at}))),
        ("server down", *alerts.server_down(host, ServerDown.of({
            "error": note, "failures": 3, "since": at}))),
        ("server back", *alerts.server_back(host, ServerUp.of({"since": at, "at": at}).since)),
        ("server up", *alerts.server_up(host, ServerUp.of({"since": at, "at": at}))),
    ]


@PROP
@given(account=names, connector=text, host=names, note=text, by=user_ids)
@example(account=SPECIAL[0], connector=SPECIAL[1], host="EX02", note=SPECIAL[6], by=ALICE)
@example(account=SPECIAL[2], connector=SPECIAL[3], host=SPECIAL[4], note=SPECIAL[5], by="<!here>")
@example(account=SPECIAL[8], connector="EX01\\" + SPECIAL[8], host="EX02", note=SPECIAL[7],
         by=ALICE)
# Found by this test: a stored connector naming no known server lost its commands.
@example(account="<!channel>", connector="\\", host="&" * 50, note="", by=ALICE)
def test_renderers_never_let_data_ping_link_or_break_out(account, connector, host, note, by):
    out = render_everything(account, connector, host, note, by)
    mentions = {by} if re.fullmatch(r"[UW][A-Z0-9]{2,20}", by) else set()
    for _label, text_, blocks in out:
        check_message(text_, blocks, mentions=mentions)
    assert_same_mrkdwn(out, render_everything(*(twin(v) for v in (account, connector, host,
                                                                   note, by))))
    # The commands: each argument one literal equal to the input, or no command and the reason.
    for label, _text, blocks in out:
        lines = check_commands(blocks, account=account)    # thread notes carry commands too
        if label not in ("alert", "alert, not acked", "fix"):
            continue
        if lines == 0:
            assert re.search(r"(account|connector|server) name (contains|is empty|is [\d,]+ "
                             r"characters long|starts with a dot)", str(blocks)), (label, blocks)
        if refusable((account, "account")):
            # No command takes the account (no grant, no SID check); one that names no account,
            # such as the listing of a server's connectors when none is known, may stay.
            assert not literal_values(blocks, "-User"), label
            assert not literal_values(blocks, "-ArgumentList"), label
        if lines and "\\" in connector and not refusable((connector, "connector")):
            assert connector in literal_values(blocks, "-Identity"), label


# --- A2: slash commands, the outbox's notes and the App Home on a real SQLite file --------------

@dataclass
class World:
    """A real database the slash commands run against; one per twin, shared by all examples."""

    db: object
    config: object
    record: int = 1000

    def request(self, user=ALICE, channel="C0ALERTS"):
        return Request(db=self.db, config=self.config, now=NOW, user_id=user, channel_id=channel)


def make_world(path) -> World:
    config = parse_config({
        "slack": {"channel": "C0ALERTS"},
        "store": {"path": str(path)},
        "permissions": {"users": [ALICE]},
        "servers": [{"name": "EX01", "url": "https://127.0.0.1:5986/wsman", "username": "u",
                     "password_env": "PW", "version": "2016"},
                    {"name": "EX02", "url": "http://127.0.0.1:5985/wsman", "username": "u",
                     "password_env": "PW", "submission_connector": "Client Frontend EX02",
                     "channel": "C0EX02"}]}, {"PW": "x", "SLACK_BOT_TOKEN": "xoxb-x"})
    return World(open_db(path), config)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    pair = make_world(base / "a.db"), make_world(base / "twin.db")
    yield pair
    for world in pair:
        world.db.conn.close()


def store_incident(world: World, account: str, connector: str, host: str) -> Incident:
    """Two events as the poller stores them: a 1018 on EX01 and a 1020 from EX02's host."""
    world.record += 2
    if "\\" not in connector:
        try:
            connector = connector_identity("EX01.contoso.local", connector)
        except UnsafeValueError:
            pass  # bot.sources.parse keeps the raw text too
    events = [Event("EX01", world.record, FE, 1018, NOW - timedelta(minutes=9), account,
                    connector or None, "EX01.contoso.local"),
              Event("EX02", world.record + 1, FE, 1020, NOW - timedelta(minutes=5), account, None,
                    host)]
    with write_transaction(world.db):
        ingest(world.db, world.config, events, 0, NOW - timedelta(minutes=4))
        # as if delivered: the alert exists, so actions get thread notes
        incident = store.open_incidents(world.db, [account.casefold()])[account.casefold()]
        if incident.message_ts is None:
            store.set_message(world.db, incident.id, ts=f"1767225600.{world.record:06d}",
                              now=NOW - timedelta(minutes=4))
        world.db.execute("UPDATE outbox SET state = 'sent' WHERE kind = 'post'")
    return store.get_incident(world.db, incident.id)


def slash_scenario(world: World, account: str, connector: str, host: str, words: str):
    """Every subcommand with the untrusted values, then the notes they queued and the Home tab.
    Returns [(label, text, blocks, max_blocks, command text)]."""
    # A per-example prefix keeps examples apart: lists sorted by name then sort by the prefix,
    # never by a backtick or its twin, so both worlds stay alike.
    account, connector = f"{world.record}:{account}", f"EX01\\{world.record}:{connector}"
    incident = store_incident(world, account, connector, host)
    n = incident.id
    enc_account, enc_words = slack_encoded(account), slack_encoded(words)
    commands = [
        (MALLORY, f"ack #{n} {enc_words}"),          # refused, and audited with the reason
        (ALICE, f"ack #{n} {enc_words}"),
        (ALICE, f"snooze #{n} 1h {enc_words}"),
        (ALICE, f'snooze "{enc_account}" 4h {enc_words}'),
        (ALICE, f"snooze {enc_words} 2h because"),
        (ALICE, f"history {enc_words}"),
        (ALICE, f'history "{enc_account}" --since 30d'),
        (ALICE, f"history --since {enc_words}"),
        (ALICE, f"show #{n}"),
        (ALICE, f"show {enc_words}"),
        (ALICE, f"fix {enc_words}"),
        (ALICE, f'fix "{enc_account}" {slack_encoded(connector)}'),
        (ALICE, f'fix "{enc_account}"'),
        (ALICE, f"fix #{n}"),
        (ALICE, "snoozes"),
        (ALICE, enc_words),
        (ALICE, f"unsnooze #{n}"),
        (ALICE, f'unsnooze "{enc_account}"'),
        (ALICE, f"unack #{n}"),
    ]
    with write_transaction(world.db):
        store.save_poll_failure(world.db, "EX01", words or "?", NOW)  # an error from a server
    out = []
    for user, command in commands:
        reply = answer(world.request(user), command)
        out.append((f"/submitwatch {command[:40]!r}", reply.text, reply.blocks, 50, command))
    reply = answer(world.request(), "status")
    out.append(("status", reply.text, reply.blocks, 50, "status"))
    # What the actions queued: the alert's updates and its thread notes, as delivery renders them.
    servers = {s.name: s for s in world.config.servers}
    for row in store.pending_messages(world.db, NOW + timedelta(days=1)):
        if row.incident_id is None:
            continue
        current = store.get_incident(world.db, row.incident_id)
        note = note_of(row.detail) if row.kind == "reply" else None
        if isinstance(note, ActionNote):
            message = alerts.action_note(current, note)
        elif isinstance(note, SpreadNote):
            message = alerts.thread_note(current, note, servers)
        else:
            message = alerts.alert(current, servers)
        out.append((f"outbox {row.kind}", *message, 50, ""))
    world.db.execute("UPDATE outbox SET state = 'sent' WHERE state = 'pending'")
    view = home_view(world.db, world.config, NOW, ALICE)
    out.append(("home", "home", view["blocks"], 100, ""))
    return account, out


def expected_fix_arguments(world: World, command: str):
    """(account, connector or None) that `fix` must quote, from the command's words."""
    try:
        words = [w for w in words_of(command)[1:] if w.lower() != "--share"]
    except CommandError:   # an unclosed quote: the reply says so and builds no command
        return None, None
    if not words:
        return None, None
    account = words[0]
    if re.fullmatch(r"#\d{1,12}", account):
        found = store.get_incident(world.db, int(account[1:]))
        account = found.account if found else None
    return account, " ".join(w for w in words[1:] if w not in ("1018", "1020")) or None


@SLOW_PROP
@given(account=names, connector=text, host=names, words=text)
@example(account="<!channel>", connector="EX01\\<@U0BOSS>", host="EX02",
         words="&lt;!channel&gt; taking it")
@example(account="CONTOSO\\O'Brien\u2019s", connector="Client`Frontend", host="\u202eEX02",
         words="a\x00b \u200b\u202e \"quoted reason\" \\\\share")
@example(account="x" * 10_000, connector="<&>" * 3_400, host="EX02", words="y" * 10_000)
@example(account="svc", connector="", host="EX02", words="<&>" * 3_400)
def test_slash_commands_notes_and_home_never_let_data_ping_link_or_break_out(
        worlds, account, connector, host, words):
    world, world_twin = worlds
    shown_account, out = slash_scenario(world, account, connector, host, words)
    for _label, text_, blocks, max_blocks, _command in out:
        check_message(text_, blocks, mentions={ALICE, MALLORY}, max_blocks=max_blocks)
    _, out_twin = slash_scenario(world_twin, *(twin(v) for v in (account, connector, host,
                                                                  words)))
    assert_same_mrkdwn([o[:3] for o in out], [o[:3] for o in out_twin])

    for _label, text_, blocks, _max, command in out:
        if not command.startswith("fix"):
            continue
        account_arg, connector_arg = expected_fix_arguments(world, command)
        lines = check_commands(blocks, account=account_arg)
        if lines == 0:  # refused: the person is told why (with the usage, or per connector)
            assert ("Usage: `/submitwatch fix" in text_
                    or text_.startswith("I could not read that: the quote ")
                    or "No command is shown: " in str(blocks)
                    or "No command for it: " in str(blocks)), text_
            continue
        if connector_arg is not None and "\\" in connector_arg:
            # Whatever changes a connector changes the one given (a read-only look may go to
            # another, as port 587's at the client connector); a 1018 there always gets
            # commands on it, a 1020 alone (2013 and later) no change at all: the SID check.
            looked, changed = connectors_in(blocks)
            assert changed <= {connector_arg}, (changed, connector_arg)
            refused = ("No command for it: " in str(blocks)
                       or "No command is shown: " in str(blocks))
            if "(event 1018" in text_ and not refused:
                assert connector_arg in looked, (looked, connector_arg)
            else:
                assert changed == set(), text_
    # Tied to the input itself, not only to the tokenizer: a quoted account arrives exactly.
    quoted = f'fix "{slack_encoded(shown_account)}"'
    if len(quoted) <= MAX_TEXT and not set(shown_account) & set('"\u201c\u201d') and \
            not refusable((shown_account, "account")) and len(shown_account) <= 256:
        assert expected_fix_arguments(world, quoted)[0] == shown_account
        [reply] = [o for o in out if o[4] == quoted]
        assert check_commands(reply[2], account=shown_account) > 0


@pytest.mark.parametrize("note, expect", [
    ("x" * 10_000, "keep it under 300"),
    ("a\x00b", "a\\x00b"),
    ("&lt;!channel&gt; \u202eevil \u200b", "&lt;!channel&gt; \\x202eevil \\x200b"),
])
def test_ack_notes_are_kept_exactly_and_shown_inertly(worlds, note, expect):
    world, _ = worlds
    incident = store_incident(world, f"CONTOSO\\note-{len(note)}-{ord(note[1])}", "", "EX02")
    reply = answer(world.request(), f"ack #{incident.id} {note}")
    if expect.startswith("keep"):
        assert expect in reply.text and store.get_incident(world.db, incident.id).acked_by is None
        return
    stored = store.get_incident(world.db, incident.id).ack_note
    assert stored == note.replace("&lt;", "<").replace("&gt;", ">")  # as typed, NUL included
    text_, blocks = alerts.alert(store.get_incident(world.db, incident.id), SERVERS)
    assert expect in "\n".join(mrkdwn_of(text_, blocks))
    check_message(text_, blocks, mentions={ALICE})


# --- A3: XML bombs and oversized events ---------------------------------------------------------

NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def event_xml(record, account="CONTOSO\\svc-scanner", prolog=""):
    return (f"{prolog}<Event xmlns='{NS}'><System><Provider Name='{FE}'/><EventID>1020</EventID>"
            f"<TimeCreated SystemTime='{NOW:%Y-%m-%dT%H:%M:%S}.000000000Z'/>"
            f"<EventRecordID>{record}</EventRecordID><Computer>EX01.contoso.local</Computer>"
            f"</System><EventData><Data>{account}</Data></EventData></Event>")


LAUGHS = ("<!DOCTYPE Event [<!ENTITY lol 'lol'>" + "".join(
    f"<!ENTITY lol{i} '{('&lol' + (str(i - 1) if i > 1 else '') + ';') * 10}'>"
    for i in range(1, 10)) + "]>")
#: Where an external entity would be fetched from: a loopback port a test listens on.
FETCH = "http://127.0.0.1:{port}/evil.dtd"
BOMBS = {
    "billion laughs": event_xml("{record}", "&lol9;", LAUGHS),
    "billion laughs inside the event": event_xml("{record}", "&lol9;").replace(
        "<System>", LAUGHS.replace("Event [", "System [") + "<System>"),
    "external entity (file)": event_xml(
        "{record}", "&xxe;", "<!DOCTYPE Event [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"),
    "external entity (http)": event_xml(
        "{record}", "&xxe;", f"<!DOCTYPE Event [<!ENTITY xxe SYSTEM '{FETCH}'>]>"),
    "parameter entity": event_xml(
        "{record}", "&evil;", f"<!DOCTYPE Event [<!ENTITY % p SYSTEM '{FETCH}'> %p;]>"),
    "external DTD": event_xml("{record}", "&evil;", f"<!DOCTYPE Event SYSTEM '{FETCH}'>"),
    "entity without a DTD": event_xml("{record}", "&xxe;"),
    "oversized": event_xml("{record}", "A" * (MAX_EVENT_CHARS + 10)),
}


def bomb_text(name: str, record: int, port: int = 9) -> str:
    return BOMBS[name].replace("{record}", str(record)).replace("{port}", str(port))


@pytest.mark.parametrize("name", BOMBS)
def test_xml_bombs_and_oversized_events_are_refused_and_the_neighbours_kept(name):
    bomb = bomb_text(name, 8)
    reason = ("forbidden XML construct" if "<!DOCTYPE" in bomb else
              "over 65536" if name == "oversized" else "undefined entity")
    with pytest.raises(ValueError, match=reason):
        parse_event(bomb, "EX01")
    batch = parse_events("<Events>\r\n" + "\r\n".join([event_xml(7), bomb, event_xml(9)]) +
                         "\r\n</Events>", "EX01")
    assert [e.record_id for e in batch.events] == [7, 9]
    # A DTD before <Event> is stray text between events, and the event then names an entity
    # nobody declared; a DTD inside it is refused outright. Either way: a problem, no expansion.
    kinds = [p.kind for p in batch.problems]
    assert "malformed_event" in kinds and set(kinds) <= {"malformed_event", "unexpected_output"}
    assert all(len(p.excerpt) <= 200 for p in batch.problems)   # bounded, not the payload
    assert batch.highest_record == 9                    # the cursor moves past the bad event


def test_bombs_from_a_server_are_refused_without_harm_and_lose_nothing(logs, winrm, db,
                                                                       make_config, clock):
    """Through real pywinrm and the simulator: every bomb is a problem row, every good event
    around them is stored once, the cursor passes them, nothing was expanded, nothing fetched."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    config = make_config(servers=("EX01",), polling={"lookback": "3650d"})
    log = logs["EX01"]
    log.append(FE, 1020, ("CONTOSO\\before",))
    for name in BOMBS:
        log.append_raw(bomb_text(name, log.next_record, port))
        log.append(FE, 1020, (f"CONTOSO\\after-{name.replace(' ', '-')}",))
    source = WinRMSource(config.servers[0], config.polling)
    result = poll_server_once(db, source, config, clock)
    assert result.error is None
    assert result.stored == 1 + len(BOMBS)
    assert [p.kind for p in result.problems].count("malformed_event") == len(BOMBS)
    assert store.server_state(db, "EX01").cursor == log.newest_record
    again = poll_server_once(db, source, config, clock)           # nothing is read twice
    assert again.stored == 0 and again.problems == []
    with pytest.raises(BlockingIOError):                          # nobody fetched the DTD
        listener.accept()
    listener.close()
    dump = "\n".join(db.conn.iterdump())
    assert "lollollol" not in dump and "root:" not in dump and "A" * 1000 not in dump
    accounts = [r[0] for r in db.execute("SELECT account FROM events ORDER BY record_id")]
    assert accounts == ["CONTOSO\\before"] + [f"CONTOSO\\after-{n.replace(' ', '-')}"
                                               for n in BOMBS]

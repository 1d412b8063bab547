"""A real Windows server as the evidence describes it (../shared/DOMAIN.md section 3,
docs/windows-setup.md): RootSDDL, code pages, shell quotas and idle timeouts, output framing,
bounded output, HTTP.sys dropping idle connections, and hostile text from a server.

Real pywinrm with NTLM and message encryption against the simulator in each mode, real SQLite,
and (for names and `check`) real slack_sdk against the Slack stand-in. Clocks are passed in:
the simulator's (shell idle timeouts, idle connections) is moved by hand, nothing sleeps.
"""
from __future__ import annotations

import logging
import re
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell
import winrm

from bot.core.config import ConfigError, parse_config
from bot.core.inert import inert
from bot.engine.delivery import deliver_once
from bot.engine.poller import poll_server_once
from bot.ops.check import run_check
from bot.slack.sender import SlackSender
from bot.sources.decode import decode
from bot.sources.parse import parse_events
from bot.sources.winrm import WinRMSource
from sim.wevtutil import WindowsTraits
from sim.winrm_server import WinRMSimulator
from store import db as store
from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD, WINRM_USER
from tests.helpers import Seconds

FE = "MSExchangeFrontEndTransport"
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "contrib" / "windows" / "Grant-SubmitWatchAccess.ps1"
JURGEN = "CONTOSO\\jürgen.müller"
SKANER = "КОНТОСО\\Сканер"


@pytest.fixture
def seconds():
    return Seconds()


@pytest.fixture
def sim(logs, seconds):
    """A simulator whose shells and connections age only when the test says so."""
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, clock=seconds,
                        sweep_every=None) as simulator:
        yield simulator


def config_for(sim, db_path, slack=None, **polling):
    raw = {"slack": {"channel": CHANNEL, **({"api_url": slack.api_url} if slack else {})},
           "store": {"path": db_path},
           "polling": {"operation_timeout": 2, "read_timeout": 5, **polling},
           "servers": [{"name": "EX01", "url": sim.url_for("EX01"), "username": WINRM_USER,
                        "password_env": "WINRM_PASSWORD"}]}
    environ = {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": WINRM_PASSWORD}
    if slack is not None:
        environ["SLACK_APP_TOKEN"] = slack.app_token
    return parse_config(raw, environ)


def source_of(config):
    return WinRMSource(config.servers[0], config.polling)


def stored_accounts(db):
    return [row[0] for row in db.execute("SELECT account FROM events ORDER BY record_id")]


def check_lines(config):
    lines: list[str] = []
    code = run_check(config, lines.append)
    return code, lines


# --- 1. access: RootSDDL and Event Log Readers --------------------------------------------------

def test_an_account_outside_rootsddl_gets_the_exact_fix_from_the_poll_and_from_check(
        logs, sim, db, db_path, slack, clock):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    sim.deny_shell_access("EX01")
    config = config_for(sim, db_path, slack)
    result = poll_server_once(db, source_of(config), config, clock)
    assert result.stored == 0 and result.error.startswith("EX01: ")
    for words in ("'CONTOSO\\svc-submitwatch' sign in", "fault 5, Access is denied", "RootSDDL",
                  "Remote Management Users", "S-1-5-32-580", "Read and Execute",
                  "contrib/windows/Grant-SubmitWatchAccess.ps1", "docs/windows-setup.md"):
        assert words in result.error
    assert sim.stats("EX01").auth_successes == 1   # it signed in; the shell was refused
    assert store.server_state(db, "EX01").cursor is None
    code, lines = check_lines(config)
    assert code == 1 and f"FAILED   {result.error}" in lines

    sim.deny_shell_access("EX01", denied=False)    # the script was run
    code, lines = check_lines(config)
    assert code == 0, lines
    assert poll_server_once(db, source_of(config), config, clock).stored == 1


def test_an_account_outside_event_log_readers_is_told_to_add_it(logs, sim, db, db_path, slack,
                                                                 clock):
    sim.inject("EX01", "exit_code", times=None, code=5,
               stderr="Failed to read log information. Access is denied.\r\n")
    config = config_for(sim, db_path, slack)
    result = poll_server_once(db, source_of(config), config, clock)
    assert "failed with exit code 5: Failed to read log information. Access is denied" \
        in result.error
    assert "'Event Log Readers' (S-1-5-32-573)" in result.error
    code, lines = check_lines(config)
    assert code == 1 and any("Event Log Readers" in line for line in lines
                             if line.startswith("FAILED"))


def _syntax_errors(node) -> list[str]:
    found = [f"{node.type} at {node.start_point}"] if node.is_error or node.is_missing else []
    for child in node.children:
        found += _syntax_errors(child)
    return found


def test_the_setup_script_parses_and_holds_every_documented_step():
    text = SCRIPT.read_text(encoding="utf-8")
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    tree = parser.parse(text.encode("utf-8"))
    assert _syntax_errors(tree.root_node) == []
    # Nothing invisible can hide in it: printable ASCII and line breaks only.
    assert all(ch == "\n" or " " <= ch <= "~" for ch in text)
    assert "[CmdletBinding(SupportsShouldProcess = $true)]" in text     # -WhatIf and -Confirm
    for sid in ("S-1-5-32-573", "S-1-5-32-580"):
        assert f"'{sid}'" in text
    assert "WSMan:\\localhost\\Service\\RootSDDL" in text
    assert "RootSDDL before:" in text and "RootSDDL after:" in text
    # Idempotent: each change is guarded by a check of what is there, and by ShouldProcess.
    assert text.count("$PSCmdlet.ShouldProcess(") == 3
    assert "already in" in text and "already have Read and Execute" in text
    assert "already has Read and Execute on $folder and its files" in text
    # -1610612736 is GENERIC_READ | GENERIC_EXECUTE as a signed 32-bit mask.
    assert "$ReadAndExecute = -1610612736" in text
    assert -1610612736 & 0xFFFFFFFF == 0x80000000 | 0x20000000
    # Membership is not compared by name (a UPN or another spelling would not match): adding
    # is tried, and "already a member" is the answer that makes a re-run harmless.
    assert "MemberExistsException" in text and "Get-LocalGroupMember -" not in text
    for forbidden in ("Invoke-Expression", "iex ", "Remove-", "winrm configSDDL"):
        assert forbidden not in text
    # The optional protocol log step (-ProtocolLogs): read on the two folders and, inherited,
    # their files; nothing broader (no subfolders, no write, no owner or audit change).
    assert "[switch] $ProtocolLogs" in text and "if (-not $ProtocolLogs) {" in text
    for parameter in ("$FrontEndProtocolLogPath", "$HubProtocolLogPath"):
        assert f"[string] {parameter}" in text
    assert "[System.Security.AccessControl.FileSystemRights]::ReadAndExecute" in text
    assert "-ArgumentList $accountSid, $FileReadAndExecute, $ObjectInherit, 'None', 'Allow'" \
        in text
    assert "GetAccessControl('Access')" in text and "SetAccessControl($acl)" in text
    assert "\\TransportRoles\\Logs\\$role\\ProtocolLog\\SmtpReceive" in text
    assert "GetEnvironmentVariable('ExchangeInstallPath', 'Machine')" in text
    for broader in ("FullControl", "Modify", "ContainerInherit", "Set-Acl", "icacls",
                    "takeown", "SetOwner", "Recurse"):
        assert broader not in text, broader
    docs = (ROOT / "docs" / "windows-setup.md").read_text(encoding="utf-8")
    assert "contrib/windows/Grant-SubmitWatchAccess.ps1" in docs
    assert "Grant-SubmitWatchAccess.ps1" in (ROOT / "README.md").read_text(encoding="utf-8")


# --- 2. names survive every code page -----------------------------------------------------------

EXACT_MODES = {
    "ANSI 1252, /uni honoured": WindowsTraits(ansi_codepage=1252),
    "ANSI 1251, /uni honoured": WindowsTraits(ansi_codepage=1251),
    "console code page, /uni honoured": WindowsTraits(text_output="console"),
    "Unicode with a byte-order mark": WindowsTraits(bom=True),
}


def _poll_and_deliver(db, config, clock):
    result = poll_server_once(db, source_of(config), config, clock)
    deliver_once(db, SlackSender.from_config(config.slack, retries=0), config, clock)
    return result


@pytest.mark.parametrize("mode", EXACT_MODES)
def test_non_ascii_names_arrive_exactly_whatever_the_servers_code_pages(mode, logs, winrm, db, make_config, slack,
                                                      clock):
    winrm.set_traits("EX01", EXACT_MODES[mode])
    logs["EX01"].append(FE, 1020, (JURGEN,))
    logs["EX01"].append(FE, 1018, (SKANER, "Client Frontend EX01"))
    config = make_config(servers=("EX01",))
    result = _poll_and_deliver(db, config, clock)
    assert result.error is None and result.problems == []
    assert stored_accounts(db) == [JURGEN, SKANER]
    texts = [m["text"] for m in slack.messages(CHANNEL)]
    assert any(JURGEN in t for t in texts) and any(SKANER in t for t in texts)
    # /uni:true was asked and answered: the registry was never needed.
    assert not any(line.startswith("reg ") for line in winrm.stats("EX01").command_lines)


@pytest.mark.parametrize("codepage, exact, lossy", [
    (1252, JURGEN, SKANER),
    (1251, SKANER, JURGEN),
])
def test_a_server_ignoring_uni_is_decoded_with_its_ansi_code_page_read_once(
        codepage, exact, lossy, logs, winrm, db, make_config, slack, clock):
    winrm.set_traits("EX01", WindowsTraits(ansi_codepage=codepage, unicode_switch=False))
    config = make_config(servers=("EX01",))
    source = source_of(config)
    for account in (exact, lossy):
        logs["EX01"].append(FE, 1020, (account,))
        result = poll_server_once(db, source, config, clock)
        assert result.error is None and result.problems == []
    # The name the code page holds is exact; the other was turned to '?' by Windows before it
    # left the server (no U+FFFD: nothing was damaged on the way, and `check` warns).
    assert stored_accounts(db) == [exact, lossy.encode(f"cp{codepage}", "replace").decode("ascii")]
    registry = [line for line in winrm.stats("EX01").command_lines if line.startswith("reg ")]
    assert registry == ["reg query HKLM\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage /v ACP"]
    _code, lines = check_lines(config)   # (make_config has no Socket Mode token: not asserted)
    assert "WARNING  EX01: wevtutil ignored /uni:true (it answered in 8-bit text, not UTF-16): " \
        f"names are decoded as UTF-8 or else as the server's ANSI code page ({codepage}), and a " \
        "character that code page cannot hold reaches SubmitWatch as '?' " \
        "(docs/windows-setup.md, Names)" in lines


def test_check_does_not_take_an_empty_answer_for_one_that_ignored_uni(logs, winrm, make_config):
    winrm.set_traits("EX01", WindowsTraits(empty=""))   # nothing at all when nothing matched
    _code, lines = check_lines(make_config(servers=("EX01",)))
    assert not any("ignored /uni:true" in line for line in lines)
    assert not any(line.startswith("reg ") for line in winrm.stats("EX01").command_lines)


def test_a_server_writing_utf8_without_uni_needs_no_registry(logs, winrm, db, make_config, clock):
    winrm.set_traits("EX01", WindowsTraits(text_output="console", unicode_switch=False))
    logs["EX01"].append(FE, 1020, (JURGEN,))
    logs["EX01"].append(FE, 1020, (SKANER,))
    config = make_config(servers=("EX01",))
    assert poll_server_once(db, source_of(config), config, clock).problems == []
    assert stored_accounts(db) == [JURGEN, SKANER]
    assert not any(line.startswith("reg ") for line in winrm.stats("EX01").command_lines)


def test_bytes_no_encoding_explains_are_replaced_only_with_a_problem_that_says_so():
    def no_registry():
        raise AssertionError("UTF-16 output must not need the registry")
    text, problems, codec = decode(b"<\x00A\x00\x00\xd8B\x00", "EX01", no_registry)
    assert (text, codec) == ("<A\ufffdB", "utf-16-le")
    [problem] = problems
    assert problem.kind == "invalid_text" and "UTF-16-LE" in problem.detail
    assert "replaced with U+FFFD" in problem.detail
    # A cut-off output ends mid-character: that is the cut, not damage.
    assert decode("<Events>Ä".encode("utf-16-le")[:-1], "EX01", no_registry,
                  partial=True)[:2] == ("<Events>", [])
    assert decode("<Events>ü".encode()[:-1], "EX01", lambda: None,
                  partial=True)[:2] == ("<Events>", [])
    # 8-bit output that is not UTF-8 and a server whose code page is unknown: replaced, said.
    text, problems, codec = decode(b"<j\xfcrgen>", "EX01", lambda: None)
    assert text == "<j\ufffdrgen>" and problems[0].kind == "invalid_text"
    assert decode(b"<j\xfcrgen>", "EX01", lambda: 1252) == ("<jürgen>", [], "cp1252")
    assert decode(b"\xef\xbb\xbf<x/>", "EX01", lambda: None) == ("<x/>", [], "utf-8")
    assert decode(b"\xff\xfe" + "<Сканер/>".encode("utf-16-le"), "EX01", lambda: None)[0] \
        == "<Сканер/>"


# --- 3. no shell leaks --------------------------------------------------------------------------

def test_shells_whose_delete_fails_expire_and_never_reach_the_quota(logs, sim, seconds, db,
                                                                   db_path, clock):
    sim.set_shell_quota("EX01", 5)
    sim.inject("EX01", "wsman_fault", times=None, on="Delete", code=2150858770,
               reason="The WS-Management service cannot process the request.")
    config = config_for(sim, db_path)
    source = source_of(config)
    for minute in range(40):    # with WinRM's 2-hour default the quota would be hit at minute 5
        if minute % 7 == 0:
            logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{minute}",))
        result = poll_server_once(db, source, config, clock)
        assert result.error is None, (minute, result.error)
        assert sim.open_shells("EX01") <= 3
        seconds.advance(60)
        clock.advance(minutes=1)
    stats = sim.stats("EX01")
    assert stats.quota_refusals == 0 and stats.shells_created == 40
    assert stats.shells_expired >= 37
    assert set(stats.idle_timeouts) == {120.0}
    assert len(stored_accounts(db)) == 6


def test_leftover_shells_are_deleted_before_a_new_one_is_asked_for(logs, sim, db, db_path,
                                                                    clock):
    """With the quota full of our own leftovers, deleting them first is what lets the poll in."""
    sim.set_shell_quota("EX01", 1)
    sim.inject("EX01", "wsman_fault", times=1, on="Delete", code=2150858770, reason="Busy.")
    config = config_for(sim, db_path)
    source = source_of(config)
    assert poll_server_once(db, source, config, clock).error is None
    assert sim.open_shells("EX01") == 1 and len(source.leftover_shells) == 1   # quota full
    assert poll_server_once(db, source, config, clock).error is None
    assert sim.open_shells("EX01") == 0 and sim.stats("EX01").quota_refusals == 0


def test_a_shell_whose_delete_failed_once_is_deleted_at_the_next_poll(logs, sim, db, db_path,
                                                                      clock):
    sim.inject("EX01", "wsman_fault", times=1, on="Delete", code=2150858770, reason="Busy.")
    config = config_for(sim, db_path)
    source = source_of(config)
    assert poll_server_once(db, source, config, clock).error is None
    assert sim.open_shells("EX01") == 1 and source.leftover_shells
    assert poll_server_once(db, source, config, clock).error is None
    assert sim.open_shells("EX01") == 0 and source.leftover_shells == []


def test_the_shell_quota_fault_names_the_quota_and_the_fix(logs, sim, seconds, db, db_path,
                                                          slack, clock):
    sim.set_shell_quota("EX01", 3)
    other_tool = winrm.Protocol(sim.url_for("EX01"), transport="ntlm", username=WINRM_USER,
                                password=WINRM_PASSWORD, proxy=None, ca_trust_path=None)
    for _ in range(3):   # another tool on the same account, shells with WinRM's 2-hour timeout
        other_tool.open_shell()
    config = config_for(sim, db_path, slack)
    result = poll_server_once(db, source_of(config), config, clock)
    for words in ("refused a new shell", "'CONTOSO\\svc-submitwatch'", "MaxShellsPerUser",
                  "maximum number of 3 concurrent shells", "expire within minutes",
                  "give SubmitWatch its own account", "winrm set winrm/config/winrs"):
        assert words in result.error
    code, lines = check_lines(config)
    assert code == 1 and any("MaxShellsPerUser" in line for line in lines
                             if line.startswith("FAILED"))
    seconds.advance(7201)    # the other tool's shells time out
    assert poll_server_once(db, source_of(config), config, clock).error is None


# --- 4. output framing as Windows may print it --------------------------------------------------

FRAMINGS = {
    "one per line, CRLF": WindowsTraits(),
    "one per line, LF": WindowsTraits(separator="\n"),
    "glued, </Events> on the last event": WindowsTraits(separator=""),
    "byte-order mark": WindowsTraits(bom=True),
    "XML declaration": WindowsTraits(declaration=True),
    "empty as <Events/>": WindowsTraits(empty="<Events/>"),
    "empty as nothing": WindowsTraits(empty=""),
    "all at once": WindowsTraits(bom=True, declaration=True, separator="", empty="<Events/>"),
    "8-bit, BOM and declaration": WindowsTraits(text_output="console", unicode_switch=False,
                                                bom=True, declaration=True),
}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_framing_is_read_whole_without_problems(framing, logs, winrm, db, make_config,
                                                      clock):
    winrm.set_traits("EX01", FRAMINGS[framing])
    config = make_config(servers=("EX01",), polling={"batch_size": 2})
    source = source_of(config)
    empty = poll_server_once(db, source, config, clock)       # nothing to read yet
    assert empty.error is None and empty.problems == []
    for n in range(5):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{n}",))
    full = poll_server_once(db, source, config, clock)        # 3 round trips of 2, 2, 1
    assert full.error is None and full.problems == [] and full.stored == 5
    assert poll_server_once(db, source, config, clock).problems == []
    assert stored_accounts(db) == [f"CONTOSO\\app{n}" for n in range(5)]
    assert db.execute("SELECT count(*) FROM problems").fetchone()[0] == 0


@pytest.mark.parametrize("text", [
    "<Events/>", "<Events />", "<Events></Events>", "", "\r\n",
    "\ufeff<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<Events/>\r\n",
    "<?xml version='1.0'?><Events></Events>",
])
def test_empty_answers_are_no_problem(text):
    batch = parse_events(text, "EX01")
    assert batch.events == [] and batch.problems == []


# --- 5. bounded output --------------------------------------------------------------------------

def test_a_flooding_server_is_cut_at_max_output_keeping_every_complete_event(
        logs, sim, db, db_path, clock):
    for n in range(30):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{n}",))
    last_event = logs["EX01"].next_record - 1
    logs["EX01"].append_noise(10)      # newer records the query does not match
    sim.inject("EX01", "flood", bytes=500 * 1024 * 1024)
    config = config_for(sim, db_path, max_output="256KB")
    source = source_of(config)
    tracemalloc.start()
    try:
        cut = poll_server_once(db, source, config, clock)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cut.error is None and cut.stored == 30
    assert [p.kind for p in cut.problems] == ["output_cut"]
    assert "more than 262,144 bytes" in cut.problems[0].detail
    assert "polling.max_output" in cut.problems[0].detail
    # Reading stopped at the cap: a fraction of the 500 MB was sent, a few MB were held.
    assert sim.stats("EX01").stdout_bytes_sent < 512 * 1024
    assert peak < 16 * 1024 * 1024
    # The cursor moved past the stored events only, not to the newest record gli saw.
    assert store.server_state(db, "EX01").cursor == last_event
    after = poll_server_once(db, source, config, clock)
    assert after.error is None and after.problems == [] and after.stored == 0
    assert store.server_state(db, "EX01").cursor == logs["EX01"].next_record - 1


def test_a_batch_larger_than_max_output_is_read_over_several_polls_without_loss(
        logs, sim, db, db_path, clock):
    accounts = [f"CONTOSO\\{'long-service-account-name-' * 3}{n}" for n in range(600)]
    for account in accounts:
        logs["EX01"].append(FE, 1020, (account,))
    config = config_for(sim, db_path, max_output="256KB", batch_size=5000)
    source = source_of(config)
    polls = []
    while len(polls) < 20:
        result = poll_server_once(db, source, config, clock)
        assert result.error is None
        polls.append(result.stored)
        if not result.problems:
            break
        assert [p.kind for p in result.problems] == ["output_cut"] and result.stored > 0
    assert len(polls) >= 3 and sum(polls) == 600
    assert stored_accounts(db) == accounts


def test_a_cut_before_any_complete_event_is_a_failed_poll_and_keeps_the_look_back(
        logs, sim, db, db_path, clock):
    old = logs["EX01"].append(FE, 1020, ("CONTOSO\\long-gone",),
                              time=clock() - timedelta(days=3))   # before polling.lookback
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    sim.set_chunk_size("EX01", 200)
    config = config_for(sim, db_path)
    ticks = Seconds()

    def slow_clock():
        ticks.advance(5)
        return ticks.now
    slow = WinRMSource(config.servers[0], config.polling, clock=slow_clock)
    failed = poll_server_once(db, slow, config, clock)
    assert "before a single complete event arrived; nothing was stored" in failed.error
    assert "polling.max_output or polling.read_timeout" in failed.error
    assert store.server_state(db, "EX01").cursor is None   # still a first poll, look-back kept
    assert poll_server_once(db, source_of(config), config, clock).stored == 1
    assert old.record_id not in [r[0] for r in db.execute("SELECT record_id FROM events")]


def test_the_read_deadline_covers_the_whole_output(logs, sim, db, db_path, clock):
    for n in range(40):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{n}",))
    sim.set_chunk_size("EX01", 4096)    # many Receives, each answered at once
    config = config_for(sim, db_path)   # read_timeout 5s, operation_timeout 2s: 9s in all
    ticks = Seconds()

    def slow_clock():                   # every look at the clock finds 2 s gone
        ticks.advance(2)
        return ticks.now
    source = WinRMSource(config.servers[0], config.polling, clock=slow_clock)
    first = poll_server_once(db, source, config, clock)
    assert first.error is None and 0 < first.stored < 40
    [problem] = first.problems
    assert problem.kind == "output_cut" and "still sending after 9s" in problem.detail
    for _ in range(40):
        if len(stored_accounts(db)) == 40:
            break
        assert poll_server_once(db, source, config, clock).error is None
    assert stored_accounts(db) == [f"CONTOSO\\app{n}" for n in range(40)]


# --- 6. the kept connection and HTTP.sys's 120 s idle timeout -----------------------------------

@pytest.mark.parametrize("interval, server_timeout, authentications", [
    (60, 120, 1),      # the connection outlives a 60 s interval: one sign-in in all
    (300, 120, 6),     # gone before every 5-minute poll: one sign-in per poll, nothing else
    (60, 30, 11),      # a server that drops sooner than HTTP.sys's default: still no error,
])                     # at two sign-ins per drop (see KEEP_IDLE_LIMIT in bot/sources/winrm.py)
def test_polls_at_one_and_five_minutes_work_with_one_sign_in_per_dropped_connection(
        interval, server_timeout, authentications, logs, sim, seconds, db, db_path, clock):
    sim.idle_connection_timeout = server_timeout
    config = config_for(sim, db_path)
    source = WinRMSource(config.servers[0], config.polling, clock=seconds)
    dropped = 0
    for n in range(6):
        logs["EX01"].append(FE, 1020, (f"CONTOSO\\app{n}",))
        result = poll_server_once(db, source, config, clock)
        assert result.error is None and result.problems == [] and result.stored == 1
        seconds.advance(interval)
        clock.advance(seconds=interval)
        dropped += sim.sweep_idle_connections()
    stats = sim.stats("EX01")
    assert dropped == (0 if interval < server_timeout else 6)
    assert stats.auth_successes == authentications and stats.auth_failures == 0
    assert store.server_state(db, "EX01").consecutive_failures == 0
    assert db.execute("SELECT count(*) FROM outbox WHERE kind = 'server_down'").fetchone()[0] == 0


# --- 7. text from a server is inert ------------------------------------------------------------

HOSTILE = "boom\r\n2026-12-01 10:00:00 INFO all servers OK\x1b[2J\u202egnp.exe\x07"
#: XML cannot carry ESC or BEL, and parsers turn CRLF into LF: what a fault's text can hold.
HOSTILE_XML = "boom\n2026-12-01 10:00:00 INFO all servers OK\u2028\u202egnp\x85.exe"


def _assert_inert(text: str) -> None:
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]", text), repr(text)


@pytest.mark.parametrize("fault, params, shown", [
    ("wsman_fault", {"code": 2150858770, "reason": HOSTILE_XML},
     "boom\\n2026-12-01 10:00:00 INFO all servers OK\\u2028\\u202egnp\\x85.exe"),
    ("exit_code", {"code": 1, "stderr": HOSTILE},
     "boom\\r\\n2026-12-01 10:00:00 INFO all servers OK\\x1b[2J\\u202egnp.exe\\x07"),
])
def test_text_from_a_server_cannot_forge_log_lines_or_send_escapes(
        fault, params, shown, winrm, db, make_config, clock, caplog):
    winrm.inject("EX01", fault, times=None, **params)
    config = make_config(servers=("EX01",))
    with caplog.at_level(logging.INFO, logger="submitwatch"):
        result = poll_server_once(db, source_of(config), config, clock)
    assert shown in result.error
    texts = [result.error, store.server_state(db, "EX01").last_error]
    texts += [record.getMessage() for record in caplog.records]
    assert len(texts) > 2
    for text in texts:
        _assert_inert(text)


def test_inert_keeps_names_in_any_script_and_escapes_what_rewrites_a_line():
    assert inert("КОНТОСО\\Сканер jürgen 山田") == "КОНТОСО\\Сканер jürgen 山田"
    assert inert("a\nb\x1b[2Jc\u202ed\u200be\x85") == "a\\nb\\x1b[2Jc\\u202ed\\u200be\\x85"


# --- the event source seam: the log's name, and who logged an event ----------------------------

def test_the_log_name_comes_from_the_configuration(logs, winrm, db, make_config, clock):
    config = make_config(servers=({"name": "EX01", "log": "ForwardedEvents"},))
    result = poll_server_once(db, source_of(config), config, clock)
    assert winrm.stats("EX01").command_lines[-1].startswith("wevtutil gli ForwardedEvents & ")
    assert "The specified channel could not be found" in result.error   # the simulator's only log
    with pytest.raises(ConfigError, match="servers.EX01.log must be an event log's name"):
        make_config(servers=({"name": "EX01", "log": "App & calc"},))


def test_the_origin_decides_routing_while_the_polled_server_owns_the_cursor(make_config):
    """A collector's endpoint returns events of many servers: each is routed by its origin."""
    xml = "".join(
        f"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        f"<Provider Name='{FE}'/><EventID>1020</EventID><EventRecordID>{n}</EventRecordID>"
        f"<TimeCreated SystemTime='2026-03-08T10:00:0{n}Z'/><Computer>{host}</Computer></System>"
        f"<EventData><Data>CONTOSO\\app</Data></EventData></Event>"
        for n, host in ((1, "EX01.contoso.local"), (2, "EX02.contoso.local")))
    batch = parse_events(xml, "WEC01", lambda computer: computer.split(".")[0].upper())
    assert [(e.server, e.origin) for e in batch.events] == [("WEC01", "EX01"), ("WEC01", "EX02")]
    assert [e.origin for e in parse_events(xml, "EX01").events] == ["EX01", "EX01"]
    config = make_config(servers=("EX01", {"name": "EX02", "channel": "C0EX02"}))
    assert [config.channel_of(e) for e in batch.events] == [CHANNEL, "C0EX02"]


def test_a_changed_log_starts_a_new_generation_from_the_look_back(db, clock):
    """A cursor counts records of one log: after servers.log changes it means nothing, so the
    new log is read like a new server's (in a new generation: record ids never collide)."""
    from bot.engine.poller import _state_for_log
    store.save_poll_success(db, store.ServerState("EX01"), generation=2, cursor=500,
                            oldest_record=1, newest_record=800, stored=3, now=clock(),
                            log="Application")
    same, notes = _state_for_log(db, "EX01", "Application")
    assert (same.generation, same.cursor, notes) == (2, 500, [])
    fresh, [note] = _state_for_log(db, "EX01", "ForwardedEvents")
    assert (fresh.generation, fresh.cursor, fresh.last_success_at) == (3, None, None)
    assert note.kind == "log_changed" and "reading the new log from polling.lookback" in note.detail


def test_check_warns_that_another_log_is_read_as_the_servers_own(logs, winrm, make_config):
    logs["EX01"].channel = "ForwardedEvents"
    _code, lines = check_lines(make_config(servers=({"name": "EX01", "log": "ForwardedEvents"},)))
    assert "OK       EX01: WinRM works and the event query runs; the ForwardedEvents log holds " \
        "0 record(s)" in lines
    assert "WARNING  EX01: every event in ForwardedEvents is taken for one logged by EX01 " \
        "itself: for a collector's log (ForwardedEvents), which holds many servers' events, use " \
        "a [[collectors]] entry (docs/collectors.md)" in lines

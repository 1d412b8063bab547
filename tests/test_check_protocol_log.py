"""`submitwatch check` and the SMTP Receive protocol log folders (issue 22, point 5): per server,
can the account read the folders the device look-up reads? Least privilege: a folder it may not
read is FAILED with the Grant script's step; a server that answers badly is a line, never a
traceback.

The folder side is the simulator's (sim/protocollog.py `answer_read`, which does what the read
script does over files the simulator's writer wrote as Exchange does); the shell is a stand-in
whose `run` answers with it, so each answer a server may give is tested without WinRM. The last
tests run `check` end to end over real pywinrm against sim/winrm_server.py.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.config import ServerConfig, parse_config
from bot.exchange.protocollog import default_log_folder
from bot.ops.check import (
    CHECK_READ_BYTES,
    CHECK_READ_SECONDS,
    GRANT_SCRIPT,
    PROTOCOL_LOG_SECTION,
    protocol_log_lines,
    protocol_log_roles,
    run_check,
)
from bot.sources.base import SourceError
from sim.protocollog import ProtocolLogWriter, answer_read, decode_read_command
from sim.winrm_server import WinRMSimulator
from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD, WINRM_USER

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 8, 10, 20, 5, tzinfo=UTC)
INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
FRONTEND = default_log_folder(INSTALL, "FrontEnd")
HUB = default_log_folder(INSTALL, "Hub")
ACCOUNT = "CONTOSO\\svc-submitwatch"
GRANT = f"Grant-SubmitWatchAccess.ps1 -Account '{ACCOUNT}' -ProtocolLogs"


def this_hours_log() -> dict[str, bytes]:
    writer = ProtocolLogWriter("EX01")
    writer.failed_auth(NOW - timedelta(minutes=5), "Default Frontend EX01",
                       ("10.20.30.41", 51234), event_id=1018, user="CONTOSO\\svc-scanner")
    writer.failed_auth(NOW - timedelta(hours=3), "Default Frontend EX01",
                       ("10.20.30.57", 40000), event_id=1018, user="CONTOSO\\svc-scanner")
    return writer.snapshot()


class FolderShell:
    """A remote shell whose `run` answers the protocol log read as a server with `folders`
    (folder path -> file name -> bytes) does."""

    def __init__(self, folders, *, install_path: str | None = INSTALL, denied=(),
                 unreadable=()):
        self.folders, self.install_path = folders, install_path
        self.denied, self.unreadable = tuple(denied), tuple(unreadable)
        self.reads: list = []

    def run(self, command, args):
        self.reads.append(decode_read_command(command, args))
        return answer_read(command, args, self.folders, install_path=self.install_path,
                           denied=self.denied, unreadable=self.unreadable), None


class AnswerShell:
    """A shell that answers every command with `answer` (bytes), or raises it."""

    def __init__(self, answer):
        self.answer = answer

    def run(self, command, args):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer, None


def server(**keys) -> ServerConfig:
    return ServerConfig(name="EX01", url="http://ex01:5985/wsman", username=ACCOUNT, **keys)


def config(**devices):
    return parse_config({"slack": {"channel": "C0ALERTS"},
                         "servers": [{"name": "EX01", "url": "http://ex01:5985/wsman",
                                      "username": ACCOUNT, "password_env": "WINRM_PASSWORD"}],
                         "devices": devices},
                        {"SLACK_BOT_TOKEN": "xoxb-1", "WINRM_PASSWORD": WINRM_PASSWORD})


def lines_for(shell, srv=None) -> list[tuple[str, str]]:
    return protocol_log_lines(shell, srv or server(), config(), NOW)


def statuses(lines) -> list[str]:
    return [status for status, _ in lines]


# --- what is read: the look-up's own read-only read, bounded, this hour only ------------------

def test_readable_folders_are_ok_and_say_what_was_read():
    shell = FolderShell({FRONTEND: this_hours_log(), HUB: {}})
    lines = lines_for(shell)
    assert lines == [
        ("OK", "EX01: can read the FrontEnd SMTP Receive protocol log folder (the default, "
               "%ExchangeInstallPath%TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive): "
               f"listed it and read this hour's 1 file(s) "
               f"({len(this_hours_log()['RECV2026030810-1.LOG']):,} bytes)"),
        ("OK", "EX01: can read the Hub SMTP Receive protocol log folder (the default, "
               "%ExchangeInstallPath%TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive): "
               "listed it (no file for this hour yet, so no file was opened)"),
    ]
    # The device look-up's own read: the default folders, this hour only (the 07:00 file is
    # not opened), at most 64 KiB and 5 seconds each.
    assert [(r.folder, r.role, r.hours, r.max_bytes, r.max_seconds) for r in shell.reads] == [
        (None, role, ("2026030810",), 64 * 1024, 5.0) for role in ("FrontEnd", "Hub")]
    assert (CHECK_READ_BYTES, CHECK_READ_SECONDS) == (64 * 1024, 5.0)


def test_a_large_file_is_read_only_up_to_the_bound():
    writer = ProtocolLogWriter("EX01")
    writer.write_filler(NOW, 3 * 1024 * 1024)
    shell = FolderShell({FRONTEND: writer.snapshot(), HUB: {}})
    [frontend, _hub] = lines_for(shell)
    assert frontend[0] == "OK" and "(65,536 bytes)" in frontend[1]


def test_configured_folders_are_the_ones_read_and_named():
    fe, hub = "D:\\Exchange Logs\\FrontEnd\\SmtpReceive", "D:\\O'Brien\\Hub"
    shell = FolderShell({fe: this_hours_log(), hub: {}})
    lines = lines_for(shell, server(frontend_protocol_log=fe, hub_protocol_log=hub))
    assert statuses(lines) == ["OK", "OK"]
    assert f"folder ({fe}): listed it and read" in lines[0][1]
    assert f"folder ({hub}): listed it (no file" in lines[1][1]
    assert [r.folder for r in shell.reads] == [fe, hub]


@pytest.mark.parametrize("keys", [{"role": "Edge"}, {"version": "2010"}, {"version": "2007"}])
def test_servers_without_a_front_end_transport_service_have_only_the_hub_folder_read(keys):
    shell = FolderShell({HUB: {}})
    lines = lines_for(shell, server(**keys))
    assert protocol_log_roles(server(**keys)) == ("Hub",)
    assert statuses(lines) == ["OK"] and "the Hub SMTP Receive" in lines[0][1]
    assert [r.role for r in shell.reads] == ["Hub"]


# --- a folder the account may not read: FAILED, with the Grant script's step -------------------

def test_a_denied_folder_fails_with_the_reason_and_the_grant_step():
    shell = FolderShell({FRONTEND: this_hours_log(), HUB: {}}, denied=[FRONTEND])
    lines = lines_for(shell)
    assert statuses(lines) == ["FAILED", "OK", "FIX"]
    assert lines[0][1] == (
        "EX01: the FrontEnd SMTP Receive protocol log folder (the default, "
        "%ExchangeInstallPath%TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive) cannot "
        f"be read: Access to the path '{FRONTEND}' is denied. The device look-up cannot name "
        "the clients behind this server's FrontEnd events")
    fix = lines[2][1]
    assert fix.startswith(f"EX01: on EX01, in an elevated Windows PowerShell, run `.\\{GRANT}` "
                          f"({GRANT_SCRIPT}; -WhatIf shows what it would do)")
    assert "Read and Execute on the protocol log folders and their files, nothing else" in fix
    assert PROTOCOL_LOG_SECTION in fix
    assert fix.endswith("If Exchange writes the log to another folder, set "
                        "servers.frontend_protocol_log to it")   # only the folder that failed


def test_both_denied_give_one_fix_line_with_the_configured_folder():
    fe = "D:\\Logs\\FrontEnd"
    shell = FolderShell({fe: {}, HUB: {}}, denied=[fe, HUB])
    lines = lines_for(shell, server(frontend_protocol_log=fe))
    assert statuses(lines) == ["FAILED", "FAILED", "FIX"]
    assert f"`.\\{GRANT} -FrontEndProtocolLogPath 'D:\\Logs\\FrontEnd'`" in lines[2][1]
    assert lines[2][1].endswith("set servers.frontend_protocol_log and servers.hub_protocol_log "
                                "to it")


def test_a_file_the_account_may_not_open_fails_too():
    """Listing the folder is not enough: the grant must be inherited by the files."""
    shell = FolderShell({FRONTEND: this_hours_log(), HUB: {}},
                        unreadable=["RECV2026030810-1.LOG"])
    lines = lines_for(shell)
    assert statuses(lines) == ["FAILED", "OK", "FIX"]
    assert ("cannot be read: RECV2026030810-1.LOG could not be read: Access to the path "
            "'RECV2026030810-1.LOG' is denied. The device look-up") in lines[0][1]


def test_a_folder_that_is_not_there_is_a_warning_naming_the_config_key_not_the_grant():
    """No grant fixes a folder that is not where it is looked for; nothing is read there."""
    lines = lines_for(FolderShell({FRONTEND: {}}))
    assert statuses(lines) == ["OK", "WARNING"]
    assert lines[1][1] == (
        "EX01: the Hub SMTP Receive protocol log folder (the default, "
        "%ExchangeInstallPath%TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive) was not "
        f"found (Cannot find path '{HUB}' because it does not exist), so the device look-up "
        "cannot name the clients behind this server's Hub events. If Exchange writes this log "
        "elsewhere, the Exchange Management Shell shows where (`Get-TransportService EX01 | "
        "Format-List ReceiveProtocolLogPath`): set servers.hub_protocol_log to that folder")
    unset = lines_for(FolderShell({}, install_path=None))
    assert statuses(unset) == ["WARNING", "WARNING"]
    assert "was not found (ExchangeInstallPath is not set), so" in unset[0][1]
    assert "servers.frontend_protocol_log" in unset[0][1]


# --- a server that answers badly: a line, never an exception -----------------------------------

HOSTILE = "Access denied\r\nOK       EX01: all fine\x1b[2J\u202e"


@pytest.mark.parametrize("answer, words", [
    (SourceError("EX01: `powershell -NoProfile` failed with exit code 1: not recognized"),
     "the read-only read did not run: EX01: `powershell -NoProfile` failed with exit code 1"),
    (b"<Events></Events>", "the read's answer was not what the read writes"),
    (b"", "the read's answer was not what the read writes"),
    (HOSTILE.encode(), "the read's answer was not what the read writes"),
    (RuntimeError(HOSTILE), "the FrontEnd protocol log check failed unexpectedly: "
                            "RuntimeError: Access denied\\r\\nOK"),
])
def test_a_bad_answer_is_a_failed_line_in_words(answer, words):
    lines = lines_for(AnswerShell(answer))
    assert statuses(lines) == ["FAILED", "FAILED"]
    assert words in lines[0][1]
    for _status, text in lines:
        assert not re.search(r"[\x00-\x1f\x7f\u202e]", text), text


def test_a_hostile_refusal_is_inert():
    import base64
    message = base64.b64encode(HOSTILE.encode()).decode()
    lines = lines_for(AnswerShell(f"E\t-\t{message}\nX\t0\terror\n".encode()))
    assert statuses(lines) == ["FAILED", "FAILED", "FIX"]
    assert "Access denied\\r\\nOK       EX01: all fine\\x1b[2J\\u202e" in lines[0][1]
    for _status, text in lines:
        assert not re.search(r"[\x00-\x1f\x7f\u202e]", text), text


def test_a_folder_no_powershell_literal_may_hold_is_failed_before_anything_runs():
    shell = FolderShell({HUB: {}})
    lines = lines_for(shell, server(frontend_protocol_log="D:\\Logs\nFE"))
    assert statuses(lines) == ["FAILED", "OK"]
    assert "correct servers.frontend_protocol_log" in lines[0][1]
    assert [r.role for r in shell.reads] == ["Hub"]


def test_the_fix_names_the_section_the_setup_page_has():
    docs = (ROOT / "docs" / "windows-setup.md").read_text(encoding="utf-8")
    heading = PROTOCOL_LOG_SECTION.split(", ", 1)[1]
    assert f"\n## {heading}\n" in docs or re.search(rf"\n## \d+\. {heading}\n", docs)
    assert (ROOT / GRANT_SCRIPT).exists()


# --- run_check -----------------------------------------------------------------------------------

def test_check_reads_no_protocol_log_when_devices_are_off(logs, winrm, make_config):
    lines: list[str] = []
    run_check(make_config(servers=("EX01",), devices={"enabled": False}), lines.append, NOW)
    assert not any("protocol log" in line for line in lines)
    assert not any(line.startswith("powershell")
                   for line in winrm.stats("EX01").command_lines)


def e2e_config(sim, db_path, slack, **server_keys):
    raw = {"slack": {"channel": CHANNEL, "api_url": slack.api_url},
           "store": {"path": db_path},
           "polling": {"operation_timeout": 2, "read_timeout": 5},
           "servers": [{"name": "EX01", "url": sim.url_for("EX01"), "username": WINRM_USER,
                        "password_env": "WINRM_PASSWORD", **server_keys}]}
    return parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": WINRM_PASSWORD,
                              "SLACK_APP_TOKEN": slack.app_token})


def check(config) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run_check(config, lines.append, NOW), lines


def test_check_end_to_end_fails_a_denied_folder_and_passes_once_granted(logs, slack, db_path):
    frontend = ProtocolLogWriter("EX01")
    frontend.failed_auth(NOW - timedelta(minutes=5), "Default Frontend EX01",
                         ("10.20.30.41", 51234), event_id=1018, user="CONTOSO\\svc-scanner")
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD},
                        protocol_logs={"EX01": {"FrontEnd": frontend,
                                                "Hub": ProtocolLogWriter("EX01")}}) as sim:
        config = e2e_config(sim, db_path, slack)
        sim.deny_protocol_log("EX01", role="FrontEnd")
        code, lines = check(config)
        assert code == 1
        [failed] = [line for line in lines if line.startswith("FAILED")]
        assert failed.startswith("FAILED   EX01: the FrontEnd SMTP Receive protocol log folder "
                                 "(the default, %ExchangeInstallPath%TransportRoles\\Logs\\"
                                 "FrontEnd\\ProtocolLog\\SmtpReceive) cannot be read: Access to "
                                 f"the path '{FRONTEND}' is denied.")
        assert f"FIX      EX01: on EX01, in an elevated Windows PowerShell, run `.\\{GRANT}`" \
            in "\n".join(lines)
        assert any(line.startswith("OK       EX01: can read the Hub SMTP Receive") for line in lines)
        # Over the shell check already opened: one shell, the event query and two reads.
        stats = sim.stats("EX01")
        assert stats.shells_created == 1 and stats.protocol_log_reads == 2

        sim.deny_protocol_log("EX01", denied=False)      # the script's step was run
        code, lines = check(config)
        assert code == 0, lines
        assert "OK       EX01: can read the FrontEnd SMTP Receive protocol log folder (the " \
            "default, %ExchangeInstallPath%TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\" \
            "SmtpReceive): listed it and read this hour's 1 file(s) " \
            f"({len(frontend.file_bytes('RECV2026030810-1.LOG')):,} bytes)" in lines
        assert not any(line.startswith(("FAILED", "FIX")) for line in lines)


def test_check_end_to_end_reads_a_configured_folder(logs, slack, db_path):
    hub = "D:\\Exchange\\Logs\\Hub\\SmtpReceive"
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}) as sim:
        sim.set_protocol_log("EX01", ProtocolLogWriter("EX01"), role="Hub", folder=hub)
        sim.set_protocol_log("EX01", ProtocolLogWriter("EX01"), role="FrontEnd")
        code, lines = check(e2e_config(sim, db_path, slack, hub_protocol_log=hub))
        assert code == 0, lines
        assert (f"OK       EX01: can read the Hub SMTP Receive protocol log folder ({hub}): "
                "listed it (no file for this hour yet, so no file was opened)") in lines
        # Without the key the default place is read, where this server has no folder.
        code, lines = check(e2e_config(sim, db_path, slack))
        assert code == 0 and any(line.startswith("WARNING  EX01: the Hub SMTP Receive protocol "
                                                 "log folder (the default") for line in lines)


def test_check_end_to_end_without_exchangeinstallpath_warns_and_does_not_fail(logs, slack,
                                                                              db_path):
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}) as sim:
        sim.set_install_path("EX01", None)
        code, lines = check(e2e_config(sim, db_path, slack))
    assert code == 0, lines
    warned = [line for line in lines if "was not found (ExchangeInstallPath is not set)" in line]
    assert [line.split(" (")[0] for line in warned] == [
        "WARNING  EX01: the FrontEnd SMTP Receive protocol log folder",
        "WARNING  EX01: the Hub SMTP Receive protocol log folder"]

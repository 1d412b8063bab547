"""The Exchange simulator, driven by real, unmodified pywinrm.

These tests pin down both halves of the simulator: that pywinrm really talks
to it (NTLM + message encryption, Basic, chunked output, faults) and that what
it answers is what the bot will meet on Windows (event XML, wevtutil output,
codepages, query strictness).
"""

from __future__ import annotations

import base64
import math
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as SafeET
import pytest
import requests
import winrm
from winrm.exceptions import InvalidCredentialsError, WinRMError, WSManFaultError

from sim.eventlog import (
    EVENT_NS,
    EventLog,
    QueryError,
    SimEvent,
    compile_query,
    demo_stream,
    event_xml,
    format_system_time,
    seed_demo,
)
from sim.protocollog import ProtocolLogWriter, demo_protocol_logs, log_refusal
from sim.wevtutil import WindowsTraits, run_wevtutil, split_windows_args
from sim.winrm_server import DEFAULT_PASSWORD, DEFAULT_USER, WinRMSimulator

NOW = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
PROVIDERS = "Provider[@Name='MSExchangeTransport' or @Name='MSExchangeFrontEndTransport']"


def cursor_query(after: int) -> str:
    return f"*[System[{PROVIDERS} and (EventID=1018 or EventID=1020) and EventRecordID > {after}]]"


def lookback_query(ms: int = 86_400_000) -> str:
    return (
        f"*[System[{PROVIDERS} and (EventID=1018 or EventID=1020) and EventRecordID > 0 "
        f"and TimeCreated[timediff(@SystemTime) <= {ms}]]]"
    )


def qe_args(xpath: str, count: int = 500) -> list[str]:
    return ["qe", "Application", f'/q:"{xpath}"', "/f:xml", f"/c:{count}", "/e:Events", "/rd:false"]


def make_log() -> EventLog:
    """EX01 with one stale event, noise that shares IDs or providers, and non-ASCII/UPN accounts."""
    log = EventLog("EX01.contoso.local", first_record=1000, now=lambda: NOW)
    log.append("MSExchangeTransport", 1020, ["CONTOSO\\svc-scanner"], time=NOW - timedelta(hours=30))  # 1000
    log.append("MSExchangeFrontEndTransport", 1020, ["CONTOSO\\svc-scanner"], time=NOW - timedelta(hours=2))  # 1001
    log.append("MSExchange Store Driver", 1020, ["Mailbox Database 01", "x"], time=NOW - timedelta(hours=2))  # 1002
    log.append("Microsoft-Windows-SMBServer", 1020, ["\\\\FS01\\share"], time=NOW - timedelta(hours=2))  # 1003
    log.append("MSExchangeTransport", 1035, ["LogonDenied", "Default EX01", "LOGIN", "203.0.113.7"], time=NOW - timedelta(hours=1))  # 1004
    log.append("MSExchangeFrontEndTransport", 1018, ["CONTOSO\\app-erp", "EX01\\Client Frontend EX01"], time=NOW - timedelta(hours=1))  # 1005
    log.append("MSExchangeTransport", 1020, ["CONTOSO\\jürgen.müller"], time=NOW - timedelta(minutes=30))  # 1006
    log.append("MSExchangeTransport", 1020, ["printer@contoso.com"], time=NOW - timedelta(minutes=20))  # 1007
    log.append("MSExchangeTransport", 1020, ["CONTOSO\\paweł"], time=NOW - timedelta(minutes=10))  # 1008
    return log


def parse_events(stdout: bytes) -> list[tuple[int, str, int, tuple[str, ...]]]:
    """(record id, provider, event id, data) of each event in wevtutil /e:Events output."""
    root = SafeET.fromstring(stdout)
    assert root.tag == "Events"
    ns = {"e": EVENT_NS}
    out = []
    for ev in root.findall("e:Event", ns):
        out.append((
            int(ev.findtext("e:System/e:EventRecordID", namespaces=ns)),
            ev.find("e:System/e:Provider", ns).get("Name"),
            int(ev.findtext("e:System/e:EventID", namespaces=ns)),
            tuple(d.text or "" for d in ev.findall("e:EventData/e:Data", ns)),
        ))
    return out


def run(protocol: winrm.Protocol, args: list[str], codepage: int = 65001, command: str = "wevtutil") -> tuple[bytes, bytes, int]:
    """What the bot does: one shell, one command, all output, clean up."""
    shell = protocol.open_shell(codepage=codepage)
    command_id = protocol.run_command(shell, command, args)
    result = protocol.get_command_output(shell, command_id)
    protocol.cleanup_command(shell, command_id)
    protocol.close_shell(shell)
    return result


# Never let pywinrm pick up proxy or CA settings from the environment: loopback only.
CLIENT = {"proxy": None, "ca_trust_path": None}


def ntlm(sim: WinRMSimulator, server: str = "EX01", password: str = DEFAULT_PASSWORD, user: str = DEFAULT_USER, **kwargs) -> winrm.Protocol:
    return winrm.Protocol(sim.url_for(server), transport="ntlm", username=user, password=password, **CLIENT, **kwargs)


def basic(sim: WinRMSimulator, server: str = "EX01", password: str = DEFAULT_PASSWORD) -> winrm.Protocol:
    return winrm.Protocol(sim.url_for(server), transport="basic", username=DEFAULT_USER, password=password, **CLIENT)


@pytest.fixture
def sim():
    """The WS-Management and command mechanics, with wevtutil writing in the shell's code page
    (the "console" mode); tests/test_windows.py covers the ANSI and Unicode modes."""
    with WinRMSimulator({"EX01": make_log(), "EX02": EventLog("EX02.contoso.local", now=lambda: NOW)}, record_wire=True) as s:
        for name in s.servers:
            s.set_traits(name, WindowsTraits(text_output="console"))
        yield s


@pytest.fixture
def basic_sim():
    with WinRMSimulator({"EX01": make_log()}, auth="basic") as s:
        s.set_traits("EX01", WindowsTraits(text_output="console"))
        yield s


# --------------------------------------------------------------------------------------------------
# Transport and authentication
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encryption", ["auto", "always"])
def test_ntlm_round_trip_is_encrypted_on_the_wire(sim, encryption):
    out, err, code = run(ntlm(sim, message_encryption=encryption), ["gli", "Application"])
    assert (code, err) == (0, b"")
    assert b"numberOfLogRecords: 9\r\n" in out

    st = sim.stats("EX01")
    assert st.auth_successes == 1 and st.auth_failures == 0
    assert st.soap_requests == 5  # Create, Command, Receive, Signal, Delete
    assert st.encrypted_requests == 5 and st.unencrypted_requests == 0
    assert st.shells_open == 0 and st.shells_created == 1
    bodies = [body for server, ctype, body in sim.wire_log if server == "EX01"]
    assert len(bodies) == 5
    for body in bodies:
        assert body.startswith(b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n")
        assert b"Envelope" not in body and b"wevtutil" not in body  # sealed, not merely framed


def test_ntlm_plaintext_is_refused_like_allow_unencrypted_false(sim):
    with pytest.raises(InvalidCredentialsError):
        ntlm(sim, message_encryption="never").open_shell()
    st = sim.stats("EX01")
    assert st.rejected_unencrypted == 1 and st.shells_created == 0


def test_ntlm_wrong_password_is_invalid_credentials(sim):
    with pytest.raises(InvalidCredentialsError):
        ntlm(sim, password="wrong").open_shell()
    st = sim.stats("EX01")
    assert st.auth_failures == 1 and st.auth_successes == 0 and st.soap_requests == 0


def test_ntlm_user_of_another_simulator_is_refused(sim):
    with WinRMSimulator({"EX09": EventLog()}, users={"CONTOSO\\other": "pw2"}):
        proto = ntlm(sim, user="CONTOSO\\other", password="pw2")
        with pytest.raises(InvalidCredentialsError):
            proto.open_shell()
    assert os.environ.get("NTLM_USER_FILE")  # still set: `sim` is running


def test_ntlm_upn_and_case_insensitive_user_names():
    users = {"CONTOSO\\svc-submitwatch": "pw1", "watcher@contoso.com": "pw2"}
    with WinRMSimulator({"EX01": make_log()}, users=users) as s:
        assert run(ntlm(s, user="contoso\\SVC-SubmitWatch", password="pw1"), ["gli", "Application"])[2] == 0
        assert run(ntlm(s, user="watcher@contoso.com", password="pw2"), ["gli", "Application"])[2] == 0
        with pytest.raises(InvalidCredentialsError):
            ntlm(s, user="watcher@contoso.com", password="pw1").open_shell()
        assert s.stats("EX01").auth_successes == 2


def test_basic_round_trip_and_wrong_password(basic_sim):
    proto = basic(basic_sim)
    out, err, code = run(proto, ["gli", "Application"])
    assert code == 0 and b"oldestRecordNumber: 1000\r\n" in out
    st = basic_sim.stats("EX01")
    assert st.unencrypted_requests == 5 and st.encrypted_requests == 0

    bad = basic(basic_sim, password="nope")
    with pytest.raises(InvalidCredentialsError):
        bad.open_shell()


def test_ntlm_client_against_basic_server_fails_cleanly(basic_sim):
    with pytest.raises(InvalidCredentialsError):
        ntlm(basic_sim).open_shell()


def test_stop_closes_everything_and_restores_environment():
    before = os.environ.get("NTLM_USER_FILE")
    s = WinRMSimulator({"EX01": make_log()}).start()
    url = s.url_for("EX01")
    assert os.path.isfile(os.environ["NTLM_USER_FILE"])
    s.stop()
    s.stop()  # idempotent
    assert os.environ.get("NTLM_USER_FILE") == before
    with pytest.raises(requests.exceptions.ConnectionError):
        winrm.Protocol(url, transport="ntlm", username=DEFAULT_USER, password=DEFAULT_PASSWORD, **CLIENT).open_shell()


# --------------------------------------------------------------------------------------------------
# wevtutil
# --------------------------------------------------------------------------------------------------


def test_gli_reports_count_and_oldest_record(sim):
    log = sim.log("EX01")
    log.drop_oldest(2)  # the log wrapped
    out, _, code = run(ntlm(sim), ["gli", "Application"])
    lines = out.decode().split("\r\n")
    assert code == 0 and lines[-1] == ""
    keys = [line.split(":", 1)[0] for line in lines[:-1]]
    assert keys == ["creationTime", "lastAccessTime", "lastWriteTime", "fileSize", "attributes", "numberOfLogRecords", "oldestRecordNumber"]
    assert "numberOfLogRecords: 7" in lines and "oldestRecordNumber: 1002" in lines and "attributes: 32" in lines

    log.clear()
    out, _, _ = run(ntlm(sim), ["gli", "Application"])
    assert b"numberOfLogRecords: 0\r\n" in out and b"oldestRecordNumber: 0\r\n" in out
    assert log.append("MSExchangeTransport", 1020, ["x"]).record_id == 1009  # numbering continues after a clear


def test_qe_cursor_batches_oldest_first_and_filters_other_providers(sim):
    proto = ntlm(sim)
    out, _, code = run(proto, qe_args(cursor_query(1000), count=2))
    assert code == 0
    assert [(r, p, i) for r, p, i, _ in parse_events(out)] == [
        (1001, "MSExchangeFrontEndTransport", 1020),
        (1005, "MSExchangeFrontEndTransport", 1018),  # 1002-1004: other providers, or 1035
    ]
    out, _, _ = run(proto, qe_args(cursor_query(1005), count=2))
    assert [e[0] for e in parse_events(out)] == [1006, 1007]
    out, _, _ = run(proto, qe_args(cursor_query(1007)))
    events = parse_events(out)
    assert [e[0] for e in events] == [1008]
    out, err, code = run(proto, qe_args(cursor_query(1008)))
    assert (out, err, code) == (b"<Events></Events>\r\n", b"", 0)
    # The filter is what removed the noise: a looser query returns it.
    out, _, _ = run(proto, qe_args("*[System[EventID=1020 and EventRecordID > 1000]]"))
    assert {e[1] for e in parse_events(out)} >= {"MSExchange Store Driver", "Microsoft-Windows-SMBServer"}


def test_qe_output_format_matches_wevtutil(sim):
    out, _, _ = run(ntlm(sim), qe_args(cursor_query(1000), count=2))
    text = out.decode("utf-8")
    assert text.startswith("<Events><Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>")
    assert text.endswith("</Event>\r\n</Events>\r\n")
    assert text.count("\r\n") == 3 and "\n" not in text.replace("\r\n", "")


def test_qe_lookback_uses_the_simulator_clock(sim):
    out, _, _ = run(ntlm(sim), qe_args(lookback_query()))
    assert [e[0] for e in parse_events(out)] == [1001, 1005, 1006, 1007, 1008]  # 1000 is 30 h old
    out, _, _ = run(ntlm(sim), qe_args(lookback_query(ms=45 * 60 * 1000)))
    assert [e[0] for e in parse_events(out)] == [1006, 1007, 1008]


def test_in_console_mode_a_non_ascii_account_needs_codepage_65001(sim):
    q = qe_args(cursor_query(1005), count=1)
    out, _, _ = run(ntlm(sim), q, codepage=65001)
    assert parse_events(out)[0][3] == ("CONTOSO\\jürgen.müller",)

    out437, _, code = run(ntlm(sim), q, codepage=437)
    assert code == 0
    assert "jürgen.müller".encode("cp437") in out437 and b"j\x81rgen.m\x81ller" in out437
    with pytest.raises(UnicodeDecodeError):
        out437.decode("utf-8")
    # A character cp437 does not have is lost for good, as on Windows.
    out437, _, _ = run(ntlm(sim), qe_args(cursor_query(1007), count=1), codepage=437)
    assert b"CONTOSO\\pawe?" in out437
    assert sim.stats("EX01").codepages == [65001, 437, 437]


def test_multi_chunk_output_is_identical(sim):
    proto = ntlm(sim)
    whole, _, _ = run(proto, qe_args(cursor_query(0)))
    sim.reset_stats("EX01")
    sim.set_chunk_size("EX01", 97)
    chunked, _, code = run(proto, qe_args(cursor_query(0)))
    assert code == 0 and chunked == whole
    assert sim.stats("EX01").actions["Receive"] == math.ceil(len(whole) / 97) > 10


def test_invalid_query_exits_15001(sim):
    out, err, code = run(ntlm(sim), qe_args("*[System[EventID=1020 and Level=3]]"))
    assert (out, code) == (b"", 15001)
    assert b"The specified query is invalid." in err


def test_unquoted_xpath_is_caught_not_silently_redirected(sim):
    args = ["qe", "Application", f"/q:{cursor_query(0)}", "/f:xml", "/e:Events"]
    out, err, code = run(ntlm(sim), args)
    assert code != 0 and out == b"" and b"'>'" in err


def test_unknown_command_fails(sim):
    out, err, code = run(ntlm(sim), ["-Command", "Get-WinEvent"], command="powershell")
    assert code == 1 and b"is not recognized" in err
    out, err, code = run(ntlm(sim), ["cl", "Application"])
    assert code == 87 and out == b""


def test_raw_record_is_emitted_verbatim_between_good_ones(sim):
    log = sim.log("EX02")
    log.append("MSExchangeTransport", 1020, ["CONTOSO\\a"])
    broken = f"<Event xmlns='{EVENT_NS}'><System><Provider Name='MSExchangeTransport'/><EventID>10"
    log.append_raw(broken)
    log.append("MSExchangeTransport", 1020, ["CONTOSO\\b"])
    out, _, code = run(ntlm(sim, "EX02"), qe_args(cursor_query(0)))
    lines = out.decode().split("\r\n")
    assert code == 0 and lines[1] == broken
    assert "CONTOSO\\a" in lines[0] and "CONTOSO\\b" in lines[2]


# --------------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------------


def test_operation_timeout_is_retried_by_pywinrm(sim):
    expected, _, _ = run(ntlm(sim), qe_args(cursor_query(0)))
    sim.reset_stats("EX01")
    sim.inject("EX01", "operation_timeout", times=2)
    out, _, code = run(ntlm(sim), qe_args(cursor_query(0)))
    assert code == 0 and out == expected
    st = sim.stats("EX01")
    assert st.faults["operation_timeout"] == 2 and st.actions["Receive"] == 3
    assert sim.pending_faults("EX01") == []


@pytest.mark.parametrize("auth", ["ntlm", "basic"])
def test_injected_401_is_invalid_credentials(auth):
    with WinRMSimulator({"EX01": make_log()}, auth=auth) as s:
        s.inject("EX01", "unauthorized", on="Command")
        proto = ntlm(s) if auth == "ntlm" else basic(s)
        shell = proto.open_shell()
        with pytest.raises(InvalidCredentialsError):
            proto.run_command(shell, "wevtutil", ["gli", "Application"])
        assert s.stats("EX01").faults["unauthorized"] == 1


def test_wsman_fault_raises_wsman_fault_error(sim):
    sim.inject("EX01", "wsman_fault")
    with pytest.raises(WSManFaultError) as info:
        ntlm(sim).open_shell()
    assert isinstance(info.value, WinRMError)
    assert info.value.wsman_fault_code == 5 and info.value.code == 500
    assert info.value.reason == "Access is denied."
    # Only once: the next attempt works.
    assert run(ntlm(sim), ["gli", "Application"])[2] == 0


def test_unknown_shell_is_a_fault(sim):
    proto = ntlm(sim)
    with pytest.raises(WSManFaultError) as info:
        proto.run_command("00000000-0000-0000-0000-000000000000", "wevtutil", ["gli", "Application"])
    assert info.value.wsman_fault_code == 2150858843


def test_hang_hits_the_client_read_timeout(sim):
    sim.inject("EX01", "hang", on="Create")
    proto = ntlm(sim, read_timeout_sec=2, operation_timeout_sec=1)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        proto.open_shell()
    assert 1.9 <= time.monotonic() - started < 6
    assert run(ntlm(sim), ["gli", "Application"])[2] == 0  # the server itself is still healthy


def test_exit_code_fault_returns_clixml(sim):
    sim.inject("EX01", "exit_code")
    out, err, code = run(ntlm(sim), qe_args(cursor_query(0)))
    assert (out, code) == (b"", 5)
    assert err.startswith(b"#< CLIXML\r\n<Objs ")


def test_garbage_and_invalid_text_faults(sim):
    good, _, _ = run(ntlm(sim), qe_args(cursor_query(0)))
    sim.inject("EX01", "garbage")
    junk, _, code = run(ntlm(sim), qe_args(cursor_query(0)))
    assert code == 0 and junk != good
    with pytest.raises(SafeET.ParseError):
        SafeET.fromstring(junk)

    sim.inject("EX01", "invalid_text")
    bad, _, code = run(ntlm(sim), qe_args(cursor_query(0)))
    assert code == 0 and bad.replace(b"\xff\xfe\xc3(", b"", 1) == good
    with pytest.raises(UnicodeDecodeError):
        bad.decode("utf-8")


def test_request_delay_per_server(sim):
    sim.set_request_delay("EX02", 0.05)
    started = time.monotonic()
    run(ntlm(sim, "EX02"), ["gli", "Application"])
    slow = time.monotonic() - started
    requests_made = sim.stats("EX02").http_requests
    assert requests_made == 8 and slow >= 0.05 * requests_made  # 3 NTLM legs + 5 SOAP calls
    started = time.monotonic()
    run(ntlm(sim, "EX01"), ["gli", "Application"])
    assert time.monotonic() - started < slow / 2


def test_many_servers_in_parallel():
    names = [f"EX{i:03d}" for i in range(60)]
    logs = {}
    for n, name in enumerate(names):
        log = EventLog(f"{name}.contoso.local", now=lambda: NOW)
        for k in range(n % 4 + 1):
            log.append("MSExchangeTransport", 1020, [f"CONTOSO\\user{k}"], time=NOW - timedelta(minutes=k))
        log.append_noise(3)
        logs[name] = log
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def poll(batch: list[str]) -> None:
        try:
            for name in batch:
                out, _, code = run(ntlm(s, name), qe_args(lookback_query()))
                assert code == 0
                results[name] = parse_events(out)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with WinRMSimulator(logs) as s:
        threads = [threading.Thread(target=poll, args=(names[i::12],)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)  # generous: a loaded CI machine may be slow, a hang still fails below
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        for n, name in enumerate(names):
            assert [e[3] for e in results[name]] == [(f"CONTOSO\\user{k}",) for k in range(n % 4 + 1)]
            st = s.stats(name)
            assert st.shells_open == 0 and st.encrypted_requests == 5


# --------------------------------------------------------------------------------------------------
# eventlog.py
# --------------------------------------------------------------------------------------------------


def test_event_xml_is_the_documented_format():
    ev = SimEvent(667364, "MSExchangeTransport", 1020, datetime(2026, 3, 8, 8, 13, 12, tzinfo=UTC),
                  ("CONTOSO\\svc-scanner",), "EX01.contoso.local")
    assert event_xml(ev) == (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='MSExchangeTransport'/><EventID Qualifiers='32772'>1020</EventID>"
        "<Level>3</Level><Task>1</Task><Keywords>0x80000000000000</Keywords>"
        "<TimeCreated SystemTime='2026-03-08T08:13:12.000000000Z'/><EventRecordID>667364</EventRecordID>"
        "<Channel>Application</Channel><Computer>EX01.contoso.local</Computer><Security/></System>"
        "<EventData><Data>CONTOSO\\svc-scanner</Data></EventData></Event>"
    )


def test_event_xml_escapes_hostile_values():
    hostile = "<!channel> & 'x' \"y\""
    ev = SimEvent(1, "MSExchangeTransport", 1018, NOW, (hostile, "EX01\\Client <Frontend>"))
    root = SafeET.fromstring(event_xml(ev))
    assert [d.text for d in root.iter(f"{{{EVENT_NS}}}Data")] == [hostile, "EX01\\Client <Frontend>"]
    assert format_system_time(NOW.replace(microsecond=123456)) == "2026-03-08T09:00:00.123456000Z"
    with pytest.raises(ValueError):
        SimEvent(1, "p", 1, datetime(2026, 1, 1))  # naive times are refused


def test_query_dialect_is_strict():
    for good in (cursor_query(28859197), lookback_query(), "*", "*[System[EventID=1020]]"):
        compile_query(good)
    assert compile_query(cursor_query(28859197)).min_record == 28859198
    for bad in (
        "",
        "*[System[EventID=1020]",  # unbalanced
        "Event[System[EventID=1020]]",
        "*[System[Level=3]]",  # outside the dialect
        "*[System[EventID='1020']]",
        "*[System[Provider[@Name=MSExchangeTransport]]]",  # unquoted
        "*[System[TimeCreated[timediff(@SystemTime) <= 1.5]]]",
        "<QueryList/>",
    ):
        with pytest.raises(QueryError):
            compile_query(bad)


def test_log_numbering_clear_wrap_and_restart():
    log = EventLog(first_record=5, now=lambda: NOW, max_records=3)
    ids = [log.append("MSExchangeTransport", 1020, ["a"]).record_id for _ in range(5)]
    assert ids == [5, 6, 7, 8, 9]
    assert (log.count, log.oldest_record, log.newest_record) == (3, 7, 9)  # wrapped
    assert log.drop_oldest(1) == 1 and log.oldest_record == 8
    log.clear()
    assert (log.count, log.oldest_record, log.newest_record, log.next_record) == (0, None, None, 10)
    log.clear(restart_numbering=True)
    assert log.append("MSExchangeTransport", 1020, ["a"]).record_id == 5


def test_run_wevtutil_errors():
    log = make_log()
    assert run_wevtutil(log, ["gli", "System"])[2] == 15007
    assert run_wevtutil(log, ["qe", "Application", "/f:text"])[2] == 87
    assert run_wevtutil(log, ["qe", "Application", "/f:xml", "/c:0"])[2] == 87
    out, _, code = run_wevtutil(log, ["qe", "Application", "/f:xml", "/c:2", "/rd:true", f"/q:{cursor_query(0)}"])
    assert code == 0 and out.count("\r\n") == 2 and "<EventRecordID>1008<" in out.split("\r\n")[0]


def test_cmd_caret_escape_is_honoured(sim):
    args = ["qe", "Application", "/q:*[System[EventRecordID^>1007]]", "/f:xml", "/e:Events"]
    out, err, code = run(ntlm(sim), args)
    assert code == 0, err
    assert [e[0] for e in parse_events(out)] == [1008]


def test_split_windows_args():
    assert split_windows_args('wevtutil qe Application /q:"*[System[EventRecordID > 5]]" /c:5') == [
        "wevtutil", "qe", "Application", "/q:*[System[EventRecordID > 5]]", "/c:5"]
    assert split_windows_args(r'a\\"b c" d\e "x""y"') == ["a\\b c", "d\\e", 'x"y']


def test_demo_stream_is_deterministic_and_tells_the_story():
    assert demo_stream(NOW) == demo_stream(NOW)
    logs = seed_demo({}, NOW)
    assert set(logs) == {"EX01", "EX02"}
    accounts = {
        (name, ev.provider, ev.event_id, ev.data[0])
        for name, log in logs.items()
        for ev in log.query(lookback_query(), now=NOW)
    }
    assert ("EX01", "MSExchangeFrontEndTransport", 1020, "CONTOSO\\Administrator") in accounts
    assert ("EX02", "MSExchangeFrontEndTransport", 1020, "CONTOSO\\Administrator") in accounts
    assert ("EX02", "MSExchangeFrontEndTransport", 1018, "CONTOSO\\app-erp") in accounts
    assert ("EX01", "MSExchangeTransport", 1018, "printer@contoso.com") in accounts
    assert ("EX01", "MSExchangeFrontEndTransport", 1018, "CONTOSO\\jürgen.müller") in accounts
    assert ("EX01", "MSExchangeFrontEndTransport", 1018, "CONTOSO\\svc-mfp") in accounts
    # Both events carry {account, connector.Name}, the bare name, as Exchange logs them.
    connectors = {ev.data[1] for log in logs.values() for ev in log.query(lookback_query(), now=NOW)}
    assert connectors == {"Client Frontend EX01", "Client Frontend EX02", "Relay EX02",
                          "Client Proxy EX01", "Default Frontend EX01"}
    assert all(event_id in (1018, 1020) for _, _, event_id, _ in accounts)
    everything = [ev for log in logs.values() for ev in log.events()]
    assert any(ev.provider not in ("MSExchangeTransport", "MSExchangeFrontEndTransport") for ev in everything)
    assert any(NOW - ev.time > timedelta(hours=24) for ev in everything)  # outside the look-back


def test_cmd_exe_runs_commands_joined_by_an_ampersand_in_order():
    from sim.eventlog import EventLog
    from sim.wevtutil import run_command_line
    log = EventLog("EX01.contoso.local", first_record=10)
    log.append("MSExchangeFrontEndTransport", 1020, ("CONTOSO\\a",))
    out, err, code = run_command_line(
        log, 'wevtutil gli Application & wevtutil qe Application /q:"*[System[EventRecordID > 0]]"'
             ' /f:xml /e:Events')
    assert out.index("numberOfLogRecords") < out.index("<Events>") and code == 0
    out, err, code = run_command_line(log, "wevtutil gli Application && wevtutil gli Application")
    assert code == 1 and "metacharacter '&'" in err
    out, err, code = run_command_line(log, 'wevtutil qe Application /q:"a & b"')
    assert "metacharacter" not in err          # a quoted & is text, not a separator


# --- the SMTP Receive protocol log read (powershell -EncodedCommand) ------------------------------


LATER = NOW - timedelta(minutes=50)


def protocol_log_read(sim, server="EX01", **request):
    """The bot's read command (bot/exchange/protocollog.py) for LATER's hour, run over raw
    pywinrm: (its output's records, stderr, exit code)."""
    from bot.exchange.protocollog import ReadRequest, hours_for, read_command
    command, args = read_command(ReadRequest(hours=hours_for([LATER]), **request))
    out, err, code = run(ntlm(sim, server), args, command=command)
    return [line.split("\t") for line in out.decode("ascii").splitlines()], err, code


def text_of(record):
    return base64.b64decode(record[2]).decode()


def with_printer(sim, server="EX01"):
    writer = ProtocolLogWriter(server)
    sim.set_protocol_log(server, writer)
    for i, address in enumerate(("10.20.30.41", "10.20.30.57")):
        log_refusal(sim.log(server), writer, 1018, "CONTOSO\\svc-mfp", (address, 50000 + i),
                    connector=f"Default Frontend {server}", time=LATER)
    return writer


def test_the_protocol_log_read_is_answered_from_the_servers_folder(sim):
    writer = with_printer(sim)
    records, err, code = protocol_log_read(sim)
    assert code == 0 and err == b""
    [name] = writer.names()
    texts = [base64.b64decode(r[2]) for r in records if r[0] == "L"]
    assert [t.split(b",")[5] for t in texts if not t.startswith(b"#")] == [
        b"10.20.30.41:50000", b"10.20.30.57:50001"]
    assert records[-2] == ["F", name, "0", str(len(writer.file_bytes(name))),
                           str(len(writer.file_bytes(name)))]
    assert records[-1] == ["X", str(len(writer.file_bytes(name))), "done"]
    stats = sim.stats("EX01")
    assert stats.protocol_log_reads == 1 and stats.command_lines[-1].startswith(
        "powershell -NoProfile -NonInteractive -EncodedCommand ")


def test_the_protocol_log_read_goes_the_way_of_other_output(sim):
    with_printer(sim)
    whole = protocol_log_read(sim)[0]
    sim.set_chunk_size("EX01", 50)                    # many Receive calls, the same output
    assert protocol_log_read(sim)[0] == whole
    sim.inject("EX01", "exit_code")                   # output faults act on it as on wevtutil
    records, err, code = protocol_log_read(sim)
    assert (records, code) == ([], 5) and b"Access is denied" in err


def test_the_protocol_log_folder_denied_missing_or_without_install_path(sim):
    with_printer(sim)
    folder = sim.protocol_log_folder("EX01")
    assert folder == ("C:\\Program Files\\Microsoft\\Exchange Server\\V15\\TransportRoles\\Logs"
                      "\\FrontEnd\\ProtocolLog\\SmtpReceive")
    sim.deny_protocol_log("EX01")
    records, _, code = protocol_log_read(sim)
    assert code == 0 and [r[:2] for r in records] == [["E", "-"], ["X", "0"]]
    assert text_of(records[0]) == f"Access to the path '{folder}' is denied."
    assert records[1] == ["X", "0", "error"]
    records, _, _ = protocol_log_read(sim, folder="E:\\Elsewhere")
    assert text_of(records[0]) == "Cannot find path 'E:\\Elsewhere' because it does not exist."
    sim.deny_protocol_log("EX01", False)
    assert protocol_log_read(sim)[0][-1][2] == "done"
    records, _, _ = protocol_log_read(sim, server="EX02")   # EX02 has no folder
    assert text_of(records[0]) == f"Cannot find path '{folder}' because it does not exist."
    sim.set_install_path("EX01", None)
    assert protocol_log_read(sim)[0][-1] == ["X", "0", "error"]
    with pytest.raises(ValueError):
        sim.deny_protocol_log("EX01", role="Edge")
    with pytest.raises(ValueError):
        sim.set_protocol_log("EX01", ProtocolLogWriter(), role="Edge")


def test_powershell_runs_only_the_protocol_log_read(sim):
    with_printer(sim)
    other = base64.b64encode("Remove-Item C:\\ -Recurse".encode("utf-16-le")).decode()
    out, err, code = run(ntlm(sim), ["-NoProfile", "-EncodedCommand", other], command="powershell")
    assert (out, code) == (b"", 1) and b"only the protocol log read" in err
    out, err, code = run(ntlm(sim), ["-EncodedCommand", other, "&", "wevtutil", "gli", "Application"],
                         command="powershell")
    assert code == 0 and b"numberOfLogRecords" in out         # cmd.exe runs both; the last wins
    assert b"'powershell' is not recognized" in err
    assert sim.stats("EX01").protocol_log_reads == 0


def test_the_demo_world_has_the_printers_protocol_log_lines():
    from bot.exchange.protocollog import ReadRequest, hours_for, parse_read_output, read_command
    logs = seed_demo({}, NOW)
    writers = demo_protocol_logs(NOW)
    mfp = [ev for ev in logs["EX01"].events() if ev.data[:1] == ("CONTOSO\\svc-mfp",)]
    assert len(mfp) == 6
    with WinRMSimulator(logs, protocol_logs=writers) as s:
        assert s.protocol_log("EX01") is writers["EX01"]["FrontEnd"]
        assert s.protocol_log("EX02", "Hub") is writers["EX02"]["Hub"]
        command, args = read_command(ReadRequest(hours=hours_for([ev.time for ev in mfp])))
        out, _, code = run(ntlm(s), args, command=command)
    read = parse_read_output(out, "EX01")
    assert code == 0 and read.stopped is None and read.problems == ()
    assert [(ln.user, ln.connector) for ln in read.lines] == [
        ("CONTOSO\\svc-mfp", "EX01\\Default Frontend EX01")] * 6
    assert {ln.address for ln in read.lines} == {"10.20.30.41", "10.20.30.57"}
    assert [ln.time.replace(microsecond=0) for ln in read.lines] == [
        ev.time.replace(microsecond=0) for ev in mfp]

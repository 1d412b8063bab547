"""The protocol log read end to end: the bot's read command (bot/exchange/protocollog.py) sent by
the product's WinRM source (bot/sources/winrm.py, real pywinrm, NTLM with message encryption) to
the WinRM simulator, which answers it from the server's SMTP Receive protocol log folder as the
script would (sim/winrm_server.py over sim/protocollog.py); events and log lines written in one
code path (`log_refusal`), as Exchange writes them."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import parse_config
from bot.exchange.protocollog import (
    DEFAULT_MAX_BYTES,
    ReadRequest,
    hours_for,
    join,
    parse_read_output,
    read_command,
)
from bot.sources.parse import parse_events
from bot.sources.winrm import WinRMSource
from sim.eventlog import EventLog
from sim.protocollog import ProtocolLogWriter, log_refusal
from sim.winrm_server import WinRMSimulator
from tests.conftest import WINRM_PASSWORD, WINRM_USER

T0 = datetime(2026, 3, 8, 8, 13, 12, 345000, tzinfo=UTC)
INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
FE = INSTALL + "TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive"
HUB = INSTALL + "TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive"
SCANNER = "CONTOSO\\svc-scan"
PORT25 = "Default Frontend EX01"


@pytest.fixture
def world():
    """EX01's Application log and its Front End protocol log, served by a running simulator."""
    log = EventLog("EX01.contoso.local", first_record=667_300, now=lambda: T0)
    writer = ProtocolLogWriter("EX01", logging={"Relay EX01": "Verbose"})
    with WinRMSimulator({"EX01": log}, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm",
                        protocol_logs={"EX01": writer}) as sim:
        yield sim, log, writer


def source_for(sim, server="EX01"):
    raw = {"slack": {"channel": "C0ALERTS"},
           "polling": {"operation_timeout": 2, "read_timeout": 5},
           "servers": [{"name": server, "url": sim.url_for(server), "username": WINRM_USER,
                        "password_env": "PW"}]}
    config = parse_config(raw, {"PW": WINRM_PASSWORD})
    return WinRMSource(config.servers[0], config.polling)


def remote_read(source, hours, cursors=None, **request):
    """One read as the product will do it: the command through the shell, its output parsed."""
    command, args = read_command(ReadRequest(hours=tuple(hours),
                                             cursors=tuple((cursors or {}).items()), **request))
    with source.open() as shell:
        out, cut = shell.run(command, args)
    assert cut is None
    return parse_read_output(out, source.server.name, cursors), out


def events_of(source):
    with source.open() as shell:
        return parse_events(shell.query(0, 500).text, source.server.name).events


def refusals(log, writer):
    """Two devices failing with one account in the same second, a redacted user, and a
    connector that does not log."""
    log_refusal(log, writer, 1018, SCANNER, ("10.20.30.41", 50123), connector=PORT25, time=T0,
                ehlo="mfp-3f.contoso.local")
    log_refusal(log, writer, 1018, SCANNER, ("10.20.30.57", 50999), connector=PORT25,
                time=T0 + timedelta(milliseconds=400), ehlo="mfp-3f.contoso.local")
    log_refusal(log, writer, 1018, "CONTOSO\\app-erp", ("10.5.0.20", 41000),
                connector="Relay EX01", time=T0 + timedelta(seconds=30), user="CONTOSO\\5c1ab2")
    log_refusal(log, writer, 1018, "CONTOSO\\jürgen.müller", ("10.7.7.7", 2),
                connector="Client Frontend EX01", time=T0 + timedelta(seconds=40))


def test_the_read_over_winrm_brings_the_lines_and_the_join_names_both_devices(world):
    sim, log, writer = world
    refusals(log, writer)
    source = source_for(sim)
    events = events_of(source)
    assert len(events) == 4
    read, out = remote_read(source, hours_for([e.time for e in events]))
    assert read.stopped is None and read.problems == ()
    assert [(ln.user, ln.address, ln.connector) for ln in read.lines] == [
        (SCANNER, "10.20.30.41", "EX01\\Default Frontend EX01"),
        (SCANNER, "10.20.30.57", "EX01\\Default Frontend EX01"),
        ("CONTOSO\\5c1ab2", "10.5.0.20", "EX01\\Relay EX01")]
    [name] = writer.names()
    assert read.cursors == {name: len(writer.file_bytes(name))}
    assert b"mfp-3f" not in out       # only failure lines come back, never the rest of the log

    result = join(events, read.lines)
    [scan] = result.for_account(SCANNER)
    assert [(d.address, d.sessions, d.account_shown) for d in scan.devices] == [
        ("10.20.30.41", 1, True), ("10.20.30.57", 1, True)]
    assert scan.unmatched_events == 0
    [erp] = result.for_account("CONTOSO\\app-erp")
    assert [(d.address, d.account_shown) for d in erp.devices] == [("10.5.0.20", False)]
    [quiet] = result.for_account("CONTOSO\\jürgen.müller")
    assert quiet.no_match and quiet.unmatched_events == 1     # its connector does not log
    stats = sim.stats("EX01")
    assert stats.protocol_log_reads == 1 and stats.encrypted_requests > 0


def test_the_cursors_move_so_a_line_is_read_once_and_a_new_one_is_read_next(world):
    sim, log, writer = world
    refusals(log, writer)
    source = source_for(sim)
    hours = hours_for([T0, T0 + timedelta(minutes=20)])
    first, _ = remote_read(source, hours)
    assert len(first.lines) == 3
    again, _ = remote_read(source, hours, first.cursors)
    assert again.lines == () and again.problems == () and again.cursors == first.cursors
    log_refusal(log, writer, 1020, "CONTOSO\\Administrator", ("10.20.31.12", 1025),
                connector=PORT25, time=T0 + timedelta(minutes=20))
    more, _ = remote_read(source, hours, again.cursors)
    assert [(ln.event_id, ln.user, ln.address) for ln in more.lines] == [
        (1020, "CONTOSO\\Administrator", "10.20.31.12")]
    [name] = writer.names()
    assert more.files[0].start == first.cursors[name]
    assert more.cursors == {name: len(writer.file_bytes(name))}


def test_an_unreadable_folder_is_a_problem_and_polling_goes_on(world):
    sim, log, writer = world
    refusals(log, writer)
    sim.deny_protocol_log("EX01")
    source = source_for(sim)
    hours = hours_for([T0])
    with source.open() as shell:
        out, cut = shell.run(*read_command(ReadRequest(hours=hours)))
        info = shell.log_info()                       # the same shell still polls
        answer = shell.query(0, 500)
    assert cut is None and info.record_count == 4
    assert len(parse_events(answer.text, "EX01").events) == 4
    read = parse_read_output(out, "EX01", {"RECV2026030808-1.LOG": 7})
    assert read.stopped == "error" and read.lines == ()
    assert read.cursors == {"RECV2026030808-1.LOG": 7}           # nothing moved
    [problem] = read.problems
    assert problem.kind == "log_unreadable" and problem.server == "EX01"
    assert problem.detail == ("the protocol log folder could not be read: Access to the path "
                              f"'{FE}' is denied.")
    sim.deny_protocol_log("EX01", False)
    read, _ = remote_read(source, hours)
    assert read.stopped is None and len(read.lines) == 3


def test_the_folder_exchange_is_configured_with(world):
    sim, log, writer = world
    refusals(log, writer)
    source = source_for(sim)
    hours = hours_for([T0])
    read, _ = remote_read(source, hours, folder=FE)          # the default, named explicitly
    assert len(read.lines) == 3
    read, _ = remote_read(source, hours, folder="D:\\Logs\\SmtpReceive")
    assert read.stopped == "error" and [p.detail for p in read.problems] == [
        "the protocol log folder could not be read: Cannot find path 'D:\\Logs\\SmtpReceive' "
        "because it does not exist."]
    # Set-FrontendTransportService -ReceiveProtocolLogPath D:\Logs\SmtpReceive
    sim.set_protocol_log("EX01", writer, folder="D:\\Logs\\SmtpReceive")
    assert sim.protocol_log_folder("EX01") == "D:\\Logs\\SmtpReceive"
    read, _ = remote_read(source, hours, folder="d:\\logs\\SMTPRECEIVE")   # Windows: any case
    assert len(read.lines) == 3
    read, _ = remote_read(source, hours)
    assert "Cannot find path" in read.problems[0].detail
    sim.set_install_path("EX01", None)
    read, _ = remote_read(source, hours)
    assert [p.detail for p in read.problems] == [
        "the protocol log folder could not be read: ExchangeInstallPath is not set"]


def test_the_hub_folder_is_its_own(world):
    sim, log, writer = world
    hub = ProtocolLogWriter("EX01", logging={"Default EX01": "Verbose"})
    sim.set_protocol_log("EX01", hub, role="Hub")
    assert sim.protocol_log("EX01", "Hub") is hub and sim.protocol_log_folder("EX01", "Hub") == HUB
    log_refusal(log, hub, 1020, "CONTOSO\\Administrator", ("10.0.0.30", 3000),
                connector="Default EX01", provider="MSExchangeTransport", time=T0)
    log_refusal(log, writer, 1018, SCANNER, ("10.20.30.41", 1), connector=PORT25, time=T0)
    source = source_for(sim)
    front, _ = remote_read(source, hours_for([T0]))
    back, _ = remote_read(source, hours_for([T0]), role="Hub")
    assert [ln.user for ln in front.lines] == [SCANNER]
    assert [ln.user for ln in back.lines] == ["CONTOSO\\Administrator"]
    sim.deny_protocol_log("EX01", role="Hub")
    assert remote_read(source, hours_for([T0]), role="Hub")[0].stopped == "error"
    assert remote_read(source, hours_for([T0]))[0].stopped is None


def test_a_server_without_protocol_logs_says_the_folder_is_not_there(world):
    sim, log, writer = world
    sim.add_server("EX02")
    read, _ = remote_read(source_for(sim, "EX02"), hours_for([T0]))
    assert read.stopped == "error" and read.lines == ()
    assert f"Cannot find path '{FE}'" in read.problems[0].detail


def test_a_200_mb_folder_is_read_in_bounded_pieces_from_the_cursor(world):
    sim, log, _ = world
    start = time.monotonic()
    # 32 MB files (ReceiveProtocolLogMaxFileSize raised from its 10 MB): seven files in the
    # hour, whose cursors the command line can carry (see the test below for 10 MB files).
    writer = ProtocolLogWriter("EX01", max_file_bytes=32 * 1024 * 1024)
    sim.set_protocol_log("EX01", writer)
    for i in range(3):
        log_refusal(log, writer, 1018, SCANNER, (f"10.20.30.{41 + i}", 50000 + i),
                    connector=PORT25, time=T0 + timedelta(seconds=i))
    writer.write_filler(T0 + timedelta(seconds=5), 200 * 1024 * 1024)
    for i in range(3):
        log_refusal(log, writer, 1020, "CONTOSO\\Administrator", (f"10.20.31.{i + 1}", 1),
                    connector=PORT25, time=T0 + timedelta(minutes=30, seconds=i))
    assert writer.total_bytes() > 200 * 1024 * 1024
    assert len(writer.names()) == 7                        # rolled over mid-hour
    source = source_for(sim)
    hours = hours_for([T0, T0 + timedelta(minutes=30)])
    got, cursors, reads, outputs = [], {}, 0, []
    while True:
        read, out = remote_read(source, hours, cursors)
        reads += 1
        outputs.append(len(out))
        assert read.bytes_read <= DEFAULT_MAX_BYTES
        assert read.problems == ()
        for f in read.files:        # each file goes on from where the last read left it
            assert f.start == cursors.get(f.name, 0)
        got += read.lines
        cursors = read.cursors
        if read.stopped is None:
            break
        assert read.stopped == "bytes" and read.bytes_read == DEFAULT_MAX_BYTES
    assert reads == -(-writer.total_bytes() // DEFAULT_MAX_BYTES) >= 13  # no byte read twice
    assert max(outputs) < 64 * 1024                          # only failure lines come back
    assert [(ln.user, ln.address) for ln in got] == [
        *((SCANNER, f"10.20.30.{41 + i}") for i in range(3)),
        *(("CONTOSO\\Administrator", f"10.20.31.{i + 1}") for i in range(3))]
    assert cursors == {n: len(writer.file_bytes(n)) for n in writer.names()}
    assert remote_read(source, hours, cursors)[0].lines == ()
    assert time.monotonic() - start < 20


def test_an_hour_of_more_than_nine_files_is_read_on_from_its_cursors(world):
    sim, log, _ = world
    writer = ProtocolLogWriter("EX01", max_file_bytes=4096)
    sim.set_protocol_log("EX01", writer)
    for i in range(12):
        log_refusal(log, writer, 1018, SCANNER, ("10.20.30.41", 1024 + i), connector=PORT25,
                    time=T0 + timedelta(seconds=i))
        writer.write_filler(T0 + timedelta(seconds=i), 4096, row_bytes=4096)
    assert len(writer.names()) >= 12
    source = source_for(sim)
    hours = hours_for([T0])
    first, _ = remote_read(source, hours)
    assert len(first.lines) == 12 and len(first.cursors) >= 12
    again, _ = remote_read(source, hours, first.cursors)     # ValueError: too long for cmd.exe
    assert again.lines == ()


def test_lines_written_while_reads_run_are_each_read_once(world):
    sim, log, writer = world
    source = source_for(sim)
    stop = threading.Event()
    written: list[str] = []

    def printer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            log_refusal(log, writer, 1018, SCANNER, ("10.20.30.41", 1024 + n),
                        connector=PORT25, time=T0 + timedelta(milliseconds=50 * n))
            written.append(f"{1024 + n}")
            n += 1

    thread = threading.Thread(target=printer)
    thread.start()
    hours = hours_for([T0, T0 + timedelta(seconds=20)])
    got, cursors = [], {}
    try:
        for _ in range(5):
            read, _ = remote_read(source, hours, cursors)
            assert read.problems == () and read.stopped is None
            got += read.lines
            cursors = read.cursors
    finally:
        stop.set()
        thread.join()
    read, _ = remote_read(source, hours, cursors)
    got += read.lines
    assert [str(ln.port) for ln in got] == written         # every line once, in order

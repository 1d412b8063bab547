"""The SMTP Receive protocol log: parsing, the hourly files, the bounded read, and the join of
events to log lines (bot/exchange/protocollog.py), against the simulator's writer
(sim/protocollog.py), which writes the files as Exchange's code does."""
from __future__ import annotations

import base64
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.inert import inert
from bot.core.model import Event
from bot.exchange.protocollog import (
    DEFAULT_FIELDS,
    MAX_COMMAND_CHARS,
    MAX_LINE_BYTES,
    LogFile,
    ProtocolLine,
    ReadRequest,
    default_log_folder,
    files_for,
    hours_for,
    join,
    log_file_name,
    parse_endpoint,
    parse_log,
    parse_log_file_name,
    parse_read_output,
    read_command,
    read_script,
    role_for_provider,
)
from bot.exchange.remediation import UnsafeValueError
from bot.sources.parse import parse_events
from sim.eventlog import EventLog, event_xml, seed_demo
from sim.protocollog import (
    DEMO_DEVICES,
    FAILURE_TEXT,
    ProtocolLogWriter,
    ReadParams,
    answer_read,
    csv_field,
    decode_read_command,
    demo_protocol_logs,
    emulate_read,
    log_refusal,
)
from tests.pwsh_parse import assert_quotes_doubled, parse_tree, ps_scan_single_quoted

T0 = datetime(2026, 3, 8, 8, 13, 12, tzinfo=UTC)
FE = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive"
SCANNER = "CONTOSO\\svc-scan"
HEADER = ("\ufeff#Software: Microsoft Exchange Server\r\n#Version: 15.2.1118.7\r\n"
          "#Log-type: SMTP Receive Protocol Log\r\n#Date: 2026-03-08T08:00:00.012Z\r\n"
          "#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,"
          "remote-endpoint,event,data,context\r\n")


def row(context, *, time="2026-03-08T08:13:12.345Z", connector="EX01\\Default Frontend EX01",
        session="08DE5C2A1B000001", seq="9", local="10.0.0.10:25",
        remote="10.20.30.41:50123", event="*", data=""):
    fields = [time, connector, session, seq, local, remote, event, data, context]
    return b",".join(csv_field(f) for f in fields) + b"\r\n"


def failure(user=SCANNER, event_id=1018, **kw):
    return row(FAILURE_TEXT[event_id].format(user), **kw)


def one(raw, server="EX01"):
    parsed = parse_log(raw, server)
    assert parsed.problems == ()
    [line] = parsed.lines
    return line


# --- parsing ------------------------------------------------------------------------------------


def test_both_failure_lines_are_read_and_everything_else_is_not():
    raw = (HEADER.encode() + row("", event="+") + row("Set Session Permissions", data="SMTPSubmit")
           + row("", event="<", data="EHLO mfp-3f.contoso.local") + failure()
           + failure("CONTOSO\\Administrator", 1020, session="08DE5C2A1B000002",
                     remote="10.20.30.57:1025")
           + row("Remote(SocketError)", event="-"))
    parsed = parse_log(raw, "EX01", file="RECV2026030808-1.LOG")
    assert parsed.problems == () and parsed.other_lines == 4
    assert parsed.consumed == len(raw) and parsed.fields == DEFAULT_FIELDS
    first, second = parsed.lines
    assert (first.event_id, first.user, first.address, first.port, first.session) == (
        1018, SCANNER, "10.20.30.41", 50123, "08DE5C2A1B000001")
    assert first.time == datetime(2026, 3, 8, 8, 13, 12, 345000, tzinfo=UTC)
    assert (first.connector, first.local, first.sequence, first.server) == (
        "EX01\\Default Frontend EX01", "10.0.0.10:25", 9, "EX01")
    assert first.file == "RECV2026030808-1.LOG" and raw[first.offset:].startswith(b"2026-03-08")
    assert (second.event_id, second.user, second.address) == (
        1020, "CONTOSO\\Administrator", "10.20.30.57")


def test_the_field_order_comes_from_the_fields_line():
    raw = (b"#Fields: context,event,remote-endpoint,session-id,connector-id,date-time\r\n"
           + b",".join([csv_field(FAILURE_TEXT[1018].format(SCANNER)), b"*", b"10.1.1.1:25",
                        b"0A", b"EX01\\Relay EX01", b"2026-03-08T08:13:12.000Z"]) + b"\r\n")
    line = one(raw)
    assert (line.user, line.address, line.session, line.connector, line.sequence) == (
        SCANNER, "10.1.1.1", "0A", "EX01\\Relay EX01", None)


@pytest.mark.parametrize("user", [
    'CONTOSO\\o"brien, the scanner',      # quoted by Exchange, quotes doubled
    "CONTOSO\\nancy",                     # a backslash and an n: Exchange never escapes "\"
    "CONTOSO\\jürgen.müller",             # UTF-8
    "printer@contoso.com",
    "S-1-5-21-1004336348-1177238915-682003330-1107",   # the SID when the name did not resolve
    "CONTOSO\\",                          # redacted to nothing but the domain
    "",
])
def test_the_user_is_the_text_exchange_wrote(user):
    assert one(HEADER.encode() + failure(user)).user == user


def test_line_breaks_in_a_field_stay_escaped_text():
    # Exchange writes CR and LF inside a field as the two characters \r and \n.
    line = one(HEADER.encode() + failure("CONTOSO\r\nINFO all servers OK"))
    assert line.user == "CONTOSO\\r\\nINFO all servers OK"


@pytest.mark.parametrize("endpoint, address, port", [
    ("10.20.30.41:50123", "10.20.30.41", 50123),
    ("[2001:db8::41]:50123", "2001:db8::41", 50123),
    ("[2001:0db8:0000::0041]:25", "2001:db8::41", 25),
    ("[fe80::1%12]:587", "fe80::1%12", 587),
    ("[::ffff:10.20.30.41]:50123", "10.20.30.41", 50123),   # a dual-mode socket's IPv4 client
    ("10.20.30.41", "10.20.30.41", None),
])
def test_endpoints(endpoint, address, port):
    assert parse_endpoint(endpoint) == (address, port)
    assert (one(HEADER.encode() + failure(remote=endpoint)).address) == address


@pytest.mark.parametrize("endpoint", ["", "mfp.contoso.local:25", "10.0.0.1:99999", "[::1",
                                      "[::1]x", "10.0.0.1:2a", "10.0.0.1:٢٥"])
def test_bad_endpoints_are_refused(endpoint):
    with pytest.raises(ValueError):
        parse_endpoint(endpoint)


@pytest.mark.parametrize("broken, kind", [
    (failure(time="2026-03-08 08:13:12"), "malformed_line"),
    (failure(time="2026-02-30T08:13:12.000Z"), "malformed_line"),
    (failure(remote="mfp.contoso.local:25"), "malformed_line"),
    (failure(session="<script>"), "malformed_line"),
    (failure(connector=""), "malformed_line"),
    (failure()[:-2] + b",extra\r\n", "malformed_line"),
    (failure().replace(b"Inbound", b'"Inbound', 1), "malformed_line"),   # an unclosed quote
    (failure("CONTOSO\\\xff").replace("CONTOSO\\\xff".encode(), b"CONTOSO\\\xff"), "invalid_text"),
])
def test_a_malformed_failure_line_is_a_problem_and_its_neighbours_are_kept(broken, kind):
    raw = HEADER.encode() + failure("CONTOSO\\a") + broken + failure("CONTOSO\\b")
    parsed = parse_log(raw, "EX01", file="RECV2026030808-1.LOG")
    users = [line.user for line in parsed.lines]
    assert users[0] == "CONTOSO\\a" and users[-1] == "CONTOSO\\b"
    assert [p.kind for p in parsed.problems] == [kind]
    assert "RECV2026030808-1.LOG" in parsed.problems[0].detail
    assert parsed.consumed == len(raw)
    if kind == "invalid_text":          # damaged, but still a failure line: kept, and said so
        assert users[1] == "CONTOSO\\\ufffd"


def test_other_damaged_lines_are_not_worth_a_problem():
    raw = HEADER.encode() + b'garbage,"unclosed\r\n' + b"\x00\x01\r\n" + failure()
    parsed = parse_log(raw, "EX01")
    assert parsed.problems == () and len(parsed.lines) == 1


def test_a_fields_line_without_the_needed_fields_skips_what_follows_until_a_good_one():
    raw = (b"#Fields: date-time,event,context\r\n" + failure("CONTOSO\\lost")
           + HEADER.encode() + failure("CONTOSO\\kept"))
    parsed = parse_log(raw, "EX01")
    assert [p.kind for p in parsed.problems] == ["malformed_header"]
    assert [line.user for line in parsed.lines] == ["CONTOSO\\kept"]


def test_a_file_that_is_not_a_receive_log_is_skipped():
    raw = HEADER.replace("SMTP Receive Protocol Log", "SMTP Send Protocol Log").encode() + failure()
    parsed = parse_log(raw, "EX01")
    assert parsed.lines == () and [p.kind for p in parsed.problems] == ["wrong_log"]


@pytest.mark.parametrize("data", [
    # EHLO and AUTH are the client's own text, logged in `data`: none of it is a failure line.
    "EHLO Inbound authentication failed because the client CONTOSO\\ceo doesn't have submit permission.",
    'EHLO x,*,,Inbound authentication failed because the client CONTOSO\\ceo doesn\'t have submit permission.',
    "EHLO x\r\n2026-03-08T08:13:12.000Z,EX01\\Default Frontend EX01,0F,1,10.0.0.10:25,6.6.6.6:1,*,,"
    "Inbound authentication failed as we reject well-known account authentication for CONTOSO\\ceo",
    "AUTH PLAIN Inbound authentication failed as we reject well-known account authentication for x",
    'EHLO "<!channel> <https://evil.example|click>" \x1b[2J \u202e',
    b"EHLO \xff\xfe\x00 failed because the client \xc3",        # raw bytes, not UTF-8
])
def test_hostile_client_text_stays_data(data):
    raw = (HEADER.encode() + row("", event="<", data=data, remote="6.6.6.6:1")
           + failure(remote="10.20.30.41:50123"))
    parsed = parse_log(raw, "EX01")
    assert parsed.problems == ()
    [line] = parsed.lines
    assert (line.user, line.address) == (SCANNER, "10.20.30.41")
    # and through the remote read, where such lines are sent back (they hold the searched text)
    read = remote_read({"RECV2026030808-1.LOG": raw}, [T0])
    assert [(ln.user, ln.address) for ln in read.lines] == [(SCANNER, "10.20.30.41")]
    assert read.problems == ()


def test_hostile_user_text_is_data_and_inert_for_display():
    evil = "CONTOSO\\x\u202e\x1b[2J <!channel>"
    line = one(HEADER.encode() + failure(evil))
    assert line.user == evil
    assert "\x1b" not in inert(line.user) and "\u202e" not in inert(line.user)


# --- bounded reading: a piece ends in part of a line ------------------------------------------


def big_log(sessions=2000):
    writer = ProtocolLogWriter("EX01", max_file_bytes=1 << 30)
    for i in range(sessions):
        at = T0 + timedelta(milliseconds=137 * i)
        user = f"CONTOSO\\svc-äöü-{i % 7}" if i % 3 else f'CONTOSO\\"q,{i}"'
        writer.failed_auth(at, "Default Frontend EX01", (f"10.20.{i % 200}.{i % 251}", 1024 + i),
                           event_id=1018 if i % 2 else 1020, user=user,
                           ehlo="Inbound authentication failed because the client x")
    [name] = writer.names()
    return name, writer.file_bytes(name)


def read_in_pieces(raw, bound):
    """Parse `raw` as a reader that reads at most `bound` bytes at a time would."""
    lines, offset, fields, reads = [], 0, None, 0
    while offset < len(raw):
        parsed = parse_log(raw[offset:offset + bound], "EX01", offset=offset, fields=fields)
        assert parsed.problems == () and parsed.consumed > 0
        lines += parsed.lines
        offset += parsed.consumed
        fields = parsed.fields
        reads += 1
    return lines, reads


def test_a_large_file_read_in_bounded_pieces_loses_no_line_and_repeats_none():
    _, raw = big_log()
    whole = parse_log(raw, "EX01")
    assert len(whole.lines) == 2000 and whole.problems == ()
    for bound in (4096, 65_537, 1_000_003):
        lines, reads = read_in_pieces(raw, bound)
        assert reads >= len(raw) // bound
        assert lines == list(whole.lines)


def test_a_piece_cut_inside_a_line_or_a_character_leaves_it_for_the_next_read():
    raw = HEADER.encode() + failure("CONTOSO\\jürgen") + failure("CONTOSO\\zoë")
    cut = raw.index("zoë".encode()) + 3          # inside the two bytes of ë
    parsed = parse_log(raw[:cut], "EX01")
    assert [line.user for line in parsed.lines] == ["CONTOSO\\jürgen"]
    assert parsed.problems == ()
    assert raw[parsed.consumed:].startswith(b"2026-03-08")
    rest = parse_log(raw[parsed.consumed:], "EX01", offset=parsed.consumed, fields=parsed.fields)
    assert [line.user for line in rest.lines] == ["CONTOSO\\zoë"]


def test_a_piece_without_a_line_end_is_kept_unless_it_is_too_long_to_be_a_line():
    assert parse_log(b"2026-03-08T08:13:12.000Z,EX01", "EX01").consumed == 0
    parsed = parse_log(b"x" * MAX_LINE_BYTES, "EX01")
    assert parsed.consumed == MAX_LINE_BYTES and [p.kind for p in parsed.problems] == ["overlong_line"]
    parsed = parse_log(b"x" * (MAX_LINE_BYTES + 1) + b"\n" + failure(), "EX01")
    assert len(parsed.lines) == 1 and [p.kind for p in parsed.problems] == ["overlong_line"]


# --- the files ----------------------------------------------------------------------------------


def test_file_names():
    assert log_file_name(datetime(2026, 3, 8, 8, 59, tzinfo=UTC)) == "RECV2026030808-1.LOG"
    assert log_file_name(datetime(2026, 3, 8, 9, 30, tzinfo=UTC), 2) == "RECV2026030809-2.LOG"
    # local time is turned to UTC: Exchange names files by DateTime.UtcNow
    tz = datetime(2026, 3, 8, 10, 5).astimezone().tzinfo
    local = datetime(2026, 3, 8, 10, 5, tzinfo=tz)
    assert log_file_name(local) == f"RECV{local.astimezone(UTC):%Y%m%d%H}-1.LOG"
    hourly = parse_log_file_name("RECV2026030808-12.LOG")
    assert hourly == LogFile(datetime(2026, 3, 8, 8, tzinfo=UTC), 12, True, "RECV2026030808-12.LOG")
    assert hourly.end == datetime(2026, 3, 8, 9, tzinfo=UTC)
    daily = parse_log_file_name("recv20260308-3.log")   # 2007/2010, and some 2013 builds
    assert (daily.start, daily.instance, daily.hourly) == (datetime(2026, 3, 8, tzinfo=UTC), 3, False)


@pytest.mark.parametrize("name", ["RECV2026030808-1.LOG.old", "RECV2026023008-1.LOG",
                                  "RECV2026030825-1.LOG", "SEND2026030808-1.LOG", "RECV2026030808.LOG",
                                  "..\\RECV2026030808-1.LOG", "RECV２０２６030808-1.LOG", ""])
def test_other_names_are_not_log_files(name):
    assert parse_log_file_name(name) is None


@pytest.mark.parametrize("times, hours", [
    ([datetime(2026, 3, 8, 8, 30, tzinfo=UTC)], [8]),
    # the hour edge: an event at hh:00:01 may have its line stamped in the previous hour
    ([datetime(2026, 3, 8, 8, 0, 1, tzinfo=UTC)], [7, 8]),
    # a line stamped hh:59:5x may be written after the hour turned
    ([datetime(2026, 3, 8, 8, 59, 52, tzinfo=UTC)], [8, 9]),
    ([datetime(2026, 3, 8, 8, 10, tzinfo=UTC), datetime(2026, 3, 8, 11, 10, tzinfo=UTC),
      datetime(2026, 3, 8, 8, 40, tzinfo=UTC)], [8, 11]),
    ([], []),
])
def test_which_hours_can_hold_the_lines(times, hours):
    assert hours_for(times) == tuple(datetime(2026, 3, 8, h, tzinfo=UTC) for h in hours)


def test_files_for_hours_in_writing_order():
    names = ["RECV2026030808-10.LOG", "RECV2026030809-1.LOG", "RECV2026030808-2.LOG",
             "RECV2026030807-1.LOG", "RECV20260308-1.LOG", "RECV20260307-1.LOG", "notes.txt"]
    found = files_for(names, [datetime(2026, 3, 8, 8, tzinfo=UTC)])
    assert [f.name for f in found] == ["RECV20260308-1.LOG", "RECV2026030808-2.LOG",
                                      "RECV2026030808-10.LOG"]


# --- the simulator writes as Exchange does ------------------------------------------------------


def test_the_writer_writes_exchanges_header_and_rows():
    writer = ProtocolLogWriter("EX01")
    session = writer.failed_auth(T0, "Default Frontend EX01", ("10.20.30.41", 50123),
                                 event_id=1018, user=SCANNER)
    [name] = writer.names()
    assert name == "RECV2026030808-1.LOG"
    data = writer.file_bytes(name)
    assert data.startswith(b"\xef\xbb\xbf#Software: Microsoft Exchange Server\r\n#Version: ")
    assert b"#Log-type: SMTP Receive Protocol Log\r\n#Date: 2026-03-08T08:13:11.820Z\r\n" in data
    assert data.count(b"#Fields: ") == 1 and data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert (f"2026-03-08T08:13:12.000Z,EX01\\Default Frontend EX01,{session},".encode()
            + b"14,10.0.0.10:25,10.20.30.41:50123,*,,Inbound authentication failed because the "
            b"client CONTOSO\\svc-scan doesn't have submit permission.\r\n") in data


def test_several_sessions_a_second_and_a_connector_that_does_not_log():
    writer = ProtocolLogWriter("EX01")
    sessions = [writer.failed_auth(T0, "Default Frontend EX01", (f"10.0.0.{i}", 1000 + i),
                                   event_id=1018, user=SCANNER) for i in range(5)]
    assert len(set(sessions)) == 5 and all(re.fullmatch("[0-9A-F]{16}", s) for s in sessions)
    assert writer.failed_auth(T0, "Client Frontend EX01", ("10.0.0.9", 1), event_id=1018,
                              user=SCANNER) is None          # Client Frontend: logging None
    size = len(writer.file_bytes("RECV2026030808-1.LOG"))
    writer.set_logging("Client Frontend EX01", "Verbose")
    client = writer.failed_auth(T0, "Client Frontend EX01", ("10.0.0.9", 1), event_id=1018,
                                user=SCANNER)
    assert client and len(writer.file_bytes("RECV2026030808-1.LOG")) > size
    parsed = parse_log(writer.file_bytes("RECV2026030808-1.LOG"), "EX01")
    assert [line.session for line in parsed.lines] == [*sessions, client]
    assert {line.time for line in parsed.lines} == {T0}


def test_the_writer_rolls_over_mid_hour_and_starts_each_hour_at_one():
    writer = ProtocolLogWriter("EX01", max_file_bytes=20_000)
    for i in range(40):
        writer.failed_auth(T0 + timedelta(seconds=i), "Default Frontend EX01", ("10.0.0.1", i),
                           event_id=1018, user=SCANNER)
    writer.failed_auth(T0 + timedelta(hours=1), "Default Frontend EX01", ("10.0.0.1", 1),
                       event_id=1018, user=SCANNER)
    names = writer.names()
    assert names[:3] == ["RECV2026030808-1.LOG", "RECV2026030808-2.LOG", "RECV2026030808-3.LOG"]
    assert names[-1] == "RECV2026030809-1.LOG"
    for name in names:
        data = writer.file_bytes(name)
        assert data.startswith(b"\xef\xbb\xbf#Software") and data.count(b"#Fields: ") == 1
    # the row that crosses the bound stays; the next goes to a new file
    assert all(20_000 < len(writer.file_bytes(n)) < 20_000 + 400 for n in names[:2])
    lines = [line for n in names for line in parse_log(writer.file_bytes(n), "EX01", file=n).lines]
    assert len(lines) == 41 and lines == sorted(lines, key=lambda ln: ln.time)


def test_a_row_written_after_the_hour_turned_is_in_the_next_hours_file():
    writer = ProtocolLogWriter("EX01")
    stamped = datetime(2026, 3, 8, 8, 59, 59, 995000, tzinfo=UTC)
    writer.failed_auth(stamped, "Default Frontend EX01", ("10.0.0.1", 1), event_id=1018,
                       user=SCANNER, written=stamped + timedelta(seconds=2))
    data = writer.file_bytes("RECV2026030809-1.LOG")
    assert b"2026-03-08T08:59:59.995Z" in data and b"#Date: 2026-03-08T09:00:01" in data


def test_round_trip_writer_to_parser():
    writer = ProtocolLogWriter("EX02", max_file_bytes=50_000, logging={"Relay EX02": "Verbose"})
    written = []
    for i in range(300):
        at = T0 + timedelta(seconds=i * 7, microseconds=i * 1000)
        event_id = 1020 if i % 5 == 0 else 1018
        user = ["CONTOSO\\Administrator", 'CONTOSO\\a,"b"', "printer@contoso.com", "CONTOSO\\zoë"][i % 4]
        address = f"2001:db8::{i + 256:x}" if i % 6 == 0 else f"10.9.{i // 250}.{i % 250}"
        connector = "Relay EX02" if i % 2 else "Default Frontend EX02"
        session = writer.failed_auth(at, connector, (address, 40000 + i), event_id=event_id,
                                     user=user, ehlo=f'dev-{i}, "x"')
        written.append((at.replace(microsecond=at.microsecond // 1000 * 1000), f"EX02\\{connector}",
                        session, event_id, user, address, 40000 + i))
    read = []
    for name in writer.names():
        parsed = parse_log(writer.file_bytes(name), "EX02", file=name)
        assert parsed.problems == ()
        read += [(ln.time, ln.connector, ln.session, ln.event_id, ln.user, ln.address, ln.port)
                 for ln in parsed.lines]
    assert read == written


# --- the join -----------------------------------------------------------------------------------


def event(account=SCANNER, at=T0, event_id=1018, connector="EX01\\Default Frontend EX01",
          server="EX01", record=1):
    return Event(server=server, record_id=record, provider="MSExchangeFrontEndTransport",
                 event_id=event_id, time=at, account=account, connector=connector,
                 computer=f"{server}.contoso.local")


def line(address="10.20.30.41", at=T0, user=SCANNER, event_id=1018, session="01",
         connector="EX01\\Default Frontend EX01", server="EX01", offset=0):
    return ProtocolLine(server=server, time=at, connector=connector, session=session,
                        event_id=event_id, user=user, address=address, port=50000,
                        file="RECV2026030808-1.LOG", offset=offset)


def s(seconds):
    return T0 + timedelta(seconds=seconds)


EDGE = datetime(2026, 3, 8, 9, 0, 0, 400000, tzinfo=UTC)

# (case, events, lines, {address: (sessions, account_shown)}, unmatched events, ambiguous lines)
JOIN_TABLE = [
    ("one device", [event()], [line()], {"10.20.30.41": (1, True)}, 0, 0),
    ("same second, two devices, one event",
     [event()], [line(), line("10.20.30.57", session="02", offset=1)],
     {"10.20.30.41": (1, True), "10.20.30.57": (1, True)}, 0, 0),
    ("same second, two devices, two events",
     [event(record=1), event(record=2)], [line(), line("10.20.30.57", session="02", offset=1)],
     {"10.20.30.41": (1, True), "10.20.30.57": (1, True)}, 0, 0),
    ("one device, many sessions, a retry within one",
     [event(at=s(i), record=i) for i in range(4)],
     [line(at=s(0), session="01"), line(at=s(1), session="01", offset=1),
      line(at=s(2), session="02", offset=2), line(at=s(3), session="03", offset=3)],
     {"10.20.30.41": (3, True)}, 0, 0),
    ("redacted user", [event()], [line(user="CONTOSO\\9f86d081884c7d65")],
     {"10.20.30.41": (1, False)}, 0, 0),
    ("no user at all", [event()], [line(user="")], {"10.20.30.41": (1, False)}, 0, 0),
    ("no match: nothing logged", [event()], [], {}, 1, 0),
    ("no match: too far apart", [event()], [line(at=s(6))], {}, 1, 0),
    ("just inside the window", [event()], [line(at=s(-5))], {"10.20.30.41": (1, True)}, 0, 0),
    ("clock at the hour edge: the line in the hour before",
     [event(at=EDGE)], [line(at=EDGE - timedelta(milliseconds=500))],
     {"10.20.30.41": (1, True)}, 0, 0),
    ("another failure kind", [event()], [line(event_id=1020)], {}, 1, 0),
    ("another connector", [event()], [line(connector="EX01\\Client Frontend EX01")], {}, 1, 0),
    ("another server", [event()], [line(server="EX02")], {}, 1, 0),
    ("connector names compare without case", [event()],
     [line(connector="ex01\\DEFAULT FRONTEND ex01")], {"10.20.30.41": (1, True)}, 0, 0),
    ("an event that named no connector (1020)",
     [event(event_id=1020, connector=None, account="CONTOSO\\Administrator")],
     [line(event_id=1020, user="CONTOSO\\Administrator", connector="EX01\\Client Frontend EX01")],
     {"10.20.30.41": (1, True)}, 0, 0),
    ("more events than lines", [event(record=1), event(record=2)], [line()],
     {"10.20.30.41": (1, True)}, 1, 0),
]


@pytest.mark.parametrize("case, events, lines, devices, unmatched, ambiguous", JOIN_TABLE,
                         ids=[c[0] for c in JOIN_TABLE])
def test_join(case, events, lines, devices, unmatched, ambiguous):
    result = join(events, lines)
    [group] = result.groups
    assert {d.address: (d.sessions, d.account_shown) for d in group.devices} == devices
    assert group.unmatched_events == unmatched and group.events == len(events)
    assert result.ambiguous_lines == ambiguous
    assert group.no_match == (not devices)
    assert result.for_account(events[0].account.upper()) == (group,)


def test_another_accounts_line_at_the_same_second_is_not_taken():
    other = "CONTOSO\\app-erp"
    result = join([event(), event(other, record=2)],
                  [line("10.20.30.41"), line("10.99.0.1", user=other, session="02", offset=1)])
    [erp] = result.for_account(other)
    [scan] = result.for_account(SCANNER)
    assert [d.address for d in scan.devices] == ["10.20.30.41"]
    assert [d.address for d in erp.devices] == ["10.99.0.1"]


def test_a_hidden_account_between_two_accounts_is_attributed_to_neither():
    other = "CONTOSO\\app-erp"
    result = join([event(), event(other, record=2)], [line(user="CONTOSO\\9f86d081")])
    assert result.ambiguous_lines == 1
    assert all(g.no_match for g in result.groups)


def test_a_line_that_shows_its_account_is_joined_before_a_hidden_one():
    result = join([event()], [line("10.0.0.2", user="", session="02", offset=1),
                              line("10.0.0.1", at=s(1))])
    [group] = result.groups
    assert group.unmatched_events == 0
    assert {d.address: d.account_shown for d in group.devices} == {"10.0.0.1": True,
                                                                    "10.0.0.2": False}


def test_groups_per_server_and_connector_with_first_and_last_times():
    events = [event(at=s(0)), event(at=s(60), record=2),
              event(at=s(30), connector="EX01\\Relay EX01", record=3),
              event(at=s(40), server="EX02", connector="EX02\\Default Frontend EX02", record=4)]
    lines = [line(at=s(0)), line(at=s(60), session="02", offset=1),
             line("10.1.1.1", at=s(30), connector="EX01\\Relay EX01", session="03", offset=2)]
    result = join(events, lines)
    assert [(g.server, g.connector, g.no_match) for g in result.groups] == [
        ("EX01", "EX01\\Default Frontend EX01", False), ("EX01", "EX01\\Relay EX01", False),
        ("EX02", "EX02\\Default Frontend EX02", True)]
    [device] = result.groups[0].devices
    assert (device.sessions, device.lines, device.first, device.last) == (2, 2, s(0), s(60))


def test_the_same_line_read_twice_counts_once():
    result = join([event()], [line(), line()])
    assert result.groups[0].devices[0].lines == 1


# --- the read command ---------------------------------------------------------------------------


def script_for(**kw):
    kw.setdefault("hours", (datetime(2026, 3, 8, 8, tzinfo=UTC),))
    return read_script(ReadRequest(**kw))


@pytest.mark.parametrize("folder", [
    "D:\\Exchange Logs\\FrontEnd\\ProtocolLog\\SmtpReceive",
    "D:\\Logs\\It's $(Remove-Item C:\\ -Recurse) `n \"here\"",
    "D:\\Logs\\\u2018smart\u2019 \u201aquotes\u201b",
])
def test_the_folder_is_one_single_quoted_literal(folder):
    script = script_for(folder=folder)
    assert not parse_tree(script).root_node.has_error or set(folder) & set("\u2018\u2019\u201a\u201b")
    start = script.index("\n$dir=") + len("\n$dir=")
    value, end = ps_scan_single_quoted(script, start)
    assert value == folder and script[end] == "\n"
    assert_quotes_doubled(script[start + 1:end - 1])


@pytest.mark.parametrize("folder", ["D:\\Logs\nRemove-Item C:\\", "D:\\Logs\x00", "", "D:\\\u202eLogs"])
def test_a_folder_that_cannot_be_quoted_is_refused(folder):
    with pytest.raises(UnsafeValueError):
        script_for(folder=folder)


def test_the_script_reads_and_changes_nothing():
    script = script_for(cursors=(("RECV2026030808-1.LOG", 100),))
    assert not parse_tree(script).root_node.has_error
    assert "IO.FileStream($f.FullName,'Open','Read','ReadWrite,Delete')" in script
    for verb in ("Remove-", "Set-", "New-Item", "Out-File", "Add-Content", "Move-", "Copy-",
                 "Rename-", "Clear-", "Invoke-", "iex", "Start-", "'Write'", "'Append'",
                 "'Create'", "'Truncate'", "DownloadString", "WebClient", "Net."):
        assert verb not in script
    assert "\n$dir=[Environment]::GetEnvironmentVariable('ExchangeInstallPath','Machine')\n" in script
    assert "+'\\TransportRoles\\Logs\\FrontEnd\\ProtocolLog\\SmtpReceive'}" in script
    assert "+'\\TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive'}" in script_for(role="Hub")


def test_the_command_is_base64_only_and_decodes_to_the_script():
    request = ReadRequest(hours=hours_for([datetime(2026, 3, 8, 8, 0, 1, tzinfo=UTC)]),
                          cursors=(("RECV2026030808-1.LOG", 5), ("RECV2026030801-1.LOG", 9)))
    command, args = read_command(request)
    assert command == "powershell" and args[:-1] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    assert re.fullmatch(r"[A-Za-z0-9+/]+=*", args[-1])
    assert base64.b64decode(args[-1]).decode("utf-16-le") == read_script(request)
    params = decode_read_command(command, args)
    # only the marks of the series the hours ask for go into the command: (instance, offset)
    assert params.cursors == {"RECV2026030808": (1, 5)}
    assert (params.hours, params.days, params.folder, params.role) == (
        ("2026030807", "2026030808"), ("20260308",), None, "FrontEnd")


def test_a_command_too_long_for_cmd_is_refused():
    hours = tuple(datetime(2026, 3, 8, tzinfo=UTC) + timedelta(hours=h) for h in range(72))
    cursors = tuple((log_file_name(h, n), 1000) for h in hours for n in (1, 2))
    with pytest.raises(ValueError, match="fewer hours"):
        read_command(ReadRequest(hours=hours, cursors=cursors))
    command, args = read_command(ReadRequest(hours=hours[:4], cursors=cursors[:8]))
    assert len(command) + sum(len(a) + 1 for a in args) <= MAX_COMMAND_CHARS


def test_a_busy_hour_sends_one_mark_however_many_files_it_has():
    hour = datetime(2026, 3, 8, 8, tzinfo=UTC)
    cursors = tuple((log_file_name(hour, n), 10_485_760) for n in range(1, 40))
    params = decode_read_command(*read_command(ReadRequest(hours=(hour,),
                                                           cursors=cursors)))
    assert params.cursors == {"RECV2026030808": (39, 10_485_760)}


@pytest.mark.parametrize("cursors", [(("..\\..\\Windows\\win.ini", 1),), (("RECV2026030808-1.LOG'; Remove-Item", 1),)])
def test_a_cursor_that_is_not_a_log_file_name_is_refused(cursors):
    with pytest.raises(UnsafeValueError):
        script_for(cursors=cursors)


@pytest.mark.parametrize("kw", [dict(hours=()), dict(role="Edge"), dict(max_bytes=0),
                                dict(max_output=1000), dict(max_seconds=0),
                                dict(hours=(datetime(2026, 3, 8, 8),))])
def test_bad_requests(kw):
    with pytest.raises(ValueError):
        script_for(**kw)


def test_default_folders_and_roles():
    assert default_log_folder("C:\\Program Files\\Microsoft\\Exchange Server\\V15\\") == FE
    assert default_log_folder("C:\\Program Files\\Microsoft\\Exchange Server\\V15") == FE
    assert default_log_folder("D:\\Exchange\\", "Hub") == (
        "D:\\Exchange\\TransportRoles\\Logs\\Hub\\ProtocolLog\\SmtpReceive")
    assert role_for_provider("MSExchangeFrontEndTransport") == "FrontEnd"
    assert role_for_provider("MSExchangeTransport") == "Hub"
    for bad in (lambda: default_log_folder("", "Hub"), lambda: default_log_folder("C:\\", "Edge"),
                lambda: role_for_provider("MSExchange Store Driver")):
        with pytest.raises(ValueError):
            bad()


# --- the read's output, through the simulator's stand-in for the script -------------------------


def remote_read(files, times, cursors=None, **kw):
    request = ReadRequest(hours=hours_for(times), cursors=tuple((cursors or {}).items()), **kw)
    command, args = read_command(request)
    return parse_read_output(answer_read(command, args, {FE: files}), "EX01", cursors)


def writer_with(n, *, start=T0, step=1.0, users=(SCANNER,), max_file_bytes=10 << 20):
    writer = ProtocolLogWriter("EX01", max_file_bytes=max_file_bytes)
    for i in range(n):
        writer.failed_auth(start + timedelta(seconds=i * step), "Default Frontend EX01",
                           (f"10.20.30.{i % 250}", 1024 + i), event_id=1018,
                           user=users[i % len(users)])
    return writer


def test_a_read_cut_by_the_byte_bound_inside_its_last_file_says_so():
    writer = ProtocolLogWriter("EX01")
    writer.write_filler(T0, 300_000)
    read = remote_read(writer.snapshot(), [T0], max_bytes=100_000)
    [file] = read.files
    assert file.end < file.length and read.stopped == "bytes"   # not "done": the rest waits
    rest = remote_read(writer.snapshot(), [T0], read.cursors, max_bytes=1_000_000)
    assert rest.stopped is None and rest.files[0].start == file.end


def test_a_read_moves_the_cursors_and_never_reads_a_file_twice():
    writer = writer_with(20)
    first = remote_read(writer.snapshot(), [T0])
    assert first.stopped is None and first.problems == () and len(first.lines) == 20
    [name] = writer.names()
    assert first.cursors == {name: len(writer.file_bytes(name))}
    again = remote_read(writer.snapshot(), [T0], first.cursors)
    assert again.lines == () and again.cursors == first.cursors
    writer.failed_auth(T0 + timedelta(minutes=5), "Default Frontend EX01", ("10.1.1.1", 1),
                       event_id=1020, user="CONTOSO\\Administrator")
    more = remote_read(writer.snapshot(), [T0], first.cursors)
    assert [(ln.user, ln.address) for ln in more.lines] == [("CONTOSO\\Administrator", "10.1.1.1")]
    assert more.files[0].start == first.cursors[name]


def test_a_read_reads_only_the_files_of_the_hours_asked():
    writer = writer_with(3)
    writer.failed_auth(T0 + timedelta(hours=2), "Default Frontend EX01", ("10.1.1.1", 1),
                       event_id=1018, user=SCANNER)
    files = writer.snapshot()
    read = remote_read(files, [T0])
    assert [f.name for f in read.files] == ["RECV2026030808-1.LOG"] and len(read.lines) == 3
    # a daily name (2007/2010; some 2013 builds) holds every hour of its day
    files["RECV20260308-1.LOG"] = files.pop("RECV2026030808-1.LOG")
    files["RECV20260307-1.LOG"] = files["RECV20260308-1.LOG"]
    read = remote_read(files, [T0])
    assert [f.name for f in read.files] == ["RECV20260308-1.LOG"] and len(read.lines) == 3


def test_a_server_without_exchange_install_path_is_said():
    request = ReadRequest(hours=hours_for([T0]))
    read = parse_read_output(answer_read(*read_command(request), {}, install_path=None), "EX01")
    assert read.stopped == "error"
    assert [p.detail for p in read.problems] == [
        "the protocol log folder could not be read: ExchangeInstallPath is not set"]


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        hours_for([datetime(2026, 3, 8, 8)])


def test_the_hour_edge_end_to_end():
    """An event at 09:00:00.4 whose line was stamped 08:59:59.9 and written at 09:00:01."""
    log = EventLog("EX01.contoso.local", first_record=500)
    writer = ProtocolLogWriter("EX01")
    stamped = EDGE - timedelta(milliseconds=500)
    log.append_refusal(1018, SCANNER, "Default Frontend EX01", time=EDGE)
    writer.failed_auth(stamped, "Default Frontend EX01", ("10.20.30.41", 50123), event_id=1018,
                       user=SCANNER, written=stamped + timedelta(seconds=1, milliseconds=100))
    assert writer.names() == ["RECV2026030809-1.LOG"]
    events = parse_events("<Events>" + "".join(map(event_xml, log.events())) + "</Events>", "EX01").events
    read = remote_read(writer.snapshot(), [e.time for e in events])
    [group] = join(events, read.lines).groups
    assert [d.address for d in group.devices] == ["10.20.30.41"]


def test_events_and_lines_from_one_code_path_join_end_to_end():
    log = EventLog("EX01.contoso.local", first_record=667_300)
    writer = ProtocolLogWriter("EX01", logging={"Relay EX01": "Verbose"})
    for i, address in enumerate(["10.20.30.41", "10.20.30.57", "10.20.30.41"]):
        log_refusal(log, writer, 1018, SCANNER, (address, 50000 + i),
                    connector="Default Frontend EX01", time=T0)
    log_refusal(log, writer, 1018, "CONTOSO\\app-erp", ("10.5.5.5", 1), connector="Relay EX01",
                time=T0 + timedelta(seconds=1), user="CONTOSO\\5c1ab2")     # redacted
    log_refusal(log, writer, 1018, "CONTOSO\\jürgen.müller", ("10.7.7.7", 2),
                connector="Client Frontend EX01", time=T0)                  # does not log
    events = parse_events("<Events>" + "".join(map(event_xml, log.events())) + "</Events>", "EX01").events
    read = remote_read(writer.snapshot(), [e.time for e in events])
    result = join(events, read.lines)
    [scan] = result.for_account(SCANNER)
    assert [(d.address, d.sessions) for d in scan.devices] == [("10.20.30.41", 2), ("10.20.30.57", 1)]
    [erp] = result.for_account("CONTOSO\\app-erp")
    assert [(d.address, d.account_shown) for d in erp.devices] == [("10.5.5.5", False)]
    [jm] = result.for_account("CONTOSO\\jürgen.müller")
    assert jm.no_match and jm.unmatched_events == 1 and jm.connector == "EX01\\Client Frontend EX01"


def test_a_read_bounded_in_bytes_goes_on_where_it_stopped():
    writer = writer_with(600, max_file_bytes=200_000)
    names = writer.names()
    assert len(names) >= 3
    everything = [ln for n in names for ln in parse_log(writer.file_bytes(n), "EX01", file=n).lines]
    got, cursors, reads = [], {}, 0
    while True:
        read = remote_read(writer.snapshot(), [T0 + timedelta(minutes=5)], cursors, max_bytes=70_001)
        reads += 1
        got += read.lines
        cursors = read.cursors
        assert read.bytes_read <= 70_001 and all(p.kind != "output_cut" for p in read.problems)
        if read.stopped is None:
            break
        assert read.stopped == "bytes"
    assert reads > 5
    assert got == everything                     # each line once, none lost at the cuts
    assert cursors == {n: len(writer.file_bytes(n)) for n in names}


def test_a_read_bounded_in_output_goes_on_where_it_stopped():
    writer = writer_with(2500, step=0.5)
    [name] = writer.names()
    everything = parse_log(writer.file_bytes(name), "EX01", file=name).lines
    got, cursors = [], {}
    for _ in range(20):
        read = remote_read(writer.snapshot(), [T0 + timedelta(minutes=10)], cursors,
                           max_output=128 * 1024)
        got += read.lines
        cursors = read.cursors
        if read.stopped is None:
            break
        assert read.stopped == "output"
    assert got == list(everything)


def test_a_cut_output_moves_no_cursor_it_did_not_finish():
    writer = writer_with(40, max_file_bytes=3_000)
    request = ReadRequest(hours=hours_for([T0]))
    output = answer_read(*read_command(request), {FE: writer.snapshot()})
    whole = parse_read_output(output, "EX01")
    assert len(whole.files) >= 3 and whole.stopped is None
    for cut in range(0, len(output), 97):
        read = parse_read_output(output[:cut], "EX01", {"RECV2026030807-1.LOG": 5})
        finished = {f.name for f in read.files}
        assert read.cursors == {"RECV2026030807-1.LOG": 5,
                                **{f.name: f.end for f in whole.files if f.name in finished}}
        assert len(read.lines) == sum(ln.file in finished for ln in whole.lines)
        assert read.stopped == "cut" and read.problems[-1].kind == "output_cut"


def test_a_missing_folder_and_an_unreadable_file_are_said_and_the_rest_is_read():
    writer = writer_with(30, max_file_bytes=3_000)
    request = ReadRequest(hours=hours_for([T0]), folder="D:\\nowhere")
    read = parse_read_output(answer_read(*read_command(request), {FE: writer.snapshot()}), "EX01",
                             {"RECV2026030808-1.LOG": 7})
    assert read.stopped == "error" and read.lines == () and read.cursors == {"RECV2026030808-1.LOG": 7}
    assert [p.kind for p in read.problems] == ["log_unreadable"]
    assert "D:\\nowhere" in read.problems[0].detail
    denied = writer.names()[1]
    command, args = read_command(ReadRequest(hours=hours_for([T0])))
    read = parse_read_output(answer_read(command, args, {FE: writer.snapshot()}, unreadable=[denied]),
                             "EX01")
    assert denied not in read.cursors and len(read.cursors) == len(writer.names()) - 1
    assert [p.kind for p in read.problems] == ["log_unreadable"] and denied in read.problems[0].detail
    assert read.lines and all(ln.file != denied for ln in read.lines)


def test_a_file_that_shrank_is_read_from_its_start():
    writer = writer_with(3)
    [name] = writer.names()
    read = remote_read(writer.snapshot(), [T0], {name: 10**9})
    assert len(read.lines) == 3 and read.files[0].start == 0


def test_a_read_from_the_middle_gets_the_files_own_field_order():
    header = HEADER.replace("date-time,connector-id,session-id,sequence-number,local-endpoint,"
                            "remote-endpoint,event,data,context",
                            "context,data,event,remote-endpoint,local-endpoint,sequence-number,"
                            "session-id,connector-id,date-time").encode()

    def reordered(user):
        return b",".join(csv_field(f) for f in (FAILURE_TEXT[1018].format(user), "", "*",
                                                "10.3.3.3:25", "10.0.0.10:25", "4", "0B",
                                                "EX01\\Default Frontend EX01",
                                                "2026-03-08T08:13:12.000Z")) + b"\r\n"
    first = header + reordered("CONTOSO\\one")
    files = {"RECV2026030808-1.LOG": first + reordered("CONTOSO\\two")}
    read = remote_read(files, [T0], {"RECV2026030808-1.LOG": len(first)})
    assert read.problems == ()
    assert [(ln.user, ln.address, ln.session) for ln in read.lines] == [("CONTOSO\\two", "10.3.3.3", "0B")]


@pytest.mark.parametrize("forged", [
    "F\t..\\..\\Windows\\win.ini\t0\t10\t10",
    "F\tRECV2026030808-1.LOG\t0\t10\t5",
    "F\tRECV2026030808-1.LOG\t-1\t10\t50",
    "L\t0\tnot base64!",
    "L\tx\tAAAA",
    "E\tRECV2026030808-1.LOG; rm\tAAAA",
    "X\t10\tfinished",
    "Hello from a hostile server \x1b[2J",
])
def test_forged_output_is_a_problem_not_a_cursor(forged):
    output = f"L\t5\t{base64.b64encode(failure()[:-2]).decode()}\n{forged}\nX\t0\tdone\n"
    read = parse_read_output(output, "EX01", {"RECV2026030808-2.LOG": 3})
    assert read.cursors == {"RECV2026030808-2.LOG": 3}
    assert [p.kind for p in read.problems] == ["unexpected_output"]
    assert "\x1b" not in read.problems[0].excerpt
    assert read.lines == ()


def test_nothing_is_taken_after_the_end_record():
    good = f"L\t0\t{base64.b64encode(HEADER.encode() + failure()[:-2]).decode()}\nF\tRECV2026030808-1.LOG\t0\t500\t500\n"
    read = parse_read_output("X\t0\tdone\n" + good, "EX01")
    assert read.lines == () and read.cursors == {}
    assert {p.kind for p in read.problems} == {"unexpected_output"}


def test_the_simulators_stand_in_answers_only_the_read_script():
    with pytest.raises(ValueError):
        decode_read_command("wevtutil", ["qe", "Application"])
    bad = base64.b64encode("Remove-Item C:\\ -Recurse".encode("utf-16-le")).decode()
    with pytest.raises(ValueError):
        decode_read_command("powershell", ["-EncodedCommand", bad])
    params = decode_read_command(*read_command(ReadRequest(
        hours=(T0,), folder="D:\\It's \u2019here\u2019", max_bytes=1234, max_output=200_000,
        max_seconds=2.5)))
    assert params == ReadParams(folder="D:\\It's \u2019here\u2019", role=None, max_bytes=1234,
                                max_output=200_000, max_seconds=2.5, cursors={},
                                hours=("2026030808",), days=("20260308",))
    assert emulate_read({}, params) == b"X\t0\tdone\n"


def test_a_folder_the_account_may_not_list_is_said_as_powershell_says_it():
    writer = writer_with(3)
    command, args = read_command(ReadRequest(hours=hours_for([T0])))
    output = answer_read(command, args, {FE: writer.snapshot()}, denied=[FE.upper()])
    message = base64.b64encode(f"Access to the path '{FE}' is denied.".encode()).decode()
    assert output == f"E\t-\t{message}\nX\t0\terror\n".encode()
    read = parse_read_output(output, "EX01", {"RECV2026030808-1.LOG": 9})
    assert read.stopped == "error" and read.cursors == {"RECV2026030808-1.LOG": 9}
    assert [p.kind for p in read.problems] == ["log_unreadable"]
    # Another folder of the server is still listed.
    other = answer_read(command, args, {FE: writer.snapshot()}, denied=["D:\\Hub"])
    assert len(parse_read_output(other, "EX01").lines) == 3


def test_filler_rows_fill_a_folder_fast_and_hold_no_failure():
    writer = writer_with(2)
    written = writer.write_filler(T0 + timedelta(seconds=5), 25 * 1024 * 1024, row_bytes=8192)
    assert 25 * 1024 * 1024 <= written < 25 * 1024 * 1024 + 8192
    names = writer.names()
    assert names == ["RECV2026030808-1.LOG", "RECV2026030808-2.LOG", "RECV2026030808-3.LOG"]
    assert writer.total_bytes() == sum(len(writer.file_bytes(n)) for n in names)
    for name in names:
        parsed = parse_log(writer.file_bytes(name), "EX01", file=name)
        assert parsed.problems == () and parsed.consumed == len(writer.file_bytes(name))
        assert len(parsed.lines) == (2 if name.endswith("-1.LOG") else 0)
    assert writer.file_bytes(names[1]).startswith(b"\xef\xbb\xbf#Software: Microsoft Exchange")
    with pytest.raises(ValueError):
        writer.write_filler(T0, 1000, row_bytes=100)


def test_the_writer_can_be_written_and_read_from_several_threads():
    writer = ProtocolLogWriter("EX01", max_file_bytes=20_000)

    def write(base):
        for i in range(150):
            writer.failed_auth(T0 + timedelta(milliseconds=i), "Default Frontend EX01",
                               (f"10.0.{base}.{i % 250}", 1000 + i), event_id=1018, user=SCANNER)

    threads = [threading.Thread(target=write, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    reads = [remote_read(writer.snapshot(), [T0]) for _ in range(5)]
    for t in threads:
        t.join()
    assert all(r.problems == () for r in reads)
    lines = remote_read(writer.snapshot(), [T0]).lines
    assert len(lines) == 600 and len({ln.session for ln in lines}) == 600
    # A session's rows are written together: each file's rows go session by session.
    for name in writer.names():
        rows = [r for r in writer.file_bytes(name).split(b"\r\n") if r[:1].isdigit()]
        sessions = [r.split(b",")[2] for r in rows]
        runs = [s for i, s in enumerate(sessions) if i == 0 or sessions[i - 1] != s]
        assert len(runs) == len(set(runs))


def test_the_demo_worlds_protocol_logs_name_the_printers_two_devices():
    now = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    logs = seed_demo({}, now)
    writers = demo_protocol_logs(now)
    assert set(writers) == {"EX01", "EX02"} and all(set(w) == {"FrontEnd", "Hub"}
                                                    for w in writers.values())
    again = demo_protocol_logs(now)                  # deterministic, like the events
    assert all(writers[s][r].snapshot() == again[s][r].snapshot() for s in writers for r in writers[s])
    events = parse_events("<Events>" + "".join(map(event_xml, logs["EX01"].events()))
                          + "</Events>", "EX01").events
    read = remote_read(writers["EX01"]["FrontEnd"].snapshot(), [e.time for e in events])
    assert read.problems == () and read.stopped is None
    result = join(events, read.lines)
    [mfp] = result.for_account("CONTOSO\\svc-mfp")
    assert mfp.connector == "EX01\\Default Frontend EX01" and mfp.unmatched_events == 0
    assert [(d.address, d.sessions, d.account_shown) for d in mfp.devices] == [
        ("10.20.30.41", 3, True), ("10.20.30.57", 3, True)]
    assert [a for a, _ in DEMO_DEVICES["CONTOSO\\svc-mfp"]] == ["10.20.30.41", "10.20.30.57"]
    # Every other account fails on a connector that does not log: no device, said plainly.
    others = [g for g in result.groups if g.account_key != "contoso\\svc-mfp"]
    assert others and all(g.no_match for g in others)
    # The Hub log and EX02's hold no failure line (no connector there logs by default).
    for server, role in (("EX01", "Hub"), ("EX02", "FrontEnd"), ("EX02", "Hub")):
        files = writers[server][role].snapshot()
        assert all(not parse_log(data, server).lines for data in files.values())

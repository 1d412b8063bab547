"""Parsing wevtutil output: both IDs, both providers, hostile and broken input."""
from datetime import UTC, datetime

import pytest

from bot.sources.parse import (
    ParseFailure,
    parse_event,
    parse_events,
    parse_log_info,
    parse_system_time,
)
from sim.eventlog import EventLog, event_xml

NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def xml(record, provider="MSExchangeTransport", event_id=1020, data=("CONTOSO\\svc-scanner",),
        time="2026-03-08T08:13:12.123456789Z", computer="EX01.contoso.local"):
    datas = "".join(f"<Data>{d}</Data>" for d in data)
    return (f"<Event xmlns='{NS}'><System><Provider Name='{provider}'/>"
            f"<EventID Qualifiers='32772'>{event_id}</EventID><Level>3</Level>"
            f"<TimeCreated SystemTime='{time}'/><EventRecordID>{record}</EventRecordID>"
            f"<Channel>Application</Channel><Computer>{computer}</Computer><Security/></System>"
            f"<EventData>{datas}</EventData></Event>")


def wrap(*events):
    return "<Events>\r\n" + "\r\n".join(events) + "\r\n</Events>\r\n"


def test_1020_from_the_transport_provider():
    batch = parse_events(wrap(xml(667364)), "EX01")
    assert batch.problems == []
    [event] = batch.events
    assert (event.server, event.record_id, event.provider, event.event_id) == (
        "EX01", 667364, "MSExchangeTransport", 1020)
    assert event.account == "CONTOSO\\svc-scanner"
    assert event.connector is None
    assert event.computer == "EX01.contoso.local"
    assert event.time == datetime(2026, 3, 8, 8, 13, 12, 123456, tzinfo=UTC)
    assert batch.highest_record == 667364 and batch.complete_events == 1


def test_1018_from_the_front_end_provider_names_the_connector():
    batch = parse_events(wrap(xml(5, "MSExchangeFrontEndTransport", 1018,
                                  ("CONTOSO\\app-erp", "EX02\\Client Frontend EX02"))), "EX02")
    [event] = batch.events
    assert event.provider == "MSExchangeFrontEndTransport"
    assert event.event_id == 1018
    assert event.connector == "EX02\\Client Frontend EX02"


def test_non_ascii_and_escaped_xml_values_survive():
    batch = parse_events(wrap(xml(1, data=("CONTOSO\\jürgen.müller &amp; &lt;!channel&gt;",))), "EX01")
    assert batch.events[0].account == "CONTOSO\\jürgen.müller & <!channel>"


def test_the_simulators_own_xml_round_trips():
    log = EventLog("EX01.contoso.local", first_record=100)
    ev = log.append("MSExchangeFrontEndTransport", 1018, ("CONTOSO\\O'Brien", "EX01\\Client Frontend EX01"))
    [event] = parse_events(wrap(event_xml(ev)), "EX01").events
    assert event.account == "CONTOSO\\O'Brien"
    assert event.record_id == ev.record_id == 100


@pytest.mark.parametrize("value, expected", [
    ("2026-03-08T08:13:12.000000000Z", datetime(2026, 3, 8, 8, 13, 12, tzinfo=UTC)),
    ("2026-03-08T08:13:12.999999999Z", datetime(2026, 3, 8, 8, 13, 12, 999999, tzinfo=UTC)),
    ("2026-03-08T08:13:12.5Z", datetime(2026, 3, 8, 8, 13, 12, 500000, tzinfo=UTC)),
    ("2026-03-08T08:13:12Z", datetime(2026, 3, 8, 8, 13, 12, tzinfo=UTC)),
    ("2026-03-08T09:13:12.1+01:00", datetime(2026, 3, 8, 8, 13, 12, 100000, tzinfo=UTC)),
])
def test_system_time_with_nanoseconds(value, expected):
    assert parse_system_time(value) == expected


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-08T08:13:12Z", "2026-03-08 08:13"])
def test_unreadable_system_time_is_refused(value):
    with pytest.raises(ValueError, match="SystemTime"):
        parse_system_time(value)


def test_a_malformed_event_is_a_problem_and_its_neighbours_are_kept():
    broken = xml(2).replace("</EventID>", "</EventIDX>")
    batch = parse_events(wrap(xml(1), broken, xml(3)), "EX01")
    assert [e.record_id for e in batch.events] == [1, 3]
    [problem] = batch.problems
    assert problem.kind == "malformed_event" and "not well-formed" in problem.detail
    assert batch.highest_record == 3 and batch.complete_events == 3


def test_a_truncated_last_event_does_not_move_the_cursor_past_it():
    text = wrap(xml(1), xml(2))[: -len("</Events>\r\n") - 40]
    batch = parse_events(text, "EX01")
    assert [e.record_id for e in batch.events] == [1]
    assert [p.kind for p in batch.problems] == ["truncated_event"]
    assert batch.highest_record == 1  # record 2 is read again next time


@pytest.mark.parametrize("mutate, message", [
    (lambda x: x.replace("<EventData><Data>CONTOSO\\svc-scanner</Data></EventData>", "<EventData/>"),
     "no account"),
    (lambda x: x.replace("<EventRecordID>7</EventRecordID>", "<EventRecordID>x</EventRecordID>"),
     "EventRecordID is not a number"),
    (lambda x: x.replace("<EventRecordID>7</EventRecordID>", ""), "missing <EventRecordID>"),
    (lambda x: x.replace("SystemTime='2026-03-08T08:13:12.123456789Z'", ""), "SystemTime"),
    (lambda x: x.replace("MSExchangeTransport", "Microsoft-Windows-SMBServer"),
     "not a submit-permission event"),
    (lambda x: x.replace(">1020<", ">1035<"), "not a submit-permission event"),
])
def test_each_kind_of_bad_event_says_what_is_wrong(mutate, message):
    batch = parse_events(wrap(mutate(xml(7))), "EX01")
    assert batch.events == []
    assert message in batch.problems[0].detail


def test_xml_entity_expansion_is_refused():
    bomb = "<!DOCTYPE e [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>" + xml(9, data=("&b;",))
    with pytest.raises(ValueError, match="forbidden XML construct"):
        parse_event(bomb, "EX01")
    batch = parse_events(wrap(xml(8), bomb, xml(10)), "EX01")
    assert [e.record_id for e in batch.events] == [8, 10]


def test_garbage_between_events_is_reported_not_fatal():
    batch = parse_events("<Events>\r\nWARNING: something odd\r\n" + xml(1) + "\r\n</Events>", "EX01")
    assert [e.record_id for e in batch.events] == [1]
    assert [p.kind for p in batch.problems] == ["unexpected_output"]
    assert "WARNING" in batch.problems[0].excerpt


@pytest.mark.parametrize("text", ["", "<Events></Events>", "<Events>\r\n</Events>\r\n", "\r\n"])
def test_no_match_is_an_empty_result(text):
    batch = parse_events(text, "EX01")
    assert batch.events == [] and batch.problems == [] and batch.highest_record is None


def test_an_oversized_event_is_refused():
    huge = xml(1, data=("A" * 70_000,))
    batch = parse_events(wrap(huge), "EX01")
    assert batch.events == [] and "over" in batch.problems[0].detail


def test_log_info():
    info = parse_log_info("creationTime: 2026-01-01T00:00:00.000Z\r\nnumberOfLogRecords: 250\r\n"
                          "oldestRecordNumber: 1001\r\n")
    assert (info.record_count, info.oldest_record, info.newest_record) == (250, 1001, 1250)
    empty = parse_log_info("numberOfLogRecords: 0\r\noldestRecordNumber: 0\r\n")
    assert empty.newest_record is None
    with pytest.raises(ParseFailure, match="numberOfLogRecords"):
        parse_log_info("Access is denied.")


def test_a_bare_connector_name_gets_its_server_prefix():
    batch = parse_events(wrap(xml(5, "MSExchangeFrontEndTransport", 1018,
                                  ("CONTOSO\\app-erp", "Client Frontend EX02"),
                                  computer="EX02.contoso.local")), "EX02")
    assert batch.events[0].connector == "EX02\\Client Frontend EX02"

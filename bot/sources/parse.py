"""Turn what a server returned into Events, without trusting any of it.

Input is the text of `wevtutil qe ... /f:xml /e:Events`: an <Events> wrapper holding <Event>
elements. No byte-level capture from a real server was found and the fixtures that claim to be
real disagree, so every framing is accepted without a problem: one event per line (CRLF or LF)
or none between them, `</Events>` glued to the last event, an empty answer as `<Events/>`,
`<Events></Events>` or nothing, a byte-order mark and an XML declaration before it all.
The events of a batch are cut out and parsed together; if any of them is not well-formed, each
is parsed on its own, so one malformed, truncated or hostile event becomes a
Problem while the good events around it are kept.

Safe parsing without defusedxml's cost: defusedxml's parser is pure Python (about 20,000 events/s,
the whole ingest budget; see docs/benchmarks.md), so each event goes to the standard library's C
expat parser instead, after any DTD is refused outright. Every XML attack defusedxml guards
against (entity expansion, external entities, DTD retrieval) needs a <!DOCTYPE> to declare its
entities, and a wevtutil event never has one; expat >= 2.4 also limits expansion by itself.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree.ElementTree import Element, ParseError, XMLParser

from bot.core.inert import inert
from bot.core.model import EVENT_IDS, PROVIDERS, Event, Problem
from bot.exchange.remediation import UnsafeValueError, connector_identity

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
EXCERPT_CHARS = 200
#: A single event is a few hundred bytes; anything this large is not an event we want to parse.
MAX_EVENT_CHARS = 64 * 1024
#: EventRecordID is an unsigned 64-bit number on Windows; SQLite stores signed 64-bit integers.
MAX_RECORD_ID = 2**63 - 1

# Qualified tag names, built once rather than per event.
_SYSTEM, _PROVIDER, _EVENT_ID, _RECORD, _TIME_CREATED, _COMPUTER, _DATA = (
    NS + name for name in ("System", "Provider", "EventID", "EventRecordID", "TimeCreated",
                           "Computer", "Data"))

_EVENT_START = re.compile(r"<Event[\s>]")
_EVENT_END = "</Event>"
_WRAPPER = re.compile(r"\ufeff?\s*(?:<\?xml\s[^<>]*\?>\s*)?(?:(?:</?Events>|<Events\s*/>)\s*)*")
_RECORD_ID = re.compile(r"<EventRecordID>\s*(\d{1,19})\s*</EventRecordID>")
_SYSTEM_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


@dataclass(frozen=True)
class LogInfo:
    """What `wevtutil gli Application` says about the log as a whole."""

    record_count: int
    oldest_record: int | None  # None when the log is empty

    @property
    def newest_record(self) -> int | None:
        if self.oldest_record is None or self.record_count == 0:
            return None
        return self.oldest_record + self.record_count - 1


@dataclass
class ParsedBatch:
    """What one query returned: good events, problems, and how far the output reached."""

    events: list[Event]
    problems: list[Problem]
    complete_events: int = 0             # <Event> elements that ended properly, good or bad
    highest_record: int | None = None    # the largest EventRecordID among them
    #: Events left out because their <Computer> is no configured server and the source's
    #: setting says so (unconfigured_origins = "ignore"): computer -> how many.
    left_out: dict[str, int] = field(default_factory=dict)


class ParseFailure(ValueError):
    """The output as a whole cannot be understood (not a single bad event)."""


class LeftOut(Exception):
    """An event of a computer the source leaves out (its origin rule said None)."""

    def __init__(self, computer: str):
        super().__init__(computer)
        self.computer = computer


def parse_events(text: str, server: str,
                 origin_of: Callable[[str], str | None] | None = None) -> ParsedBatch:
    """Parse wevtutil XML output into events (in the order given) and problems.

    `origin_of` maps an event's <Computer> to the configured server that logged it (the
    source's rule; None: the server polled, as for a direct source). An event it gives no
    origin is counted in `left_out`, not stored.

    `highest_record` also counts malformed but complete events (their EventRecordID is read with
    a plain search), so a cursor can move past a bad event instead of re-reading it forever; a
    truncated event does not count, so it is read again on the next poll.
    """
    batch = ParsedBatch(events=[], problems=[])
    events, problems = batch.events, batch.problems
    starts = [m.start() for m in _EVENT_START.finditer(text)]
    _check_gap(text[: starts[0]] if starts else text, server, problems)
    ends = starts[1:] + [len(text)]
    highest = 0
    chunks: list[str] = []
    # This loop runs for every event ingested: it slices each event out once and leaves the
    # regular expressions to the rare odd case (see docs/benchmarks.md, row 1).
    for start, stop in zip(starts, ends, strict=False):  # no events: ends is [len(text)]
        end = text.find(_EVENT_END, start, stop)
        if end < 0:
            problems.append(Problem(server, "truncated_event",
                                    "an event was cut off before its end and was skipped",
                                    _excerpt(text[start:stop])))
            continue
        end += len(_EVENT_END)
        if end < stop:
            gap = text[end:stop]
            if not gap.isspace():
                _check_gap(gap, server, problems)
        batch.complete_events += 1
        chunks.append(text[start:end])
    if not any(p.kind == "truncated_event" for p in problems):
        _check_closed(text, starts, server, problems)
    for chunk, root in zip(chunks, _parse_all(chunks), strict=True):
        try:
            event = parse_event(chunk, server, root, origin_of)
        except LeftOut as exc:
            batch.left_out[exc.computer] = batch.left_out.get(exc.computer, 0) + 1
            continue
        except ValueError as exc:
            problems.append(Problem(server, "malformed_event", f"an event was skipped: {exc}",
                                    _excerpt(chunk)))
            # A bad but complete event still moves the cursor past it, if its id can be read.
            record = _RECORD_ID.search(chunk)
            if record and int(record.group(1)) <= MAX_RECORD_ID:
                highest = max(highest, int(record.group(1)))
            continue
        events.append(event)
        highest = max(highest, event.record_id)
    batch.highest_record = highest or None
    return batch


def parse_event(xml_text: str, server: str, root: Element | None = None,
                origin_of: Callable[[str], str | None] | None = None) -> Event:
    """Parse one <Event> element (or read `root`, its tree parsed already). Raises ValueError
    saying what is wrong, LeftOut for a computer `origin_of` leaves out."""
    if len(xml_text) > MAX_EVENT_CHARS:
        raise ValueError(f"event is {len(xml_text)} characters long, over {MAX_EVENT_CHARS}")
    if root is None:
        root = _parse_xml(xml_text)
    system = _child(root, _SYSTEM)
    provider = _child(system, _PROVIDER).get("Name", "")
    event_id = _int(_text(_child(system, _EVENT_ID)), "EventID")
    if provider not in PROVIDERS or event_id not in EVENT_IDS:
        raise ValueError(f"not a submit-permission event (provider {provider!r}, id {event_id})")
    record_id = _int(_text(_child(system, _RECORD)), "EventRecordID")
    if not 0 < record_id <= MAX_RECORD_ID:
        raise ValueError(f"EventRecordID {record_id} is out of range")
    time = parse_system_time(_child(system, _TIME_CREATED).get("SystemTime", ""))
    computer = _text(system.find(_COMPUTER))
    data = [d.text or "" for d in root.iter(_DATA)]
    if not data or not data[0].strip():
        raise ValueError(f"event {record_id} has no account name")
    # Exchange logs both events with {account, connector.Name} (AuthCommandHelpers.cs); 1020's
    # message prints only %1, but its EventData still holds the connector's name.
    connector = data[1] if len(data) > 1 and data[1].strip() else None
    if connector and "\\" not in connector:
        connector = _full_identity(computer, connector)
    origin = origin_of(computer) if origin_of else server
    if origin is None:
        raise LeftOut(computer)
    return Event(server=server, record_id=record_id, provider=provider, event_id=event_id,
                 time=time, account=data[0], connector=connector, computer=computer,
                 origin=origin)


def _parse_all(chunks: list[str]) -> list[Element | None]:
    """All events of a batch through one parser, the usual case; if any is not well-formed,
    None for each, so every event is parsed alone and one bad event spoils only itself."""
    try:
        root = _parse_xml("<batch>" + "".join(chunks) + "</batch>")
    except ValueError:
        return [None] * len(chunks)
    events: list[Element | None] = list(root)
    return events if len(events) == len(chunks) else [None] * len(chunks)


def _parse_xml(xml_text: str) -> Element:
    """Parse one event with the C expat parser; refuse any DTD (where entity attacks live).

    XML allows entity declarations only inside <!DOCTYPE ...>, and both keywords are case-
    sensitive, so a plain substring test is exact. The text is a str, so expat reads it as
    UTF-8 whatever an XML declaration claims: no encoding trick can hide the keyword.
    """
    if "<!DOCTYPE" in xml_text or "<!ENTITY" in xml_text:
        raise ValueError("forbidden XML construct (a DTD or entity declaration)")
    parser = XMLParser()  # a fresh C parser per event: cheap, and no state leaks between events
    try:
        parser.feed(xml_text)
        return parser.close()
    except ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None


def _full_identity(computer: str, name: str) -> str:
    """A bare connector name becomes `<SERVER>\\<name>`, the identity Exchange cmdlets take."""
    try:
        return connector_identity(computer, name)
    except UnsafeValueError:  # keep the raw text; rendering explains why no command is shown
        return name


def parse_system_time(value: str) -> datetime:
    """`2026-03-08T08:13:12.123456789Z` -> aware UTC datetime (nanoseconds cut to micro)."""
    m = _SYSTEM_TIME.fullmatch(value.strip())
    if not m:
        raise ValueError(f"unreadable SystemTime {value[:40]!r}")
    base, fraction, zone = m.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    try:
        offset = "+00:00" if zone in (None, "Z") else zone
        parsed = datetime.fromisoformat(f"{base}.{micros}{offset}")
    except ValueError:
        raise ValueError(f"unreadable SystemTime {value[:40]!r}") from None
    return parsed.astimezone(UTC)


def parse_log_info(text: str) -> LogInfo:
    """Read `numberOfLogRecords` and `oldestRecordNumber` from `wevtutil gli` output."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        count = int(fields["numberOfLogRecords"])
        oldest = int(fields["oldestRecordNumber"]) if count else None
    except (KeyError, ValueError):
        raise ParseFailure("`wevtutil gli Application` did not report numberOfLogRecords and "
                           f"oldestRecordNumber; it said: {_excerpt(text)!r}") from None
    return LogInfo(record_count=count, oldest_record=oldest)


def _check_gap(text: str, server: str, problems: list[Problem]) -> None:
    """Text between events should be the wrapper and whitespace only; say if it is not."""
    if not _WRAPPER.fullmatch(text):
        problems.append(Problem(server, "unexpected_output",
                                "the server returned text that is not an event; it was ignored",
                                _excerpt(text.strip())))


def _check_closed(text: str, starts: list[int], server: str, problems: list[Problem]) -> None:
    """Output that opened <Events> must close it. Cut off right after a complete event, it
    would otherwise look like the whole answer, and the cursor would skip what was never read;
    as a truncated event, the next poll reads on from the last complete one."""
    head = text[: starts[0]] if starts else text
    if "<Events>" in head and "</Events>" not in text[starts[-1] if starts else 0:]:
        problems.append(Problem(server, "truncated_output",
                                "the output was cut off (no closing </Events>); what followed "
                                "the last complete event is read again on the next poll",
                                _excerpt(text[-EXCERPT_CHARS:])))


def _child(parent: Element, tag: str) -> Element:
    found = parent.find(tag)
    if found is None:
        raise ValueError(f"missing <{tag[len(NS):]}>")
    return found


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} is not a number: {value[:40]!r}") from None


def _excerpt(text: str) -> str:
    return inert(text[:EXCERPT_CHARS])

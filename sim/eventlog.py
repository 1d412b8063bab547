"""Simulated Windows Application event logs of Exchange servers.

This module is the data side of SubmitWatch's built-in Exchange simulator
(:mod:`sim.winrm_server` is the WS-Management side).  It models exactly as
much of the Windows event log as the bot observes through ``wevtutil``:

* an Application log with monotonically increasing record numbers, which can be
  cleared (numbering continues, as on Windows) or wrap (oldest records are
  overwritten), so the bot's cursor handling can be tested;
* the one-line event XML that ``wevtutil qe /f:xml`` prints (as does
  ``Get-WinEvent ... .ToXml()``), including verbatim "raw" records for
  malformed or truncated output;
* a small, *strict* interpreter for the XPath dialect the bot sends.  Real
  Windows rejects what it does not understand with "The specified query is
  invalid." (error 15001), so the interpreter refuses everything outside a
  documented subset instead of guessing: a typo in the bot's query fails
  loudly in tests rather than silently matching nothing;
* a deterministic demo stream for ``submitwatch demo`` and benchmarks.

Everything here is pure Python and thread-safe; no I/O happens.
"""

from __future__ import annotations

import bisect
import random
import re
import threading
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "EVENT_NS",
    "TRANSPORT_PROVIDERS",
    "NOISE_EVENTS",
    "SimEvent",
    "EventLog",
    "EventRate",
    "QueryError",
    "EventQuery",
    "compile_query",
    "query_events",
    "event_xml",
    "format_system_time",
    "DemoEvent",
    "demo_stream",
    "seed_demo",
    "demo_logs",
    "utc_now",
]

#: Namespace of every event element (``Get-WinEvent .ToXml()`` / ``wevtutil``).
EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"

#: The two providers that log 1018/1020 (backend/hub and front end transport).
TRANSPORT_PROVIDERS = ("MSExchangeTransport", "MSExchangeFrontEndTransport")

#: Unrelated events that share an ID or a provider with the interesting ones,
#: as ``(provider, event_id, data)``.  They exist so that a query that filters
#: on the ID alone, or on the provider alone, visibly returns the wrong events.
NOISE_EVENTS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("MSExchange Store Driver", 1020, ("Mailbox Database 0153518726", "The store driver failed to deliver a message.")),
    ("Microsoft-Windows-SMBServer", 1020, ("\\\\FS01\\share", "File system operations are taking longer than expected.")),
    (
        "MSExchangeTransport",
        1035,
        ("LogonDenied", "Default Frontend EX01", "LOGIN", "203.0.113.77"),
    ),
    ("MSExchange ADAccess", 2080, ("w3wp.exe", "5724", "DC01.contoso.local CDG 1 7 7 1 0 1 1 7 1")),
    ("MSExchangeFrontEndTransport", 1021, ("CONTOSO\\svc-scanner",)),
    ("ESE", 326, ("Information Store - Mailbox Database 0153518726 (3920)", "The database engine attached a database.")),
)


def utc_now() -> datetime:
    """The default simulator clock: the real, timezone-aware UTC time."""
    return datetime.now(UTC)


def _require_aware(value: datetime, what: str) -> datetime:
    """Normalise to UTC, refusing naive datetimes (they are a classic source of off-by-hours bugs)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value!r})")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------------
# Events and their XML
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimEvent:
    """One record in a simulated Application log.

    ``data`` holds the EventData ``<Data>`` values in %1..%n order (a 1020 has
    one, a 1018 two).  When ``raw`` is set the record is emitted verbatim
    instead of being rendered; provider/ID/time still decide whether a query
    matches it, so a malformed record can be planted between good ones.
    """

    record_id: int
    provider: str
    event_id: int
    time: datetime
    data: tuple[str, ...] = ()
    computer: str = "EX01.contoso.local"
    raw: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", _require_aware(self.time, "SimEvent.time"))
        object.__setattr__(self, "data", tuple(self.data))


def format_system_time(value: datetime) -> str:
    """Render ``SystemTime`` the way Windows does: UTC, 9 fractional digits, ``Z``.

    Windows keeps 100 ns ticks; Python keeps microseconds, so the last three
    digits are always ``000``.  (Python's ``fromisoformat`` cannot read nine
    digits, which is exactly the trap the bot must handle.)
    """
    value = _require_aware(value, "time")
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond * 1000:09d}Z"


# Characters XML 1.0 cannot carry at all.  Windows writes them as numeric
# character references, which strict parsers (expat, defusedxml) then reject:
# that is a realistic way for one hostile account name to poison a batch.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _escape_text(value: str) -> str:
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _XML_INVALID.sub(lambda m: f"&#x{ord(m.group()):X};", value)


def _escape_attr(value: str) -> str:
    # Attributes are single-quoted in event XML, so the apostrophe must go too.
    return _escape_text(value).replace("'", "&apos;")


def event_xml(ev: SimEvent) -> str:
    """One event as one line of XML, as `wevtutil qe /f:xml` prints it.

    Returns ``ev.raw`` unchanged for raw records.
    """
    if ev.raw is not None:
        return ev.raw
    data = "".join(f"<Data>{_escape_text(value)}</Data>" for value in ev.data)
    return (
        f"<Event xmlns='{EVENT_NS}'><System>"
        f"<Provider Name='{_escape_attr(ev.provider)}'/>"
        f"<EventID Qualifiers='32772'>{ev.event_id}</EventID>"
        "<Level>3</Level><Task>1</Task><Keywords>0x80000000000000</Keywords>"
        f"<TimeCreated SystemTime='{format_system_time(ev.time)}'/>"
        f"<EventRecordID>{ev.record_id}</EventRecordID>"
        "<Channel>Application</Channel>"
        f"<Computer>{_escape_text(ev.computer)}</Computer><Security/></System>"
        f"<EventData>{data}</EventData></Event>"
    )


# --------------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------------


class EventLog:
    """The Application log of one simulated server.

    Thread-safe: the WS-Management endpoint reads it from request threads while
    a test or the demo appends to it.  Records are kept sorted by record id so
    a cursor query (``EventRecordID > N``) starts with a binary search instead
    of a scan, which keeps large logs (storms of 100k events) cheap.

    ``now`` is the simulator clock (default: real UTC time).  It stamps events
    appended without a time and is the reference for ``timediff()`` in
    queries, so tests can pin it.  ``max_records`` makes the log wrap like a
    full .evtx file: appending beyond it overwrites the oldest records.
    """

    def __init__(
        self,
        computer: str = "EX01.contoso.local",
        *,
        first_record: int = 1,
        now: Callable[[], datetime] | None = None,
        max_records: int | None = None,
        connector_in_1020: bool = True,
        channel: str = "Application",
    ) -> None:
        self.channel = channel  # the log's name, as wevtutil takes it
        if first_record < 1:
            raise ValueError("first_record must be >= 1")
        if max_records is not None and max_records < 1:
            raise ValueError("max_records must be >= 1")
        self.computer = computer
        self.now: Callable[[], datetime] = now or utc_now
        self.max_records = max_records
        self.connector_in_1020 = connector_in_1020
        self._lock = threading.Lock()
        self._events: list[SimEvent] = []
        self._ids: list[int] = []  # parallel to _events, for bisect
        self._first_record = first_record
        self._next_record = first_record
        #: Collector mode (``channel="ForwardedEvents"``): each WEF subscription's event
        #: sources, computer -> (RunTimeStatus, LastHeartbeatTime or None), for ``wecutil gr``.
        self.subscriptions: dict[str, dict[str, tuple[str, datetime | None]]] = {}
        #: Records whose XML carries another log's EventRecordID (forwarded ones): the cursor
        #: shortcut below cannot assume the XML's ids follow the log's own numbering.
        self._foreign_ids = False
        #: The reading account's %TEMP% folder on this machine, file path -> text: what
        #: ``echo ...>"file"`` wrote and ``wevtutil qe /sbm:`` saved (sim.wevtutil).
        self.temp_files: dict[str, str] = {}
        #: ``qe /bm:`` starts at the bookmarked record itself instead of after it (which one
        #: Windows does is unverified; the bot must be right either way).
        self.bookmark_inclusive = False
        self.created = self._now()
        self.last_write = self.created

    def _now(self) -> datetime:
        return _require_aware(self.now(), "EventLog.now()")

    # -- writing ------------------------------------------------------------------------------------

    def _add(self, make: Callable[[int], SimEvent]) -> SimEvent:
        """Append the record `make` builds for the log's next number (the number `_ids` keeps:
        a forwarded record's XML carries its origin's instead)."""
        with self._lock:
            own = self._next_record
            ev = make(own)
            self._next_record += 1
            self._events.append(ev)
            self._ids.append(own)
            if self.max_records is not None and len(self._events) > self.max_records:
                self._drop_locked(len(self._events) - self.max_records)
            self.last_write = self._now()
            return ev

    def append(
        self,
        provider: str,
        event_id: int,
        data: Iterable[str] = (),
        time: datetime | None = None,
        computer: str | None = None,
    ) -> SimEvent:
        """Log one event; it gets the next record id.  ``time`` defaults to the log clock.

        Times need not be increasing (Windows logs are ordered by record id,
        not by time), which lets tests create back-dated events.
        """
        when = _require_aware(time, "time") if time is not None else self._now()
        return self._add(
            lambda rid: SimEvent(rid, provider, int(event_id), when, tuple(data), computer or self.computer)
        )

    def append_forwarded(
        self,
        computer: str,
        origin_record: int,
        event_id: int,
        account: str,
        connector: str | None = None,
        *,
        provider: str = "MSExchangeFrontEndTransport",
        time: datetime | None = None,
    ) -> SimEvent:
        """Collector mode: a 1018/1020 that ``computer`` logged as its record ``origin_record``
        and forwarded here. As ../shared/DOMAIN.md section 8 has it, a forwarded event keeps
        its ``<Computer>`` and the EventRecordID of the origin's own log, so two origins'
        events may carry the same id; the log's own numbering (``gli``) goes on regardless.
        """
        short = computer.split(".", 1)[0]
        name = connector if connector is not None else f"Client Frontend {short}"
        data = (account,) if event_id == 1020 and not self.connector_in_1020 else (account, name)
        when = _require_aware(time, "time") if time is not None else self._now()
        self._foreign_ids = True
        return self._add(lambda _own: SimEvent(int(origin_record), provider, int(event_id), when,
                                               data, computer))

    def heartbeat(self, subscription: str, computer: str, at: datetime | None,
                  status: str = "Active") -> None:
        """Collector mode: ``computer``'s last heartbeat in ``subscription`` (None: never)."""
        self.subscriptions.setdefault(subscription, {})[computer] = (status, at)

    def append_refusal(
        self,
        event_id: int,
        account: str,
        connector: str | None = None,
        *,
        provider: str = "MSExchangeFrontEndTransport",
        time: datetime | None = None,
    ) -> SimEvent:
        """Log a 1018 or 1020 the way Exchange does: ``{account, connector.Name}``.

        Exchange's transport code (AuthCommandHelpers.cs) logs both events with the account
        and the Receive connector's bare *Name* (``Client Frontend EX01``), even though 1020's
        message template prints only the first.  ``connector`` defaults to the server's
        client-submission connector; with ``connector_in_1020=False`` (the log's setting) a
        1020 carries the account alone, as older documentation shows it.
        """
        if event_id not in (1018, 1020):
            raise ValueError("append_refusal logs event 1018 or 1020")
        short = self.computer.split(".", 1)[0]
        name = connector if connector is not None else f"Client Frontend {short}"
        data = (account,) if event_id == 1020 and not self.connector_in_1020 else (account, name)
        return self.append(provider, event_id, data, time=time)

    def append_raw(
        self,
        xml_text: str,
        *,
        provider: str = "MSExchangeTransport",
        event_id: int = 1020,
        time: datetime | None = None,
    ) -> SimEvent:
        """Log a record that is emitted verbatim (malformed, truncated, hostile XML...).

        It occupies a record id like any event.  ``provider``/``event_id``/
        ``time`` are what queries match against; the defaults make the bot's
        query select it.  Lone surrogates U+DC80..U+DCFF in ``xml_text`` are
        sent as the raw bytes 0x80..0xFF (Python's ``surrogateescape``
        convention), so a test can plant invalid UTF-8 in a single record.
        """
        when = _require_aware(time, "time") if time is not None else self._now()
        return self._add(lambda rid: SimEvent(rid, provider, int(event_id), when, (), self.computer, raw=xml_text))

    def append_noise(self, count: int = 1, *, rng: random.Random | None = None, time: datetime | None = None) -> list[SimEvent]:
        """Log ``count`` unrelated events (see :data:`NOISE_EVENTS`) that the bot must filter out."""
        rng = rng or random.Random(count)
        out = []
        for _ in range(count):
            provider, event_id, data = rng.choice(NOISE_EVENTS)
            out.append(self.append(provider, event_id, data, time=time))
        return out

    def clear(self, restart_numbering: bool = False) -> None:
        """Empty the log, like ``wevtutil cl Application``.

        Windows continues the numbering after a clear; ``restart_numbering``
        models a log that was deleted and recreated (numbers start again at
        the configured first record), the case where the bot's cursor ends up
        above every record.
        """
        with self._lock:
            self._events.clear()
            self._ids.clear()
            if restart_numbering:
                self._next_record = self._first_record
            self.last_write = self._now()

    def drop_oldest(self, n: int) -> int:
        """Overwrite the ``n`` oldest records, as a full log that wraps does.  Returns how many went."""
        with self._lock:
            return self._drop_locked(n)

    def _drop_locked(self, n: int) -> int:
        n = max(0, min(n, len(self._events)))
        del self._events[:n]
        del self._ids[:n]
        return n

    # -- reading ------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._events)

    @property
    def oldest_record(self) -> int | None:
        """Record id of the oldest record still in the log, or None when empty."""
        with self._lock:
            return self._ids[0] if self._ids else None

    @property
    def newest_record(self) -> int | None:
        """Record id of the newest record, or None when empty."""
        with self._lock:
            return self._ids[-1] if self._ids else None

    @property
    def next_record(self) -> int:
        """The record id the next append will get."""
        with self._lock:
            return self._next_record

    def events(self) -> list[SimEvent]:
        """A snapshot of every record, oldest first."""
        with self._lock:
            return list(self._events)

    def query(
        self,
        xpath: str | EventQuery,
        count: int | None = None,
        *,
        reverse: bool = False,
        now: datetime | None = None,
    ) -> list[SimEvent]:
        """Records matching ``xpath``, oldest first (newest first with ``reverse``), at most ``count``.

        Raises :class:`QueryError` for anything outside the supported dialect.
        """
        q = compile_query(xpath) if isinstance(xpath, str) else xpath
        ref = _require_aware(now, "now") if now is not None else self._now()
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            start = (bisect.bisect_left(self._ids, q.min_record)
                     if q.min_record is not None and not self._foreign_ids else 0)
            candidates: Sequence[SimEvent] = self._events[start:]
        if reverse:
            candidates = candidates[::-1]
        out: list[SimEvent] = []
        for ev in candidates:
            if q.matches(ev, ref):
                out.append(ev)
                if count is not None and len(out) >= count:
                    break
        return out

    def query_after(self, xpath: str | EventQuery, after: int | None, count: int | None
                    ) -> list[tuple[int, SimEvent]]:
        """Records matching ``xpath`` whose number in this log's own numbering (the one ``gli``
        reports, and a bookmark's RecordId) is above ``after``, oldest first, each with that
        number: what ``wevtutil qe /bm:`` pages through."""
        q = compile_query(xpath) if isinstance(xpath, str) else xpath
        ref = self._now()
        with self._lock:
            start = 0 if after is None else bisect.bisect_right(self._ids, after)
            candidates = zip(self._ids[start:], self._events[start:], strict=True)
        out: list[tuple[int, SimEvent]] = []
        for own, ev in candidates:
            if q.matches(ev, ref):
                out.append((own, ev))
                if count is not None and len(out) >= count:
                    break
        return out

    def info(self) -> dict[str, object]:
        """The fields ``wevtutil gli`` prints.  An empty log reports 0 for both record fields."""
        with self._lock:
            n = len(self._events)
            oldest = self._ids[0] if self._ids else 0
            # A fresh .evtx is 68 KiB; assume ~600 bytes a record, capped at the 20 MiB default size.
            size = min(69632 + 600 * (self._next_record - self._first_record), 20975616)
            return {
                "creationTime": self.created,
                "lastAccessTime": self._now(),
                "lastWriteTime": self.last_write,
                "fileSize": size,
                "attributes": 32,
                "numberOfLogRecords": n,
                "oldestRecordNumber": oldest,
            }

    def __repr__(self) -> str:
        return f"EventLog({self.computer!r}, count={self.count}, next_record={self.next_record})"


class EventRate:
    """Append events to some logs at a steady average rate, from a background thread.

    For benchmarks: a Poisson stream (random gaps with mean ``1 / per_second``, seeded, so runs
    repeat) of ``count`` events, spread round-robin over ``logs``.  Each event gets its own
    account by default (``CONTOSO\\rate-00042``), so each one opens its own incident.  The
    wall-clock time (``time.time()``) of every append is kept in :attr:`appended`, so the time
    from an event appearing to its Slack message can be measured across processes.
    Stops by itself after ``count`` events, or at :meth:`stop`.
    """

    def __init__(
        self,
        logs: Sequence[EventLog],
        per_second: float,
        count: int,
        *,
        seed: int = 1020,
        account: Callable[[int], str] = lambda n: f"CONTOSO\\rate-{n:05d}",
        provider: str = "MSExchangeFrontEndTransport",
        event_id: int = 1020,
    ) -> None:
        if per_second <= 0 or count < 0 or not logs:
            raise ValueError("EventRate needs logs, per_second > 0 and count >= 0")
        self.logs = list(logs)
        self.per_second = float(per_second)
        self.count = int(count)
        self.account = account
        self.provider = provider
        self.event_id = int(event_id)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-event-rate", daemon=True)
        #: (computer, account, record id, time.time()) of each event appended so far.
        self.appended: list[tuple[str, str, int, float]] = []

    def start(self) -> EventRate:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every event is appended; True when done."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        due = _time.monotonic()
        for n in range(self.count):
            due += self._rng.expovariate(self.per_second)
            if self._stop.wait(max(0.0, due - _time.monotonic())):
                return
            log = self.logs[n % len(self.logs)]
            account = self.account(n)
            ev = log.append_refusal(self.event_id, account, provider=self.provider)
            self.appended.append((log.computer, account, ev.record_id, _time.time()))


def query_events(log: EventLog, xpath: str, count: int | None = None, *, reverse: bool = False, now: datetime | None = None) -> list[SimEvent]:
    """Functional spelling of :meth:`EventLog.query`."""
    return log.query(xpath, count, reverse=reverse, now=now)


# --------------------------------------------------------------------------------------------------
# The XPath dialect
# --------------------------------------------------------------------------------------------------


class QueryError(ValueError):
    """The query is outside the supported dialect (wevtutil: error 15001, "The specified query is invalid.")."""

    #: ERROR_EVT_INVALID_QUERY
    win32_error = 15001

    def __init__(self, detail: str) -> None:
        super().__init__(f"The specified query is invalid. ({detail})")
        self.detail = detail


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?![\w.]))
      | (?P<str>'[^']*'|"[^"]*")
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<punct>[\[\]()*])
      | (?P<attr>@[A-Za-z_][\w]*)
      | (?P<name>[A-Za-z_][\w]*)
    )""",
    re.VERBOSE,
)

_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

_KIND_NAMES = {"num": "a number", "str": "a quoted string", "op": "a comparison operator", "name": "a name", "attr": "an attribute"}

# A predicate over (event, now).
_Pred = Callable[[SimEvent, datetime], bool]


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"unexpected text at offset {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over the supported subset of Windows event XPath.

    Grammar (``cmp`` is one of = != < <= > >=; keywords are case-sensitive, as in XPath)::

        query      := '*' [ '[' 'System' '[' sys ']' ']' ]
        sys        := bool(sys_atom)
        sys_atom   := ('EventID' | 'EventRecordID') cmp INT
                    | 'Provider' '[' bool(name_atom) ']'
                    | 'TimeCreated' '[' bool(time_atom) ']'
        name_atom  := '@Name' ('=' | '!=') STRING
        time_atom  := 'timediff' '(' '@SystemTime' ')' cmp INT      (milliseconds)
        bool(atom) := and(atom) { 'or' and(atom) }
        and(atom)  := prim(atom) { 'and' prim(atom) }
        prim(atom) := '(' bool(atom) ')' | atom

    Each rule returns ``(predicate, min_record)``; ``min_record`` is the lowest
    record id that can match (or None), which lets the log skip ahead.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            want = value or _KIND_NAMES.get(kind, kind)
            got = "end of query" if tok is None else repr(tok[1])
            raise QueryError(f"expected {want!r}, got {got}")
        self.pos += 1
        return tok[1]

    def at(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == kind and (value is None or tok[1] == value)

    # -- entry ---------------------------------------------------------------------------------------

    def parse(self) -> tuple[_Pred, int | None]:
        self.take("punct", "*")
        pred: _Pred = lambda ev, now: True  # noqa: E731 - "*" alone selects everything
        bound = None
        if self.at("punct", "["):
            self.take("punct", "[")
            self.take("name", "System")
            self.take("punct", "[")
            pred, bound = self.boolean(self.sys_atom)
            self.take("punct", "]")
            self.take("punct", "]")
        if self.peek() is not None:
            raise QueryError(f"unexpected {self.peek()[1]!r} after the end of the query")  # type: ignore[index]
        return pred, bound

    # -- boolean structure ----------------------------------------------------------------------------

    def boolean(self, atom: Callable[[], tuple[_Pred, int | None]]) -> tuple[_Pred, int | None]:
        parts = [self.conjunction(atom)]
        while self.at("name", "or"):
            self.take("name", "or")
            parts.append(self.conjunction(atom))
        if len(parts) == 1:
            return parts[0]
        preds = [p for p, _ in parts]
        bounds = [b for _, b in parts]
        bound = None if any(b is None for b in bounds) else min(b for b in bounds if b is not None)
        return (lambda ev, now: any(p(ev, now) for p in preds)), bound

    def conjunction(self, atom: Callable[[], tuple[_Pred, int | None]]) -> tuple[_Pred, int | None]:
        parts = [self.primary(atom)]
        while self.at("name", "and"):
            self.take("name", "and")
            parts.append(self.primary(atom))
        if len(parts) == 1:
            return parts[0]
        preds = [p for p, _ in parts]
        known = [b for _, b in parts if b is not None]
        return (lambda ev, now: all(p(ev, now) for p in preds)), (max(known) if known else None)

    def primary(self, atom: Callable[[], tuple[_Pred, int | None]]) -> tuple[_Pred, int | None]:
        if self.at("punct", "("):
            self.take("punct", "(")
            result = self.boolean(atom)
            self.take("punct", ")")
            return result
        return atom()

    def comparison(self) -> tuple[Callable[[int, int], bool], int, str]:
        op = self.take("op")
        return _OPS[op], int(self.take("num")), op

    # -- atoms ---------------------------------------------------------------------------------------

    def sys_atom(self) -> tuple[_Pred, int | None]:
        name = self.take("name")
        if name == "EventID":
            fn, value, _ = self.comparison()
            return (lambda ev, now: fn(ev.event_id, value)), None
        if name == "EventRecordID":
            fn, value, op = self.comparison()
            bound = {">": value + 1, ">=": value, "=": value}.get(op)
            return (lambda ev, now: fn(ev.record_id, value)), bound
        if name == "Provider":
            self.take("punct", "[")
            result = self.boolean(self.name_atom)
            self.take("punct", "]")
            return result
        if name == "TimeCreated":
            self.take("punct", "[")
            result = self.boolean(self.time_atom)
            self.take("punct", "]")
            return result
        raise QueryError(f"unsupported System element {name!r}")

    def name_atom(self) -> tuple[_Pred, int | None]:
        self.take("attr", "@Name")
        op = self.take("op")
        if op not in ("=", "!="):
            raise QueryError(f"operator {op!r} not valid for @Name")
        literal = self.take("str")[1:-1]
        if op == "=":
            return (lambda ev, now: ev.provider == literal), None
        return (lambda ev, now: ev.provider != literal), None

    def time_atom(self) -> tuple[_Pred, int | None]:
        self.take("name", "timediff")
        self.take("punct", "(")
        self.take("attr", "@SystemTime")
        self.take("punct", ")")
        fn, value, _ = self.comparison()

        def pred(ev: SimEvent, now: datetime) -> bool:
            diff_ms = (now - ev.time) // timedelta(milliseconds=1)
            return fn(diff_ms, value)

        return pred, None


@dataclass(frozen=True)
class EventQuery:
    """A compiled query: ``matches(event, now)`` plus the lowest record id that can match."""

    text: str
    predicate: _Pred = field(repr=False, compare=False)
    min_record: int | None = None

    def matches(self, ev: SimEvent, now: datetime) -> bool:
        return self.predicate(ev, now)


def compile_query(xpath: str) -> EventQuery:
    """Compile the bot's XPath, e.g.::

        *[System[Provider[@Name='MSExchangeTransport' or @Name='MSExchangeFrontEndTransport']
          and (EventID=1018 or EventID=1020) and EventRecordID > 0
          and TimeCreated[timediff(@SystemTime) <= 86400000]]]

    Raises :class:`QueryError` for anything outside the grammar in :class:`_Parser`.
    """
    if not isinstance(xpath, str) or not xpath.strip():
        raise QueryError("empty query")
    pred, bound = _Parser(xpath.strip()).parse()
    return EventQuery(xpath, pred, bound)


# --------------------------------------------------------------------------------------------------
# Demo data
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoEvent:
    """One event of the demo stream, not yet in a log."""

    server: str
    provider: str
    event_id: int
    data: tuple[str, ...]
    time: datetime


#: Demo servers: short name -> (computer name, first record number).  Realistic,
#: large record numbers catch code that assumes small ones.
DEMO_SERVERS: Mapping[str, tuple[str, int]] = {
    "EX01": ("EX01.contoso.local", 667_300),
    "EX02": ("EX02.contoso.local", 28_859_100),
}


def demo_stream(now: datetime | None = None, *, seed: int = 1020, hours: float = 6.0) -> list[DemoEvent]:
    """A realistic, deterministic event stream over EX01 and EX02, sorted by time.

    The story (times relative to ``now``):

    * ``CONTOSO\\Administrator`` (a multifunction scanner set up with the domain's built-in
      Administrator) fails with 1020 on ``Client Frontend EX01`` for the first half of the
      window, then - after someone repoints it - on EX02 for the second half;
    * ``CONTOSO\\app-erp`` fails with 1018 on ``Relay EX02``, a custom relay connector whose
      remote IP range caught the ERP server;
    * ``printer@contoso.com`` (UPN form) fails with 1018 on EX01's backend ``Client Proxy EX01``;
    * ``CONTOSO\\jürgen.müller`` (non-ASCII: breaks under codepage 437) fails
      with 1018 on ``Client Frontend EX01``;
    * ``CONTOSO\\svc-mfp`` (a multifunction printer set up to authenticate on port 25) fails
      with 1018 on ``Default Frontend EX01``, the internet-facing connector, which offers
      sign-in but has no ExchangeUsers (DOMAIN.md section 6): the fix is port 587, not a grant;
    * 1035 brute-force noise and unrelated events from other providers on both
      servers (the bot must not report them);
    * two scanner events 30 hours old, outside a 24 h first-poll look-back.
    """
    now = _require_aware(now, "now") if now is not None else utc_now()
    rng = random.Random(seed)
    window = timedelta(hours=hours)
    start = now - window
    out: list[DemoEvent] = []

    def at(fraction: float) -> datetime:
        jitter = timedelta(seconds=rng.uniform(-90, 90))
        return min(now, max(start, start + window * fraction + jitter))

    def add(server: str, provider: str, event_id: int, data: Sequence[str], when: datetime) -> None:
        out.append(DemoEvent(server, provider, event_id, tuple(data), when))

    fe, be = "MSExchangeFrontEndTransport", "MSExchangeTransport"
    admin = "CONTOSO\\Administrator"
    for i in range(2):  # stale: outside the 24 h look-back
        add("EX01", fe, 1020, [admin, "Client Frontend EX01"], now - timedelta(hours=30, minutes=7 * i))
    for i in range(18):  # scanner on EX01, first half
        add("EX01", fe, 1020, [admin, "Client Frontend EX01"], at(0.5 * i / 18))
    for i in range(14):  # scanner on EX02, second half
        add("EX02", fe, 1020, [admin, "Client Frontend EX02"], at(0.5 + 0.5 * i / 14))
    for _ in range(9):
        add("EX02", fe, 1018, ["CONTOSO\\app-erp", "Relay EX02"], at(rng.random()))
    for _ in range(5):
        add("EX01", be, 1018, ["printer@contoso.com", "Client Proxy EX01"], at(rng.random()))
    for _ in range(4):
        add("EX01", fe, 1018, ["CONTOSO\\jürgen.müller", "Client Frontend EX01"], at(rng.random()))
    for _ in range(12):
        add(
            rng.choice(["EX01", "EX02"]),
            fe,
            1035,
            ["LogonDenied", f"Default Frontend {rng.choice(['EX01', 'EX02'])}", "LOGIN", f"203.0.113.{rng.randint(2, 250)}"],
            at(rng.random()),
        )
    for _ in range(30):
        provider, event_id, data = rng.choice(NOISE_EVENTS)
        add(rng.choice(["EX01", "EX02"]), provider, event_id, data, at(rng.random()))
    # Drawn after the noise, so every event above keeps its time and server.
    for _ in range(6):  # the printer on port 25: Default Frontend is a Front End connector
        add("EX01", fe, 1018, ["CONTOSO\\svc-mfp", "Default Frontend EX01"], at(rng.random()))

    out.sort(key=lambda e: (e.time, e.server))
    return out


def seed_demo(
    logs: dict[str, EventLog] | None = None,
    now: datetime | None = None,
    *,
    seed: int = 1020,
    hours: float = 6.0,
) -> dict[str, EventLog]:
    """Append :func:`demo_stream` to ``logs`` (EX01/EX02 are created when missing) and return it."""
    logs = {} if logs is None else logs
    now = _require_aware(now, "now") if now is not None else utc_now()
    for name, (computer, first) in DEMO_SERVERS.items():
        if name not in logs:
            logs[name] = EventLog(computer, first_record=first)
    for ev in demo_stream(now, seed=seed, hours=hours):
        log = logs[ev.server]
        log.append(ev.provider, ev.event_id, ev.data, time=ev.time)
    return logs


def demo_logs(now: datetime | None = None, *, seed: int = 1020) -> dict[str, EventLog]:
    """Fresh EX01/EX02 logs holding the demo stream."""
    return seed_demo({}, now, seed=seed)

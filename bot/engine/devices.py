"""Name the device: which client addresses an incident's account failed from, read from the
Exchange server's SMTP Receive protocol log (bot.exchange.protocollog, DOMAIN.md section 7).

A job of its own, beside polling and never inside it: for the open incidents with events it has
not looked up (at most one look-up per incident per polling interval), it reads, per server and
transport service, only the hourly files that can hold those events, only their failure lines,
from where the last read stopped (a cursor per file), bounded in bytes and time; joins the lines
to the events; names each address by reverse DNS (a short timeout, a cache); stores the devices,
and queues the alert's update. A read that fails is said on the device line; polling never
hears of it.

Events newer than WRITE_LAG are left for the next run: Exchange writes a row some seconds
after it stamps it, and a look-up that moved past an event before its line was written would
never read that line again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Protocol

from sqlite_utils import Database

from bot.core.config import Config, ServerConfig
from bot.core.devices import DeviceSeen
from bot.core.model import Event, incident_key
from bot.engine import notify
from bot.exchange.protocollog import (
    DEFAULT_MAX_OUTPUT,
    MATCH_WINDOW,
    MIN_MAX_OUTPUT,
    WRITE_LAG,
    JoinResult,
    LogRead,
    ProtocolLine,
    ReadRequest,
    hours_for,
    join,
    parse_read_output,
    read_command,
    role_for_provider,
)
from bot.exchange.remediation import UnsafeValueError
from bot.sources.base import SourceError
from store import db as store
from store import devices as device_store

log = logging.getLogger("submitwatch")

#: Incidents looked up per run (the rest wait for the next run, newest first).
LOOKUPS_PER_RUN = 20
#: Hours of files one read asks for, the oldest first (the read's command line holds a few):
#: events whose hours were not read stay due, and the next run goes on from there.
MAX_HOURS = 4
#: How long one reverse DNS answer may take, and how long an answer is kept.
REVERSE_DNS_TIMEOUT = 1.0
REVERSE_DNS_TTL = 3600.0
#: Lines joined to no event are kept this long for later runs (an event is stored within a
#: few polling intervals of its line).
KEEP_LINES = timedelta(days=1)
#: At least this long a line that names an account with no stored event waits for the event
#: before it is taken for a line whose account the log hides.
SETTLE = timedelta(minutes=5)
#: Exchange's default Receive connectors that write a protocol log out of the box: only
#: Default Frontend <SRV>, at Verbose (DOMAIN.md sections 5 and 7).
_LOGS_BY_DEFAULT = "default frontend "

Resolver = Callable[[str], str | None]
Clock = Callable[[], datetime]


class RemoteShell(Protocol):
    def run(self, command: str, args: list[str]) -> tuple[bytes, str | None]: ...


ShellOpener = Callable[[ServerConfig], AbstractContextManager[RemoteShell]]


#: One server's and transport service's share of a run: the events to look up, by incident
#: (id, account).
Share = dict[tuple[int, str], list[Event]]


def run_lookups(db: Database, config: Config, clock: Clock, open_shell: ShellOpener,
                resolve: Resolver | None = None, limit: int = LOOKUPS_PER_RUN) -> int:
    """Look up the devices of the incidents that are due; returns how many were due (an
    incident whose events are all younger than WRITE_LAG waits for the next run)."""
    if not config.devices.enabled:
        return 0
    now = clock()
    settled = now - WRITE_LAG
    work: dict[tuple[str, str], Share] = {}
    due = device_store.due(db, now, config.polling.interval, limit)
    for item in due:
        for event in device_store.new_events(db, item.incident_id, item.looked_until):
            if event.time > settled:
                break          # oldest first: the rest are newer still
            try:
                role = role_for_provider(event.provider)
            except ValueError:
                continue       # no protocol log is known for it
            share = work.setdefault((event.origin, role), {})
            share.setdefault((item.incident_id, item.account), []).append(event)
    servers = {s.name: s for s in config.servers}
    for (origin, role), share in work.items():
        _look_up(db, config, servers.get(origin), origin, role, share, now, open_shell, resolve)
    return len(due)


def _look_up(db: Database, config: Config, server: ServerConfig | None, origin: str, role: str,
             share: Share, now: datetime, open_shell: ShellOpener,
             resolve: Resolver | None) -> None:
    events = [e for found in share.values() for e in found]
    hours = hours_for(e.time for e in events)[:MAX_HOURS]
    covered = {id(e) for e in events if set(hours_for([e.time])) <= set(hours)}
    read, problem = _read(db, config, server, origin, role, hours, open_shell)
    # The lines kept from earlier reads join too: a line read before its event was stored, or
    # one of an account whose incident was not being looked up, is never lost.
    kept = [_line_of(text) for text in device_store.pending_lines(db, origin, role)]
    lines = [*kept, *(read.lines if read else ())]
    joined = _join(db, origin, lines, now - _settle(config))
    complete = read is not None and read.stopped is None
    groups = [g for g in joined.groups if g.server.casefold() == origin.casefold()] \
        if joined else []
    with store.write_transaction(db):
        if read is not None:
            device_store.save_cursors(db, origin, role, read.cursors,
                                      older_than=f"RECV{hours[0]:%Y%m%d}")
        device_store.keep_lines(
            db, origin, role, [(ln.file, ln.offset, ln.time, _json_of(ln))
                               for ln in (joined.unjoined if joined else lines)],
            older_than=now - KEEP_LINES)
        # Every open incident whose account the lines name gets its devices, due or not.
        found_for = store.open_incidents(db, {g.account_key for g in groups if g.devices})
        told = set()
        for group in groups:
            incident = found_for.get(group.account_key)
            if incident is None or not group.devices:
                continue
            device_store.add_devices(db, incident.stored_id, origin, [
                DeviceSeen(d.address, _name(resolve, d.address), d.sessions, d.first, d.last,
                           d.account_shown) for d in group.devices])
            told.add(incident.stored_id)
        for (incident_id, account), found in share.items():
            mine = [g for g in groups if g.account_key == incident_key(account)]
            quiet = [] if any(g.devices for g in mine) else sorted(
                {e.connector for e in found if e.connector
                 and not _logs_by_default(e.connector)})
            device_store.save_check(
                db, incident_id, checked_at=now,
                looked_until=_looked_until(found, covered) if complete else None,
                problem=problem, unmatched=sum(g.unmatched_events for g in mine),
                quiet_connectors=quiet)
            told.add(incident_id)
        for incident_id in told:
            incident = store.get_incident(db, incident_id)
            if incident is not None and incident.status == "open":
                notify.tell(db, incident, now, None)   # the alert's update, at its own pace


def _json_of(line: ProtocolLine) -> str:
    return json.dumps({**dataclasses.asdict(line), "time": line.time.isoformat()})


def _line_of(text: str) -> ProtocolLine:
    data = json.loads(text)
    return ProtocolLine(**{**data, "time": datetime.fromisoformat(data["time"])})


def _looked_until(found: Sequence[Event], covered: set[int]) -> datetime | None:
    """The newest of the incident's events up to the first one whose hours were not read."""
    newest = None
    for event in found:            # oldest first
        if id(event) not in covered:
            break
        newest = event.time
    return newest


def _read(db: Database, config: Config, server: ServerConfig | None, origin: str, role: str,
          hours: tuple[datetime, ...],
          open_shell: ShellOpener) -> tuple[LogRead | None, str | None]:
    """One bounded read of the server's folder for these hours: (what it read, the problem in
    words). Never raises for the server's answer or its absence."""
    if server is None:
        return None, f"{origin} is not a configured server, so its protocol log cannot be read"
    if not server.polled:
        return None, (f"SubmitWatch has no WinRM access to {origin} (its [[servers]] entry has "
                      "no url: its events come through a collector or OTLP), so its protocol "
                      "log cannot be read")
    cursors = device_store.cursors(db, origin, role)
    folder = server.frontend_protocol_log if role == "FrontEnd" else server.hub_protocol_log
    request = ReadRequest(
        hours=hours, folder=folder, role=role,
        cursors=tuple(cursors.items()), max_bytes=config.devices.max_bytes,
        max_seconds=config.devices.max_seconds,
        max_output=max(MIN_MAX_OUTPUT, min(DEFAULT_MAX_OUTPUT, config.polling.max_output)))
    try:
        command, args = read_command(request)
        with open_shell(server) as shell:
            output, cut = shell.run(command, args)
    except (SourceError, UnsafeValueError, ValueError) as exc:
        return None, f"the protocol log read failed: {exc}"
    except Exception as exc:   # a bug: say so on the device line, keep polling and alerting
        log.exception("the protocol log read on %s failed unexpectedly", origin)
        return None, f"the protocol log read failed unexpectedly ({type(exc).__name__})"
    read = parse_read_output(output, origin, cursors)
    unreadable = [p.detail for p in read.problems if p.kind == "log_unreadable"]
    if unreadable:
        return read, unreadable[0]
    if cut or read.stopped in ("output", "cut"):
        return read, "the read was cut short; the rest is read next time"
    return read, None


def _join(db: Database, origin: str, lines: Sequence[ProtocolLine],
          settled: datetime) -> JoinResult | None:
    """Join the lines to every account's events of the server around them (a line that hides
    its account is joined only where one account failed at that moment).

    A line that names an account none of those events has is most likely one whose event is
    not stored yet (the next poll brings it): it waits, unjoined, until `settled` passes its
    time; only then is it taken for a line whose account the log hides (redacted), as the
    join takes it. Joining it at once would give another account its device."""
    if not lines:
        return None
    start = min(ln.time for ln in lines) - MATCH_WINDOW
    end = max(ln.time for ln in lines) + MATCH_WINDOW
    events = device_store.events_between(db, origin, start, end)
    known = {e.incident_key for e in events}
    waiting = [ln for ln in lines
               if ln.user and incident_key(ln.user) not in known and ln.time > settled]
    held = {id(ln) for ln in waiting}
    result = join(events, [ln for ln in lines if id(ln) not in held])
    return dataclasses.replace(result, unjoined=(*result.unjoined, *waiting))


def _settle(config: Config) -> timedelta:
    """How long a line naming an unknown account waits for its event: a few polls."""
    return max(SETTLE, timedelta(seconds=3 * config.polling.interval))


def _logs_by_default(connector: str) -> bool:
    name = connector.rpartition("\\")[2]
    return name.casefold().startswith(_LOGS_BY_DEFAULT)


def _name(resolve: Resolver | None, address: str) -> str | None:
    return resolve(address) if resolve is not None else None


# --- reverse DNS -----------------------------------------------------------------------------

class ReverseDNS:
    """The name an address resolves to, from this host's own resolver: at most
    REVERSE_DNS_TIMEOUT per address (socket.gethostbyaddr has no timeout of its own, so it runs
    on a worker and is given up on), cached for REVERSE_DNS_TTL, misses too. The name is
    whatever the DNS says: untrusted text."""

    def __init__(self, monotonic: Callable[[], float], *,
                 lookup: Callable[[str], str] = lambda a: socket.gethostbyaddr(a)[0],
                 timeout: float = REVERSE_DNS_TIMEOUT, ttl: float = REVERSE_DNS_TTL):
        self._lookup, self._timeout, self._ttl, self._monotonic = lookup, timeout, ttl, monotonic
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reverse-dns")

    def __call__(self, address: str) -> str | None:
        now = self._monotonic()
        hit = self._cache.get(address)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        future = self._pool.submit(self._lookup, address)
        try:
            name: str | None = future.result(timeout=self._timeout)
        except (FutureTimeout, OSError, UnicodeError, ValueError):
            name = None
        self._cache[address] = (now, name)
        return name

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

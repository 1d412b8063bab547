"""Read a Windows Event Collector: its ForwardedEvents log and its subscription's heartbeats.

A collector's log holds the 1018/1020 events of many Exchange servers (DOMAIN.md section 8).
It is read over WinRM like a server's own log (bot.sources.winrm: the same shell, bounded
output and decoding), with two differences:

- **The cursor is a bookmark.** A forwarded event keeps the EventRecordID of its origin's own
  log, so the ids in the XML collide across origins and say nothing of the collector's order:
  an XPath `EventRecordID > n` cannot page through it. The collector's own position is what
  `wevtutil qe /bm: /sbm:` reads and writes, a bookmark (`<Bookmark Channel='ForwardedEvents'
  RecordId='n'/>`) in the log's own numbering, the one `gli` reports. SubmitWatch keeps n as
  the collector's cursor in its own database, moved in the same transaction as the events
  (bot.engine.poller). Each page writes the bookmark from the cursor into a file in the
  account's %TEMP% on the collector, reads from it, saves where it ended (`/sbm`), and `type`s
  that back: nothing of SubmitWatch's state lives only on the collector.
- **Each event's origin is its <Computer>** (bot.sources.origins), and events are unique per
  origin and record id (store.db.new_events), so a page read twice is stored once.

UNVERIFIED against a real collector (docs/collectors.md): whether `/bm` starts after the
bookmarked event or at it (either is safe: the repeat is stored once), and the encoding of the
file `/sbm` writes (read as UTF-16 or as the console's code page, whichever it is).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from winrm.protocol import Protocol

from bot.core.config import CollectorConfig, PollingConfig, ServerConfig
from bot.sources import decode as output
from bot.sources.base import Answer, SourceError
from bot.sources.origins import Origins
from bot.sources.parse import LogInfo, ParseFailure
from bot.sources.winrm import Shell, WinRMSource, query_args

#: Where the bookmark files live on the collector: the account's own temporary folder.
TEMP = "%TEMP%"
_RECORD_ID = re.compile(r"RecordId\s*=\s*['\"](\d+)['\"]")


def bookmark_paths(collector: str) -> tuple[str, str]:
    """(the bookmark a page starts from, the one it saves), per collector: its name is checked
    by bot.core.config (letters, digits, '.', '_', '-'), so nothing in a path needs quoting."""
    return (f"{TEMP}\\submitwatch-{collector}-from.xml",
            f"{TEMP}\\submitwatch-{collector}-to.xml")


def page_command(log: str, collector: str, cursor: int, batch_size: int,
                 lookback_ms: int | None) -> list[str]:
    """The cmd.exe line for one page of the collector's log, split into words: from the
    bookmark at `cursor` (0: from the log's start, or from the look-back when given), saving
    where the page ended.

    The bookmark is written with `echo`: its < and > escaped with ^ (cmd.exe would take them for
    redirections), the redirection into the file not, and no space before it (echo would write
    one into the file)."""
    start, end = bookmark_paths(collector)
    query = ["wevtutil", *query_args(log, 0, batch_size, lookback_ms), f'/sbm:"{end}"']
    if cursor <= 0:
        return query
    return ["echo", "^<BookmarkList^>^<Bookmark", f"Channel='{log}'", f"RecordId='{int(cursor)}'",
            f"IsCurrent='true'/^>^</BookmarkList^>>\"{start}\"", "&", *query, f'/bm:"{start}"']


def parse_bookmark(raw: bytes) -> int | None:
    """The record id of the bookmark `type` printed: the file as /sbm wrote it (UTF-16 with or
    without its byte-order mark, or the console's code page). None: no bookmark in it."""
    if raw[:2] == b"\xff\xfe" or raw[1:2] == b"\x00":
        text = raw.decode("utf-16-le", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    found = _RECORD_ID.findall(text)
    return int(found[-1]) if found else None


class CollectorShell(Shell):
    """A shell on the collector that pages through ForwardedEvents by bookmark: the cursor it is
    given and each Answer's `position` count in the collector's own numbering."""

    source: CollectorSource

    def log_info_and_query(self, cursor: int, batch_size: int,
                           lookback_ms: int | None = None) -> tuple[LogInfo, Answer]:
        """`gli`, then the first page, in one command line as for a server's own log."""
        log = self.source.server.log
        page = self._page(cursor, batch_size, lookback_ms)
        out, cut = self.run("wevtutil", ["gli", log, "&", *page])
        split = output.xml_start(out)  # gli prints plain lines; the events are XML
        info = self._log_info(out[:split])
        return info, self._positioned(self._answer(out[split:], cut), cursor, batch_size,
                                      lookback_ms)

    def query(self, cursor: int, batch_size: int, lookback_ms: int | None = None) -> Answer:
        page = self._page(cursor, batch_size, lookback_ms)
        return self._positioned(self._answer(*self.run(page[0], page[1:])), cursor, batch_size,
                                lookback_ms)

    def _page(self, cursor: int, batch_size: int, lookback_ms: int | None) -> list[str]:
        return page_command(self.source.server.log, self.source.server.name, cursor, batch_size,
                            lookback_ms)

    def _positioned(self, answer: Answer, cursor: int, batch_size: int,
                    lookback_ms: int | None) -> Answer:
        """The answer with where it ended. A page cut short (size cap, deadline) has no saved
        bookmark that matches what arrived: it is read again with room for only the complete
        events that did arrive, which then fit. With no event, the position stays at the cursor
        (the poller moves on to the newest record `gli` saw)."""
        complete = _complete_events(answer)
        if answer.cut and 0 < complete < batch_size:
            again = self.query(cursor, complete, lookback_ms)
            if not again.cut:
                again.problems = answer.problems + again.problems
                again.asked = min(again.asked or complete, complete)
                return again
        if answer.cut or complete == 0:
            answer.position = cursor
            return answer
        answer.position = self._saved_position(cursor)
        return answer

    def _saved_position(self, cursor: int) -> int:
        """Where /sbm says the page ended; the cursor itself (read again, stored once) when the
        collector saved no bookmark."""
        _, end = bookmark_paths(self.source.server.name)
        try:
            out, _ = self.run("type", [f'"{end}"'])
        except SourceError:
            return cursor
        found = parse_bookmark(out)
        return cursor if found is None else max(cursor, found)


@dataclass
class CollectorSource(WinRMSource):
    """A Windows Event Collector's ForwardedEvents log, polled like a server (one source per
    collector). Events are named by their origin; those of a computer that is no configured
    server are taken under its own name or left out (collectors.unconfigured_origins)."""

    origins: Origins = field(default_factory=lambda: Origins(()))

    @classmethod
    def of(cls, collector: CollectorConfig, servers: tuple[ServerConfig, ...],
           polling: PollingConfig) -> CollectorSource:
        return cls(collector.endpoint, polling,
                   origins=Origins(servers, collector.unconfigured_origins))

    def origin_of(self, computer: str) -> str | None:
        return self.origins(computer)

    def make_shell(self, protocol: Protocol, shell_id: str) -> Shell:
        return CollectorShell(self, protocol, shell_id)


def _complete_events(answer: Answer) -> int:
    """How many events ended in the answer (a cut one's last, partial event does not count)."""
    return answer.text.count("</Event>")


# --- the subscription's sources and their heartbeats (`wecutil gr`) ---------------------------

@dataclass(frozen=True)
class EventSourceStatus:
    """One event source of a WEF subscription as `wecutil gr` reports it."""

    computer: str                   # as the collector names it (usually the FQDN)
    status: str                     # RunTimeStatus: Active, Inactive, Trying, Disabled...
    last_heartbeat: datetime | None  # None: the collector printed none (never heard from)
    last_error: str = "0"


@dataclass(frozen=True)
class SubscriptionStatus:
    name: str
    status: str
    sources: tuple[EventSourceStatus, ...]


def parse_runtime_status(text: str) -> SubscriptionStatus:
    """Read `wecutil gr <subscription>` (get-subscriptionruntimestatus): the subscription's
    own lines, then under `EventSources:` one block per source, its name alone on a line and
    its `Key: Value` lines indented below it.

    UNVERIFIED against a real collector (docs/collectors.md): the field names follow
    Microsoft's wecutil documentation and published transcripts; the time format of
    LastHeartbeatTime is read as ISO 8601, taken as UTC when it carries no offset, and any
    other form counts as no heartbeat rather than a guessed time.
    """
    name, status = "", ""
    sources: list[EventSourceStatus] = []
    current: dict[str, str] | None = None
    computer = ""
    in_sources = False

    def close() -> None:
        if current is not None:
            sources.append(EventSourceStatus(
                computer, current.get("runtimestatus", ""),
                _heartbeat(current.get("lastheartbeattime", "")),
                current.get("lasterror", "0")))

    for line in text.replace("\ufeff", "").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        key, sep, value = stripped.partition(":")
        key_word = key.strip().replace(" ", "").casefold()
        if sep and key_word == "subscription" and not in_sources:
            name = value.strip()
        elif sep and key_word == "eventsources":
            in_sources = True
        elif in_sources and not sep:   # a source's name, alone on its line
            close()
            computer, current = stripped, {}
        elif sep and current is not None:
            current[key_word] = value.strip()
        elif sep and key_word == "runtimestatus":
            status = value.strip()
    close()
    if not name:
        raise ParseFailure("`wecutil gr` printed no 'Subscription:' line; the output was: "
                           f"{text.strip()[:200]!r}")
    return SubscriptionStatus(name, status, tuple(sources))


def _heartbeat(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def subscription_status(source: WinRMSource, subscription: str) -> SubscriptionStatus:
    """Ask the collector how its subscription stands (`wecutil gr`, read-only), in one shell.
    SourceError, in words, when the collector cannot be read or has no such subscription."""
    name = source.server.name
    with source.open() as shell:
        try:
            out, _cut = shell.run("wecutil", ["gr", _quoted(subscription)])
        except SourceError as exc:
            if "exit code" in str(exc):
                raise SourceError(
                    f"{exc}. Does subscription {subscription!r} exist on {name}? "
                    "`wecutil es` there lists them; the account needs Event Log Readers on the "
                    "collector (docs/collectors.md)", retryable=exc.retryable) from None
            raise
    try:
        return parse_runtime_status(out.decode("utf-8", errors="replace"))
    except ParseFailure as exc:
        raise SourceError(f"{name}: {exc}") from None


def _quoted(argument: str) -> str:
    return f'"{argument}"' if " " in argument else argument

"""What every event source gives the engine, and all the engine knows of a source.

A source reads 1018/1020 events from somewhere (one Exchange server over WinRM, a Windows Event
Collector's ForwardedEvents log, an OTLP pipeline) and yields Events that know
their origin (the Exchange server that logged them) and the endpoint whose cursor they move.
Its failures are SourceErrors in words, made inert.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from types import TracebackType

from bot.core.config import ServerConfig
from bot.core.inert import inert
from bot.core.model import Problem
from bot.sources.parse import LogInfo


class SourceError(Exception):
    """Polling a server failed. `retryable` says whether trying again later can help.

    The message is made inert: it quotes what the server said, and goes to logs and chat."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(inert(message))
        self.retryable = retryable


@dataclass
class Answer:
    """What one event query returned, decoded: `cut` when reading stopped early (size cap or
    deadline), so only the complete events in `text` count and the rest is read again."""

    text: str
    problems: list[Problem] = field(default_factory=list)
    cut: str | None = None       # why reading stopped early, or None
    encoding: str = "utf-16-le"  # what the bytes were decoded as ("" for no bytes: unknown)
    #: Where the read ended in the log's own numbering, when the events' record ids do not say
    #: (a collector's: bot.sources.collector); None: the highest record id read is the place.
    position: int | None = None
    #: How many events the page was asked for, when fewer than the batch size (a collector's
    #: page read again after a cut): a page that full means more may follow.
    asked: int | None = None


class EventShell(typing.Protocol):
    """One open session with an event source, for one poll (a context manager)."""

    def __enter__(self) -> EventShell: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None, /) -> None: ...

    def log_info_and_query(self, cursor: int, batch_size: int,
                           lookback_ms: int | None = None) -> tuple[LogInfo, Answer]: ...

    def query(self, cursor: int, batch_size: int, lookback_ms: int | None = None) -> Answer: ...


class EventSource(typing.Protocol):
    """Where a server's events come from: what bot.engine.poller needs, and all it needs.
    WinRMSource
    reads one Exchange server's own log; CollectorSource a Windows Event Collector's
    ForwardedEvents log, one endpoint holding many servers' events, whose <Computer> names
    each event's origin (None: a computer whose events are left out)."""

    server: ServerConfig

    def open(self) -> EventShell: ...

    def origin_of(self, computer: str) -> str | None: ...

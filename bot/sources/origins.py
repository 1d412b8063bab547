"""Which configured Exchange server logged an event that came through a collector or a pipeline.

A forwarded event keeps the <Computer> of the host that logged it (ex07.contoso.local); the
configuration names servers as the admin knows them (EX07, or the full name). `Origins` is the
one rule every multi-origin source uses (a Windows Event Collector, an OTLP pipeline), built
once per source: a collector of 2,000 servers asks it for every event, so each answer is a
dictionary look-up, not a walk through the configuration.
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from bot.core.config import ServerConfig

#: Computer names whose answer is kept (an estate has a few thousand; a hostile sender cannot
#: grow it without bound).
_REMEMBERED = 65536


class Origins:
    """The configured server name for a <Computer>, matched case-insensitively: by its full name
    against each server's name and the host in its URL first, then by the first DNS label
    where one side is a bare name (EX01.contoso.local is a server configured as EX01). One
    that matches no server is taken under its own short name (`unconfigured` "own_name") or is
    None ("ignore"). An empty <Computer> is never taken. Where several servers match, the
    first configured wins."""

    def __init__(self, servers: Iterable[ServerConfig], unconfigured: str = "own_name"):
        self.unconfigured = unconfigured
        self._full: dict[str, str] = {}     # a name or URL host as written -> server
        self._bare: dict[str, str] = {}     # a name without a dot -> server
        self._label: dict[str, str] = {}    # the first DNS label of any name -> server
        for server in servers:
            for name in (server.name.casefold(), _host_of(server.url)):
                if not name:
                    continue
                self._full.setdefault(name, server.name)
                if "." not in name:
                    self._bare.setdefault(name, server.name)
                self._label.setdefault(name.split(".", 1)[0], server.name)
        self._seen: dict[str, str | None] = {}

    def __call__(self, computer: str) -> str | None:
        try:
            return self._seen[computer]
        except KeyError:
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            found = self._seen[computer] = self._name(computer)
            return found

    def _name(self, computer: str) -> str | None:
        host = computer.strip().rstrip(".")
        if not host:
            return None
        wanted = host.casefold()
        if wanted in self._full:
            return self._full[wanted]
        short = wanted.split(".", 1)[0]
        # by the first label only where one side is a bare name: two full names of different
        # domains (ex02.fabrikam.local, ex02.contoso.local) are two servers
        found = self._bare.get(short) if "." in wanted else self._label.get(short)
        if found is not None:
            return found
        return host.split(".", 1)[0] if self.unconfigured == "own_name" else None


def origin_name(computer: str, servers: Iterable[ServerConfig],
                unconfigured: str = "own_name") -> str | None:
    """Origins' rule for one computer (callers with many build an Origins once)."""
    return Origins(servers, unconfigured)(computer)


def _host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").casefold()
    except ValueError:
        return ""

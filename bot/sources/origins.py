"""Which configured Exchange server logged an event that came through a collector or a pipeline.

A forwarded event keeps the <Computer> of the host that logged it (ex07.contoso.local); the
configuration names servers as the admin knows them (EX07, or the full name). `origin_name` is
the one rule every multi-origin source uses (a Windows Event Collector, an OTLP pipeline).
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from bot.core.config import ServerConfig


def origin_name(computer: str, servers: Iterable[ServerConfig],
                unconfigured: str = "own_name") -> str | None:
    """The configured server name for a <Computer>, matched case-insensitively: by its full name
    against each server's name and the host in its URL first, then by the first DNS label
    where one side is a bare name (EX01.contoso.local is a server configured as EX01). One
    that matches no server is taken under its own short name (`unconfigured` "own_name") or is
    None ("ignore"). An empty <Computer> is never taken."""
    host = computer.strip().rstrip(".")
    if not host:
        return None
    wanted = host.casefold()
    short = wanted.split(".", 1)[0]
    by_short = None
    for server in servers:
        names = {server.name.casefold(), _host_of(server.url)} - {""}
        if wanted in names:
            return server.name
        # by the first label only where one side is a bare name: two full names of different
        # domains (ex02.fabrikam.local, ex02.contoso.local) are two servers
        if by_short is None and any(short == n.split(".", 1)[0] and
                                    ("." not in wanted or "." not in n) for n in names):
            by_short = server.name
    if by_short is not None:
        return by_short
    return host.split(".", 1)[0] if unconfigured == "own_name" else None


def _host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").casefold()
    except ValueError:
        return ""

"""What Active Directory says about an account's Submit right on connectors: one read-only
check (bot.directory.reader does the LDAP), kept as a plain `Finding` that is stored with the
incident, shown in its alert, `show` and `verify`, and compared by the fixed-loop.

A Finding holds words and facts, not the raw descriptor: it is what the alert shows, and it is
stored as JSON so a restart shows the last check instead of asking the directory again.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bot.directory.reader import Directory, DirectoryConfig, DirectoryError, submit_right

log = logging.getLogger("submitwatch")


@dataclass(frozen=True)
class ConnectorFact:
    """One Receive connector as the directory has it, and the account's Submit right there."""

    server: str
    name: str
    found: bool
    right: str = "unknown"          # granted, denied, not granted, unknown
    why: str = ""                   # the finding in one sentence (bot.directory.reader.Right.text)
    enabled: bool | None = None
    bindings: tuple[str, ...] = ()
    remote_ip_ranges: tuple[str, ...] = ()
    role: str | None = None
    auth: tuple[str, ...] = ()
    permission_groups: tuple[str, ...] | None = None
    named: bool = False             # the account's events named this connector

    @property
    def place(self) -> str:
        return f"{self.server}\\{self.name}"

    def brief(self) -> str:
        """The connector's verdict in a few words."""
        if not self.found:
            return self.why or "no such connector in the directory"
        state = "" if self.enabled is not False else " (the connector is disabled)"
        if self.right == "granted":
            return f"Submit granted{state}"
        if self.right == "denied":
            return f"Submit denied by a Deny entry{state}"
        if self.right == "not granted":
            return f"Submit not granted{state}"
        return f"Submit right unknown: {self.why}"


@dataclass(frozen=True)
class Finding:
    """One check of an account: who it is, and its right on each connector asked about."""

    account: str                       # the name asked about (untrusted, as the event had it)
    checked_at: datetime
    error: str | None = None           # the directory could not answer: why, in words
    fix: tuple[str, ...] = ()          # read-only delegation commands, when that would help
    found: bool = False                # the account exists in the directory
    sid: str | None = None
    rid: int | None = None
    builtin: str | None = None         # "Administrator" (RID 500) or "Guest" (RID 501)
    disabled: bool = False
    groups: int = 0                    # token groups
    connectors: tuple[ConnectorFact, ...] = field(default_factory=tuple)

    @property
    def granted(self) -> bool:
        """The right shows on every connector asked about that the directory has (and it has
        at least one): a connector renamed or gone, or a server the directory does not know,
        is shown, but cannot hold the loop up forever."""
        found = [c for c in self.connectors if c.found]
        return bool(found) and not self.error and all(
            c.right == "granted" and c.enabled is not False for c in found)

    @property
    def denied(self) -> tuple[ConnectorFact, ...]:
        return tuple(c for c in self.connectors if c.right == "denied")

    def summary(self) -> str:
        """The alert's Directory line (plain words; the caller escapes what it shows)."""
        if self.error:
            return f"could not be read: {self.error}"
        if not self.found:
            return f"no account {self.account} in the directory"
        if self.builtin:
            return (f"{self.account} is the domain's built-in {self.builtin} (RID {self.rid}): "
                    "Exchange refuses it whatever its rights")
        parts = [f"{c.place}: {c.brief()}" for c in self.connectors]
        if not parts:
            return (f"{self.account} is not the built-in Administrator or Guest (RID "
                    f"{self.rid}, {self.groups} group(s)); its events named no connector to "
                    "check")
        return "; ".join(parts) + (" (the account is disabled)" if self.disabled else "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checked_at"] = self.checked_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        connectors = tuple(ConnectorFact(**{**c, "bindings": tuple(c["bindings"]),
                                            "remote_ip_ranges": tuple(c["remote_ip_ranges"]),
                                            "auth": tuple(c["auth"]),
                                            "permission_groups": None
                                            if c["permission_groups"] is None
                                            else tuple(c["permission_groups"])})
                           for c in data.get("connectors", ()))
        return cls(**{**data, "checked_at": datetime.fromisoformat(data["checked_at"]),
                      "fix": tuple(data.get("fix", ())), "connectors": connectors})


def split_place(place: str) -> tuple[str, str] | None:
    """'EX01\\Client Frontend EX01' as (server, connector name); None without a server part."""
    server, sep, name = place.partition("\\")
    return (server.strip(), name.strip()) if sep and server.strip() and name.strip() else None


def check(config: DirectoryConfig, account: str, places: Iterable[tuple[str, str | None]],
          now: datetime, named: Iterable[str] = (), each_place: bool = False) -> Finding:
    """Read the account and each (server, connector name) place; a name of None means every
    connector of that server. `named`: places (SRV\\Name) the account's events named. Never
    raises: a directory that cannot answer is a Finding with its error in words; with
    `each_place`, a place it cannot answer for (a server it does not know) is one connector
    fact with that error, and the others are still read."""
    named_keys = {n.casefold() for n in named}
    try:
        with Directory(config) as directory:
            found = directory.account(account)
            facts: list[ConnectorFact] = []
            for server, name in places:
                try:
                    facts += _connectors(directory, found, server, name, named_keys)
                except DirectoryError as exc:
                    if not each_place:
                        raise
                    facts.append(ConnectorFact(server, name or "(its connectors)", found=False,
                                               why=str(exc)))
    except DirectoryError as exc:
        return Finding(account, now, error=str(exc), fix=exc.fix)
    except Exception as exc:   # a bug: say so in the alert, keep polling and alerting
        log.exception("the directory check of %s failed unexpectedly", account)
        return Finding(account, now, error=f"unexpected {type(exc).__name__} (see the log)")
    if found is None:
        return Finding(account, now, connectors=tuple(facts))
    builtin = ("Administrator" if found.is_builtin_admin else
               "Guest" if found.is_guest else None)
    return Finding(account, now, found=True, sid=found.sid, rid=found.rid, builtin=builtin,
                   disabled=found.disabled, groups=len(found.groups), connectors=tuple(facts))


def _connectors(directory: Directory, account, server: str, name: str | None,
                named: set[str]) -> list[ConnectorFact]:
    if name is None:
        connectors = directory.connectors(server)
    else:
        one = directory.connector(server, name)
        if one is None:
            return [ConnectorFact(server, name, found=False, right="unknown",
                                  why="no Receive connector of that name on that server",
                                  named=f"{server}\\{name}".casefold() in named)]
        connectors = [one]
    out = []
    for c in connectors:
        right = submit_right(account, c) if account is not None else None
        out.append(ConnectorFact(
            server=server, name=c.name, found=True,
            right=right.status if right else "unknown",
            why=right.text if right else "the account is not in the directory",
            enabled=c.enabled, bindings=c.bindings, remote_ip_ranges=c.remote_ip_ranges,
            role=c.role, auth=c.auth_mechanisms, permission_groups=c.permission_groups,
            named=f"{server}\\{c.name}".casefold() in named))
    return out

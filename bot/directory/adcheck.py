"""What Active Directory says about an account's Submit right on connectors: one read-only
check (bot.directory.reader does the LDAP), kept as a plain `Finding` that is stored with the
incident, shown in its alert, `show` and `verify`, and compared by the fixed-loop.

A Finding holds words and facts, not the raw descriptor: it is what the alert shows, and it is
stored as JSON so a restart shows the last check instead of asking the directory again.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.core.findings import ConnectorFact, Finding
from bot.directory.reader import (
    Account,
    Directory,
    DirectoryConfig,
    DirectoryError,
    Right,
    is_sid,
    submit_right,
)
from bot.directory.secdesc import DS_CONTROL_ACCESS, GENERIC_ALL

log = logging.getLogger("submitwatch")


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
            missing = None if found is not None else _missing(directory, account)
            facts: list[ConnectorFact] = []
            for server, name in places:
                try:
                    facts += _connectors(directory, found, server, name, named_keys, missing)
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
                   disabled=found.disabled, groups=len(found.groups), connectors=tuple(facts),
                   name=found.qualified_name)


def _missing(directory: Directory, account: str) -> str:
    """Why no right can be read for an account the directory does not have, in words."""
    domain = directory.domain_dns_name()
    if is_sid(account):
        return (f"no account has the SID {account.strip()} in {domain} (Exchange logs a SID "
                "when it cannot resolve the name: an account of another domain or forest, or "
                "one deleted since)")
    return f"no account {account.strip()} in {domain}"


def _connectors(directory: Directory, account: Account | None, server: str, name: str | None,
                named: set[str], missing: str | None = None) -> list[ConnectorFact]:
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
            why=right.text if right else missing or "the account is not in the directory",
            enabled=c.enabled, bindings=c.bindings, remote_ip_ranges=c.remote_ip_ranges,
            role=c.role, auth=c.auth_mechanisms, permission_groups=c.permission_groups,
            named=f"{server}\\{c.name}".casefold() in named, **deciding_entry(right)))
    return out


def deciding_entry(right: Right | None) -> dict[str, Any]:
    """The entry that decided, as ConnectorFact keeps it (nothing when none decided)."""
    if right is None or right.ace is None:
        return {}
    ace = right.ace
    if ace.object_type is not None:
        scope = "submit"
    else:   # an entry for every extended right, or GenericAll (which carries them all)
        scope = "all" if ace.mask & GENERIC_ALL and not ace.mask & DS_CONTROL_ACCESS else "extended"
    return {"trustee": right.via.name if right.via is not None else None,
            "trustee_sid": ace.sid, "explicit": right.explicit, "inherited": ace.inherited,
            "scope": scope}

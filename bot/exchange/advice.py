"""The fix for event 1018/1020 by cause: which connector, which account, what the directory shows.

Event 1018 says only that the account's token has no ms-Exch-SMTP-Submit on the connector; the
right fix depends on *where* that happened and *who* it was (DOMAIN.md section 6):

* the internet-facing connector (``Default Frontend <SRV>``, or any connector without
  ExchangeUsers that offers sign-in, has AnonymousUsers and takes every address): a device set
  up to authenticate on port 25. Port 587 first, anonymous second, a grant last, said to widen it;
* a custom connector without ExchangeUsers (usually an anonymous relay whose RemoteIPRanges caught
  the device): stop signing in, or add ExchangeUsers, or grant Submit (and Accept-Any-Recipient);
* a connector that should admit the account (Client Frontend, Client Proxy, any with
  ExchangeUsers): a Deny entry or a changed DACL decides;
* a computer account (``DOMAIN\\NAME$``): ExchangeServers or a connector of its own, never a
  per-account grant;
* a decisive Deny (the directory names the entry): remove it, never grant;
* the directory shows the right although Exchange logged 1018: say what explains it, no grant;
* Edge Transport: its connectors live in AD LDS on the Edge server; commands run there.

Event 1020 keeps its rule (bot.exchange.diagnosis): a built-in identity on 2013 and later, no
grant; Microsoft's documented Submit grant plus the built-in check on 2007/2010.

The connector's kind comes from the best source available: the directory's reading of it
(permission groups derived from its DACL, auth mechanisms, remote IP ranges, role), else its name
against the defaults Exchange setup creates for the server's version, else "unknown".

Every command argument is one single-quoted PowerShell literal made by
bot.exchange.remediation.ps_quote; comments above commands are fixed words only, never names
(a name goes in a remedy's detail, which the renderer escapes). Pure: no I/O, no clock.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.exchange.remediation import (
    SUBMIT_RIGHT,
    UnsafeValueError,
    connector_identity,
    default_receive_connectors,
    grant_command,
    inspect_connector_command,
    is_legacy_version,
    likely_submission_connector,
    list_connectors_command,
    ps_quote,
    sid_command,
    undo_command,
    whatif_command,
)

if TYPE_CHECKING:   # plain data from bot.core: bot.exchange imports nothing from bot.directory
    from bot.core.findings import ConnectorFact, Finding

__all__ = [
    "ACCEPT_ANY_RECIPIENT_RIGHT",
    "ACCOUNT_KINDS",
    "CAUSES",
    "CONNECTOR_KINDS",
    "AccountKind",
    "Advice",
    "ConnectorKind",
    "Remedy",
    "Step",
    "Verdict",
    "advise",
    "classify_account",
    "classify_connector",
    "honest_verify_command",
    "step_lines",
]

ACCEPT_ANY_RECIPIENT_RIGHT = "ms-Exch-SMTP-Accept-Any-Recipient"

# --- what a cause rests on ----------------------------------------------------------------------
DOCS = "Microsoft documentation"
CODE = "Exchange code"
INFERENCE = "inference"

# --- connector kinds ----------------------------------------------------------------------------
#: No ExchangeUsers, offers sign-in, AnonymousUsers, every address (Default Frontend by default).
INTERNET_FACING = "internet_facing"
#: Not one of Exchange's defaults and no ExchangeUsers (usually an anonymous relay).
CUSTOM = "custom_without_exchange_users"
#: Meant for signed-in accounts: Client Frontend, Client Proxy, Client (2010), any with
#: ExchangeUsers.
ADMITS = "admits_accounts"
#: Exchange servers only (Outbound Proxy Frontend, port 717).
SERVERS_ONLY = "servers_only"
#: A connector of an Edge Transport server (AD LDS, not AD).
EDGE = "edge_transport"
UNKNOWN = "unknown"
CONNECTOR_KINDS = (INTERNET_FACING, CUSTOM, ADMITS, SERVERS_ONLY, EDGE, UNKNOWN)

# --- account kinds -------------------------------------------------------------------------------
ORDINARY = "ordinary"
COMPUTER = "computer"                       # DOMAIN\NAME$
BUILTIN_ADMIN = "builtin_administrator"     # RID 500 (renamed or not)
GUEST = "guest"                             # RID 501
UNRESOLVED_SID = "unresolved_sid"           # Exchange logged a SID string: it had no name for it
ACCOUNT_KINDS = (ORDINARY, COMPUTER, BUILTIN_ADMIN, GUEST, UNRESOLVED_SID)

# --- causes --------------------------------------------------------------------------------------
INTERNET_AUTH = "authenticated_on_internet_connector"
CUSTOM_NO_USERS = "custom_connector_without_exchange_users"
SHOULD_ADMIT = "refused_where_accounts_belong"
SERVER_CONNECTOR = "server_connector"
COMPUTER_ACCOUNT = "computer_account"
DENY_DECIDES = "deny_decides"
GRANTED_IN_DIRECTORY = "granted_in_directory"
EDGE_TRANSPORT = "edge_transport"
UNKNOWN_CONNECTOR = "unknown_connector"
BUILTIN = "builtin_identity"                # same id as bot.exchange.diagnosis.BUILTIN
LEGACY_1020 = "legacy_1020"                 # same id as bot.exchange.diagnosis.LEGACY_1020

#: cause -> (a headline, what it rests on by default). `Advice.rests_on` may add INFERENCE (a
#: connector judged by its name, a version not 2013 for the 1020 rule).
CAUSES: dict[str, tuple[str, tuple[str, ...]]] = {
    INTERNET_AUTH: ("Signed in on the internet-facing connector (event 1018)", (DOCS, CODE)),
    CUSTOM_NO_USERS: ("Signed in on a custom connector without ExchangeUsers (event 1018)",
                      (DOCS, CODE)),
    SHOULD_ADMIT: ("Refused on a connector meant for signed-in accounts (event 1018)",
                   (DOCS, CODE)),
    SERVER_CONNECTOR: ("Signed in on a connector for Exchange servers only (event 1018)",
                       (DOCS, CODE)),
    COMPUTER_ACCOUNT: ("A computer account signed in (event 1018)", (DOCS, CODE, INFERENCE)),
    DENY_DECIDES: ("A Deny entry decides (event 1018)", (CODE,)),
    GRANTED_IN_DIRECTORY: ("The directory shows the right, Exchange refused (event 1018)",
                           (CODE, INFERENCE)),
    EDGE_TRANSPORT: ("Refused on an Edge Transport connector (event 1018)", (DOCS, CODE)),
    UNKNOWN_CONNECTOR: ("No Submit right on an unknown connector (event 1018)", (CODE,)),
    BUILTIN: ("A built-in account, refused whatever its rights", (CODE,)),
    LEGACY_1020: ("Not authorized to use the server (event 1020, Exchange 2007/2010)",
                  (DOCS, INFERENCE)),
}

#: The permission groups Set-ReceiveConnector takes (the order Exchange prints them in).
PERMISSION_GROUPS = ("AnonymousUsers", "ExchangeUsers", "ExchangeServers",
                     "ExchangeLegacyServers", "Partners")
#: What a sign-in by an account can use (besides ExchangeServer, which Exchange servers use).
ACCOUNT_AUTH = frozenset({"basicauth", "basicauthrequiretls", "integrated"})
#: Identities every sign-in of the organization's accounts carries, by SID: a Deny on one of
#: them refuses every account.
EVERYBODY_SIDS = {
    "S-1-1-0": "Everyone",
    "S-1-5-2": "NT AUTHORITY\\NETWORK",
    "S-1-5-11": "NT AUTHORITY\\Authenticated Users",
    "S-1-5-15": "NT AUTHORITY\\This Organization",
}
_SID_RE = re.compile(r"S-1-\d+(?:-\d+)+", re.IGNORECASE)
_EDGE_ROLES = frozenset({"edge", "edgetransport"})
_EDGE_DEFAULT_PREFIX = "default internal receive connector "
_2013_RE = re.compile(r"(?<!\d)2013(?!\d)|(?<![\d.])15\.0\.")

# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command under its comment. `comment` is fixed words (never a name); `changes`: False
    for a read-only command."""

    comment: str
    command: str
    changes: bool = True


@dataclass(frozen=True)
class Remedy:
    """One fix: what to do and the exact commands (none when the fix is done on the device, or
    when no command could be built: then `detail` says what to do in words)."""

    id: str
    title: str
    detail: str
    steps: tuple[Step, ...] = ()
    grants: bool = False     # adds a right for one account
    widens: bool = False     # opens an internet-facing connector further: said in the title

    def lines(self) -> list[str]:
        """The commands as an admin pastes them: each under its comment."""
        return step_lines(self.steps)


def step_lines(steps: Iterable[Step]) -> list[str]:
    """Commands as an admin pastes them, each under its comment."""
    out: list[str] = []
    for step in steps:
        out += [f"# {step.comment}", step.command]
    return out


@dataclass(frozen=True)
class ConnectorKind:
    kind: str                       # one of CONNECTOR_KINDS
    source: str                     # "directory", "name", "role" or "none"
    groups: tuple[str, ...] | None  # permission groups the directory shows (None: not told)
    role: str | None = None         # FrontendTransport / HubTransport, when known
    reason: str = ""                # why this kind, in words
    default: bool = False           # its name is one Exchange setup gives a connector


@dataclass(frozen=True)
class AccountKind:
    logged: str                     # as Exchange logged it (untrusted)
    kind: str                       # one of ACCOUNT_KINDS
    name: str                       # what commands name: the resolved name, else as logged
    logged_as_sid: bool = False
    rid: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The directory's finding for the account on one connector.

    `status`: granted, denied, not granted, unknown. For the entry that decided (granted or
    denied): its trustee as the directory names it and its SID, whether it names the account
    itself, whether it is inherited (None: not told), and `scope`: "submit" (an entry for
    ms-Exch-SMTP-Submit), "extended" (every extended right) or "all" (GenericAll).
    """

    status: str
    reason: str = ""
    trustee: str | None = None
    trustee_sid: str | None = None
    explicit: bool = False
    inherited: bool | None = None
    scope: str = "submit"


@dataclass(frozen=True)
class Advice:
    """The cause of one account's events on one connector, why, and the fixes in order."""

    cause: str
    event_id: int
    account: AccountKind
    connector: str | None           # SRV\Name, None when no connector is known
    connector_kind: ConnectorKind
    explanation: str                # one paragraph, plain words (the caller escapes it)
    rests_on: tuple[str, ...]       # DOCS, CODE, INFERENCE
    fixes: tuple[Remedy, ...]       # the first is what an experienced admin would do
    verify: tuple[Step, ...] = ()   # read-only: what decides on the connector
    verify_note: str = ""
    identify: Step | None = None    # read-only: who the account is (SID <-> name)
    where: str = "the Exchange Management Shell"
    verdict: Verdict | None = None
    refusal: str | None = None      # why no command is shown at all

    @property
    def headline(self) -> str:
        return CAUSES[self.cause][0]

    @property
    def grants(self) -> bool:
        return any(f.grants for f in self.fixes)


# --- classifying ---------------------------------------------------------------------------------


def classify_account(logged: str, *, resolved: str | None = None, sid: str | None = None,
                     rid: int | None = None, builtin: str | None = None) -> AccountKind:
    """The kind of account from how Exchange logged it and what the directory says.

    `resolved`: the name the directory found for a logged SID; `sid`/`rid`/`builtin`: the
    directory's (bot.core.findings.Finding). A SID string as the account is what Exchange logs
    when it cannot resolve the name; its RID alone says RID 500/501 in a domain.
    """
    logged_as_sid = bool(_SID_RE.fullmatch(logged.strip()))
    the_sid = sid or (logged.strip() if logged_as_sid else None)
    if rid is None and the_sid and the_sid.upper().startswith("S-1-5-21-"):
        rid = _rid(the_sid)
    domain_sid = the_sid is None or the_sid.upper().startswith("S-1-5-21-")
    name = resolved or logged
    if builtin == "Administrator" or (rid == 500 and domain_sid):
        kind = BUILTIN_ADMIN
    elif builtin == "Guest" or (rid == 501 and domain_sid):
        kind = GUEST
    elif _is_computer(name):
        kind = COMPUTER
    elif logged_as_sid and not resolved:
        kind = UNRESOLVED_SID
    else:
        kind = ORDINARY
    return AccountKind(logged, kind, name, logged_as_sid, rid)


def _rid(sid: str) -> int | None:
    try:
        return int(sid.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _is_computer(name: str) -> bool:
    user = name.strip().rsplit("\\", 1)[-1]
    if "@" in user:
        user = user.rsplit("@", 1)[0]
    return len(user) > 1 and user.endswith("$")


def _computer_name(name: str) -> str:
    user = name.strip().rsplit("\\", 1)[-1]
    if "@" in user:
        user = user.rsplit("@", 1)[0]
    return user[:-1] if user.endswith("$") else user


def classify_connector(identity: str | None, *, version: str | None = None,
                       role: str | None = None,
                       fact: ConnectorFact | None = None) -> ConnectorKind:
    """The connector's kind, best source first: the configured role (Edge), the directory's
    reading of the connector, its name against Exchange's defaults for the version, else
    UNKNOWN."""
    if role and role.replace(" ", "").casefold() in _EDGE_ROLES:
        return ConnectorKind(EDGE, "role", None, "EdgeTransport",
                             "the server is configured as an Edge Transport server")
    name = identity.partition("\\")[2] if identity and "\\" in identity else identity
    if name and name.casefold().startswith(_EDGE_DEFAULT_PREFIX):
        return ConnectorKind(EDGE, "name", None, "EdgeTransport",
                             "its name is the Edge Transport server's default connector's",
                             default=True)
    by_name = _kind_by_name(identity, version)
    found = fact is not None and fact.found
    if fact is not None and found and fact.permission_groups is not None:
        return _kind_from_directory(fact, by_name)
    fact_role = ((fact.role or "HubTransport") if fact is not None and found else None)
    if by_name is not None:
        kind, role_of, reason = by_name
        return ConnectorKind(kind, "name", None, fact_role or role_of, reason, default=True)
    if identity:
        return ConnectorKind(CUSTOM, "name", None, fact_role,
                             "its name is not one of the Receive connectors Exchange setup "
                             "creates for this server's version")
    return ConnectorKind(UNKNOWN, "none", None, None, "no connector is known for these events")


def _kind_by_name(identity: str | None, version: str | None) -> tuple[str, str, str] | None:
    """(kind, role, reason) for one of Exchange's default connectors, None for any other.
    With the version unknown, a default of 2007/2010 or of 2013 and later counts."""
    if not identity or "\\" not in identity:
        return None
    server = identity.partition("\\")[0]
    versions = [version] if version else ["2013", "2010"]
    matches = []
    for v in versions:
        try:
            defaults = default_receive_connectors(server, v)
        except UnsafeValueError:
            return None
        matches += [(is_legacy_version(v), d) for d in defaults
                    if d.identity.casefold() == identity.casefold()]
    if not matches:
        return None
    legacy, default = matches[0]
    if len(matches) > 1:     # Default <SRV>: 25 on 2007/2010, 2525 (backend) on 2013 and later
        return (ADMITS, "HubTransport", "it is a default connector of Exchange (port 25 on "
                "2007/2010, 2525 on the back end of 2013 and later) with the ExchangeUsers "
                "permission group")
    which = "2007/2010" if legacy else "2013 and later"
    if legacy:
        return (ADMITS, "HubTransport", f"it is a default connector of Exchange {which} (port "
                f"{default.port}) with the ExchangeUsers permission group")
    if default.port == 25:
        return (INTERNET_FACING, default.role,
                f"it is the default connector for mail from the internet on Exchange {which}, "
                "port 25, with AnonymousUsers, ExchangeServers and ExchangeLegacyServers and no "
                "ExchangeUsers")
    if default.port == 717:
        return (SERVERS_ONLY, default.role, f"it is the outbound proxy connector of Exchange "
                f"{which}, port 717, ExchangeServers only")
    return (ADMITS, default.role, f"it is a default connector of Exchange {which} (port "
            f"{default.port}) with the ExchangeUsers permission group")


def _kind_from_directory(fact: ConnectorFact,
                         by_name: tuple[str, str, str] | None) -> ConnectorKind:
    groups = tuple(fact.permission_groups or ())
    role = fact.role or "HubTransport"      # an unset msExchSmtpReceiveRole reads as HubTransport
    offers = {a.casefold() for a in fact.auth} & ACCOUNT_AUTH
    shown = ", ".join(groups) or "neither AnonymousUsers nor ExchangeUsers"
    default = by_name is not None
    if "ExchangeUsers" in groups:
        return ConnectorKind(ADMITS, "directory", groups, role,
                             f"the directory shows the ExchangeUsers permission group ({shown})",
                             default)
    named_internet = by_name is not None and by_name[0] == INTERNET_FACING
    every = _takes_every_address(fact.remote_ip_ranges)
    if "AnonymousUsers" in groups and offers and (named_internet or every):
        ranges = (" and remote IP ranges that take every address" if every else
                  ", and its name is the internet-facing default's")
        return ConnectorKind(INTERNET_FACING, "directory", groups, role,
                             f"the directory shows AnonymousUsers without ExchangeUsers ({shown}),"
                             f" sign-in offered{ranges}", default)
    if by_name is not None and by_name[0] == SERVERS_ONLY:
        return ConnectorKind(SERVERS_ONLY, "directory", groups, role, by_name[2], default)
    return ConnectorKind(CUSTOM, "directory", groups, role,
                         f"the directory shows no ExchangeUsers permission group ({shown})"
                         + (" and remote IP ranges limited to some addresses"
                            if _restricted(fact.remote_ip_ranges) else ""), default)


def _takes_every_address(ranges: Sequence[str]) -> bool:
    """True only when the directory gave the ranges and one of them takes every address
    (unknown ranges prove nothing)."""
    return any(_everything(r) for r in ranges)


def _restricted(ranges: Sequence[str]) -> bool:
    """True when the ranges are known and none of them takes every address."""
    if not ranges:
        return False
    return not any(_everything(r) for r in ranges)


def _everything(text: str) -> bool:
    text = text.strip()
    try:
        if "-" in text:
            low, high = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
            top = ipaddress.ip_address("255.255.255.255" if low.version == 4 else
                                       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            return int(low) == 0 and high == top
        return ipaddress.ip_network(text, strict=False).prefixlen == 0
    except ValueError:
        return False


# --- the directory's verdict ---------------------------------------------------------------------


def _verdict(finding: Finding | None, fact: ConnectorFact | None) -> Verdict | None:
    if finding is not None and finding.error:
        return Verdict("unknown", f"the directory could not be read: {finding.error}")
    if fact is None:
        return None
    if not fact.found:
        return Verdict("unknown", fact.why or "no such connector in the directory")
    return Verdict(fact.right, fact.why, trustee=fact.trustee, trustee_sid=fact.trustee_sid,
                   explicit=fact.explicit, inherited=fact.inherited, scope=fact.scope)


def _fact_for(identity: str | None, finding: Finding | None) -> ConnectorFact | None:
    if finding is None or not identity:
        return None
    for fact in finding.connectors:
        if fact.place.casefold() == identity.casefold():
            return fact
    return None


# --- commands (every argument one literal from ps_quote) -----------------------------------------


def _connector(identity: str) -> str:
    return f"Get-ReceiveConnector -Identity {ps_quote(identity, 'connector')}"


def _right_params(right: str | None, scope: str) -> str:
    if scope == "all":
        return f"-AccessRights {ps_quote('GenericAll')}"
    if scope == "extended" or right is None:
        return f"-AccessRights {ps_quote('ExtendedRight')}"
    return f"-ExtendedRights {ps_quote(right)}"


def honest_verify_command(identity: str) -> str:
    """Read-only: every entry on the connector that can decide Submit, whoever it names: Deny
    entries, entries for ms-Exch-SMTP-Submit, and entries for all extended rights or GenericAll
    (their ExtendedRights is empty). `Get-ADPermission -User X` would show only entries naming X
    itself: no groups, no Deny through a group."""
    return (f"{_connector(identity)} | Get-ADPermission"
            " | Where-Object { $_.Deny -or $_.ExtendedRights -like '*SMTP-Submit*' -or"
            " (-not $_.ExtendedRights -and $_.AccessRights -match 'ExtendedRight|GenericAll') }"
            " | Format-Table User,Deny,IsInherited,AccessRights,ExtendedRights")


def _rights_steps(user: str, identity: str, rights: Sequence[str]) -> tuple[Step, ...]:
    """Dry run, grant and safe undo of one or two rights, one right per command."""
    steps: list[Step] = []
    for n, right in enumerate(rights):
        if right == SUBMIT_RIGHT:
            whatif = whatif_command(user, identity)
            grant = grant_command(user, identity)
            undo = undo_command(user, identity)
        else:
            base = (f"{_connector(identity)} | Add-ADPermission -User {ps_quote(user, 'account')}"
                    f" {_right_params(right, 'submit')}")
            whatif, grant = base + " -WhatIf", base
            undo = (f"{_connector(identity)} | Remove-ADPermission "
                    f"-User {ps_quote(user, 'account')} {_right_params(right, 'submit')} "
                    "-Confirm:$false")
        what = "Submit" if right == SUBMIT_RIGHT else "Accept-Any-Recipient"
        extra = "" if n == 0 else " (only if it must send to other domains)"
        steps += [Step(f"try it first{extra}: changes nothing", whatif),
                  Step(f"grant {what}{extra}", grant),
                  Step("undo, only if the grant added the entry (Add-ADPermission warns that "
                       "the entry is already present when it did not: then leave it)", undo)]
    return tuple(steps)


def _groups_steps(identity: str, current: tuple[str, ...], add: str) -> tuple[Step, ...]:
    """Read the groups, then dry run, change and undo of adding `add` to them.

    -PermissionGroups replaces the whole list, and the directory can show only AnonymousUsers
    and ExchangeUsers (ExchangeServers, ExchangeLegacyServers and Partners name forest groups):
    a list built from what it shows would drop those. So the commands read the connector's
    groups as they are when they run and add (or take away) only `add`. The group name is one
    of Exchange's own (PERMISSION_GROUPS), never untrusted text."""
    if add not in PERMISSION_GROUPS:
        raise UnsafeValueError("permission group", "is not one of Exchange's permission groups")
    if any(g not in PERMISSION_GROUPS for g in current):   # what the change would keep: unknown
        return (Step("read-only: what the connector accepts", inspect_connector_command(identity),
                     changes=False),)
    shown = ", ".join(g for g in PERMISSION_GROUPS if g in current) or "neither"
    connector = ps_quote(identity, "connector")
    each = f"{_connector(identity)} | ForEach-Object {{ Set-ReceiveConnector -Identity {connector}"
    added = f'{each} -PermissionGroups "$($_.PermissionGroups), {add}"'
    taken = (f"{each} -PermissionGroups ((@(\"$($_.PermissionGroups)\" -split ',\\s*') -ne "
             f"'{add}' -join ', ') -replace '^$', 'None') }}")
    return (
        Step(f"check first (read-only): if PermissionGroups already lists {add}, skip the "
             f"change (of AnonymousUsers and ExchangeUsers the directory showed: {shown})",
             inspect_connector_command(identity), changes=False),
        Step("try it first: changes nothing", f"{added} -WhatIf }}"),
        Step(f"add {add} to the groups it has", f"{added} }}"),
        Step(f"undo, only if the change added it: take {add} away again", taken),
    )


def _deny_steps(identity: str, verdict: Verdict) -> tuple[Step, ...]:
    who = verdict.trustee_sid or verdict.trustee
    if not who:
        return ()
    user = ps_quote(who, "account")
    rights = _right_params(SUBMIT_RIGHT, verdict.scope)
    remove = f"{_connector(identity)} | Remove-ADPermission -User {user} {rights} -Deny"
    return (
        Step("try it first: changes nothing", remove + " -WhatIf"),
        Step("remove the Deny entry", remove + " -Confirm:$false"),
        Step("undo: put the Deny entry back",
             f"{_connector(identity)} | Add-ADPermission -User {user} {rights} -Deny"),
    )


def _sid_to_name_command(sid: str) -> str:
    """Read-only: the name Windows gives a SID (the reverse of sid_command)."""
    return ("New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList "
            f"{ps_quote(sid, 'account')} | ForEach-Object "
            "{ $_.Translate([System.Security.Principal.NTAccount]).Value }")


def _exchange_server_command(name: str) -> str:
    return f"Get-ExchangeServer -Identity {ps_quote(name, 'server')} | Format-List Name,ServerRole"


def _restart_command(role: str) -> str:
    service = "MSExchangeFrontEndTransport" if role == "FrontendTransport" else \
        "MSExchangeTransport"
    return f"Restart-Service -Name {ps_quote(service)}"


# --- advice --------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    event_id: int
    account: AccountKind
    server: str
    identity: str | None
    version: str | None
    kind: ConnectorKind
    verdict: Verdict | None
    directory: bool
    still_failing: bool | None
    commands: bool = True

    def steps(self, build: Callable[[], tuple[Step, ...]]) -> tuple[Step, ...]:
        return build() if self.commands else ()

    @property
    def legacy(self) -> bool:
        return is_legacy_version(self.version)

    @property
    def edge(self) -> bool:
        return self.kind.kind == EDGE


def advise(event_id: int, account: str, server: str, connector: str | None = None, *,
           version: str | None = None, role: str | None = None,
           finding: Finding | None = None, verdict: Verdict | None = None,
           resolved: str | None = None, directory: bool | None = None,
           still_failing: bool | None = None) -> Advice:
    """The cause of `account`'s event `event_id` on `server` (host name; a FQDN is shortened)
    and `connector` (as the event named it, or SRV\\Name), and the fixes in order.

    `version`: the server's configured Exchange version; `role`: its configured role ("Edge"
    makes every connector an Edge connector). `finding`: the directory's last check of the
    account (its connector fact for this connector, with the entry that decided, which
    bot.directory.adcheck fills in; its SID/RID); `verdict`: overrides the fact's verdict (tests);
    `resolved`: the name the directory found for an account Exchange logged
    as a SID. `directory`: a [directory] is configured (default: a finding was given).
    `still_failing`: events were logged after the directory showed the right (None: not known).

    Never raises for untrusted text: a name that cannot go into a command gives an Advice whose
    `refusal` says why, with the same causes and fixes in words and no commands.
    """
    if event_id not in (1018, 1020):
        raise ValueError(f"event {event_id} is not 1018 or 1020")
    identity, refusal = _identity(server, connector)
    fact = _fact_for(identity, finding)
    kind = classify_connector(identity, version=version, role=role, fact=fact)
    if kind.kind == EDGE:
        finding = None   # AD holds nothing about an Edge server's local accounts either
    who = classify_account(account, resolved=resolved,
                           sid=finding.sid if finding is not None and finding.found else None,
                           rid=finding.rid if finding is not None and finding.found else None,
                           builtin=finding.builtin if finding is not None else None)
    if kind.kind == EDGE:
        found = None   # AD holds nothing about an Edge server's connectors or local accounts
    elif verdict is not None:
        found = verdict
    else:
        found = _verdict(finding, fact)
    ctx = _Ctx(event_id, who, server, identity, version, kind, found,
               finding is not None if directory is None else directory, still_failing)
    if refusal is None:
        try:
            return _advice(ctx)
        except UnsafeValueError as exc:
            refusal = str(exc)
    ctx.commands = False
    return _advice(ctx, refusal)


def _identity(server: str, connector: str | None) -> tuple[str | None, str | None]:
    """(SRV\\Name or None, a refusal): built without quoting, so a name that cannot go into a
    command still gets its cause."""
    if not connector:
        return None, None
    try:
        return connector_identity(server, connector), None
    except UnsafeValueError as exc:
        if "\\" in connector:
            return connector, str(exc)
        short = server.strip().split(".", 1)[0] or server
        return f"{short}\\{connector}", str(exc)


def _advice(ctx: _Ctx, refusal: str | None = None) -> Advice:
    cause, explanation, fixes = _cause(ctx)
    rests = list(CAUSES[cause][1])
    if ctx.kind.source == "name" and cause in (INTERNET_AUTH, CUSTOM_NO_USERS, SHOULD_ADMIT,
                                               SERVER_CONNECTOR, EDGE_TRANSPORT):
        rests.append(INFERENCE)   # the connector as setup made it: the directory would tell
    if cause == BUILTIN and not _is_2013(ctx.version):
        rests.append(INFERENCE)   # 2016/2019/SE (or unknown): inferred from 2013's code
    if cause == SHOULD_ADMIT and (ctx.verdict is None or ctx.verdict.status == "unknown"):
        rests.append(INFERENCE)   # a Deny or a changed DACL: which one, nothing here tells
    verify, note = _verify(ctx) if cause != BUILTIN else ((), "")
    where = ("the Exchange Management Shell on the Edge Transport server itself"
             if ctx.edge else "the Exchange Management Shell")
    if refusal is not None:
        verify, note = (), ""
    return Advice(cause=cause, event_id=ctx.event_id, account=ctx.account,
                  connector=ctx.identity, connector_kind=ctx.kind,
                  explanation=explanation,
                  rests_on=tuple(dict.fromkeys(rests)), fixes=tuple(fixes), verify=verify,
                  verify_note=note,
                  identify=_identify(ctx) if refusal is None else _safe_identify(ctx),
                  where=where, verdict=ctx.verdict, refusal=refusal)


def _is_2013(version: str | None) -> bool:
    return bool(version and _2013_RE.search(str(version)))


def _safe_identify(ctx: _Ctx) -> Step | None:
    """Who the account is, read-only: it names no connector, so a connector's name that cannot
    go into a command does not take it away; an account's name that cannot, does."""
    try:
        return _identify(ctx)
    except UnsafeValueError:
        return None


def _identify(ctx: _Ctx) -> Step | None:
    who = ctx.account
    if who.logged_as_sid and who.kind == UNRESOLVED_SID:
        return Step("read-only: the name Windows gives this SID",
                    _sid_to_name_command(who.logged.strip()), changes=False)
    if ctx.event_id == 1020 and who.kind not in (BUILTIN_ADMIN, GUEST) and not who.logged_as_sid:
        return Step("read-only: the account's SID (-500 = built-in Administrator, -501 = Guest)",
                    sid_command(who.name), changes=False)
    return None


def _verify(ctx: _Ctx) -> tuple[tuple[Step, ...], str]:
    if ctx.identity is None:
        return (ctx.steps(lambda: (Step("read-only: this server's Receive connectors",
                                        list_connectors_command(ctx.server), changes=False),)),
                "No connector is known: list the server's connectors and find the one whose "
                "bindings and remote IP ranges match the client.")
    identity = ctx.identity
    steps = ctx.steps(lambda: (Step("read-only: every Submit, all-rights and Deny entry on the "
                                    "connector, whoever it names",
                                    honest_verify_command(identity), changes=False),))
    note = ("Get-ADPermission -User shows only entries that name the account itself: not a "
            "grant or a Deny through a group, and not entries for all extended rights. The "
            "listing shows every entry that can decide; Exchange checks the account's token: "
            "the account, its groups, Everyone, Authenticated Users, NETWORK, This Organization, "
            "its sIDHistory and the domain-local groups of the Exchange server's domain.")
    if ctx.edge:
        note += " Run it on the Edge Transport server: its connectors are in its AD LDS."
    elif ctx.directory:
        note += (" Or run `verify` in Slack: SubmitWatch reads the connector's DACL against the "
                 "account's groups.")
    return steps, note


def _cause(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    who = ctx.account
    if ctx.event_id == 1020:
        if who.kind in (BUILTIN_ADMIN, GUEST) or not ctx.legacy:
            return _builtin(ctx)
        return _legacy_1020(ctx)
    if who.kind in (BUILTIN_ADMIN, GUEST):
        return _builtin(ctx)
    if ctx.edge:
        return _edge(ctx)
    verdict = ctx.verdict if ctx.identity is not None else None
    if verdict is not None and verdict.status == "denied":
        return _deny(ctx, verdict)
    if verdict is not None and verdict.status == "granted":
        return _granted(ctx, verdict)
    if who.kind == COMPUTER:
        return _computer(ctx)
    kind = ctx.kind.kind
    if kind == INTERNET_FACING:
        return _internet(ctx)
    if kind == CUSTOM:
        return _custom(ctx)
    if kind == SERVERS_ONLY:
        return _servers_only(ctx)
    if kind == ADMITS:
        return _should_admit(ctx)
    return _unknown(ctx)


# --- the causes ----------------------------------------------------------------------------------


def _who(ctx: _Ctx) -> str:
    who = ctx.account
    if who.kind == UNRESOLVED_SID:
        return (f"The account {who.logged} (Exchange logged a SID: it could not resolve the "
                "name, as happens for an account of another forest or one deleted since)")
    if who.logged_as_sid:
        return f"The account {who.name} (logged as the SID {who.logged})"
    return f"The account {who.name}"


def _join(*parts: str) -> str:
    """Sentences joined by one space; empty ones left out."""
    return " ".join(p for p in parts if p)


def _kind_note(ctx: _Ctx) -> str:
    kind = ctx.kind
    if kind.source == "name" and kind.default:
        return (f"Judged by the connector's name: {kind.reason}; the directory's reading of it "
                "would show whether it was changed since setup.")
    if kind.source == "name":
        return (f"Judged by the connector's name: {kind.reason}; the directory's reading of it "
                "would show its permission groups and remote IP ranges.")
    if kind.source == "directory":
        return f"{kind.reason[:1].upper()}{kind.reason[1:]}."
    return ""


def _verdict_note(ctx: _Ctx) -> str:
    verdict = ctx.verdict
    if verdict is None:
        return ""
    if verdict.status == "unknown":
        return f"The directory could not tell the account's right there: {verdict.reason}."
    if verdict.status == "not granted":
        return ("The directory shows no entry that grants or denies the account Submit there, "
                "through any of its groups.")
    return ""


def _grant(ctx: _Ctx, rights: Sequence[str] = (SUBMIT_RIGHT,), *,
           remedy_id: str = "grant_submit", title: str, detail: str,
           widens: bool = False) -> Remedy:
    identity = ctx.identity or ""
    name = ctx.account.name
    return Remedy(remedy_id, title, detail,
                  ctx.steps(lambda: _rights_steps(name, identity, rights)),
                  grants=True, widens=widens)


def _submission(ctx: _Ctx) -> str:
    try:
        return likely_submission_connector(ctx.server, ctx.version)
    except UnsafeValueError:
        return ("Client Frontend" if not ctx.legacy else "Client") + " <server>"


def _use_587(ctx: _Ctx, why: str) -> Remedy:
    target = _submission(ctx)
    identity = target if "\\" in target else None
    steps = ctx.steps(lambda: (Step("read-only: the client submission connector",
                                    inspect_connector_command(identity), changes=False),)
                      if identity else ())
    return Remedy("use_587", "Submit on port 587 with STARTTLS, same account",
                  f"Set the device to port 587 (connector {target}) with STARTTLS and keep its "
                  f"credentials: that connector admits every signed-in account. {why}", steps)


def _internet(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    explanation = _join(
        f"{_who(ctx)} signed in on {ctx.identity}, the connector that takes mail from the "
        "internet: it offers sign-in (BasicAuth, Integrated) but has no ExchangeUsers "
        "permission group, so every ordinary account that signs in there is refused with 1018. "
        "This is a device or application set up to authenticate on port 25.",
        _kind_note(ctx), _verdict_note(ctx))
    fixes = [
        _use_587(ctx, "A device that can only use port 25 can be given a port-25 binding on "
                      "the client connector on a separate IP address (Microsoft's "
                      "\"Configure authenticated SMTP settings\")."),
        Remedy("send_anonymously", "Send without signing in on port 25 (internal recipients "
               "only)", "Turn SMTP authentication off on the device: the internet-facing "
               "connector takes anonymous mail for the organization's own accepted domains, "
               "not for other domains."),
        _grant(ctx, title="Grant Submit to this one account on the internet-facing connector "
                          "(widens the internet-facing connector)",
               detail="Possible, but it lets this account's sign-ins submit on the connector "
                      "that faces the internet; it still reaches only internal recipients, and "
                      "adding Accept-Any-Recipient would make the internet-facing connector a "
                      "relay for it. Prefer the fixes above.", widens=True),
    ]
    return INTERNET_AUTH, explanation, fixes


def _custom(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    identity = ctx.identity or ""
    explanation = _join(
        f"{_who(ctx)} signed in on {identity}, a connector without the ExchangeUsers "
        "permission group"
        + (" (one of Exchange's default connectors, changed since setup)" if ctx.kind.default
           else " that is not one of Exchange's defaults: usually a relay connector whose "
           "remote IP ranges caught the device's address (Exchange picks the connector whose "
           "remote IP ranges match the client most specifically)")
        + ". It gives signed-in accounts no Submit right: it is there for anonymous relay, "
        "if anything. A Submit grant alone clears 1018 and "
        "then fails at RCPT for recipients in other domains, which need Accept-Any-Recipient.",
        _kind_note(ctx), _verdict_note(ctx))
    groups = ctx.kind.groups
    inspect = ctx.steps(lambda: (Step("read-only: what the connector accepts",
                                      inspect_connector_command(identity), changes=False),))
    if groups is not None:
        add_users = Remedy(
            "add_exchange_users", "Add ExchangeUsers to this connector, if signed-in "
            "submission is what it is for",
            "Every authenticated account may then submit and relay to any domain "
            "(Accept-Any-Recipient) through it, from the addresses in its remote IP ranges. "
            "-PermissionGroups replaces the whole list: the command keeps the groups the "
            "directory shows.",
            ctx.steps(lambda: _groups_steps(identity, groups, "ExchangeUsers")))
    else:
        add_users = Remedy(
            "add_exchange_users", "Add ExchangeUsers to this connector, if signed-in "
            "submission is what it is for",
            "Every authenticated account may then submit and relay to any domain through it. "
            "The directory did not give this connector's permission groups, and "
            "-PermissionGroups replaces the whole list: read them with the command below and "
            "run Set-ReceiveConnector -PermissionGroups with that list plus ExchangeUsers.",
            inspect)
    fixes = [
        Remedy("stop_authenticating", "Stop signing in on the device",
               "The connector is there for anonymous relay from its remote IP ranges: set the "
               "device to send without SMTP authentication, as the connector expects.", inspect),
        add_users,
        _grant(ctx, (SUBMIT_RIGHT, ACCEPT_ANY_RECIPIENT_RIGHT), remedy_id="grant_submit_and_relay",
               title="Grant Submit to this one account, and Accept-Any-Recipient if it must "
                     "reach other domains",
               detail="Least privilege for this account on this connector only."),
    ]
    return CUSTOM_NO_USERS, explanation, fixes


def _should_admit(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    identity = ctx.identity or ""
    verdict = ctx.verdict
    listing = ctx.steps(lambda: (Step("read-only: every Submit, all-rights and Deny entry",
                                      honest_verify_command(identity), changes=False),))
    base = (f"{_who(ctx)} was refused on {identity}, a connector meant for signed-in accounts "
            "(ExchangeUsers gives every authenticated account Submit there).")
    if verdict is not None and verdict.status == "not granted":
        explanation = _join(f"{base} The directory shows no Deny and no grant for the account "
                            "or its groups: the connector's DACL no longer gives Submit to "
                            "signed-in accounts (its ExchangeUsers entries were removed or "
                            "changed).", _kind_note(ctx))
        fixes = [
            _grant(ctx, title="Grant Submit to this one account",
                   detail="Least privilege: on a connector meant for signed-in submission, a "
                          "grant to the one account is the narrow fix."),
            _restore_users(ctx),
        ]
        return SHOULD_ADMIT, explanation, fixes
    explanation = _join(f"{base} So something on the connector decides against it: a Deny "
                        "entry (for the account, one of its groups, or an identity every sign-in "
                        "carries such as NETWORK or This Organization), or a DACL whose "
                        "ExchangeUsers entries were removed. The listing below shows which entry "
                        "decides.", _kind_note(ctx), _verdict_note(ctx))
    fixes = [
        Remedy("find_deciding_entry", "Find the entry that decides",
               "In the listing, an entry with Deny True whose User is the account, one of its "
               "groups, Everyone, NETWORK or This Organization decides: remove it with "
               "Remove-ADPermission -User (that entry's User) -ExtendedRights "
               "ms-Exch-SMTP-Submit -Deny, or take the account out of that group. No grant "
               "helps while it is there.", listing),
        _grant(ctx, title="Grant Submit to this one account, if the listing shows no Deny that "
                          "applies",
               detail="When the ExchangeUsers entries were removed on purpose, a grant to the "
                      "one account is the narrow fix."),
    ]
    return SHOULD_ADMIT, explanation, fixes


def _restore_users(ctx: _Ctx) -> Remedy:
    identity = ctx.identity or ""
    groups = ctx.kind.groups
    title = "Or give the ExchangeUsers permission group back to the connector"
    detail = ("Every authenticated account may then submit and relay through it again, as "
              "Exchange set it up.")
    if groups is not None and "ExchangeUsers" not in groups:
        return Remedy("restore_exchange_users", title, detail + " -PermissionGroups replaces "
                      "the whole list: the command keeps the groups the directory shows.",
                      ctx.steps(lambda: _groups_steps(identity, groups, "ExchangeUsers")))
    return Remedy("restore_exchange_users", title,
                  detail + " -PermissionGroups replaces the whole list: read it with the "
                  "command below and give it back with ExchangeUsers added.",
                  ctx.steps(lambda: (Step("read-only: what the connector accepts",
                                          inspect_connector_command(identity), changes=False),)))


def _servers_only(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    explanation = _join(
        f"{_who(ctx)} signed in on {ctx.identity}, the connector the front end uses to proxy "
        "outbound mail for Exchange servers (port 717, ExchangeServers only). A device or "
        "application has no business there: it is pointed at the wrong port.",
        _kind_note(ctx), _verdict_note(ctx))
    return SERVER_CONNECTOR, explanation, [_use_587(ctx, "No grant on this connector.")]


def _computer(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    identity = ctx.identity
    machine = _computer_name(ctx.account.name)
    explanation = _join(
        f"{_who(ctx)} is a computer account (its name ends in $): a server or an application "
        "signed in with its machine identity (Integrated or Exchange server authentication). "
        "Exchange servers get Submit through the ExchangeServers permission group; any other "
        "machine should not sign in at all, and a per-account grant to a computer account is "
        f"never the fix.", _kind_note(ctx), _verdict_note(ctx))
    groups = ctx.kind.groups
    if identity is None:
        first_steps = ctx.steps(lambda: (Step("read-only: is it an Exchange server?",
                                              _exchange_server_command(machine), changes=False),))
    elif groups is not None:
        first_steps = ctx.steps(lambda: (
            Step("read-only: is it an Exchange server?", _exchange_server_command(machine),
                 changes=False),
            *_groups_steps(identity, groups, "ExchangeServers")))
    else:
        first_steps = ctx.steps(lambda: (
            Step("read-only: is it an Exchange server?", _exchange_server_command(machine),
                 changes=False),
            Step("read-only: what the connector accepts", inspect_connector_command(identity),
                 changes=False)))
    fixes = [
        Remedy("exchange_servers_group", f"If {machine} is an Exchange server: the "
               "connector's ExchangeServers permission group",
               "An Exchange server's computer account is a member of Exchange Servers, which "
               "the ExchangeServers permission group admits. If the connector lacks that group, "
               "add it (-PermissionGroups replaces the whole list); if it has it, the computer "
               "is not in the Exchange Servers group.", first_steps),
        Remedy("own_connector_by_address", "Any other computer: stop signing in, and send to "
               "a connector limited to its address",
               "Set the application to send without SMTP authentication (it signs in with its "
               "machine identity), to a Receive connector whose remote IP ranges hold only its "
               "address; for a trusted internal server, that connector can be externally "
               "secured (ExternalAuthoritative with ExchangeServers). No per-account grant."),
    ]
    return COMPUTER_ACCOUNT, explanation, fixes


def _trustee_words(verdict: Verdict) -> str:
    name = verdict.trustee or verdict.trustee_sid
    if verdict.explicit:
        return f"the account itself ({name})" if name else "the account itself"
    if verdict.trustee_sid and verdict.trustee_sid.upper() in EVERYBODY_SIDS:
        return (f"{EVERYBODY_SIDS[verdict.trustee_sid.upper()]} ({verdict.trustee_sid}), an "
                "identity every sign-in carries, so it refuses every account")
    if name:
        return f"{name}, which the account's token holds (a group of it)"
    return "an identity in the account's token (the directory did not say which)"


def _deny(ctx: _Ctx, verdict: Verdict) -> tuple[str, str, list[Remedy]]:
    identity = ctx.identity or ""
    inherited = verdict.inherited is True
    explanation = (
        f"{_who(ctx)} is refused on {identity} by a Deny entry for {_trustee_words(verdict)}"
        f"{', inherited from a parent container' if inherited else ''}. A Deny that applies "
        "wins over any grant, so no grant can fix this: removing that entry does"
        f"{' (or taking the account out of that group)' if _through_group(verdict) else ''}.")
    fixes: list[Remedy] = []
    if inherited:
        fixes.append(Remedy(
            "remove_inherited_deny", "Remove the Deny entry where it is set",
            "The entry is inherited from a container above the connector (the server's "
            "Protocols container or higher), so Remove-ADPermission on the connector cannot "
            "remove it: remove it on that container. The listing shows it with IsInherited "
            "True."))
    elif verdict.trustee_sid or verdict.trustee:
        fixes.append(Remedy(
            "remove_deny", "Remove the Deny entry",
            f"The entry for {verdict.trustee or verdict.trustee_sid} on this connector"
            + (f" (named by its SID, {verdict.trustee_sid}, which every language's Exchange "
               "takes)" if verdict.trustee_sid else "") + ".",
            ctx.steps(lambda: _deny_steps(identity, verdict))))
    else:
        fixes.append(Remedy(
            "remove_deny", "Remove the Deny entry",
            "The directory did not name the entry's trustee: the listing shows it (Deny True); "
            "remove it with Remove-ADPermission -User (that entry's User) -ExtendedRights "
            "ms-Exch-SMTP-Submit -Deny.",
            ctx.steps(lambda: (Step("read-only: every Submit, all-rights and Deny entry",
                                    honest_verify_command(identity), changes=False),))))
    if _through_group(verdict):
        fixes.append(Remedy(
            "leave_group", "Or take the account out of the group the Deny names",
            f"If the Deny on {verdict.trustee or verdict.trustee_sid} is meant for the group's "
            "other members, keep it and remove this account from the group instead (the "
            "change takes effect at its next sign-in)."))
    return DENY_DECIDES, explanation, fixes


def _through_group(verdict: Verdict) -> bool:
    return (not verdict.explicit and bool(verdict.trustee or verdict.trustee_sid)
            and (verdict.trustee_sid or "").upper() not in EVERYBODY_SIDS)


def _granted(ctx: _Ctx, verdict: Verdict) -> tuple[str, str, list[Remedy]]:
    identity = ctx.identity or ""
    through = f" through {verdict.trustee}" if verdict.trustee and not verdict.explicit else ""
    events = {True: " Events were logged after the directory showed the right, so the cache "
                    "has had time or a part of the token decides: look for a Deny entry the "
                    "check cannot see.",
              False: " No event has been logged since the directory showed the right: most "
                     "likely it was granted after the event, or Exchange's cache has caught "
                     "up.",
              None: ""}[ctx.still_failing]
    explanation = (
        f"The directory shows that {ctx.account.name} holds Submit on {identity}{through}, yet "
        "Exchange logged 1018. What can explain it: the right was granted after the event; "
        "Exchange reads Active Directory through its own configuration cache, so a fresh change "
        "takes effect only once that cache refreshes; or a Deny on a part of the token this "
        "check cannot see (NETWORK, This Organization, the account's sIDHistory, domain-local "
        f"groups of the Exchange server's domain).{events} A grant would change nothing.")
    listing = ctx.steps(lambda: (Step("read-only: every Submit, all-rights and Deny entry",
                                      honest_verify_command(identity), changes=False),))
    look = Remedy("find_hidden_deny", "Look for a Deny on a part of the token the check cannot "
                  "see", "A Deny entry for NETWORK, This Organization, a SID in the account's "
                  "sIDHistory or a domain-local group of the Exchange server's domain decides "
                  "over the grant: the listing shows them all.", listing)
    wait = Remedy("wait_for_cache", "Give Exchange's cache time, then watch the events",
                  "Exchange picks up a permission change once its configuration cache "
                  "refreshes; if no event follows, the fix has taken.")
    role = ctx.kind.role or ("HubTransport" if ctx.legacy else None)
    restart = None
    if role == "FrontendTransport" or role == "HubTransport":
        service_role: str = role
        restart = Remedy(
            "restart_transport", "Or restart the transport service on that server (briefly "
            "stops mail flow there)", "Makes Exchange read the connector's permissions now "
            "instead of at its next cache refresh.",
            ctx.steps(lambda: (Step("try it first: changes nothing",
                                    _restart_command(service_role) + " -WhatIf"),
                               Step("restart (on the Exchange server)",
                                    _restart_command(service_role)))))
    if ctx.still_failing is True:
        fixes = [look, *([restart] if restart else []), wait]
    elif ctx.still_failing is False:
        fixes = [Remedy("nothing_to_do", "Nothing to change: the events stopped",
                        "Mark it fixed; SubmitWatch confirms once the quiet period passes."),
                 look]
    else:
        fixes = [wait, look, *([restart] if restart else [])]
    return GRANTED_IN_DIRECTORY, explanation, fixes


def _edge(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    explanation = (
        f"{_who(ctx)} was refused on {ctx.identity or 'a connector'} of an Edge Transport "
        f"server ({ctx.kind.reason}). An Edge server keeps its connectors and their permissions "
        "in its own AD LDS, not in Active Directory, so the directory check does not apply; "
        "its accounts are local to it. The Edge server is the internet entry point: "
        "authenticated submission belongs on a Mailbox server's port 587.")
    fixes = [Remedy("use_587", "Submit to a Mailbox server on port 587 with STARTTLS",
                    "Point the device at a Mailbox server's client submission connector "
                    "(Client Frontend, port 587) with an Active Directory account, not at the "
                    "Edge server.")]
    if ctx.identity is not None and ctx.account.kind != COMPUTER:
        fixes.append(_grant(ctx, title="Grant Submit to this one account on the Edge "
                                       "connector (widens a connector of the internet-facing "
                                       "server; run on the Edge server)",
                            detail="Run these in the Exchange Management Shell on the Edge "
                                   "server itself; the account is one of its local accounts.",
                            widens=True))
    return EDGE_TRANSPORT, explanation, fixes


def _unknown(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    explanation = (f"{_who(ctx)} authenticated, but its token has no ms-Exch-SMTP-Submit on the "
                   "Receive connector it used, and no connector is known for these events. "
                   "Which fix is right depends on that connector: the internet-facing one, a "
                   "relay, or one meant for signed-in accounts.")
    server = ctx.server
    steps = ctx.steps(lambda: (Step("read-only: this server's Receive connectors",
                                    list_connectors_command(server), changes=False),))
    return UNKNOWN_CONNECTOR, explanation, [
        Remedy("find_connector", "Find the connector", "List the server's Receive connectors "
               "and find the one whose bindings and remote IP ranges match the device; "
               "`/submitwatch fix` with that connector gives its advice.", steps)]


def _builtin(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    who = ctx.account
    settled = who.kind in (BUILTIN_ADMIN, GUEST)
    what = "built-in Administrator (RID 500)" if who.kind == BUILTIN_ADMIN else \
        "built-in Guest (RID 501)"
    if _is_2013(ctx.version):
        label = ""
    elif ctx.legacy:
        label = " (2007/2010's code is not public)"
    else:
        label = (" (for 2016, 2019 and SE this is inferred from 2013's code, the same code base, "
                 "not read in theirs)")
    rule = ("Exchange refuses mail submission from built-in identities (the domain's built-in "
            "Administrator, even renamed; Guest; anonymous) whatever their permissions: Exchange "
            "2013's transport code checks for them before it reads any permission, and logs "
            f"1020{label}. Granting ms-Exch-SMTP-Submit cannot fix this.")
    if settled:
        explanation = f"{_who(ctx)} is the domain's {what}. {rule}"
        if ctx.event_id == 1018:
            explanation += (" Its event is 1018: 2013 and later log 1020 for a built-in account "
                            "before any permission check, so on those versions make sure "
                            "Exchange and the directory mean the same account (the SID). Either "
                            "way a built-in account should not submit mail, and no grant is "
                            "offered.")
    else:
        explanation = f"{_who(ctx)} provided valid credentials, but was refused. {rule}"
        if who.rid is not None:
            explanation += (f" The directory shows RID {who.rid}, not a built-in account: the "
                            "event's account may be a namesake in another domain; the SID "
                            "command shows which one Windows means.")
    fixes = [Remedy("own_account", "Give the device or application an account of its own",
                    "Create an ordinary account for it and set the device up with that one; "
                    "should that account then get event 1018, its advice shows the fix.")]
    return BUILTIN, explanation, fixes


def _legacy_1020(ctx: _Ctx) -> tuple[str, str, list[Remedy]]:
    explanation = _join(
        "Microsoft documents event 1020 on Exchange 2007 and 2010 as a missing "
        "ms-Exch-SMTP-Submit right on the Receive connector; their code is not public, and on "
        "2013 and later 1020 means a built-in identity (the built-in Administrator, even "
        "renamed; Guest; anonymous). Check both.", _verdict_note(ctx))
    fixes = [Remedy("own_account", "If the SID ends in -500 or -501: give the device an "
                    "account of its own", "A built-in account should not submit mail, and no "
                    "grant helps it on 2013 and later.")]
    verdict = ctx.verdict
    if ctx.identity is None:
        pass
    elif verdict is not None and verdict.status == "denied":
        _, deny_words, deny_fixes = _deny(ctx, verdict)
        explanation += " " + deny_words
        fixes += deny_fixes
    elif ctx.account.kind == COMPUTER:
        _, _, computer_fixes = _computer(ctx)
        fixes += computer_fixes
    elif verdict is None or verdict.status != "granted":
        fixes.append(_grant(ctx, title="If not: Microsoft's documented fix for 2007/2010, "
                                       "grant Submit on the connector",
                            detail="Grant ms-Exch-SMTP-Submit to this one account on the "
                                   "connector the event names."))
    return LEGACY_1020, explanation, fixes



"""Read-only Active Directory reader: Receive connectors, accounts, and who may Submit.

What it answers, for an account seen in a 1018/1020 event and a connector the event names:
the connector's facts (enabled, bindings, remote IP ranges, role, auth mechanisms, the permission
groups its DACL implies), the account's SID, sIDHistory and token groups, and the
ms-Exch-SMTP-Submit right as Exchange's AuthZ check would decide it (bot/directory/secdesc.py)
against the token Exchange builds (DOMAIN.md 6), naming the ACE that decides, or saying why it
cannot be decided from here (a Deny for a group of another domain, whose membership this DC
does not hold).

Two binds ([directory] auth), one reader: every read goes through `Directory._search`, whichever
library carries it, so both binds read the same findings.
- "simple": SIMPLE over LDAPS, with ldap3 (pure Python, a base dependency).
- "kerberos": SASL GSSAPI as SubmitWatch's [kerberos] principal (bot.core.kerberos gets the
  ticket), with a security layer of at least 56 bits (sealed: signed and encrypted), as a DC with
  "LDAP server signing requirements = Require signing" (Samba: `ldap server require strong auth
  = yes`) demands. With python-ldap (OpenLDAP's libldap and Cyrus SASL's GSSAPI module, the
  `kerberos` extra): ldap3 2.9 binds with GSSAPI but cannot sign or seal, so such a DC refuses it
  ("Sign or Seal are required"); msldap's Kerberos failed against Samba's KDC. The SPN is
  ldap/<the URL's host>, never a reverse lookup of the address (SASL_NOCANON).
An NTLM bind is not offered: Samba refuses ldap3's (Sicily) NTLM bind outright, and a domain
that turned NTLM off refuses any.

Read-only, always: ldap3's connection is opened with its read_only flag, and the Kerberos link
has a search method and nothing else, so an add, modify or delete could not be sent even by
mistake. Every failure reaches callers as DirectoryError, in words (which URL, what the DC said,
what an admin can do); nothing else escapes.

The reader account needs no privilege beyond read: a non-admin gets a connector's DACL only when
the search sends the LDAP SD-flags control asking for the DACL alone (OWNER|GROUP|DACL|SACL is
asked for otherwise, and the SACL needs a privilege, so AD returns no descriptor at all).
"""
from __future__ import annotations

import ipaddress
import math
import re
import socket
import ssl
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_errors
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.ciDict import CaseInsensitiveDict
from ldap3.utils.conv import escape_filter_chars

from bot.core.config import DirectoryConfig
from bot.core.inert import inert
from bot.directory.secdesc import (
    Ace,
    SecurityDescriptor,
    SecurityDescriptorError,
    check_extended_right,
    parse_security_descriptor,
    sid_from_bytes,
    sid_to_bytes,
    speaks_for,
)

if TYPE_CHECKING:   # imported when the Kerberos bind is first used
    from bot.core.kerberos import Login


# --- Exchange's constants (ReceiveConnector.cs, AuthMechanisms.cs, ServerRole.cs,
# WellKnownPermission.cs) -------------------------------------------------------------------------
SUBMIT = uuid.UUID("a18293f1-0685-4540-aa63-e32df421b3a2")  # ms-Exch-SMTP-Submit (not Send-As!)
ACCEPT_ANY_RECIPIENT = uuid.UUID("5c82f031-4e4c-4326-88e1-8c4f0cad9de5")
ACCEPT_ANY_SENDER = uuid.UUID("b857b50b-94a2-4b53-93f6-41cebd2fced0")
ACCEPT_AUTHORITATIVE_DOMAIN_SENDER = uuid.UUID("c22841f4-96cb-498a-ac02-f9a87c74eb14")
BYPASS_ANTI_SPAM = uuid.UUID("d19299b4-86c2-4c9a-8fa7-acb70c63023a")
ACCEPT_ROUTING_HEADERS = uuid.UUID("04031f4f-7c36-43ea-9b49-4bd0f5f1e6af")

EVERYONE = "S-1-1-0"
NETWORK = "S-1-5-2"
ANONYMOUS_LOGON = "S-1-5-7"
AUTHENTICATED_USERS = "S-1-5-11"
THIS_ORGANIZATION = "S-1-5-15"
WELL_KNOWN = {EVERYONE: "Everyone", NETWORK: "NT AUTHORITY\\NETWORK",
              ANONYMOUS_LOGON: "NT AUTHORITY\\ANONYMOUS LOGON",
              AUTHENTICATED_USERS: "NT AUTHORITY\\Authenticated Users",
              THIS_ORGANIZATION: "NT AUTHORITY\\This Organization",
              "S-1-5-18": "NT AUTHORITY\\SYSTEM", "S-1-5-32-544": "BUILTIN\\Administrators",
              "S-1-5-32-545": "BUILTIN\\Users"}

#: The permission groups Exchange derives from a connector's DACL (it stores no attribute for
#: them): a group is set when its SID is allowed every one of its rights. ExchangeServers and
#: ExchangeLegacyServers name forest-specific groups and are not reported. Partners has a fixed
#: SID (S-1-9-1419165041-1139599005-3936102811-1022490595-10, DOMAIN.md 6), but the rights it
#: stands for are not in our evidence, so it is not derived either; the advice never builds a
#: -PermissionGroups list from these (bot.exchange.advice reads the connector's live list).
PERMISSION_GROUPS = {
    "AnonymousUsers": (ANONYMOUS_LOGON, (SUBMIT, ACCEPT_ANY_SENDER,
                                         ACCEPT_AUTHORITATIVE_DOMAIN_SENDER,
                                         ACCEPT_ROUTING_HEADERS)),
    "ExchangeUsers": (AUTHENTICATED_USERS, (SUBMIT, ACCEPT_ANY_RECIPIENT, BYPASS_ANTI_SPAM,
                                            ACCEPT_ROUTING_HEADERS)),
}
ROLES = {32: "HubTransport", 16384: "FrontendTransport"}
AUTH_MECHANISMS = ((1, "Tls"), (2, "Integrated"), (4, "BasicAuth"), (8, "BasicAuthRequireTLS"),
                   (16, "ExchangeServer"), (32, "ExternalAuthoritative"))
#: msExchSMTPReceiveInboundSecurityFlag when unset: Exchange's default (Tls, BasicAuth,
#: BasicAuthRequireTLS, ExchangeServer).
DEFAULT_SECURITY_FLAGS = 29
CONNECTOR_CLASS = "msExchSmtpReceiveConnector"
CONNECTOR_ATTRIBUTES = ("cn", "msExchSmtpReceiveBindings", "msExchSmtpReceiveRemoteIPRanges",
                        "msExchSMTPReceiveInboundSecurityFlag", "msExchSmtpReceiveRole",
                        "msExchSmtpReceiveEnabled", "msExchSMTPReceiveConnectorFQDN",
                        "nTSecurityDescriptor")
#: The SD-flags control's value: DACL_SECURITY_INFORMATION only (MS-ADTS 3.1.1.3.4.1.11).
DACL_ONLY = 0x04
_ACCOUNT_DISABLE = 0x2  # userAccountControl
#: An account name that is a SID string, as Exchange logs an account it cannot name.
_SID_TEXT = re.compile(r"S-1-\d+(?:-\d+)+", re.IGNORECASE | re.ASCII)

# --- AD's reasons for a failed bind (the "data NNN" in the message), in words ---------------
_BIND_REASONS = {"525": "no such user", "52e": "wrong password",
                 "530": "the account may not log on at this time",
                 "531": "the account may not log on from this computer",
                 "532": "the password has expired", "533": "the account is disabled",
                 "701": "the account has expired",
                 "773": "the password must be changed before the next logon",
                 "775": "the account is locked out"}

class DirectoryError(Exception):
    """The directory could not answer. The message says why in words; `fix` holds commands an
    admin can run (a read-only delegation), one per line, when that is what would help."""

    def __init__(self, message: str, fix: Iterable[str] = ()):
        super().__init__(inert(message))
        self.fix = tuple(fix)


# --- what the directory says --------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    sid: str
    name: str | None  # None: the SID could not be resolved to a name

    def __str__(self) -> str:
        return f"{self.name} ({self.sid})" if self.name else self.sid


@dataclass(frozen=True)
class Account:
    query: str               # the name as asked for (DOMAIN\user, UPN, sAMAccountName or SID)
    dn: str
    sam_account_name: str
    user_principal_name: str | None
    sid: str
    disabled: bool
    groups: tuple[Principal, ...]  # tokenGroups: every group, nested ones too, by SID
    #: sIDHistory: the account's SIDs from domains it was migrated from (empty when it has none,
    #: or when the reader may not read the attribute).
    sid_history: tuple[str, ...] = ()
    domain: str = ""         # the DNS name of the account's domain (the bound DC's)
    netbios: str | None = None  # its NetBIOS name, when the directory gives it

    @property
    def qualified_name(self) -> str:
        """DOMAIN\\sAMAccountName, as Exchange logs a name it resolved (the bare
        sAMAccountName when the domain's NetBIOS name could not be read)."""
        return (f"{self.netbios}\\{self.sam_account_name}" if self.netbios
                else self.sam_account_name)

    @property
    def rid(self) -> int:
        return int(self.sid.rsplit("-", 1)[1])

    @property
    def is_builtin_admin(self) -> bool:
        """The domain's built-in Administrator, whatever it is named now: the RID decides."""
        return self.sid.startswith("S-1-5-21-") and self.rid == 500

    @property
    def is_guest(self) -> bool:
        return self.sid.startswith("S-1-5-21-") and self.rid == 501

    @property
    def token(self) -> frozenset[str]:
        """The SIDs of the token Exchange checks, as far as this directory tells. Exchange's
        token comes from a NetworkCleartext logon (DOMAIN.md 6): the account's SID and its
        sIDHistory, its groups (tokenGroups: the primary group and every group, nested ones
        too), Everyone, NETWORK (S-1-5-2, the logon type), and, for any logon but the Guest's,
        Authenticated Users and This Organization (S-1-5-15); tokenGroups lists none of these
        well-known SIDs, nor the account's sIDHistory. (Whether a Guest token holds This
        Organization is not proven; it is moot, as Exchange refuses Guest before it looks at
        permissions.)

        Not here, because the bound DC cannot tell: the domain-local groups of the Exchange
        server's domain when that is not the account's domain (tokenGroups covers the DC's own
        domain only). submit_right says "unknown" when a Deny for a group of another domain
        could decide."""
        authenticated = () if self.is_guest else (AUTHENTICATED_USERS, THIS_ORGANIZATION)
        return frozenset({self.sid, *self.sid_history, EVERYONE, NETWORK, *authenticated,
                          *(g.sid for g in self.groups)})

    def name_of(self, sid: str) -> str:
        if sid == self.sid:
            return self.sam_account_name
        if sid in self.sid_history:
            return f"{self.sam_account_name} (sIDHistory)"
        for group in self.groups:
            if group.sid == sid and group.name:
                return group.name
        return WELL_KNOWN.get(sid, sid)


@dataclass(frozen=True)
class Connector:
    server: str
    name: str
    dn: str
    enabled: bool               # msExchSmtpReceiveEnabled; unset counts as enabled (Exchange's)
    bindings: tuple[str, ...]
    remote_ip_ranges: tuple[str, ...]
    role_value: int | None
    security_flags: int | None  # msExchSMTPReceiveInboundSecurityFlag as stored (None: unset)
    fqdn: str | None
    security_descriptor: SecurityDescriptor | None
    #: Why the DACL is unknown (None when it was read): shown instead of a right.
    dacl_problem: str | None = None

    @property
    def dacl_readable(self) -> bool:
        return self.security_descriptor is not None

    @property
    def role(self) -> str | None:
        if self.role_value is None:
            return None
        return ROLES.get(self.role_value, f"role {self.role_value}")

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        flags = DEFAULT_SECURITY_FLAGS if self.security_flags is None else self.security_flags
        names = [name for bit, name in AUTH_MECHANISMS if flags & bit]
        return tuple(names) if names else ("None",)

    @property
    def permission_groups(self) -> tuple[str, ...] | None:
        """The permission groups the DACL proves (None: the DACL could not be read)."""
        sd = self.security_descriptor
        if sd is None:
            return None
        return tuple(group for group, (sid, rights) in PERMISSION_GROUPS.items()
                     if all(check_extended_right(sd, {sid}, right).allowed for right in rights))


Status = Literal["granted", "denied", "not granted", "unknown"]


@dataclass(frozen=True)
class Right:
    status: Status
    ace: Ace | None = None       # the ACE that decided (granted or denied)
    via: Principal | None = None  # whose ACE it is: the account itself, a group, a well-known SID
    explicit: bool = False       # the ACE names the account itself
    text: str = ""               # the finding in one sentence

    def __str__(self) -> str:
        return self.text


def submit_right(account: Account, connector: Connector) -> Right:
    """ms-Exch-SMTP-Submit for the account on the connector, as AuthZ decides it against the
    account's token (Account.token), naming the entry that decides (pure). An entry for one of
    the account's sIDHistory SIDs counts as naming the account itself (`explicit`).

    "unknown" when the DACL could not be read, the token groups could not be read, or a Deny
    for Submit names a domain SID of another domain than the account's that the token does not
    hold, ahead of the entry that would decide (or anywhere, when none would): the account may
    be in it through a domain-local group of the Exchange server's domain, which this DC does
    not list. Never "granted" or "not granted" then, as either could be wrong."""
    where = f"{connector.server}\\{connector.name}"
    sd = connector.security_descriptor
    if sd is None:
        return Right("unknown", text=f"unknown on {where}: {connector.dacl_problem}")
    if not account.groups:   # every account has its primary group: these were not readable
        return Right("unknown", text=f"unknown on {where}: the directory gave no token groups "
                     f"for {account.sam_account_name} (the account SubmitWatch reads as may "
                     "not read them), so a grant or a Deny through a group cannot be seen")
    decision = check_extended_right(sd, account.token, SUBMIT)
    ace = decision.ace
    if decision.allowed is None:
        right = Right("not granted", text=f"not granted on {where}: no entry in its DACL gives "
                      f"ms-Exch-SMTP-Submit to {account.sam_account_name} or any of its "
                      f"{len(account.groups)} group(s)"
                      f"{', its sIDHistory' if account.sid_history else ''}, Everyone, "
                      "Authenticated Users, NETWORK or This Organization")
    elif ace is None:  # a NULL DACL
        return Right("granted", text=f"granted on {where}: the connector has a NULL DACL, "
                     "which lets everyone do anything")
    else:
        via = Principal(ace.sid, account.name_of(ace.sid))
        former = ace.sid in account.sid_history
        explicit = ace.sid == account.sid or former
        by_former = f" by its former SID {ace.sid} (sIDHistory)" if former else ""
        inherited = ", inherited from a parent container" if ace.inherited else ""
        if not decision.allowed:
            whom = (f"the account itself{by_former}" if explicit
                    else f"{via.name} ({ace.sid})")
            return Right("denied", ace, via, explicit,
                         f"denied on {where} by a Deny entry for {whom}{inherited}, which "
                         f"comes first and wins over any grant: {ace.sddl()}")
        whom = (f"explicitly to the account{by_former}" if explicit
                else f"through {via.name} ({ace.sid})")
        right = Right("granted", ace, via, explicit,
                      f"granted on {where} {whom}{inherited}: {ace.sddl()}")
    hidden = _other_domain_denies(account, sd, decision.index)
    if not hidden:
        return right
    domain = account.domain or "the DC's own domain"
    more = f" (and {len(hidden) - 1} more such entries)" if len(hidden) > 1 else ""
    if right.status != "granted":
        otherwise = "no entry would grant the account Submit either"
    elif right.explicit:
        otherwise = "the account would be granted Submit by an entry for itself"
    else:
        otherwise = f"the account would be granted Submit through {right.via}"
    return Right("unknown", text=(
        f"unknown on {where}: a Deny entry for {hidden[0].sid}, a group of another domain, "
        f"may apply{more}: SubmitWatch reads the groups of {domain} only (a DC lists the "
        "groups of its own domain), and Exchange's token also holds the domain-local groups of "
        "the Exchange server's domain, so whether the account is in it cannot be seen here; "
        f"without it, {otherwise}: {hidden[0].sddl()}"))


def _other_domain_denies(account: Account, sd: SecurityDescriptor,
                         before: int | None) -> list[Ace]:
    """The Deny entries for Submit ahead of the entry at `before` (all of them when None)
    that name a SID of a domain other than the account's which its token does not hold."""
    own = _domain_of(account.sid)
    token = account.token
    return [ace for ace in (sd.dacl or ())[:before]
            if ace.is_deny and ace.sid not in token and speaks_for(ace, SUBMIT)
            and _domain_of(ace.sid) not in (None, own)]


def _domain_of(sid: str) -> str | None:
    """S-1-5-21-a-b-c for a domain account's or group's SID S-1-5-21-a-b-c-RID, else None."""
    parts = sid.upper().split("-")
    if len(parts) == 8 and parts[:4] == ["S", "1", "5", "21"]:
        return "-".join(parts[:7])
    return None


def delegation_commands(user: str, protocols_dns: Iterable[str]) -> list[str]:
    """The one-time, read-only delegation that lets `user` read connectors and their DACLs:
    generic read (read properties, list, read permissions) on each server's CN=Protocols and
    everything below it. Either line does it; nothing in it allows a write."""
    lines = []
    for dn in protocols_dns:
        lines.append(f'dsacls "{dn}" /I:T /G "{user}:GR"')
        lines.append(f'Add-ADPermission -Identity "{dn}" -User "{user}" '
                     "-AccessRights GenericRead -InheritanceType All")
    return lines


# --- the links: one LDAP library per bind, the same answers ---------------------------------

#: The least SASL security layer the Kerberos bind accepts, in bits (Cyrus SASL's SSF): 56 and
#: more is encryption (sealing), which signs as well; 1 would be signing alone.
SEALED = 56


@dataclass
class _Answer:
    """One search's outcome, whichever library carried it: the LDAP result code (0 success,
    10 referral, 32 noSuchObject, 50 insufficientAccessRights...) and the entries as
    {'dn': str, 'attributes': {name: [bytes, ...]}} (names case-insensitive)."""
    code: int | None
    description: str = ""
    message: str = ""
    referrals: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)


class _Broken(Exception):
    """The connection failed under a search; its message is already in words."""


class _Link(Protocol):
    """A bound, read-only connection: it searches, and nothing else."""

    def search(self, base: str, ldap_filter: str, scope: str, attributes: list[str],
               sd_control: bool) -> _Answer: ...

    def close(self) -> None: ...


class _Ldap3Link:
    """SIMPLE over LDAPS with ldap3, opened read_only."""

    def __init__(self, conn: ldap3.Connection, url: str, config: DirectoryConfig):
        self.conn, self.url, self.config = conn, url, config

    def search(self, base: str, ldap_filter: str, scope: str, attributes: list[str],
               sd_control: bool) -> _Answer:
        conn = self.conn
        controls = security_descriptor_control(sdflags=DACL_ONLY) if sd_control else None
        try:
            conn.search(base, ldap_filter, scope, attributes=attributes, controls=controls)
        except (ldap_errors.LDAPException, OSError) as exc:
            raise _Broken(_transport_problem(self.url, self.config, exc)) from None
        result = conn.result
        return _Answer(result.get("result"), str(result.get("description") or ""),
                       str(result.get("message") or ""), list(result.get("referrals") or []),
                       [{"dn": r["dn"], "attributes": r.get("raw_attributes", {})}
                        for r in conn.response or [] if r.get("type") == "searchResEntry"])

    def close(self) -> None:
        self.conn.unbind()


class _KerberosLink:
    """SASL GSSAPI, sealed, with python-ldap (libldap + Cyrus SASL): Kerberos as the
    [kerberos] principal. The security layer wraps every request after the bind."""

    def __init__(self, conn: Any, url: str, config: DirectoryConfig, ssf: int):
        self.conn, self.url, self.config, self.ssf = conn, url, config, ssf

    def search(self, base: str, ldap_filter: str, scope: str, attributes: list[str],
               sd_control: bool) -> _Answer:
        import ldap
        from ldap.controls import LDAPControl
        # the SD-flags control's value, BER: SEQUENCE { INTEGER DACL_ONLY }
        controls = [LDAPControl(SD_FLAGS_OID, True,
                                encodedControlValue=bytes((0x30, 3, 2, 1, DACL_ONLY)))
                    ] if sd_control else None
        scopes = {ldap3.BASE: ldap.SCOPE_BASE, ldap3.LEVEL: ldap.SCOPE_ONELEVEL,
                  ldap3.SUBTREE: ldap.SCOPE_SUBTREE}
        try:
            msgid = self.conn.search_ext(base, scopes[scope], ldap_filter, attributes,
                                         serverctrls=controls)
            _, data, _, _ = self.conn.result3(msgid, timeout=self.config.read_timeout)
        except ldap.REFERRAL as exc:
            return _Answer(10, "referral", referrals=_referrals(_info(exc)))
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE,
                ldap.BUSY) as exc:
            raise _Broken(_kerberos_problem(self.url, self.config, exc)) from None
        except ldap.LDAPError as exc:
            detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            return _Answer(detail.get("result", -1), _description(exc), _info(exc))
        entries = [{"dn": dn, "attributes": CaseInsensitiveDict(values)}
                   for dn, values in data if dn is not None]   # None: a search reference
        return _Answer(0, "success", entries=entries)

    def close(self) -> None:
        self.conn.unbind_s()


SD_FLAGS_OID = "1.2.840.113556.1.4.801"   # LDAP_SERVER_SD_FLAGS_OID (MS-ADTS 3.1.1.3.4.1.11)

# --- the reader ---------------------------------------------------------------------------------

class Directory:
    """One read-only LDAP connection to the first DC of `config.urls` that answers. `login`:
    the Kerberos login to use for auth 'kerberos' (the process's one for [kerberos] when None)."""

    def __init__(self, config: DirectoryConfig, login: Login | None = None):
        self.config = config
        self.url: str | None = None
        #: Who is bound and how, in words (for `check`), once connected.
        self.bound_as: str | None = None
        self._login = login
        self._link: _Link | None = None
        self._root: dict[str, str] = {}
        self._domains: set[str] | None = None
        self._netbios: str | None = None
        self._servers: dict[str, str] = {}  # server name (casefolded) -> its DN

    def __enter__(self) -> Directory:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._link is not None:
            try:
                self._link.close()
            except Exception:  # closing a broken connection: nothing to tell
                pass
            self._link = None

    # connecting

    def connect(self) -> None:
        """Bind to the first URL that accepts us; DirectoryError lists what each one said."""
        if self._link is not None:
            return
        config = self.config
        if config.auth == "kerberos":
            self._kerberos_ticket()
        elif config.password is None:
            raise DirectoryError(f"the directory password is not set: put it in the environment "
                                 f"variable {config.password_env} (or a file named by "
                                 f"{config.password_env}_FILE)")
        problems = []
        for url in config.urls:
            try:
                self._link = (self._bind_kerberos(url) if config.auth == "kerberos"
                              else self._bind(url))
                self.url = url
                return
            except DirectoryError as exc:
                problems.append(str(exc))
                if _is_credentials_problem(exc):
                    break  # the same account on every DC: do not lock it out trying them all
        raise DirectoryError("; ".join(problems))

    def _bind(self, url: str) -> _Link:
        config = self.config
        assert config.password is not None
        tls = urlsplit(url).scheme == "ldaps"
        try:   # a wrong ca_file fails here already, in ldap3's own words
            server = ldap3.Server(
                url, get_info=ldap3.NONE, connect_timeout=config.connect_timeout,
                tls=ldap3.Tls(validate=ssl.CERT_REQUIRED if config.verify_tls
                              else ssl.CERT_NONE, ca_certs_file=config.ca_file) if tls else None)
            conn = ldap3.Connection(server, user=config.user, password=config.password.reveal(),
                                    authentication=ldap3.SIMPLE, read_only=True,
                                    check_names=False, raise_exceptions=False,
                                    auto_referrals=False,
                                    # whole seconds: ldap3 packs it into SO_RCVTIMEO as such
                                    receive_timeout=math.ceil(config.read_timeout))
            conn.open()
            bound = conn.bind()
        except (ldap_errors.LDAPException, OSError, ValueError) as exc:
            raise DirectoryError(_transport_problem(url, config, exc)) from None
        if not bound:
            raise DirectoryError(_bind_problem(url, config, conn.result))
        self.bound_as = (f"{config.user} (SIMPLE bind over TLS)" if tls else
                         f"{config.user} (SIMPLE bind without TLS: the password crossed the "
                         "network in clear)")
        return _Ldap3Link(conn, url, config)

    def _kerberos_ticket(self) -> None:
        """SubmitWatch's ticket, in its private cache (got or renewed when needed), or
        DirectoryError in words: the same for every DC, so none is tried without it."""
        kerberos = self.config.kerberos
        if kerberos is None:
            raise DirectoryError("auth 'kerberos' needs a [kerberos] table naming SubmitWatch's "
                                 "principal and its keytab or password_env (docs/kerberos.md)")
        try:
            # The process's one login for this identity, shared with WinRM's Kerberos: one
            # cache, renewed under one lock.
            from bot.core.kerberos import KerberosError, login_for
            login = self._login or login_for(kerberos)
            login.ensure()
        except ImportError as exc:
            raise DirectoryError(_needs_extra(exc)) from None
        except KerberosError as exc:
            raise DirectoryError(f"no Kerberos ticket for {kerberos.principal}: {exc}") from None

    def _bind_kerberos(self, url: str) -> _Link:
        config = self.config
        assert config.kerberos is not None
        try:
            import ldap
            import ldap.sasl
        except ImportError as exc:
            raise DirectoryError(_needs_extra(exc)) from None
        try:
            conn = ldap.initialize(url)
            for option, value in ((ldap.OPT_PROTOCOL_VERSION, 3), (ldap.OPT_REFERRALS, 0),
                                  (ldap.OPT_NETWORK_TIMEOUT, config.connect_timeout),
                                  (ldap.OPT_TIMEOUT, config.read_timeout),
                                  # the SPN is ldap/<the URL's host>, not a reverse lookup's
                                  (ldap.OPT_X_SASL_NOCANON, 1),
                                  (ldap.OPT_X_SASL_SSF_MIN, SEALED)):
                conn.set_option(option, value)
            conn.sasl_interactive_bind_s("", ldap.sasl.gssapi())
            ssf = int(conn.get_option(ldap.OPT_X_SASL_SSF) or 0)
        except ldap.LDAPError as exc:
            raise DirectoryError(_kerberos_problem(url, config, exc)) from None
        if ssf < SEALED:   # Cyrus enforces SSF_MIN; this says so should it ever not
            conn.unbind_s()
            raise DirectoryError(f"{url}: the Kerberos bind gave a {ssf}-bit security layer, "
                                 f"less than the {SEALED} bits of a sealed connection")
        self.bound_as = (f"{config.kerberos.principal} (Kerberos bind, signed and sealed: SASL "
                         f"GSSAPI with a {ssf}-bit security layer)")
        return _KerberosLink(conn, url, config, ssf)

    # reading

    def _search(self, base: str, ldap_filter: str, scope: str, attributes: Iterable[str],
                sd_control: bool = False, missing_ok: bool = True) -> list[dict[str, Any]]:
        """Entries as {'dn': str, 'attributes': {name: [bytes, ...]}} (names case-insensitive);
        an absent base gives [] when missing_ok. Every other failure is a DirectoryError."""
        self.connect()
        link = self._link
        assert link is not None
        try:
            answer = link.search(base, ldap_filter, scope, list(attributes), sd_control)
        except UnicodeError:   # a name with a lone surrogate cannot be sent at all
            raise DirectoryError(f"{self.url}: {base} or the name looked up is not valid text "
                                 "(it holds characters UTF-8 cannot carry)") from None
        except _Broken as exc:
            self.close()  # the connection's state is unknown now: the next call opens afresh
            raise DirectoryError(str(exc)) from None
        code = answer.code
        if code == 32 and missing_ok:  # noSuchObject (or not visible to this account)
            return []
        if code == 10:
            raise DirectoryError(f"{self.url}: the DC answered with a referral to "
                                 f"{', '.join(answer.referrals or ['another server'])} "
                                 f"for {base}: it does not hold that part of the directory (an "
                                 "account in another domain? use a global catalog or that "
                                 "domain's DC)")
        if code == 50:
            raise DirectoryError(f"{self.url}: the account {self.config.user} may not read "
                                 f"{base} (insufficientAccessRights)")
        if code not in (0, None):
            raise DirectoryError(f"{self.url}: searching {base} failed: "
                                 f"{answer.description} {answer.message}".rstrip())
        return answer.entries

    def _root_dse(self) -> dict[str, str]:
        if not self._root:
            entries = self._search("", "(objectClass=*)", ldap3.BASE,
                                   ["configurationNamingContext", "defaultNamingContext",
                                    "dnsHostName"])
            values = entries[0]["attributes"] if entries else {}
            self._root = {k: _text(values, k) or "" for k in (
                "configurationNamingContext", "defaultNamingContext", "dnsHostName")}
            if not self._root["configurationNamingContext"]:
                raise DirectoryError(f"{self.url}: the RootDSE names no configuration partition "
                                     "(is this an Active Directory domain controller?)")
        return self._root

    def config_base(self) -> str:
        return self._root_dse()["configurationNamingContext"]

    def default_base(self) -> str:
        return self._root_dse()["defaultNamingContext"]

    def domain_names(self) -> set[str]:
        """The names a DOMAIN\\user prefix may give for the bound DC's own domain: its NetBIOS
        name (from its crossRef under CN=Partitions) and its DNS name, casefolded."""
        if self._domains is None:
            base = self.default_base()
            names = {_dns_name(base).casefold()}
            for entry in self._search(f"CN=Partitions,{self.config_base()}",
                                      f"(&(objectClass=crossRef)(nCName={escape_filter_chars(base)}))",
                                      ldap3.SUBTREE, ["nETBIOSName"]):
                netbios = _texts(entry["attributes"], "nETBIOSName")
                names.update(n.casefold() for n in netbios)
                self._netbios = self._netbios or next(iter(netbios), None)
            self._domains = names
        return self._domains

    def netbios_name(self) -> str | None:
        """The bound DC's domain's NetBIOS name as the directory spells it (CORP), the prefix
        of DOMAIN\\user names; None when the account may not read its crossRef."""
        self.domain_names()
        return self._netbios

    def domain_dns_name(self) -> str:
        """The bound DC's domain's DNS name (corp.contoso.com)."""
        return _dns_name(self.default_base())

    def exchange_base(self) -> str:
        return f"CN=Microsoft Exchange,CN=Services,{self.config_base()}"

    def server_dn(self, server: str) -> str | None:
        """CN=<server>,CN=Servers,CN=<admin group>,... in any organization and administrative
        group (None when there is none the account can see)."""
        key = server.casefold()
        if key not in self._servers:
            entries = self._search(self.exchange_base(),
                                   f"(cn={escape_filter_chars(server)})", ldap3.SUBTREE, ["cn"])
            found = [e["dn"] for e in entries
                     if e["dn"].split(",", 2)[1].casefold() == "cn=servers"]
            if not found:
                return None
            self._servers[key] = found[0]
        return self._servers[key]

    def protocols_dn(self, server: str) -> str:
        dn = self.server_dn(server)
        if dn is None:
            raise DirectoryError(
                f"no Exchange server named {server} under {self.exchange_base()} that "
                f"{self.config.user} can see: check the name (the server's, as Exchange knows "
                "it), or that the account may read the configuration partition")
        return f"CN=Protocols,{dn}"

    def connectors(self, server: str) -> list[Connector]:
        """Every Receive connector of the server, each with its DACL when readable."""
        protocols = self.protocols_dn(server)
        entries = self._search(protocols, f"(objectClass={CONNECTOR_CLASS})", ldap3.SUBTREE,
                               CONNECTOR_ATTRIBUTES, sd_control=True, missing_ok=True)
        if not entries and not self._search(protocols, "(objectClass=*)", ldap3.BASE, ["cn"]):
            raise DirectoryError(
                f"{self.config.user} may not read {protocols}, where {server}'s Receive "
                "connectors are. An admin can grant read-only access with one of:",
                delegation_commands(self.config.user, [protocols]))
        connectors = [self._connector(server, e) for e in entries]
        return sorted(connectors, key=lambda c: c.name.casefold())

    def connector(self, server: str, name: str) -> Connector | None:
        """The connector of that name on the server, or None when it has no such connector.
        A server where no connector at all is visible raises instead: every Exchange server
        has its default ones, so that is the account's view, not the truth."""
        connectors = self.connectors(server)
        if not connectors:
            protocols = self.protocols_dn(server)
            raise DirectoryError(
                f"{self.config.user} sees no Receive connector of {server} under {protocols} "
                "(every Exchange server has some): it may not list them. An admin can grant "
                "read-only access with one of:",
                delegation_commands(self.config.user, [protocols]))
        for connector in connectors:
            if connector.name.casefold() == name.casefold():
                return connector
        return None

    def _connector(self, server: str, entry: dict[str, Any]) -> Connector:
        a = entry["attributes"]
        raw_sd = a.get("nTSecurityDescriptor") or []
        sd, problem = None, None
        if raw_sd:
            try:
                sd = parse_security_descriptor(raw_sd[0])
                if not sd.dacl_present:
                    sd, problem = None, "the DC returned the descriptor without its DACL"
            except SecurityDescriptorError as exc:
                problem = f"its security descriptor could not be read: {exc}"
        else:
            problem = (f"{self.config.user} may not read the connector's security descriptor "
                       "(it needs READ_CONTROL, which generic read includes)")
        enabled = _text(a, "msExchSmtpReceiveEnabled")
        return Connector(
            server=server, name=_text(a, "cn") or entry["dn"].split(",", 1)[0][3:],
            dn=entry["dn"], enabled=(enabled or "TRUE").upper() == "TRUE",
            bindings=_texts(a, "msExchSmtpReceiveBindings"),
            remote_ip_ranges=_texts(a, "msExchSmtpReceiveRemoteIPRanges"),
            role_value=_int(a, "msExchSmtpReceiveRole"),
            security_flags=_int(a, "msExchSMTPReceiveInboundSecurityFlag"),
            fqdn=_text(a, "msExchSMTPReceiveConnectorFQDN"),
            security_descriptor=sd, dacl_problem=problem)

    def account(self, name: str) -> Account | None:
        """The user account behind a name as Exchange logs it: DOMAIN\\user, user@upn, a
        bare sAMAccountName, or a SID string (S-1-5-21-...: what Exchange logs when it cannot
        resolve the name), looked up by objectSid; searched in the bound DC's own domain
        (None: no such account). Computer accounts are user objects too (NAME$)."""
        base = self.default_base()
        name = name.strip()
        if is_sid(name):
            try:   # written out again as SIDs are (S upper case, no leading zeros)
                sid = sid_from_bytes(sid_to_bytes(name.upper()))[0]
            except SecurityDescriptorError:
                return None   # shaped like a SID, but none can be: no account has it
            return self._account(name, base, [f"(objectSid={sid})"])
        domain = name.split("\\", 1)[0] if "\\" in name else None
        if domain and domain.casefold() not in self.domain_names():
            # Looking it up here would find a namesake in this domain: the wrong account.
            raise DirectoryError(
                f"{name} is an account of the domain {domain}, and {self.url} serves "
                f"{_dns_name(base)}: SubmitWatch looks accounts up in the domain of the DC it "
                f"reads only. Point [directory] urls at a DC of {domain} to check this one")
        if "\\" in name:
            filters = [f"(sAMAccountName={escape_filter_chars(name.split(chr(92), 1)[1])})"]
        elif "@" in name:
            local, suffix = name.rsplit("@", 1)
            filters = [f"(userPrincipalName={escape_filter_chars(name)})"]
            # the implicit UPN, sAMAccountName@dns-domain, logs on without being stored
            if suffix.casefold() == _dns_name(base).casefold():
                filters.append(f"(sAMAccountName={escape_filter_chars(local)})")
        else:
            filters = [f"(sAMAccountName={escape_filter_chars(name)})"]
        return self._account(name, base, filters)

    def _account(self, name: str, base: str, filters: list[str]) -> Account | None:
        """The first user found by these filters, in order, with its SIDs and token groups."""
        entries: list[dict[str, Any]] = []
        for ldap_filter in filters:
            entries = self._search(base, f"(&(objectClass=user){ldap_filter})", ldap3.SUBTREE,
                                   ["cn"])
            if entries:
                break
        if not entries:
            return None
        dn = entries[0]["dn"]
        # tokenGroups is constructed: AD computes it only for a BASE search on the object.
        found = self._search(dn, "(objectClass=*)", ldap3.BASE,
                             ["objectSid", "tokenGroups", "sAMAccountName", "userPrincipalName",
                              "userAccountControl", "sIDHistory"], missing_ok=False)
        a = found[0]["attributes"] if found else {}
        if not a.get("objectSid"):
            raise DirectoryError(f"{self.config.user} may not read the objectSid of {dn}")
        group_sids = [_sid(v) for v in a.get("tokenGroups") or []]
        return Account(query=name, dn=dn, sam_account_name=_text(a, "sAMAccountName") or name,
                       user_principal_name=_text(a, "userPrincipalName"),
                       sid=_sid(a["objectSid"][0]),
                       disabled=bool((_int(a, "userAccountControl") or 0) & _ACCOUNT_DISABLE),
                       groups=tuple(self._names(group_sids)),
                       sid_history=tuple(_sid(v) for v in a.get("sIDHistory") or []),
                       domain=_dns_name(base), netbios=self.netbios_name())

    def _names(self, sids: list[str]) -> list[Principal]:
        """The SIDs with the names the directory gives them (builtin ones live in the domain
        partition too, under CN=Builtin); a SID the account may not resolve keeps no name."""
        names: dict[str, str] = {}
        for start in range(0, len(sids), 50):  # bounded filters for accounts in many groups
            chunk = sids[start:start + 50]
            entries = self._search(self.default_base(),
                                   "(|" + "".join(f"(objectSid={s})" for s in chunk) + ")",
                                   ldap3.SUBTREE, ["objectSid", "sAMAccountName"])
            for e in entries:
                if e["attributes"].get("objectSid"):
                    sid = _sid(e["attributes"]["objectSid"][0])
                    names[sid] = _text(e["attributes"], "sAMAccountName") or e["dn"]
        return [Principal(s, names.get(s) or WELL_KNOWN.get(s)) for s in sids]

    # the check

    def descriptors_without_control(self, server: str) -> int:
        """How many of the server's connectors return a security descriptor when the search
        does not send the SD-flags control (0 for a non-admin on Windows and Samba alike)."""
        entries = self._search(self.protocols_dn(server), f"(objectClass={CONNECTOR_CLASS})",
                               ldap3.SUBTREE, ["nTSecurityDescriptor"])
        return sum(1 for e in entries if e["attributes"].get("nTSecurityDescriptor"))


CheckLine = tuple[str, str]  # (status, text): status is "OK", "WARNING", "FAILED" or "FIX"


def check_access(directory: Directory, servers: Iterable[str],
                 account: str | None = None) -> list[CheckLine]:
    """What the directory account can read, for `check`: the configuration partition, the
    connectors of each server and their DACLs (with and without the SD-flags control), and the
    token groups of `account` (the bind account itself when None). Never raises."""
    config = directory.config
    lines: list[CheckLine] = []
    try:
        directory.connect()
        lines.append(("OK", f"directory: {directory.url} accepted {directory.bound_as}"))
        base = directory.config_base()
        if not directory._search(base, "(objectClass=*)", ldap3.BASE, ["cn"]):
            lines.append(("FAILED", f"directory: {config.user} cannot read the configuration "
                                    f"partition {base}"))
            return lines
        lines.append(("OK", f"directory: the configuration partition {base} is readable"))
    except DirectoryError as exc:
        return [*lines, ("FAILED", f"directory: {exc}"), *(("FIX", f) for f in exc.fix)]
    unreadable: list[str] = []
    for server in servers:
        try:
            connectors = directory.connectors(server)
        except DirectoryError as exc:
            lines += [("FAILED", f"directory: {server}: {exc}"), *(("FIX", f) for f in exc.fix)]
            continue
        if not connectors:
            lines.append(("FAILED", f"directory: {server}: no Receive connector is visible under "
                                    f"{directory.protocols_dn(server)} (every Exchange server "
                                    "has some): the account may not list them"))
            unreadable.append(directory.protocols_dn(server))
            continue
        names = ", ".join(c.name for c in connectors)
        lines.append(("OK", f"directory: {server}: {len(connectors)} Receive connector(s) "
                            f"readable: {names}"))
        with_dacl = [c for c in connectors if c.dacl_readable]
        try:
            plain = directory.descriptors_without_control(server)
        except DirectoryError:
            plain = 0  # the line below says what matters: whether the control gave the DACLs
        if len(with_dacl) == len(connectors):
            how = ("also without it (the account is privileged)" if plain > 0 else
                   "without it the DC returns none, as it does for any non-admin")
            lines.append(("OK", f"directory: {server}: their DACLs are readable with the "
                                f"SD-flags control (DACL only); {how}"))
        else:
            missing = [c.name for c in connectors if not c.dacl_readable]
            lines.append(("FAILED", f"directory: {server}: the security descriptor of "
                                    f"{', '.join(missing)} cannot be read, even with the "
                                    "SD-flags control: the Submit right cannot be checked"))
            unreadable.append(directory.protocols_dn(server))
    if unreadable:
        lines.append(("FAILED", "directory: an admin can grant the read-only access needed "
                                "with one of these commands per server (nothing else "
                                "SubmitWatch does needs more):"))
        lines += [("FIX", command) for command in delegation_commands(config.user, unreadable)]
    who = account or config.user
    try:
        found = directory.account(who)
        if found is None:
            lines.append(("WARNING", f"directory: no account {who} in "
                                     f"{directory.default_base()}"))
        elif not found.groups:
            lines.append(("WARNING", f"directory: {who}: SID {found.sid}, but no token groups "
                                     "could be read (every account has Domain Users): group "
                                     "grants cannot be seen"))
        else:
            lines.append(("OK", f"directory: {who}: SID {found.sid}, {len(found.groups)} token "
                                f"group(s) readable"))
    except DirectoryError as exc:
        lines.append(("FAILED", f"directory: {who}: {exc}"))
    return lines


# --- small helpers ---------------------------------------------------------------------------

def is_sid(name: str) -> bool:
    """The account name is a SID string (S-1-5-21-...), as Exchange logs an account it could
    not resolve to a name."""
    return bool(_SID_TEXT.fullmatch(name.strip()))


def _text(attributes: Mapping[str, Any], name: str) -> str | None:
    values = attributes.get(name) or []
    return values[0].decode("utf-8", "replace") if values else None


def _texts(attributes: Mapping[str, Any], name: str) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in attributes.get(name) or [])


def _int(attributes: Mapping[str, Any], name: str) -> int | None:
    text = _text(attributes, name)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _sid(value: bytes) -> str:
    try:
        return sid_from_bytes(value)[0]
    except SecurityDescriptorError as exc:
        raise DirectoryError(f"the directory returned a SID that is not one: {exc}") from None


def _dns_name(base: str) -> str:
    """DC=corp,DC=contoso,DC=com -> corp.contoso.com"""
    return ".".join(part[3:] for part in base.split(",") if part.upper().startswith("DC="))


def _is_credentials_problem(exc: DirectoryError) -> bool:
    return "rejected the credentials" in str(exc)


def _bind_problem(url: str, config: DirectoryConfig, result: Mapping[str, Any]) -> str:
    description = result.get("description") or "bind refused"
    message = str(result.get("message") or "")
    if description == "invalidCredentials":
        reason = next((words for code, words in _BIND_REASONS.items()
                       if f"data {code}" in message.lower()), "wrong user name or password")
        return (f"{url} rejected the credentials of {config.user}: {reason} (check the user and "
                f"the password in {config.password_env})")
    if description == "strongerAuthRequired":
        return (f"{url} refused a SIMPLE bind without TLS: this DC requires LDAP signing (a "
                "signed or encrypted connection), as hardened DCs do. Use ldaps://, or auth = "
                "'kerberos' (signed and sealed over ldap://)")
    return f"{url} refused the bind of {config.user}: {description} {message}".strip()


def _transport_problem(url: str, config: DirectoryConfig, exc: BaseException) -> str:
    text = str(exc)
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (636 if parts.scheme == 'ldaps' else 389)}"
    if isinstance(exc, ldap_errors.LDAPResponseTimeoutError) or "timed out" in text.lower():
        return (f"{url}: no answer within {math.ceil(config.read_timeout)}s (read_timeout): "
                "the DC is overloaded or a firewall drops the traffic")
    if _is_name_mismatch(exc, text):
        return _name_mismatch(url, config, text)
    if "certificate" in text.lower() or isinstance(exc, ssl.SSLError):
        hint = ("set directory.ca_file to the CA that issued the DC's certificate"
                if config.ca_file is None else f"is {config.ca_file} the CA that issued it, "
                f"and does the certificate name {parts.hostname}?")
        return (f"{url}: the DC's TLS certificate is not trusted ({_tls_reason(text)}): "
                f"{hint}")
    if isinstance(exc, ldap_errors.LDAPSocketOpenError):
        return f"cannot reach {url} ({where}): {_socket_reason(text)}"
    if isinstance(exc, ldap_errors.LDAPSessionTerminatedByServerError):
        return f"{url} closed the connection"
    return f"{url}: {type(exc).__name__}: {text}"


def _is_name_mismatch(exc: BaseException, text: str) -> bool:
    """The certificate is trusted but names another host than the URL's. ldap3 (2.9) checks
    the name itself and raises LDAPCertificateError "certificate {...} doesn't match any name
    in [...]" (wrapped in LDAPSocketOpenError, as text); Python's ssl, when it checks,
    raises SSLCertVerificationError with verify_code 62 ("Hostname mismatch, ...") or 64 ("IP
    address mismatch, ...")."""
    # ldap3 re-raises ssl's error as a class of both kinds, made from its text alone, so the
    # attribute may be missing although the class is ssl's
    if isinstance(exc, ssl.SSLCertVerificationError) and getattr(exc, "verify_code",
                                                                  None) in (62, 64):
        return True
    return ("doesn't match any name in" in text or "hostname mismatch" in text.lower()
            or "ip address mismatch" in text.lower())


#: ("DNS", "dc01.corp.test") and ("IP Address", "10.0.0.5") pairs, and the commonName, in the
#: certificate dict ldap3 puts in its message (ssl's getpeercert() form, as repr).
_CERT_SAN = re.compile(r"\('(DNS|IP Address)', '([^']{1,255})'\)")
_CERT_CN = re.compile(r"\('commonName', '([^']{1,255})'\)")


def _name_mismatch(url: str, config: DirectoryConfig, text: str) -> str:
    parts = urlsplit(url)
    names = _certificate_names_in(text) or _certificate_names(url, config)
    if not names:
        return (f"{url}: the DC's certificate does not name {parts.hostname}: use the name "
                "the certificate has in directory.urls")
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    dns = next((n for n in names if "*" not in n and not _is_ip(n)), None)
    port = f":{parts.port}" if parts.port else ""
    suggestion = f" ({parts.scheme}://{dns}{port})" if dns else ""
    return (f"{url}: the DC's certificate is for {shown}, not {parts.hostname}: use the name "
            f"the certificate has in directory.urls{suggestion}")


def _certificate_names_in(text: str) -> list[str]:
    """The names in the certificate ldap3 printed into its message: the subjectAltName
    entries, else the commonName (as TLS clients fall back to it)."""
    names = [value for _, value in _CERT_SAN.findall(text)] or _CERT_CN.findall(text)
    return list(dict.fromkeys(names))


def _certificate_names(url: str, config: DirectoryConfig) -> list[str]:
    """The names in the DC's certificate, read with one more TLS handshake that checks the
    chain but not the name (when the error did not carry them); [] when it cannot be read."""
    parts = urlsplit(url)
    if parts.scheme != "ldaps" or not parts.hostname:
        return []
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
        context.check_hostname = False
        with socket.create_connection((parts.hostname, parts.port or 636),
                                      timeout=config.connect_timeout) as sock, \
                context.wrap_socket(sock) as tls:
            cert: dict[str, Any] = dict(tls.getpeercert() or {})
    except (OSError, ValueError):
        return []
    names = [str(value) for kind, value in cert.get("subjectAltName", ())
             if kind in ("DNS", "IP Address")]
    if not names:
        names = [str(value) for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
    return list(dict.fromkeys(names))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _tls_reason(text: str) -> str:
    """ssl's words without ldap3's wrapping: 'unable to get local issuer certificate' from
    '("(\'socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed:
    unable to get local issuer certificate (_ssl.c:1006)\',)",)' (ldap3 nests the message in
    tuple reprs); a certificate printed whole (a dict) is never passed on."""
    text = re.sub(r"\{.*\}", "(the certificate)", text, flags=re.S)
    reason = text.rsplit("certificate verify failed:", 1)[-1]
    reason = re.sub(r"\s*\(_ssl\.c:\d+\)", "", reason).strip().strip("(\"',)").strip()
    reason = reason.removeprefix("socket ssl wrapping error:").strip()
    return reason or text.strip()


def _socket_reason(text: str) -> str:
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused (nothing listens there: wrong host or port, or the DC is down)"
    if "timed out" in lowered or "timeout" in lowered:
        return "no answer (a firewall, or the host is down)"
    if "name or service not known" in lowered or "nodename" in lowered:
        return "the host name does not resolve"
    return text


# --- the Kerberos bind's failures, in words ----------------------------------------------------

def _needs_extra(exc: ImportError) -> str:
    return ("auth 'kerberos' needs the kerberos extra (`pip install 'submitwatch[kerberos]'`: "
            "gssapi and python-ldap, built against the Debian packages libkrb5-dev libldap2-dev "
            f"libsasl2-dev; libsasl2-modules-gssapi-mit at run time): {exc}")


def _info(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(detail.get("info") or "").strip()


def _description(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(detail.get("desc") or type(exc).__name__)


def _referrals(info: str) -> list[str]:
    """libldap's text of a referral result: 'Referral:\\nldap://other.dc/...'."""
    return re.findall(r"ldaps?://\S+", info)


def _kerberos_problem(url: str, config: DirectoryConfig, exc: BaseException) -> str:
    """python-ldap's (libldap's, Cyrus SASL's, GSSAPI's) failure of the Kerberos bind or of a
    search under it, in words."""
    import ldap
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"{host}:{parts.port or 389}"
    info = _info(exc)
    spn = f"ldap/{host}"
    lowered = info.lower()
    if isinstance(exc, ldap.TIMEOUT) or "timed out" in lowered:
        return (f"{url}: no answer within {math.ceil(config.read_timeout)}s (read_timeout): "
                "the DC is overloaded or a firewall drops the traffic")
    if isinstance(exc, ldap.SERVER_DOWN | ldap.CONNECT_ERROR):
        return f"cannot reach {url} ({where}): {_unreachable(host, parts.port or 389, config)}"
    if "server not found in kerberos database" in lowered:
        return (f"{url}: the domain has no service principal {spn}, so the KDC issues no "
                f"ticket for it: a domain controller registers ldap/<its DNS name> on its "
                f"computer account (`setspn -L <DC>` lists them, `setspn -Q {spn}` shows who "
                "has this one). Name the DC in directory.urls as it is registered (an alias "
                f"needs `setspn -S {spn} <DC>`)")
    if "no worthy mechs" in lowered or "no mechanism available" in lowered:
        return (f"{url}: Cyrus SASL has no GSSAPI module: install the Debian package "
                "libsasl2-modules-gssapi-mit (or your system's Cyrus SASL GSSAPI plugin)")
    if isinstance(exc, ldap.STRONG_AUTH_REQUIRED):
        return (f"{url} refused the Kerberos bind of {config.user}: it requires a stronger "
                f"security layer than the one negotiated ({info or 'strongerAuthRequired'})")
    if isinstance(exc, ldap.INVALID_CREDENTIALS):
        said = info or "invalidCredentials"
        return (f"{url} rejected the Kerberos ticket of {config.user} ({said}): is {spn} "
                f"registered on this DC's own account (`setspn -Q {spn}`), and does the DC "
                "hold that account's current keys?")
    if "gss" in lowered or "kerberos" in lowered or "sasl" in lowered:
        from bot.core.kerberos import in_words
        return f"{url}: {in_words(_gss_minor(info), config.kerberos, service=spn, host=host)}"
    return f"{url}: {_description(exc)}{': ' + info if info else ''}"


def _unreachable(host: str, port: int, config: DirectoryConfig) -> str:
    """Why the DC cannot be reached, from one more connection attempt: libldap's own words
    lose the reason (a refused connection reads "Transport endpoint is not connected")."""
    try:
        with socket.create_connection((host, port), timeout=config.connect_timeout):
            return "the connection broke (it opens now: the DC restarted, or a firewall cut it)"
    except OSError as exc:
        return _socket_reason(str(exc) or type(exc).__name__)


def _gss_minor(info: str) -> str:
    """The GSSAPI minor status in Cyrus SASL's text ('... Minor code may provide more
    information (Clock skew too great)'), the part that names the Kerberos error."""
    minor = re.search(r"\(([^()]*)\)\s*$", info)
    return minor.group(1) if minor and minor.group(1).strip() else info

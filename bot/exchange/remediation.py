"""The Exchange Management Shell commands SubmitWatch shows for events 1018 and 1020, their
quoting, and Exchange's default Receive connectors.

The building blocks: granting ``ms-Exch-SMTP-Submit`` to one account on one connector, its
``-WhatIf`` dry run and its undo; listing a server's Receive connectors; showing what a connector
accepts; showing an account's SID.  Also the names behind them: a connector's identity
(``<SRV>\\<name>``), a server's short name, which Exchange versions are 2007/2010, the
client-submission connector and the Receive connectors setup creates per version.  Which of
these fixes what, and when (the cause, the connector's kind, what the directory shows), is
decided in bot/exchange/advice.py, which also checks a grant (``honest_verify_command``: it sees
entries through groups and a Deny through a group); this module only builds the text.

Every value that came from an event or from configuration (account, connector, server) is
untrusted text.  It goes into the command only through :func:`ps_quote`, which produces a
PowerShell single-quoted (verbatim) literal: nothing inside one is expanded, and the only
character that needs escaping is the single quote -- of which PowerShell recognises five
(``'`` and U+2018, U+2019, U+201A, U+201B; see CharTraits.cs ``IsSingleQuote``).  Each is
doubled with itself, as PowerShell's own ``EscapeSingleQuotedStringContent`` does.  Values that
no Exchange name ever contains (control characters, line breaks, bidirectional overrides) are
refused with :class:`UnsafeValueError` rather than quoted, and so are characters that draw
nothing (format characters, Hangul fillers; see bot/core/names.py), which would let a command look
exactly like another.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

from bot.core.names import describe_invisible, is_invisible

__all__ = [
    "MAX_VALUE_LENGTH",
    "PS_SINGLE_QUOTES",
    "SUBMIT_RIGHT",
    "UnsafeValueError",
    "check_value",
    "ps_quote",
    "short_server_name",
    "connector_identity",
    "is_legacy_version",
    "likely_submission_connector",
    "default_receive_connectors",
    "DefaultConnector",
    "grant_command",
    "whatif_command",
    "undo_command",
    "list_connectors_command",
    "inspect_connector_command",
    "sid_command",
    "protocol_logging_check_command",
    "protocol_logging_on_command",
]

#: The longest value ps_quote accepts, in characters.  Exchange names are far shorter
#: (sAMAccountName 20, UPN and connector names well under 1024); anything longer is not a name.
MAX_VALUE_LENGTH = 1024

#: Every character PowerShell's tokenizer treats as a single quote (CharTraits.IsSingleQuote).
PS_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")

SUBMIT_RIGHT = "ms-Exch-SMTP-Submit"

# Characters refused besides category Cc (which already covers NUL, TAB, LF, CR, U+0085 NEL).
_LINE_SEPARATORS = {"\u2028": "a line separator", "\u2029": "a paragraph separator"}
# Bidirectional controls: legal in a PowerShell literal, but they make a command *display*
# differently from what it does (the "Trojan Source" trick).  No Exchange name contains them.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")

_CONTROL_NAMES = {
    "\x00": "a NUL character",
    "\t": "a tab",
    "\n": "a line break",
    "\x0b": "a vertical tab",
    "\x0c": "a form feed",
    "\r": "a carriage return",
    "\x1b": "an escape character",
    "\x7f": "a delete character",
    "\x85": "a next-line character (a line break to PowerShell)",
}

_SUBJECTS = {
    "account": ("account name", "Exchange account names"),
    "connector": ("connector name", "Receive connector names"),
    "server": ("server name", "Exchange server names"),
}


class UnsafeValueError(ValueError):
    """A value that SubmitWatch refuses to put into a PowerShell command.

    ``str(err)`` is a sentence for a person: which value (account / connector / server) and why.
    The offending value itself is kept in ``.value`` for logs but never put in the message,
    because the message may be shown in chat and the value is untrusted.
    """

    def __init__(self, what: str, reason: str, value: str | None = None) -> None:
        self.what = what
        self.reason = reason
        self.value = value
        subject, _ = _subject(what)
        super().__init__(f"{subject} {reason}")


def _subject(what: str) -> tuple[str, str]:
    """('account name', 'Exchange account names') for 'account'; generic for anything else."""
    return _SUBJECTS.get(what, (what, "Exchange names"))


def _describe_char(ch: str) -> str:
    code = f"U+{ord(ch):04X}"
    if ch in _CONTROL_NAMES:
        return f"{_CONTROL_NAMES[ch]} ({code})"
    if ch in _LINE_SEPARATORS:
        return f"{_LINE_SEPARATORS[ch]} ({code})"
    if ch in _BIDI_CONTROLS:
        return f"a bidirectional text control ({code})"
    if unicodedata.category(ch) == "Cs":
        return f"an unpaired surrogate ({code})"
    if is_invisible(ch):
        return describe_invisible(ch)
    return f"a control character ({code})"


def _refused_char(ch: str) -> bool:
    return (
        unicodedata.category(ch) in ("Cc", "Cs")
        or ch in _LINE_SEPARATORS
        or is_invisible(ch)  # format characters (bidirectional controls among them), fillers
    )


def check_value(value: str, what: str = "value") -> None:
    """Raise UnsafeValueError unless *value* may go into a command as a quoted literal."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    _, plural = _subject(what)
    if value == "":
        raise UnsafeValueError(
            what, "is empty, so there is nothing to put in a command", value
        )
    if len(value) > MAX_VALUE_LENGTH:
        raise UnsafeValueError(
            what,
            f"is {len(value):,} characters long; SubmitWatch refuses values longer than "
            f"{MAX_VALUE_LENGTH:,} characters ({plural} are far shorter)",
            value,
        )
    for pos, ch in enumerate(value):
        if _refused_char(ch):
            if ch in _BIDI_CONTROLS:
                why = "it can make the command look different from what it does"
            elif unicodedata.category(ch) == "Cs":
                why = "it is not valid Unicode text"
            elif is_invisible(ch):
                why = "it draws nothing, and a command must never hide part of a name"
            else:
                why = f"{plural} never contain control characters or line breaks"
            raise UnsafeValueError(
                what,
                f"contains {_describe_char(ch)} at position {pos + 1}; {why}, "
                "so SubmitWatch will not put it in a command",
                value,
            )


def ps_quote(value: str, what: str = "value") -> str:
    """*value* as a PowerShell single-quoted literal, or UnsafeValueError.

    Each of the five characters PowerShell treats as a single quote is doubled with itself,
    so ``O'Brien`` becomes ``'O''Brien'`` and ``a\u2019b`` becomes ``'a\u2019\u2019b'``.
    *what* names the value in error messages: "account", "connector", "server" or free text.
    """
    check_value(value, what)
    return "'" + "".join(ch * 2 if ch in PS_SINGLE_QUOTES else ch for ch in value) + "'"


# --- servers and connectors -------------------------------------------------------------------


def short_server_name(computer_or_name: str) -> str:
    """The NetBIOS-style name used in connector identities: ``EX01.contoso.local`` -> ``EX01``.

    Surrounding whitespace and a trailing dot are ignored; IP addresses are returned unchanged
    (they have no short form).  Case is kept.  Raises UnsafeValueError for an empty name.
    """
    if not isinstance(computer_or_name, str):
        raise TypeError(f"server name must be a str, not {type(computer_or_name).__name__}")
    name = computer_or_name.strip().rstrip(".")
    if not name:
        raise UnsafeValueError("server", "is empty, so there is nothing to put in a command",
                               computer_or_name)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        name = name.split(".", 1)[0]
        if not name:
            raise UnsafeValueError("server", "starts with a dot, so it has no short name",
                                   computer_or_name) from None
    return name


def _server(server: str) -> str:
    srv = short_server_name(server)
    if "\\" in srv:
        raise UnsafeValueError(
            "server",
            "contains a backslash, which separates server and connector in a connector "
            "identity; server names never contain one, so SubmitWatch will not put it in a command",
            server,
        )
    check_value(srv, "server")
    return srv


def connector_identity(server: str, name: str) -> str:
    """``<SRV>\\<name>``; *server* may be a FQDN.  A *name* that already holds a backslash is
    taken to be a full identity and returned unchanged."""
    check_value(name, "connector")
    identity = name if "\\" in name else f"{_server(server)}\\{name}"
    check_value(identity, "connector")
    return identity


_YEAR_RE = re.compile(r"(?<!\d)(2007|2010|2013|2016|2019)(?!\d)")
_BUILD_RE = re.compile(r"(?<![\d.])(8|14|15)\.\d+")


def is_legacy_version(version: str | None) -> bool:
    """True for Exchange 2007/2010 (``"2010"``, ``"14.3.123.4"``, ``"Version 8.3 (Build 83.6)"``);
    False for 2013 and later, and when the version is unknown or unrecognised."""
    if not version:
        return False
    text = str(version)
    year = _YEAR_RE.search(text)
    if year:
        return year.group(1) in ("2007", "2010")
    build = _BUILD_RE.search(text)
    if build:
        return build.group(1) in ("8", "14")
    return False


def likely_submission_connector(server: str, version: str | None = None) -> str:
    """The default client-submission (587) connector's identity: ``<SRV>\\Client Frontend <SRV>``
    on 2013 and later (also when the version is unknown), ``<SRV>\\Client <SRV>`` on 2007/2010."""
    srv = _server(server)
    name = f"Client {srv}" if is_legacy_version(version) else f"Client Frontend {srv}"
    return f"{srv}\\{name}"


@dataclass(frozen=True)
class DefaultConnector:
    identity: str
    port: int
    role: str  # "HubTransport" (2007/2010), "FrontendTransport" or "HubTransport" (2013+ backend)
    purpose: str


def default_receive_connectors(server: str,
                               version: str | None = None) -> tuple[DefaultConnector, ...]:
    """The Receive connectors Exchange setup creates on *server* (Microsoft's defaults per
    version)."""
    srv = _server(server)
    if is_legacy_version(version):
        rows = [
            (f"Default {srv}", 25, "HubTransport", "server-to-server mail"),
            (f"Client {srv}", 587, "HubTransport", "authenticated client submission"),
        ]
    else:
        rows = [
            (f"Default Frontend {srv}", 25, "FrontendTransport", "mail from the internet"),
            (f"Client Frontend {srv}", 587, "FrontendTransport", "authenticated client submission"),
            (f"Outbound Proxy Frontend {srv}", 717, "FrontendTransport", "outbound proxy"),
            (f"Default {srv}", 2525, "HubTransport", "backend transport"),
            (f"Client Proxy {srv}", 465, "HubTransport",
             "client submission proxied from the front end"),
        ]
    return tuple(DefaultConnector(f"{srv}\\{name}", port, role, purpose)
                 for name, port, role, purpose in rows)


# --- the commands -----------------------------------------------------------------------------


def _get_connector(connector: str) -> str:
    return f"Get-ReceiveConnector -Identity {ps_quote(connector, 'connector')}"


def grant_command(account: str, connector: str) -> str:
    return (f"{_get_connector(connector)} | Add-ADPermission -User {ps_quote(account, 'account')}"
            f" -ExtendedRights '{SUBMIT_RIGHT}'")


def whatif_command(account: str, connector: str) -> str:
    return grant_command(account, connector) + " -WhatIf"


def undo_command(account: str, connector: str) -> str:
    return (f"{_get_connector(connector)} | Remove-ADPermission "
            f"-User {ps_quote(account, 'account')} -ExtendedRights '{SUBMIT_RIGHT}' "
            "-Confirm:$false")


def list_connectors_command(server: str) -> str:
    return (f"Get-ReceiveConnector -Server {ps_quote(_server(server), 'server')}"
            " | Format-Table Identity,Bindings,AuthMechanism,PermissionGroups,TransportRole")


def inspect_connector_command(connector: str) -> str:
    """Read-only: what a connector accepts (who may connect from where, and how)."""
    return (f"{_get_connector(connector)}"
            " | Format-List Identity,Enabled,Bindings,RemoteIPRanges,PermissionGroups,"
            "AuthMechanism,TransportRole")


def sid_command(account: str) -> str:
    """Read-only: the account's SID, resolved by Windows itself (no Exchange or AD module
    needed). One ending in -500 is the domain's built-in Administrator, renamed or not; -501
    is Guest. (A pipeline rather than the shorter cast, so the account is one -ArgumentList
    literal like every other command's arguments.)"""
    return ("New-Object -TypeName System.Security.Principal.NTAccount -ArgumentList "
            f"{ps_quote(account, 'account')} | ForEach-Object "
            "{ $_.Translate([System.Security.Principal.SecurityIdentifier]).Value }")


def protocol_logging_check_command(identity: str) -> str:
    """Read-only: whether a Receive connector writes the SMTP Receive protocol log (its
    ProtocolLoggingLevel: None writes nothing, Verbose logs every session)."""
    return f"{_get_connector(identity)} | Format-List Identity,ProtocolLoggingLevel"


def protocol_logging_on_command(identity: str, *, whatif: bool = False) -> str:
    """Turn a Receive connector's protocol log on (``-WhatIf``: the dry run, changing nothing)."""
    return (f"Set-ReceiveConnector -Identity {ps_quote(identity, 'connector')} "
            "-ProtocolLoggingLevel Verbose" + (" -WhatIf" if whatif else ""))
